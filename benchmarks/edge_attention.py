"""Edge attention: gattn's fused kernels vs the reference vs PyG's TransformerConv.

Every method computes the same layer: Q/K/V linear projections of x [N, H*D] and
multi-head attention over incoming edges (TransformerConv with root_weight=False,
concat heads). Times are medians over repeats of forward and forward+backward on one
graph. On CPU each (graph, method) runs in a fresh process so its peak RSS is its own;
on CUDA peak memory is torch.cuda.max_memory_allocated above the inputs.

    python benchmarks/edge_attention.py             # CPU, full sizes (N=50k, E=1M, ...)
    python benchmarks/edge_attention.py --quick     # CPU, small sizes (the demo)
    python benchmarks/edge_attention.py --device cuda
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

from benchmarks._common import cuda_sync, fmt, median_time, peak_rss_mb, print_table, rss_mb, run_child
from gattn.kernels import edge_attention

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


def build(method: str, channels: int, heads: int, dim: int) -> nn.Module:
    if method == "pyg":
        from torch_geometric.nn import TransformerConv

        return TransformerConv(channels, dim, heads=heads, root_weight=False)
    backend = {"gattn": None, "reference": "reference", "triton": "triton"}[method]
    return FusedAttention(channels, heads, dim, backend)


def measure(spec: dict) -> dict:
    """Time (and on CUDA, memory of) one method on one graph, in this process."""
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    heads, dim = spec["heads"], spec["dim"]
    channels = heads * dim
    edge_index = make_graph(spec["graph"], spec["nodes"], spec["edges"]).to(device)
    x = torch.randn(spec["nodes"], channels, device=device, requires_grad=True)
    model = build(spec["method"], channels, heads, dim).to(device)
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
    x = torch.randn(64, 8, requires_grad=True)
    FusedAttention(8, 2, 4, "cpu")(x, edge_index).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small graphs only (a ~1 minute run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--methods", default="gattn,reference,pyg",
                        help="comma-separated: gattn (backend by device), reference, pyg, triton")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    methods = args.methods.split(",")
    cases = benchmark_cases(args.device, args.quick)
    if args.device == "cpu":
        repeats = args.repeats or (5 if args.quick else 3)
        warm_numba_cache()
    else:
        repeats = args.repeats or 10

    rows = []
    for graph, nodes, edges, heads, dim in cases:
        results = {}
        for method in methods:
            spec = dict(device=args.device, method=method, graph=graph, nodes=nodes, edges=edges,
                        heads=heads, dim=dim, repeats=repeats)
            results[method] = run_child("benchmarks.edge_attention", spec)
            if "error" in results[method]:
                print(f"{graph} N={nodes} {method}: failed: {results[method]['error']}", file=sys.stderr)
        peer = results.get("pyg", {})
        for method in methods:
            res = results[method]
            if "error" in res:
                rows.append([f"{graph} N={nodes:,} E={edges:,} H={heads} D={dim}", method] + ["failed"] * 7)
                continue

            def ratio(key, res=res, peer=peer):
                return fmt(peer[key] / res[key], 2) if key in peer and res.get(key) else "-"

            rows.append([
                f"{graph} N={nodes:,} E={edges:,} H={heads} D={dim}", method,
                fmt(res["fwd_s"], 4), fmt(res["fwdbwd_s"], 4), fmt(res["peak_mb"], 0),
                fmt(res.get("above_inputs_mb"), 0),
                ratio("fwd_s"), ratio("fwdbwd_s"), ratio("peak_mb"),
            ])
    memory = "peak RSS MB (process)" if args.device == "cpu" else "peak CUDA MB (above inputs)"
    print_table(
        f"Edge attention layer (QKV projections + attention), {args.device}, median of {repeats}; "
        "ratios = PyG TransformerConv / method (higher is better); memory x compares the first memory column",
        ["graph", "method", "fwd s", "fwd+bwd s", memory, "RSS above inputs MB", "fwd x", "fwd+bwd x", "memory x"],
        rows,
    )


if __name__ == "__main__":
    main()
