"""Edge attention layers: gattn's fused kernels vs the reference vs PyG's layers.

Three layers, each against PyG's own (same sizes, concatenated heads):

* ``transformer``: Q/K/V projections of x [N, H*D] and multi-head dot-product attention
  over incoming edges, i.e. PyG's ``TransformerConv(root_weight=False)``; gattn's is the
  fused :func:`gattn.kernels.edge_attention` (``gattn``; ``reference`` is its plain-torch
  oracle, ``triton`` forces the Triton backend);
* ``gat``: ``gattn.nn.GATConv`` vs ``torch_geometric.nn.GATConv`` (defaults: self-loops);
* ``gatv2``: ``gattn.nn.GATv2Conv`` vs ``torch_geometric.nn.GATv2Conv``.

Times are medians over repeats of forward and forward+backward on one graph. Every
(graph, layer, method) runs in a fresh process, so on CPU its peak RSS is its own; on CUDA
peak memory is torch.cuda.max_memory_allocated above the inputs. The table gives ratios
against PyG (higher is better) and a PNG chart of them is written (``--chart``).

    python benchmarks/edge_attention.py             # CPU, full sizes (N=50k, E=1M, ...)
    python benchmarks/edge_attention.py --quick     # CPU, small sizes (the demo)
    python benchmarks/edge_attention.py --device cuda
    python benchmarks/edge_attention.py --layers gat,gatv2 --methods gattn,pyg
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import (
    cuda_sync,
    fmt,
    median_time,
    peak_rss_mb,
    print_table,
    rss_mb,
    run_child,
    write_ratio_chart,
)
from gattn.kernels import edge_attention

LAYERS = ("transformer", "gat", "gatv2")

ARXIV_NODES, ARXIV_EDGES = 169_343, 1_166_243


def make_graph(kind: str, num_nodes: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    """'random': uniform sources and destinations; 'powerlaw': destinations drawn with
    probability ~ rank^-0.8 (the top node gets ~3% of all edges), sources uniform."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    if kind == "random":
        dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    elif kind == "powerlaw":
        weights = torch.arange(1, num_nodes + 1, dtype=torch.float64).pow(-0.8)
        dst = torch.multinomial(weights, num_edges, replacement=True, generator=gen)
        dst = torch.randperm(num_nodes, generator=gen)[dst]
    else:
        raise ValueError(f"unknown graph kind {kind!r}")
    return torch.stack([src, dst])


class FusedAttention(nn.Module):
    """The same layer as TransformerConv(root_weight=False), on gattn.kernels.edge_attention."""

    def __init__(self, channels: int, heads: int, dim: int, backend: str):
        super().__init__()
        self.heads, self.dim, self.backend = heads, dim, backend
        self.lin_query = nn.Linear(channels, heads * dim)
        self.lin_key = nn.Linear(channels, heads * dim)
        self.lin_value = nn.Linear(channels, heads * dim)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        shape = (-1, self.heads, self.dim)
        q, k, v = (lin(x).view(shape) for lin in (self.lin_query, self.lin_key, self.lin_value))
        out = edge_attention(q, k, v, edge_index, scale=1 / math.sqrt(self.dim), backend=self.backend)
        return out.reshape(-1, self.heads * self.dim)


def build(method: str, channels: int, heads: int, dim: int, layer: str = "transformer") -> nn.Module:
    """The benchmarked module: `layer` as implemented by `method` (gattn, reference, triton, pyg)."""
    backend = {"gattn": None, "reference": "reference", "triton": "triton", "pyg": None}[method]
    if layer == "transformer":
        if method == "pyg":
            from torch_geometric.nn import TransformerConv

            return TransformerConv(channels, dim, heads=heads, root_weight=False)
        return FusedAttention(channels, heads, dim, backend)
    name = {"gat": "GATConv", "gatv2": "GATv2Conv"}[layer]
    if method == "pyg":
        import torch_geometric.nn as module

        return getattr(module, name)(channels, dim, heads=heads)
    import gattn.nn as module

    return getattr(module, name)(channels, dim, heads=heads, backend=backend)


def measure(spec: dict) -> dict:
    """Time (and on CUDA, memory of) one method on one graph, in this process."""
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    heads, dim = spec["heads"], spec["dim"]
    channels = heads * dim
    edge_index = make_graph(spec["graph"], spec["nodes"], spec["edges"]).to(device)
    x = torch.randn(spec["nodes"], channels, device=device, requires_grad=True)
    model = build(spec["method"], channels, heads, dim, spec.get("layer", "transformer")).to(device)
    sync = cuda_sync if device.type == "cuda" else (lambda: None)
    base_rss = rss_mb()

    def forward():
        with torch.no_grad():
            model(x, edge_index)

    def forward_backward():
        model(x, edge_index).sum().backward()

    result = {}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        forward_backward()  # warm-up: kernel compilation, CSR build
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward()
        sync()
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    result["fwd_s"] = median_time(forward, spec["repeats"], sync)
    result["fwdbwd_s"] = median_time(forward_backward, spec["repeats"], sync)
    if device.type == "cpu":
        result["peak_mb"] = peak_rss_mb()
        result["above_inputs_mb"] = peak_rss_mb() - base_rss
    return result


