"""The Triton edge-attention passes timed one by one on CUDA, over tile settings, against the
memory-bound floor of a plain gather (what bounds the layer on a GPU, and which tile is best).

For each shape (heads x dim) on a random graph it times, with CUDA events (median of
`--repeats` after warm-up): the forward kernel (online softmax, out + lse), the backward's
rows pass (dQ, P, dS) and its columns pass (dK, dV over the CSC), for every setting of
``TILE_ELEMENTS`` x ``MAX_BLOCK_E`` asked, and ``torch.index_select`` of the K|V rows by
source (each edge's K and V rows read once and written once: the gather every pass does,
at the bandwidth torch reaches). The table gives milliseconds and the effective bandwidth
of the forward (bytes of K and V rows gathered / time).

    python benchmarks/triton_passes.py --shapes 4x32,8x64 --tiles 2048,4096,8192 --block-e 16,32
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch

from benchmarks._common import fmt, print_table


def cuda_time(fn, repeats: int) -> float:
    """Median seconds of `fn` by CUDA events, after two warm-up calls (compilation)."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--shapes", default="4x32,8x64", help="heads x dim, comma-separated")
    parser.add_argument("--tiles", default="2048,4096,8192", help="TILE_ELEMENTS settings")
    parser.add_argument("--block-e", default="16,32", help="MAX_BLOCK_E settings")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("triton_passes.py times CUDA kernels: no CUDA device here")

    from gattn.kernels import _edge, get_csr
    from gattn.kernels import triton_backend as TB

    device, dtype = torch.device("cuda"), getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, args.nodes, (2, args.edges), generator=gen).to(device)
    rows = []
    defaults = (TB.TILE_ELEMENTS, TB.MAX_BLOCK_E)
    for shape in args.shapes.split(","):
        heads, dim = (int(x) for x in shape.split("x"))
        kv = torch.randn(args.nodes, 2 * heads * dim, device=device, dtype=dtype)
        q = torch.randn(args.nodes, heads, dim, device=device, dtype=dtype)
        k, v = kv[:, : heads * dim].view(-1, heads, dim), kv[:, heads * dim :].view(-1, heads, dim)
        csr = get_csr(edge_index, args.nodes, args.nodes)
        csr.csc()
        terms = _edge.EdgeTerms(q, k, v, csr, None, None, None, None, None, dim**-0.5, False, 0.2, 0.0, 0)
        gathered = args.edges * kv.shape[1] * kv.element_size()
        floor = cuda_time(lambda kv=kv: torch.index_select(kv, 0, edge_index[0]), args.repeats)
        rows.append([shape, "index_select K|V (floor)", "-", "-", fmt(floor * 1e3, 3), "-", "-",
                     fmt(2 * gathered / floor / 1e9, 0)])
        for tile, block_e in itertools.product(args.tiles.split(","), args.block_e.split(",")):
            TB.TILE_ELEMENTS, TB.MAX_BLOCK_E = int(tile), int(block_e)
            blocks = TB._edge_blocks(dim, dim, args.edges, args.nodes)
            out, lse = TB.edge_forward(terms)
            dout = torch.randn_like(out)
            inp = TB._edge_inputs(terms)
            probs = torch.rand(args.edges, heads, device=device)
            dscores = torch.randn(args.edges, heads, device=device)
            fwd = cuda_time(lambda t=terms: TB.edge_forward(t), args.repeats)
            bwd = cuda_time(lambda t=terms, o=out, s=lse, d=dout: TB.edge_backward(t, o, s, d, None, None, True),
                            args.repeats)
            cols = cuda_time(lambda i=inp, d=dout, p=probs, s=dscores: TB._edge_cols_pass(i, d, p, s), args.repeats)
            rows.append([shape, "triton", f"{tile}/{block_e}",
                         f"R{blocks['BLOCK_R']} E{blocks['BLOCK_E']} w{blocks['num_warps']}",
                         fmt(fwd * 1e3, 3), fmt((bwd - cols) * 1e3, 3), fmt(cols * 1e3, 3),
                         fmt(gathered / fwd / 1e9, 0)])
            print("  ".join(rows[-1]), flush=True)
        TB.TILE_ELEMENTS, TB.MAX_BLOCK_E = defaults
    print_table(
        f"Triton edge-attention passes, random N={args.nodes:,} E={args.edges:,}, {args.dtype}, "
        f"{torch.cuda.get_device_name()}, median of {args.repeats} (CUDA events); GB/s = K and V bytes "
        "gathered per edge / forward time (the floor row: read + written by index_select)",
        ["H x D", "kernel", "tile/max E", "blocks", "forward ms", "bwd rows ms", "bwd cols ms", "fwd GB/s"], rows)


if __name__ == "__main__":
    main()
