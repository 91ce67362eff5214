"""GIN-Attention: gattn's dense and sparse forms vs the reference code's approach.

The same layer (D=256, 8 heads, MLP ratio 2, output projection) computed four ways on
``[B, L, D]`` inputs, forward and forward+backward:

* ``reference``: the reference code's approach: the dense L x L attention of every head
  materialised, then the heads' GIN updates one after the other in a Python loop, one MLP
  module per head (:class:`ReferenceLoopGINAttention`, loaded with the same weights);
* ``dense``: :class:`gattn.nn.GINAttention`'s dense form (PyTorch's fused
  ``scaled_dot_product_attention``, all heads' MLPs in one batched product);
* ``sparse-full``: the sparse form on the complete graph (every token attends to every token,
  L^2 edges per sequence: the same function as the dense form, on gattn's fused edge kernel);
* ``sparse-window``: the sparse form on a local window graph (each token attends to the
  ``--window`` tokens on each side and itself): what the sparse form is for.

Sequence lengths 512 (B=8) and 4,096 (B=1). Each (length, method) runs in a fresh process;
times are medians over ``--repeats``; memory is the peak RSS above the inputs (CPU). Ratios are
reference / method: above 1 means the method is faster or lighter than the reference code's way.

    python benchmarks/gin_attention.py
    python benchmarks/gin_attention.py --quick      # L = 256 and 1,024
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

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
from gattn.nn import GINAttention

METHODS = ("reference", "dense", "sparse-full", "sparse-window")
CASES = ((512, 8), (4096, 1))  # (sequence length, batch)
QUICK_CASES = ((256, 4), (1024, 1))


class ReferenceLoopGINAttention(nn.Module):
    """The reference code's computation: per-head dense attention matrices, then a Python loop
    over heads applying each head's own GIN MLP (Linear -> Dropout -> RMSNorm -> SiLU ->
    Linear) to ``(1 + eps_h) X_h + A_h X_h``; heads concatenated; output projection."""

    def __init__(self, channels: int, heads: int, mlp_ratio: float = 2.0, temperature: float = 1.0) -> None:
        super().__init__()
        self.heads, self.head_channels, self.temperature = heads, channels // heads, temperature
        hidden = round(mlp_ratio * self.head_channels)
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.o_proj = nn.Linear(channels, channels)
        self.alpha = nn.Parameter(torch.ones(()))
        self.eps = nn.Parameter(torch.zeros(heads))
        self.gin_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(self.head_channels, hidden), nn.Dropout(0.0), nn.RMSNorm(hidden), nn.SiLU(),
                          nn.Linear(hidden, self.head_channels))
            for _ in range(heads)
        )

    @torch.no_grad()
    def load_from(self, layer: GINAttention) -> ReferenceLoopGINAttention:
        """Copy a :class:`GINAttention`'s weights (GIN eps mode, with output projection)."""
        self.q_proj.load_state_dict(layer.lin_query.state_dict())
        self.k_proj.load_state_dict(layer.lin_key.state_dict())
        self.o_proj.load_state_dict(layer.lin_out.state_dict())
        self.alpha.copy_(layer.alpha)
        self.eps.copy_(layer.eps)
        mlp = layer.mlp
        for h, gin in enumerate(self.gin_layers):
            gin[0].weight.copy_(mlp.weight1[h].t())
            gin[0].bias.copy_(mlp.bias1[h])
            gin[2].weight.copy_(mlp.norm_weight[h])
            gin[4].weight.copy_(mlp.weight2[h].t())
            gin[4].bias.copy_(mlp.bias2[h])
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        shape = (batch, length, self.heads, self.head_channels)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        scores = self.alpha * (q @ k.transpose(-1, -2) / math.sqrt(self.head_channels)) / self.temperature
        adjacency = torch.softmax(scores, dim=-1)  # [B, H, L, L]
        outs = []
        for h, gin in enumerate(self.gin_layers):
            x_h = x[..., h * self.head_channels:(h + 1) * self.head_channels]
            outs.append(gin((1 + self.eps[h]) * x_h + adjacency[:, h] @ x_h))
        return self.o_proj(torch.cat(outs, dim=-1))


