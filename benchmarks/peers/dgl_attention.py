"""DGL rows of the edge attention benchmark (``benchmarks/edge_attention.py --dgl-python``),
run in the DGL environment (``bash benchmarks/peers/make_dgl_env.sh``).

Layers, as the benchmark's:

* ``transformer``: Q/K/V projections and multi-head dot-product attention over incoming edges
  with DGL's sparse API, as DGL's Graph Transformer example does it: ``bsddmm`` (scores on the
  edges), ``softmax`` (per destination row), ``bspmm`` (weighted sum of values): PyG's
  ``TransformerConv(root_weight=False)``;
* ``gat`` / ``gatv2``: ``dgl.nn.GATConv`` / ``dgl.nn.GATv2Conv`` on the graph with its
  self-loops replaced by one per node (PyG's ``add_self_loops=True`` default).

The benchmark writes each case's graph to a file (:func:`save_graph`) that its own children
and this module's child read alike (:func:`load_graph`), so every method runs on the same
edges; :func:`measure_dgl` runs the DGL form in a fresh process of the DGL environment and
returns the benchmark's keys (``fwd_s``, ``step_s``, ``peak_mb``, ``above_inputs_mb``,
``load``). As in the benchmark, a training step is forward, ``square().mean()``, backward
and an Adam step, and with ``batch="mini"`` every call gets the next edge list of the file
(DGL's sparse matrix or graph is then built inside the timed call, as gattn's CSR is).

    benchmarks/peers/.venv-dgl/bin/python -m benchmarks.peers.dgl_attention --child '{...}'
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DGL_PYTHON = HERE / ".venv-dgl" / "bin" / "python"
LAYERS = ("transformer", "gat", "gatv2")


def available(python: str | os.PathLike = DGL_PYTHON) -> bool:
    return Path(python).is_file()


def save_graph(path: str, edge_index: torch.Tensor, num_nodes: int, batches: list[torch.Tensor]) -> None:
    """The benchmark's input for every method: the graph and the mini-batch edge lists."""
    torch.save({"edge_index": edge_index.cpu(), "num_nodes": int(num_nodes),
                "batches": [b.cpu() for b in batches]}, path)


def load_graph(path: str) -> dict:
    return torch.load(path)  # tensors, a list and an int: loads with weights_only too


def measure_dgl(spec: dict, python: str | os.PathLike = DGL_PYTHON, timeout: float = 1800) -> dict:
    """Time the DGL form of ``spec["layer"]`` on the graph in ``spec["graph_file"]`` (CPU), in
    a child process of ``python`` with ``spec["threads"]`` OpenMP threads (DGL's kernels read
    ``OMP_NUM_THREADS``, torch's ops ``torch.set_num_threads``)."""
    from benchmarks._common import run_child

    if not available(python):
        raise FileNotFoundError(f"no DGL interpreter at {python} (make it: bash benchmarks/peers/make_dgl_env.sh)")
    if spec["layer"] not in LAYERS:
        raise ValueError(f"no DGL form of layer {spec['layer']!r}, expected one of {LAYERS}")
    env = {"OMP_NUM_THREADS": str(spec["threads"])} if spec.get("threads") else None
    return run_child("benchmarks.peers.dgl_attention", spec, timeout=timeout, python=str(python), env=env)


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


def build(layer: str, channels: int, heads: int, dim: int):
    """(the module, a function making its graph argument from an edge_index, calling it)."""
    import dgl

    if layer == "transformer":
        import dgl.sparse as dglsp

        model = _transformer(channels, heads, dim)

        def make(edge_index: torch.Tensor, n: int):
            return dglsp.spmatrix(torch.stack([edge_index[1], edge_index[0]]), shape=(n, n))

        return model, make, lambda x, graph: model(x, graph)
    if layer not in LAYERS:
        raise ValueError(f"no DGL form of layer {layer!r}, expected one of {LAYERS}")
    from dgl.nn import GATConv, GATv2Conv

    model = (GATConv if layer == "gat" else GATv2Conv)(channels, dim, num_heads=heads)

    def make(edge_index: torch.Tensor, n: int):
        graph = dgl.graph((edge_index[0], edge_index[1]), num_nodes=n)
        return dgl.add_self_loop(dgl.remove_self_loop(graph))

    return model, make, lambda x, graph: model(graph, x).reshape(x.size(0), -1)


def child(spec: dict) -> dict:
    from benchmarks._common import load_average, median_time, peak_rss_mb, rss_mb

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    heads, dim = spec["heads"], spec["dim"]
    channels = heads * dim
    saved = load_graph(spec["graph_file"])
    n = saved["num_nodes"]
    model, make, call = build(spec["layer"], channels, heads, dim)
    x = torch.randn(n, channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mini = spec.get("batch", "full") == "mini"
    full_graph = None if mini else make(saved["edge_index"], n)
    batches = iter(saved["batches"])

    def graph():
        return make(next(batches), n) if mini else full_graph

    base = rss_mb()
    result = {"load": load_average(), "edges": int(saved["edge_index"].size(1)), "nodes": n}

    def forward():
        with torch.no_grad():
            call(x, graph())

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        call(x, graph()).square().mean().backward()
        optimizer.step()

    result["fwd_s"] = median_time(forward, spec["repeats"])
    result["step_s"] = median_time(train_step, spec["repeats"])
    result["peak_mb"] = peak_rss_mb()
    result["above_inputs_mb"] = peak_rss_mb() - base
    result["load"] = max(result["load"], load_average())
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        sys.exit(__doc__)
