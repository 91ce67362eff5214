"""TransICD's code-wise attention: gattn on ragged notes vs the padded formulation.

The peer is the formulation of the TransICD authors' code (written here, not copied): pad
every note of a batch to the longest, compute the scores ``W2 tanh(W1 H)`` on the
``[B, L_max, D]`` tensor, mask the padding with -inf, softmax over tokens, and a batched
product ``A^T H`` for ``[B, C, D]``; then the per-code outputs. gattn runs
:class:`gattn.nn.CodeWiseAttention` + :class:`gattn.nn.LabelWiseLinear` on the tokens of all
notes (``[R, D]`` + ``ptr``) through :func:`gattn.kernels.segment_attention_pool`: nothing is
padded. Both start from the same ragged encoder output (the transformer encoder is the same
in both and not timed), so the padded method pays for its padding.

Note lengths are synthetic: log-normal with median ``--median`` tokens and ``--sigma``,
clipped to ``[1, --max-len]`` (TransICD truncates at 2,500; ``--max-len 0`` keeps every
length up to 20,000). The defaults are an assumption close to MIMIC-III discharge summaries
after the usual cleaning (about 1,500 tokens on average), not a measurement of them.

Time: median over ``--repeats`` of forward + backward after one warm-up, each method in its
own process; peak memory: the process's peak RSS above the RSS once the inputs were built.

    python benchmarks/code_attention.py                 # 32 notes, 50 codes, D=128, cap 2,500
    python benchmarks/code_attention.py --max-len 0     # untruncated notes
    python benchmarks/code_attention.py --codes 8922    # the full code set
    python benchmarks/code_attention.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import Tensor

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import fmt, median_time, peak_rss_mb, print_table, rss_mb, run_child, write_ratio_chart
from benchmarks.bag_pooling import masked_softmax, pad
from gattn.nn import CodeWiseAttention, LabelWiseLinear

METHODS = ("gattn", "padded")
UNTRUNCATED = 20_000


def note_lengths(notes: int, median: float, sigma: float, max_len: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = np.exp(np.log(median) + sigma * rng.standard_normal(notes))
    return np.clip(np.rint(lengths), 1, max_len or UNTRUNCATED).astype(np.int64)


def make_inputs(lengths: np.ndarray, dim: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    torch.manual_seed(seed)
    ptr = torch.zeros(len(lengths) + 1, dtype=torch.long)
    ptr[1:] = torch.from_numpy(np.cumsum(lengths))
    return torch.randn(int(ptr[-1]), dim, requires_grad=True), ptr


def padded_forward(h: Tensor, ptr: Tensor, attention: CodeWiseAttention, output: LabelWiseLinear) -> Tensor:
    hp, valid = pad(h, ptr)
    scores = attention.scores(hp).transpose(1, 2)  # the MLP runs on the padding too: [B, C, L]
    return output(masked_softmax(scores, valid.unsqueeze(1)) @ hp)


def build(method: str, dim: int, codes: int, h: Tensor, ptr: Tensor):
    torch.manual_seed(1)
    attention, output = CodeWiseAttention(dim, codes), LabelWiseLinear(dim, codes)
    if method == "gattn":
        forward = lambda: output(attention(h, ptr)[0])
    else:
        forward = lambda: padded_forward(h, ptr, attention, output)

    def step() -> None:
        h.grad = None
        forward().square().sum().backward()

    return step, forward


def measure(args: dict) -> dict:
    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    tiny_h, tiny_ptr = make_inputs(np.array([3, 1, 4]), args["dim"])
    build(args["method"], args["dim"], 3, tiny_h, tiny_ptr)[0]()  # load the kernels before measuring memory
    lengths = note_lengths(args["notes"], args["median"], args["sigma"], args["max_len"], args["seed"])
    h, ptr = make_inputs(lengths, args["dim"])
    step, _ = build(args["method"], args["dim"], args["codes"], h, ptr)
    base = rss_mb()
    step()
    peak = max(peak_rss_mb() - base, 0.0)  # tiny inputs: the peak may predate them
    return {"ms": median_time(step, args["repeats"]) * 1e3, "peak_mb": peak}


def check_against_padded() -> None:
    """Both methods give the same logits (small size)."""
    h, ptr = make_inputs(note_lengths(6, 20, 0.8, 60), 16)
    got, want = build("gattn", 16, 5, h, ptr)[1](), build("padded", 16, 5, h, ptr)[1]()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=32, help="notes per batch")
    parser.add_argument("--median", type=float, default=1400)
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument("--max-len", type=int, default=2500, help="truncation; 0 = none")
    parser.add_argument("--codes", type=int, default=50)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 notes, median 200, cap 500, 10 codes, D=32")
    parser.add_argument(
        "--chart", default="runs/benchmarks/code_attention.png", help="PNG of the ratios ('' = none)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    if args.quick:
        args.notes, args.median, args.max_len, args.codes, args.dim, args.repeats = 8, 200, 500, 10, 32, 2
    check_against_padded()
    lengths = note_lengths(args.notes, args.median, args.sigma, args.max_len, args.seed)
    tokens, cells = int(lengths.sum()), len(lengths) * int(lengths.max())
    print(
        f"{args.notes} notes, {tokens:,} tokens, lengths median {int(np.median(lengths))}, max {int(lengths.max()):,}; "
        f"{args.codes} codes, D={args.dim}; padded cells B x L_max = {cells:,} ({cells / tokens:.2f}x the tokens)"
    )
    child = {k: getattr(args, k) for k in ("notes", "median", "sigma", "max_len", "codes", "dim", "repeats",
                                           "threads", "seed")}
    results = {m: run_child("benchmarks.code_attention", {**child, "method": m}) for m in METHODS}
    table = [
        [m, fmt(r.get("ms"), 1), fmt(r.get("peak_mb"), 0), " ".join(r.get("error", []))] for m, r in results.items()
    ]
    ours, peer = results["gattn"], results["padded"]
    if "ms" in ours and "ms" in peer:
        speed, memory = peer["ms"] / ours["ms"], peer["peak_mb"] / max(ours["peak_mb"], 1e-9)
        table.append(["ratio padded/gattn", f"{speed:.2f}x", f"{memory:.2f}x", ""])
        if args.chart:
            os.makedirs(os.path.dirname(args.chart) or ".", exist_ok=True)
            case = f"{args.notes} notes, cap {args.max_len or 'none'}, C={args.codes}"
            print("chart:", write_ratio_chart(args.chart, "Code-wise attention: gattn vs padded", [case],
                                              {"speed vs padded": [speed], "memory vs padded": [memory]}))
    print_table("forward + backward (median), peak RSS above the inputs", ["method", "ms", "peak MB", "note"], table)


if __name__ == "__main__":
    main()
