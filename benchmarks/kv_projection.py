"""The layers' fused K|V projection: ``torch.nn.functional.linear`` against the pooled output
of ``gattn.kernels._workspace.linear`` (the same matmul, written into memory kept from the
previous call).

At N = 50k, H = 4, D = 32 the projection's output is 51 MB, above glibc's 32 MB limit for
reusing freed memory: a plain matmul maps it afresh and page-faults every 4 KB of it on every
call. The two calls alternate in one process (the point is the allocator's state between
calls, which a fresh process would not have), one thread; the table gives medians and the
page faults per call.

    python benchmarks/kv_projection.py
    python benchmarks/kv_projection.py --nodes 169343 --repeats 21
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import fmt, print_table  # noqa: E402


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(nodes: int, channels: int, width: int, repeats: int, backward: bool) -> dict[str, dict[str, float]]:
    """Median seconds and page faults per call of each projection, calls alternated."""
    from gattn.kernels import _workspace

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(nodes, channels, generator=gen)
    weight = torch.randn(width, channels, generator=gen, requires_grad=backward)
    bias = torch.randn(width, generator=gen, requires_grad=backward)
    grad = torch.ones(nodes, width)  # made once: in a layer dK|dV arrives in the kernels' kept buffer
    methods = {"F.linear": torch.nn.functional.linear, "pooled": _workspace.linear}
    samples: dict[str, dict[str, list[float]]] = {name: {"s": [], "faults": []} for name in methods}
    for round_ in range(repeats + 1):  # the first round warms both up
        for name, project in methods.items():
            faults, start = _faults(), time.perf_counter()
            with torch.set_grad_enabled(backward):
                out = project(x, weight, bias)
                if backward:
                    out.backward(grad)
            elapsed, faulted = time.perf_counter() - start, _faults() - faults
            del out
            if round_:
                samples[name]["s"].append(elapsed)
                samples[name]["faults"].append(faulted)
    return {name: {key: statistics.median(values) for key, values in got.items()} for name, got in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--channels", type=int, default=128, help="input features per node")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    width = 2 * args.heads * args.dim
    rows = []
    for backward in (False, True):
        got = measure(args.nodes, args.channels, width, args.repeats, backward)
        plain, pooled = got["F.linear"], got["pooled"]
        rows.append(["forward + backward" if backward else "forward", fmt(plain["s"] * 1e3, 1),
                     fmt(pooled["s"] * 1e3, 1), fmt(plain["s"] / pooled["s"], 2), int(plain["faults"]),
                     int(pooled["faults"])])
    size_mb = args.nodes * width * 4 / 1e6
    print_table(f"K|V projection [{args.nodes:,} x {args.channels}] -> [{args.nodes:,} x {width}] ({size_mb:.0f} MB), "
                f"float32, one thread, medians of {args.repeats} alternated calls",
                ["pass", "F.linear ms", "pooled ms", "x F.linear", "faults F.linear", "faults pooled"], rows)


if __name__ == "__main__":
    main()