def sequence_graph(length: int, batch: int, window: int | None) -> torch.Tensor:
    """Edges (key -> query) of `batch` sequences of `length` tokens flattened one after another:
    all pairs (``window=None``) or the keys within ``window`` positions of the query."""
    if window is None:
        key, query = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        key, query = key.reshape(-1), query.reshape(-1)
    else:
        offsets = torch.arange(-window, window + 1)
        query = torch.arange(length).repeat_interleave(offsets.numel())
        key = query + offsets.repeat(length)
        keep = (key >= 0) & (key < length)
        key, query = key[keep], query[keep]
    base = (torch.arange(batch) * length).repeat_interleave(key.numel())
    return torch.stack([key.repeat(batch) + base, query.repeat(batch) + base])


def build(method: str, channels: int, heads: int) -> tuple[nn.Module, GINAttention]:
    layer = GINAttention(channels, heads, mlp_ratio=2.0)
    if method == "reference":
        return ReferenceLoopGINAttention(channels, heads, mlp_ratio=2.0).load_from(layer), layer
    return layer, layer


def measure(spec: dict) -> dict:
    torch.manual_seed(0)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    method, length, batch, channels = spec["method"], spec["length"], spec["batch"], spec["channels"]
    model, _ = build(method, channels, spec["heads"])
    x = torch.randn(batch, length, channels, requires_grad=True)
    if method.startswith("sparse"):
        edge_index = sequence_graph(length, batch, None if method == "sparse-full" else spec["window"])
        flat = x.view(batch * length, channels)

        def run():
            return model(flat, edge_index)
    else:
        def run():
            return model(x)

    def forward():
        with torch.no_grad():
            run()

    def forward_backward():
        run().sum().backward()

    return measure_forward_backward(forward, forward_backward, spec["repeats"], torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="L = 256 and 1,024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--window", type=int, default=64, help="half-width of the sparse-window graph")
    parser.add_argument("--threads", type=int, default=None, help="torch (and numba) threads per child")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--chart", default="runs/gin_attention_benchmark.png", help="PNG of the ratios ('' for none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    prepare_child_environment(args.threads)
    methods = args.methods.split(",")
    rows, labels = [], []
    series: dict[str, list] = {f"{kind} {m}": [] for m in methods if m != "reference" for kind in ("speed", "memory")}
    for length, batch in QUICK_CASES if args.quick else CASES:
        results = {}
        for method in methods:
            spec = dict(method=method, length=length, batch=batch, channels=args.channels, heads=args.heads,
                        window=args.window, repeats=args.repeats, threads=args.threads)
            results[method] = run_child("benchmarks.gin_attention", spec)
            if "error" in results[method]:
                print(f"L={length} {method}: failed: {results[method]['error']}", file=sys.stderr)
        label = f"L={length:,} B={batch}"
        labels.append(label)
        peer = results.get("reference", {})
        for method in methods:
            res = results[method]
            if "error" in res:
                rows.append([label, method, "failed", "", "", "", "", ""])
                continue
            ok = "fwdbwd_s" in peer
            rows.append([label, method, fmt(res["fwd_s"], 4), fmt(res["fwdbwd_s"], 4), fmt(res["peak_mb"], 0),
                         fmt(res["above_inputs_mb"], 0),
                         fmt(peer["fwdbwd_s"] / res["fwdbwd_s"], 2) if ok else "-",
                         fmt(peer["above_inputs_mb"] / max(res["above_inputs_mb"], 1.0), 2) if ok else "-"])
            if method != "reference":
                series[f"speed {method}"].append(peer["fwdbwd_s"] / res["fwdbwd_s"] if ok else None)
                series[f"memory {method}"].append(
                    peer["above_inputs_mb"] / max(res["above_inputs_mb"], 1.0) if ok else None)
    print_table(
        f"GIN-Attention layer, D={args.channels}, {args.heads} heads, cpu, median of {args.repeats}; "
        f"sparse-window: +-{args.window} tokens; x = reference / method (fwd+bwd time, RSS above inputs): "
        ">1 means faster / lighter than the reference code's approach",
        ["case", "method", "fwd s", "fwd+bwd s", "peak RSS MB", "RSS above inputs MB", "time x", "memory x"],
        rows,
    )
    if args.chart:
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        write_ratio_chart(args.chart, "GIN-Attention vs the reference code's approach (cpu, fwd+bwd)",
                          labels, series, ylabel="x reference (higher is better)")
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
