"""LATTE layer vs PyG's HGTConv and HANConv of the same width: forward+backward time and memory.

Every method is one heterogeneous layer, 64 channels in and out, 4 heads, over the same
first-order relations (ACM's paper-author and paper-subject relations and their reverses) with
random 64-dim inputs for every node type:

* ``latte``: :class:`gattn.nn.LATTEConv` (per-relation attention on the fused kernel, beta over
  relations plus self);
* ``hgt``: PyG's ``HGTConv``;
* ``han``: PyG's ``HANConv`` (node-level attention per edge type, semantic attention).

Graphs: ACM as read from ``../shared/data/hetero/acm`` (4,019 papers, 7,167 authors, 60
subjects, 34,852 directed edges), and a synthetic ACM-like graph ``--scale`` times larger (100 by
default: 401,900 papers, 716,700 authors, 6,000 subjects, 3.5M edges; authors and subjects drawn
with Zipf-like popularity). Each (graph, method) runs in a fresh process; times are medians
over ``--repeats``; memory is the process's peak RSS above what it held once the inputs were built
(CPU; the whole peak RSS is shown too) or peak CUDA memory above the inputs. Ratios are
peer / LATTE: above 1 means LATTE is faster or lighter.

    python benchmarks/latte.py                 # CPU, ACM and the 100x graph
    python benchmarks/latte.py --quick         # ACM and a 10x graph
    python benchmarks/latte.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import (
    fmt,
    measure_forward_backward,
    prepare_child_environment,
    print_table,
    run_child,
    write_ratio_chart,
)

ACM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "hetero" / "acm"
ACM_SIZES = {"p": 4019, "a": 7167, "s": 60}
ACM_PA_EDGES = 13407
METHODS = ("latte", "hgt", "han")
PEERS = {"hgt": "HGTConv", "han": "HANConv"}


def _zipf(num: int, draws: int, gen: torch.Generator, exponent: float = 0.8) -> torch.Tensor:
    weights = torch.arange(1, num + 1, dtype=torch.float64).pow(-exponent)
    picks = torch.multinomial(weights, draws, replacement=True, generator=gen)
    return torch.randperm(num, generator=gen)[picks]


def synthetic_acm(scale: int, seed: int = 0) -> tuple[dict[str, int], dict[tuple, torch.Tensor]]:
    """An ACM-like schema ``scale`` times ACM's size: every paper has one subject, paper-author
    edges pick papers uniformly and authors with Zipf-like popularity; reverses included."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {t: n * scale for t, n in ACM_SIZES.items()}
    pa = torch.stack([torch.randint(0, sizes["p"], (ACM_PA_EDGES * scale,), generator=gen),
                      _zipf(sizes["a"], ACM_PA_EDGES * scale, gen)])
    ps = torch.stack([torch.arange(sizes["p"]), _zipf(sizes["s"], sizes["p"], gen)])
    return sizes, with_reverse({("p", "pa", "a"): pa, ("p", "ps", "s"): ps})


def with_reverse(edges: dict[tuple, torch.Tensor]) -> dict[tuple, torch.Tensor]:
    out = dict(edges)
    for (src, rel, dst), edge_index in edges.items():
        out[(dst, rel[::-1], src)] = edge_index.flip(0)
    return out


def acm_graph() -> tuple[dict[str, int], dict[tuple, torch.Tensor]]:
    """ACM's relations only (the features are not needed: every method gets random inputs)."""
    from gattn.datasets import read_relation_file

    edges = {(name[0], name, name[1]): torch.from_numpy(read_relation_file(ACM_DIR / f"{name}.txt").T.copy())
             for name in ("pa", "ps")}
    return dict(ACM_SIZES), with_reverse(edges)


def make_graph(name: str, scale: int) -> tuple[dict[str, int], dict[tuple, torch.Tensor]]:
    return acm_graph() if name == "acm" else synthetic_acm(scale)


def build(method: str, metadata, channels: int, heads: int) -> torch.nn.Module:
    if method == "latte":
        from gattn.nn import LATTEConv

        return LATTEConv(channels, channels, metadata, heads=heads)
    from torch_geometric.nn import HANConv, HGTConv

    if method == "hgt":
        return HGTConv(channels, channels, metadata, heads=heads)
    if method == "han":
        return HANConv(channels, channels, metadata, heads=heads)
    raise ValueError(f"unknown method {method!r}")


