"""The CPU edge-attention passes timed one by one, against the memory floor of a plain gather
and the matmuls of the projections: what bounds the layer's training step on a CPU.

For each graph and thread count it times (median of ``--repeats`` after two warm-up calls):

* the three numba passes as the layer's autograd calls them through
  :func:`gattn.kernels.edge_attention` (K and V as the two halves of one packed K|V
  projection, a fixed output gradient): the forward (out, log-sum-exp), the backward's rows
  pass (dQ, P, dS) and its columns pass (dK, dV over the CSC);
* the floor: a numba kernel that only sums each edge's packed K|V row into its destination
  row (every pass fetches these rows at random; no arithmetic), prefetched as far ahead as the
  passes prefetch (``gattn.kernels.cpu._AHEAD``) and not prefetched;
* the matmuls of the Q and K|V projections at the layer's shapes (forward into a kept output,
  as the layer's workspace does, and the weight gradients), with their rate, against a
  2048 x 2048 matmul (the rate torch's BLAS reaches on this core).

The last lines add the floors up: three gathers plus the matmuls is the least a training step
of this layer can take with these kernels' memory traffic, whatever their arithmetic.

    python benchmarks/cpu_passes.py --graphs random,arxiv --threads 1,2
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
from numba import njit, prange

from benchmarks._common import fmt, load_average, machine, median_time, print_table, set_threads

#: graph name -> (nodes, edges) of a uniformly random graph
GRAPHS = {"random": (50_000, 1_000_000), "arxiv": (169_343, 1_166_243)}

PASSES = ("_edge_attention_fwd", "_edge_attention_bwd_rows", "_edge_attention_bwd_cols")
PASS_NAMES = ("forward", "backward rows (dQ, P, dS)", "backward columns (dK, dV)")


@functools.cache
def _gather_kernel():
    """The floor kernel, compiled once per process (on first use, after gattn is imported)."""
    from gattn.kernels.cpu import _FASTMATH, _prefetch_row

    @njit(parallel=True, fastmath=_FASTMATH, nogil=True)
    def gather(rowptr, col, kv, out, ahead):
        edges = col.shape[0]
        for i in prange(rowptr.shape[0] - 1):
            acc = out[i]
            acc[:] = 0.0
            for e in range(rowptr[i], rowptr[i + 1]):
                if ahead > 0 and e + ahead < edges:
                    _prefetch_row(kv, col[e + ahead])
                row = kv[col[e]]
                for c in range(row.shape[0]):
                    acc[c] += row[c]

    return gather


class PassTimer:
    """Wall time of each numba pass as the CPU backend calls it (the module's globals wrapped
    while the timer is installed)."""

    def __init__(self) -> None:
        from gattn.kernels import cpu

        self.module, self.times = cpu, {name: [] for name in PASSES}
        self.originals = {name: getattr(cpu, name) for name in PASSES}

    def __enter__(self) -> PassTimer:
        for name, kernel in self.originals.items():
            setattr(self.module, name, self._timed(name, kernel))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, kernel in self.originals.items():
            setattr(self.module, name, kernel)

    def _timed(self, name, kernel):
        def timed(*args):
            start = time.perf_counter()
            result = kernel(*args)
            self.times[name].append(time.perf_counter() - start)
            return result

        return timed


def measure(graph: str, threads: int, heads: int, dim: int, repeats: int) -> list[list[object]]:
    from gattn.kernels import edge_attention, get_csr, split_kv
    from gattn.kernels.cpu import _AHEAD

    set_threads(threads)
    nodes, edges = GRAPHS[graph]
    gen = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    channels = heads * dim
    q = torch.randn(nodes, heads, dim, generator=gen, requires_grad=True)
    kv = torch.randn(nodes, 2 * channels, generator=gen, requires_grad=True)
    grad = torch.randn(nodes, heads, dim, generator=gen)

    def step() -> None:
        key, value = split_kv(kv, heads, dim)
        edge_attention(q, key, value, edge_index, num_nodes=nodes, backend="cpu", reorder=None).backward(grad)
        q.grad = kv.grad = None

    step()
    step()
    with PassTimer() as timer:
        for _ in range(repeats):
            step()
    passes = [statistics.median(timer.times[name]) for name in PASSES]

    csr = get_csr(edge_index, nodes, nodes)
    rowptr, col = csr.rowptr.numpy(), csr.col.numpy()
    rows, out = kv.detach().numpy(), np.empty((nodes, 2 * channels), dtype=np.float32)
    gather = _gather_kernel()
    floors = [median_time(lambda a=ahead: gather(rowptr, col, rows, out, a), repeats) for ahead in (_AHEAD, 0)]

    x = torch.randn(nodes, channels, generator=gen)
    matmuls = []
    for width, name in ((channels, "Q"), (2 * channels, "K|V")):
        weight, bias = torch.randn(width, channels, generator=gen), torch.randn(width, generator=gen)
        kept, grad_out = torch.empty(nodes, width), torch.randn(nodes, width, generator=gen)
        flops = 2 * nodes * channels * width
        forward = median_time(lambda w=weight, b=bias, o=kept: torch.addmm(b, x, w.t(), out=o), repeats)
        backward = median_time(lambda g=grad_out: g.t() @ x, repeats)
        matmuls += [(f"{name} projection forward [{nodes:,} x {channels}] x [{channels} x {width}]", forward, flops),
                    (f"{name} weight gradient [{width} x {nodes:,}] x [{nodes:,} x {channels}]", backward, flops)]
    square = torch.randn(2048, 2048, generator=gen)
    peak = median_time(lambda: square @ square, repeats)

    where = f"{graph} N={nodes:,} E={edges:,}"
    table = []
    for name, seconds in zip(PASS_NAMES, passes):
        table.append([where, threads, name, fmt(seconds * 1e3, 1), fmt(seconds / edges * 1e9, 1), "-",
                      fmt(seconds / floors[0], 2)])
    table.append([where, threads, f"floor: gather of the K|V rows, prefetched {_AHEAD} ahead", fmt(floors[0] * 1e3, 1),
                  fmt(floors[0] / edges * 1e9, 1), "-", "1.00"])
    table.append([where, threads, "the same gather, no prefetch", fmt(floors[1] * 1e3, 1),
                  fmt(floors[1] / edges * 1e9, 1), "-", fmt(floors[1] / floors[0], 2)])
    for name, seconds, flops in matmuls:
        table.append([where, threads, name, fmt(seconds * 1e3, 1), "-", fmt(flops / seconds / 1e9, 0), "-"])
    table.append([where, threads, "2048 x 2048 matmul (this core's BLAS rate)", fmt(peak * 1e3, 1), "-",
                  fmt(2 * 2048**3 / peak / 1e9, 0), "-"])
    projections = sum(seconds for _, seconds, _ in matmuls)
    table.append([where, threads, "three passes, together", fmt(sum(passes) * 1e3, 1), "-", "-",
                  fmt(sum(passes) / (3 * floors[0]), 2)])
    least = 3 * floors[0] + projections
    table.append([where, threads, "floor of a step: three gathers + the matmuls", fmt(least * 1e3, 1), "-", "-", "-"])
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", default="random,arxiv", help=f"comma-separated: {', '.join(GRAPHS)}")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    graphs = args.graphs.split(",")
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown:
        parser.error(f"--graphs: unknown {unknown}; expected names from {sorted(GRAPHS)}")
    rows = []
    for graph in graphs:
        for threads in (int(t) for t in args.threads.split(",")):
            rows += measure(graph, threads, args.heads, args.dim, args.repeats)
    print(f"machine: {machine()}; load average {load_average():.1f}")
    print_table(
        f"CPU edge-attention passes against their floors, H={args.heads}, D={args.dim}, float32, "
        f"median of {args.repeats}",
        ["graph", "threads", "part", "ms", "ns per edge", "GFLOP/s", "x floor"],
        rows,
    )


if __name__ == "__main__":
    main()
