"""DGL rows for the edge attention benchmark (benchmarks/edge_attention.py), run in the DGL
environment (``bash benchmarks/peers/make_dgl_env.sh``).

Layers, as the benchmark's:

* ``transformer``: Q/K/V projections and multi-head dot-product attention over incoming edges
  with DGL's sparse API, as DGL's Graph Transformer example does it: ``bsddmm`` (scores on the
  edges), ``softmax`` (per destination row), ``bspmm`` (weighted sum of values);
* ``gat``: ``dgl.nn.GATConv`` on the graph with self-loops (PyG's GATConv default).

The benchmark side calls :func:`measure_dgl` with its case: the graph is made there (by the
benchmark's own ``make_graph``) and handed over in a file, the layer runs here in a fresh
process of the DGL environment, and the same keys come back (``fwd_s``, ``fwdbwd_s``,
``peak_mb``, ``above_inputs_mb``). Without the environment :func:`measure_dgl` returns None.

    benchmarks/peers/.venv-dgl/bin/python -m benchmarks.peers.dgl_attention --child '{...}'
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DGL_PYTHON = HERE / ".venv-dgl" / "bin" / "python"


def available() -> bool:
    return DGL_PYTHON.is_file()


def measure_dgl(spec: dict, edge_index: torch.Tensor, timeout: float = 1800) -> dict | None:
    """Time the DGL form of ``spec["layer"]`` on ``edge_index`` (CPU); None without the DGL env."""
    if not available():
        return None
    from benchmarks._common import run_child

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "edge_index.pt")
        torch.save(edge_index.cpu(), path)
        return run_child("benchmarks.peers.dgl_attention", {**spec, "edge_index_file": path}, timeout=timeout,
                         python=str(DGL_PYTHON))


def _transformer(channels: int, heads: int, dim: int):
    import dgl.sparse as dglsp
    from torch import nn

    class SparseAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin_query = nn.Linear(channels, heads * dim)
            self.lin_key = nn.Linear(channels, heads * dim)
            self.lin_value = nn.Linear(channels, heads * dim)

        def forward(self, x, matrix):
            n = x.size(0)
            # DGL's sparse ops take [N, D, H]; rows of the matrix are destinations
            q = (self.lin_query(x) / math.sqrt(dim)).view(n, heads, dim).transpose(1, 2)
            k = self.lin_key(x).view(n, heads, dim).transpose(1, 2)
            v = self.lin_value(x).view(n, heads, dim).transpose(1, 2)
            scores = dglsp.bsddmm(matrix, q, k.transpose(1, 0))
            out = dglsp.bspmm(scores.softmax(), v)
            return out.transpose(1, 2).reshape(n, heads * dim)

    return SparseAttention()


def child(spec: dict) -> dict:
    import dgl
    import dgl.sparse as dglsp

    from benchmarks._common import median_time, peak_rss_mb, rss_mb

    torch.manual_seed(0)
    heads, dim = spec["heads"], spec["dim"]
    channels = heads * dim
    edge_index = torch.load(spec["edge_index_file"])
    n = spec["nodes"]
    x = torch.randn(n, channels, requires_grad=True)
    if spec["layer"] == "transformer":
        model = _transformer(channels, heads, dim)
        graph = dglsp.spmatrix(torch.stack([edge_index[1], edge_index[0]]), shape=(n, n))
    elif spec["layer"] == "gat":
        from dgl.nn import GATConv

        model = GATConv(channels, dim, num_heads=heads)
        graph = dgl.add_self_loop(dgl.remove_self_loop(dgl.graph((edge_index[0], edge_index[1]), num_nodes=n)))
    else:
        raise ValueError(f"no DGL form of layer {spec['layer']!r}")
    base = rss_mb()

    def run():
        out = model(x, graph) if spec["layer"] == "transformer" else model(graph, x)
        return out.reshape(n, -1)

    def forward():
        with torch.no_grad():
            run()

    def forward_backward():
        run().sum().backward()

    result = {"fwd_s": median_time(forward, spec["repeats"]), "fwdbwd_s": median_time(forward_backward,
                                                                                       spec["repeats"])}
    result["peak_mb"] = peak_rss_mb()
    result["above_inputs_mb"] = peak_rss_mb() - base
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        sys.exit(__doc__)
