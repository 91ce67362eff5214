"""Bag pooling: gattn's ragged pooling vs the padded dense approach.

The padded peer is what hopfield-layers and most MIL code do: pad every bag to the longest,
run the layer on the [B, N_max, D] tensor, mask the padding in the softmax (-inf), and take
a batched matrix product. gattn runs the same layer on the rows of all bags ([R, D] + ptr)
through `gattn.kernels` (segment_attention_pool / edge_attention): nothing is padded.

Three layers, each computed both ways from the same weights and the same ragged input (the
padded method pays for its padding; it is part of its forward and backward):

* ``pool``     - one learned query attending over each bag (segment_attention_pool);
* ``abmil``    - gated ABMIL attention pooling (Ilse et al.), L=128;
* ``hopfield`` - HopfieldPooling, 4 heads x 64, one learned state pattern (Ramsauer et al.).

Sizes: ``--bags`` bags with log-normal sizes of median ``--median``; sigma is chosen so that
the expected largest of 4,096 draws is ``--max-size`` (20,000: sigma = 1.72), the sizes are
clipped to ``--max-size`` and the largest bag set to it. Feature size ``--dim`` (256).

Time: median over ``--repeats`` of forward + backward (after one warm-up). Peak memory: on
CPU, each (layer, method) runs in a fresh process and reports its peak RSS (getrusage) above
the RSS once its inputs were built; on CUDA, torch.cuda.max_memory_allocated above the
inputs. When the padded tensor alone would not fit (``--mem-limit-gb``, default 70% of the
available memory) the padded method is not run and the table says so.

    python benchmarks/bag_pooling.py                       # 4,096 bags, max 20,000, D=256
    python benchmarks/bag_pooling.py --max-size 2000       # a size where padding fits
    python benchmarks/bag_pooling.py --quick               # small (CI, demo)
    python benchmarks/bag_pooling.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

import numpy as np
import torch
from torch import Tensor

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
from gattn.kernels import segment_attention_pool
from gattn.nn.hopfield import HopfieldPooling
from gattn.nn.mil import AttentionMILPooling

OPS = ("pool", "abmil", "hopfield")
METHODS = ("gattn", "padded")
#: rough multiple of the padded input's size each padded layer keeps alive (for the fit check)
PADDED_FACTOR = {"pool": 3.0, "abmil": 4.0, "hopfield": 7.0}


def default_sigma(median: float = 50, largest: float = 20_000, bags: int = 4096) -> float:
    """Sigma of a log-normal whose expected largest of `bags` draws is `largest`."""
    return math.log(largest / median) / statistics.NormalDist().inv_cdf(1 - 1 / bags)


def bag_sizes(bags: int, median: float, max_size: int, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = np.exp(math.log(median) + sigma * rng.standard_normal(bags))
    sizes = np.clip(np.rint(sizes), 1, max_size).astype(np.int64)
    sizes[int(np.argmax(sizes))] = max_size
    return sizes


def make_inputs(sizes: np.ndarray, dim: int, device: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    torch.manual_seed(seed)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.from_numpy(np.cumsum(sizes))
    x = torch.randn(int(ptr[-1]), dim, device=device)
    return x, ptr.to(device)


# ------------------------------------------------------------------------- padded layers
def pad(x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
    """[B, N_max, D] (zeros in the padding) and the valid mask [B, N_max]; differentiable."""
    sizes = ptr[1:] - ptr[:-1]
    bags, longest = sizes.numel(), int(sizes.max())
    bag = torch.repeat_interleave(torch.arange(bags, device=x.device), sizes)
    pos = torch.arange(x.size(0), device=x.device) - ptr[bag]
    padded = x.new_zeros(bags, longest, x.size(1))
    padded = padded.index_put((bag, pos), x)
    valid = torch.zeros(bags, longest, dtype=torch.bool, device=x.device)
    valid[bag, pos] = True
    return padded, valid


def masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the last dim of `scores` [..., N] with padding (valid False) at -inf."""
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)


def padded_pool(x: Tensor, ptr: Tensor, query: Tensor) -> Tensor:
    xp, valid = pad(x, ptr)
    scores = (xp @ query.t()).transpose(1, 2) / math.sqrt(x.size(1))  # [B, Q, N]
    return masked_softmax(scores, valid.unsqueeze(1)) @ xp  # [B, Q, D]