def measure(spec: dict) -> dict:
    """Time and memory of one method on one graph, in this process."""
    torch.manual_seed(0)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    sizes, edges = make_graph(spec["graph"], spec["scale"])
    edges = {e: t.to(device) for e, t in edges.items()}
    x_dict = {t: torch.randn(n, spec["channels"], device=device, requires_grad=True) for t, n in sizes.items()}
    metadata = (list(sizes), list(edges))
    model = build(spec["method"], metadata, spec["channels"], spec["heads"]).to(device)

    def forward():
        with torch.no_grad():
            model(x_dict, edges)

    def forward_backward():
        out = model(x_dict, edges)
        sum(h.sum() for h in out.values() if h is not None).backward()

    result = {"edges": sum(t.size(1) for t in edges.values()), "nodes": sum(sizes.values())}
    result.update(measure_forward_backward(forward, forward_backward, spec["repeats"], device))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--scale", type=int, default=100, help="size of the synthetic graph, x ACM")
    parser.add_argument("--quick", action="store_true", help="a 10x synthetic graph instead of 100x")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch (and numba) threads per child")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--chart", default="runs/latte_benchmark.png", help="PNG of the ratios ('' for none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    prepare_child_environment(args.threads)
    scale = 10 if args.quick else args.scale
    memory_key = "above_inputs_mb" if args.device == "cpu" else "peak_mb"  # what the memory ratios compare
    graphs = (["acm"] if ACM_DIR.is_dir() else []) + ["synthetic"]
    if not ACM_DIR.is_dir():
        print(f"ACM not found at {ACM_DIR}: only the synthetic graph", file=sys.stderr)
    methods = args.methods.split(",")
    rows, labels, series = [], [], {f"{kind} vs {PEERS[p]}": [] for p in PEERS for kind in ("speed", "memory")}
    for graph in graphs:
        results = {}
        for method in methods:
            spec = dict(device=args.device, graph=graph, scale=scale, method=method, channels=args.channels,
                        heads=args.heads, repeats=args.repeats, threads=args.threads)
            results[method] = run_child("benchmarks.latte", spec)
            if "error" in results[method]:
                print(f"{graph} {method}: failed: {results[method]['error']}", file=sys.stderr)
        ours = results.get("latte", {})
        any_result = next((r for r in results.values() if "edges" in r), {})
        label = "ACM" if graph == "acm" else f"ACM-like x{scale}"
        label += f" (N={any_result.get('nodes', 0):,}, E={any_result.get('edges', 0):,})"
        labels.append(label)
        for method in methods:
            res = results[method]
            if "error" in res:
                rows.append([label, method, "failed", "", "", "", "", "", "", ""])
                continue
            cells = [label, method, fmt(res["fwd_s"], 4), fmt(res["fwdbwd_s"], 4), fmt(res["peak_mb"], 0),
                     fmt(res.get("above_inputs_mb"), 0)]
            for peer in PEERS:
                peer_res = results.get(peer, {})
                ok = "fwdbwd_s" in peer_res and "fwdbwd_s" in res
                cells.append(fmt(peer_res["fwdbwd_s"] / res["fwdbwd_s"], 2) if ok else "-")
                cells.append(fmt(peer_res[memory_key] / res[memory_key], 2) if ok else "-")
            rows.append(cells)
        for peer, name in PEERS.items():
            peer_res = results.get(peer, {})
            ok = "fwdbwd_s" in peer_res and "fwdbwd_s" in ours
            series[f"speed vs {name}"].append(peer_res["fwdbwd_s"] / ours["fwdbwd_s"] if ok else None)
            series[f"memory vs {name}"].append(peer_res[memory_key] / ours[memory_key] if ok else None)
    memory = "peak RSS MB" if args.device == "cpu" else "peak CUDA MB (above inputs)"
    print_table(
        f"One heterogeneous layer, {args.channels} channels, {args.heads} heads, {args.device}, "
        f"median of {args.repeats}; x = peer / method (fwd+bwd time; memory: "
        f"{'RSS above inputs' if args.device == 'cpu' else 'peak CUDA'}): >1 means the row's method is faster / "
        "lighter than the peer",
        ["graph", "method", "fwd s", "fwd+bwd s", memory, "RSS above inputs MB",
         "HGT time x", "HGT mem x", "HAN time x", "HAN mem x"],
        rows,
    )
    if args.chart:
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        write_ratio_chart(args.chart, f"LATTEConv vs PyG heterogeneous layers ({args.device}, fwd+bwd)",
                          labels, series)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