def benchmark_cases(device: str, quick: bool = False) -> list[tuple[str, int, int, int, int]]:
    """(graph kind, nodes, edges, heads, dim) of every benchmarked case."""
    if device == "cpu":
        if quick:
            return [("random", 5_000, 100_000, 4, 32), ("powerlaw", 5_000, 100_000, 4, 32)]
        return [
            ("random", 5_000, 100_000, 4, 32),
            ("powerlaw", 50_000, 1_000_000, 4, 32),
            ("random", 50_000, 1_000_000, 4, 32),
        ]
    cases = []  # GPU: the random and power-law 1M-edge graphs and an ogbn-arxiv-sized graph
    for heads, dim in ((4, 32), (8, 64)):
        cases += [
            ("random", 50_000, 1_000_000, heads, dim),
            ("powerlaw", 50_000, 1_000_000, heads, dim),
            ("random", ARXIV_NODES, ARXIV_EDGES, heads, dim),
        ]
    return cases


def warm_numba_cache() -> None:
    """Compile (or load) the numba kernels once, so child processes only load the cache."""
    edge_index = make_graph("random", 64, 256)
    for layer in LAYERS:
        x = torch.randn(64, 8, requires_grad=True)
        build("gattn", 8, 2, 4, layer)(x, edge_index).sum().backward()


def default_methods(layer: str) -> list[str]:
    """The reference is timed for the transformer layer only (it is the oracle of the tests)."""
    return ["gattn", "reference", "pyg"] if layer == "transformer" else ["gattn", "pyg"]


def cache_check_cost(nodes: int, edges: int, repeats: int = 5) -> tuple[float, float]:
    """(seconds of the structure cache's content check, seconds of a CSR build + its
    transposed view) on one random graph: the check runs on every call, the build once."""
    from gattn.kernels import CSR
    from gattn.kernels._cache import checksum

    edge_index = make_graph("random", nodes, edges)
    check = median_time(lambda: checksum(edge_index), repeats)
    build = median_time(lambda: CSR(edge_index, nodes, nodes).csc(), max(1, repeats // 2))
    return check, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small graphs only (a ~1 minute run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--methods", default=None,
                        help="comma-separated: gattn (backend by device), reference, pyg, triton "
                             "(default: gattn,reference,pyg for transformer, gattn,pyg for gat/gatv2)")
    parser.add_argument("--layers", default=",".join(LAYERS), help=f"comma-separated, from {LAYERS}")
    parser.add_argument("--chart", default="runs/edge_attention.png", help="PNG chart of the ratios ('' for none)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    layers = args.layers.split(",")
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        parser.error(f"--layers: unknown {unknown}, expected some of {LAYERS}")
    cases = benchmark_cases(args.device, args.quick)
    if args.device == "cpu":
        repeats = args.repeats or (5 if args.quick else 3)
        warm_numba_cache()
    else:
        repeats = args.repeats or 10

    if args.device == "cpu":
        nodes, edges = max((case[1], case[2]) for case in cases)
        check, build = cache_check_cost(nodes, edges)
        print(f"structure cache: content check {check * 1e3:.1f} ms per call vs CSR build {build * 1e3:.0f} ms "
              f"once (E={edges:,}; {100 * check / build:.1f} %)")

    rows, records, chart_cases = [], [], []
    chart: dict[str, list[float | None]] = {"fwd+bwd speed vs PyG": [], "memory vs PyG": []}
    for graph, nodes, edges, heads, dim in cases:
        for layer in layers:
            methods = args.methods.split(",") if args.methods else default_methods(layer)
            results = {}
            for method in methods:
                spec = dict(device=args.device, method=method, layer=layer, graph=graph, nodes=nodes, edges=edges,
                            heads=heads, dim=dim, repeats=repeats)
                results[method] = run_child("benchmarks.edge_attention", spec)
                if "error" in results[method]:
                    print(f"{layer} {graph} N={nodes} {method}: failed: {results[method]['error']}", file=sys.stderr)
            peer = results.get("pyg", {})
            case = f"{graph} N={nodes:,} E={edges:,} H={heads} D={dim}"
            for method in methods:
                res = results[method]
                records.append(dict(layer=layer, case=case, method=method, **res))
                if "error" in res:
                    rows.append([layer, case, method] + ["failed"] * 7)
                    continue

                def ratio(key, res=res, peer=peer):
                    return peer[key] / res[key] if key in peer and res.get(key) else None

                rows.append([
                    layer, case, method,
                    fmt(res["fwd_s"], 4), fmt(res["fwdbwd_s"], 4), fmt(res["peak_mb"], 0),
                    fmt(res.get("above_inputs_mb"), 0),
                    fmt(ratio("fwd_s"), 2), fmt(ratio("fwdbwd_s"), 2), fmt(ratio("peak_mb"), 2),
                ])
                if method == "gattn":
                    chart_cases.append(f"{layer}\n{graph} E={edges:,}")
                    chart["fwd+bwd speed vs PyG"].append(ratio("fwdbwd_s"))
                    chart["memory vs PyG"].append(ratio("peak_mb"))
    memory = "peak RSS MB (process)" if args.device == "cpu" else "peak CUDA MB (above inputs)"
    print_table(
        f"Edge attention layers, {args.device}, median of {repeats}; ratios = PyG's layer / method "
        "(higher is better); memory x compares the first memory column",
        ["layer", "graph", "method", "fwd s", "fwd+bwd s", memory, "RSS above inputs MB", "fwd x", "fwd+bwd x",
         "memory x"],
        rows,
    )
    if args.chart and chart_cases:
        os.makedirs(os.path.dirname(args.chart) or ".", exist_ok=True)
        path = write_ratio_chart(args.chart, f"gattn vs PyG: edge attention layers ({args.device})", chart_cases,
                                 chart)
        print(f"chart: {path}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": args.device, "repeats": repeats, "rows": records}, out, indent=1)


if __name__ == "__main__":
    main()