def padded_abmil(x: Tensor, ptr: Tensor, layer: AttentionMILPooling) -> Tensor:
    xp, valid = pad(x, ptr)
    scores = layer.scores(xp).transpose(1, 2)  # the MLP runs on the padding too: [B, 1, N]
    return (masked_softmax(scores, valid.unsqueeze(1)) @ xp).squeeze(1)


def padded_hopfield(x: Tensor, ptr: Tensor, layer: HopfieldPooling) -> Tensor:
    hop = layer.hopfield
    xp, valid = pad(x, ptr)
    bags, longest, heads = xp.size(0), xp.size(1), hop.num_heads
    k = hop.proj_stored(hop.norm_stored(xp)).view(bags, longest, heads, -1).transpose(1, 2)
    v = hop.proj_value(hop.norm_projection(xp)).view(bags, longest, heads, -1).transpose(1, 2)
    q = hop.project_state(layer.state_pattern).transpose(0, 1)  # [H, Q, hidden]
    scores = hop.scaling * q.unsqueeze(0) @ k.transpose(2, 3)  # [B, H, Q, N]
    out = masked_softmax(scores, valid[:, None, None, :]) @ v  # [B, H, Q, pattern]
    out = out.permute(0, 2, 1, 3).reshape(bags * layer.quantity, -1)
    return hop.proj_out(out).view(bags, -1)


# ------------------------------------------------------------------------------- methods
def build(op: str, method: str, x: Tensor, ptr: Tensor):
    """A closure running forward + backward, and the parameters it uses."""
    dim = x.size(1)
    torch.manual_seed(1)
    if op == "pool":
        query = torch.randn(1, dim, device=x.device, requires_grad=True)
        if method == "gattn":
            forward = lambda: segment_attention_pool(x, query=query, ptr=ptr)[0]
        else:
            forward = lambda: padded_pool(x, ptr, query)
    elif op == "abmil":
        layer = AttentionMILPooling(dim, 128, gated=True).to(x.device)
        forward = (lambda: layer(x, ptr)[0]) if method == "gattn" else (lambda: padded_abmil(x, ptr, layer))
    elif op == "hopfield":
        layer = HopfieldPooling(dim, quantity=1, num_heads=4, hidden_size=64).to(x.device)
        forward = (lambda: layer(x, ptr)) if method == "gattn" else (lambda: padded_hopfield(x, ptr, layer))
    else:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")

    def step() -> None:
        x.grad = None
        forward().square().sum().backward()

    return step, forward


def padded_bytes(op: str, sizes: np.ndarray, dim: int) -> float:
    return PADDED_FACTOR[op] * len(sizes) * int(sizes.max()) * dim * 4


def available_bytes(device: str) -> float:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return float(free)
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float("inf")


def measure(args: dict) -> dict:
    """Run one (op, method, size) in this process: time and peak memory above the inputs."""
    device = args["device"]
    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    # warm up on a tiny input first, so that loading the kernels (numba's cache, Triton's
    # compilation) is not counted as the method's memory
    tiny_x, tiny_ptr = make_inputs(np.array([3, 1, 4]), args["dim"], device)
    build(args["op"], args["method"], tiny_x.requires_grad_(True), tiny_ptr)[0]()
    del tiny_x, tiny_ptr
    sizes = bag_sizes(args["bags"], args["median"], args["max_size"], args["sigma"], args["seed"])
    x, ptr = make_inputs(sizes, args["dim"], device)
    x.requires_grad_(True)
    sync = cuda_sync if device.startswith("cuda") else (lambda: None)
    step, forward = build(args["op"], args["method"], x, ptr)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        base = rss_mb()
        step()
        peak = peak_rss_mb() - base
    seconds = median_time(step, args["repeats"], sync)
    return {"ms": seconds * 1e3, "peak_mb": peak, "rows": int(x.size(0))}


def check_against_padded(device: str = "cpu") -> None:
    """The two methods of every op agree (on a small size)."""
    sizes = bag_sizes(16, 5, 40, 1.0)
    x, ptr = make_inputs(sizes, 16, device)
    for op in OPS:
        _, gattn_forward = build(op, "gattn", x, ptr)
        _, padded_forward = build(op, "padded", x, ptr)
        got, want = gattn_forward().reshape(len(sizes), -1), padded_forward().reshape(len(sizes), -1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", type=int, default=4096)
    parser.add_argument("--median", type=float, default=50)
    parser.add_argument("--max-size", type=int, default=20_000)
    parser.add_argument("--sigma", type=float, default=None, help="default: from 4096 bags, median 50, max 20000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--mem-limit-gb", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="256 bags, max 500, D=64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--chart", default="runs/benchmarks/bag_pooling.png",
                        help="PNG of the ratios against padding ('' = none)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    if args.quick:
        args.bags, args.max_size, args.dim, args.repeats = 256, 500, 64, 2
    sigma = args.sigma if args.sigma is not None else default_sigma()
    check_against_padded()
    sizes = bag_sizes(args.bags, args.median, args.max_size, sigma, args.seed)
    rows_total = int(sizes.sum())
    limit = (args.mem_limit_gb * 2**30) if args.mem_limit_gb else 0.7 * available_bytes(args.device)
    print(
        f"{args.bags} bags, {rows_total:,} instances, sizes median {int(np.median(sizes))}, "
        f"mean {sizes.mean():.0f}, max {int(sizes.max()):,} (log-normal sigma {sigma:.2f}); "
        f"D={args.dim}; device {args.device}; padded cells B x N_max = {len(sizes) * int(sizes.max()):,} "
        f"({len(sizes) * int(sizes.max()) / rows_total:.0f}x the instances)"
    )
    table, records = [], []
    chart: dict[str, list[float | None]] = {"speed vs padded": [], "memory vs padded": []}
    for op in args.ops.split(","):
        results = {}
        for method in METHODS:
            need = padded_bytes(op, sizes, args.dim)
            if method == "padded" and need > limit:
                results[method] = {
                    "error": f"does not fit: ~{need / 2**30:.0f} GiB needed, limit {limit / 2**30:.0f} GiB"
                }
                continue
            child = dict(
                op=op,
                method=method,
                bags=args.bags,
                median=args.median,
                max_size=args.max_size,
                sigma=sigma,
                dim=args.dim,
                repeats=args.repeats,
                device=args.device,
                threads=args.threads,
                seed=args.seed,
            )
            if args.device.startswith("cuda"):
                try:
                    results[method] = measure(child)
                except torch.cuda.OutOfMemoryError:
                    results[method] = {"error": "CUDA out of memory"}
                torch.cuda.empty_cache()
            else:
                results[method] = run_child("benchmarks.bag_pooling", child)
        ours, peer = results["gattn"], results["padded"]
        for method, res in results.items():
            err = res.get("error")
            table.append(
                [
                    op,
                    method,
                    fmt(res.get("ms"), 1),
                    fmt(res.get("peak_mb"), 0),
                    fmt(res["peak_mb"] * 2**20 / rows_total, 0) if "peak_mb" in res else "-",
                    "" if err is None else (err if isinstance(err, str) else " ".join(err)),
                ]
            )
            records.append({"op": op, "method": method, **res})
        fits = "ms" in ours and "ms" in peer
        chart["speed vs padded"].append(peer["ms"] / ours["ms"] if fits else None)
        chart["memory vs padded"].append(peer["peak_mb"] / max(ours["peak_mb"], 1e-9) if fits else None)
        if fits:
            table.append(
                [
                    op,
                    "ratio padded/gattn",
                    f"{peer['ms'] / ours['ms']:.1f}x",
                    f"{peer['peak_mb'] / max(ours['peak_mb'], 1e-9):.1f}x",
                    "",
                    "",
                ]
            )
    print_table(
        "forward + backward (median), peak memory above the inputs",
        ["layer", "method", "time ms", "peak MB", "bytes/instance", "note"],
        table,
    )
    if args.chart:
        os.makedirs(os.path.dirname(args.chart) or ".", exist_ok=True)
        print("chart:", write_ratio_chart(
            args.chart, f"Ragged bag pooling vs padding ({args.bags} bags, max {int(sizes.max()):,}; no bar: "
            "padding does not fit)", args.ops.split(","), chart))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "bags": args.bags,
                    "instances": rows_total,
                    "max_size": int(sizes.max()),
                    "dim": args.dim,
                    "device": args.device,
                    "rows": records,
                },
                out,
                indent=2,
            )


if __name__ == "__main__":
    main()
