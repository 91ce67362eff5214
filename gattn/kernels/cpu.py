"""Fast CPU backend: numba kernels over CSR rows, parallel across rows.

Edge attention takes each destination's incoming edges in three steps: the scores of all its
edges and heads (with each head's maximum), then all of the row's exponentials in one
vectorised loop, then the weighted sum of the values, whose K|V rows are still in cache from
the first step. Only a row's [degree, H] scores are kept (per thread), so nothing of size
E x H x D is ever stored. The backward pass recomputes the
scores from the saved per-row log-sum-exp: a CSR pass (per destination) gives dQ, the
edge-term gradients and the per-edge P and dS [E, 2, H] (in CSR order, written in
sequence); a CSC pass (per source) then accumulates dK and dV without atomics, so results
are deterministic.

Memory access: every pass loops over an edge's heads innermost (``for e: for h:``), and the
keys and values are read from one [N_src, H*D + H*Dv] array whose row j holds k_j then v_j,
so an edge costs one contiguous random fetch (1 KB at H=4, D=32) rather than a separate
128-byte piece per head from two tensors. Layers that project K and V with one matmul
(:func:`gattn.kernels.split_kv`) hand that array over without a copy; separate k and v are
packed per call (O(N) copy). The next edges' rows are prefetched eight edges ahead
(``_prefetch_row``), so their cache misses overlap with the current edge's arithmetic.

Precision: everything runs in the operands' precision (float32 for float32 inputs, as torch's
own kernels do; vectorised): the per-edge dot products and weighted sums, and the softmax's
maximum, sum and log-sum-exp. float32 exponentials use a Cephes-style polynomial
(`_exp_into`, relative error about 1e-7, the same order as libm's float32 exp); float64
inputs are computed in float64 with libm's exp throughout.

Inputs in fp16/bf16 are computed in float32 and cast back. With ``kv_bf16`` (the opt-in
``kv_dtype=torch.bfloat16`` of :func:`gattn.kernels.edge_attention`) the packed K|V array is
stored in bf16 (half the bytes fetched per edge) and each fetched row is widened to float32:
all arithmetic and accumulation stay in float32 (float64 for float64 inputs). The kernels are compiled on first
use and cached on disk across processes (see `_numba_setup.py`: where, and the one-time
notice while compiling).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
import torch
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.cgutils import ir  # llvmlite's IR module, as numba's code generator exposes it
from numba.extending import intrinsic, overload
from torch import Tensor

from . import _numba_setup, _workspace
from ._compose import attention_pool
from ._dropout import split_seed
from ._dropout import threshold as dropout_threshold
from ._edge import EdgeGrads, EdgeTerms, guard_double_backward, kv_halves, kv_views
from ._numba_setup import threads_for as _threads_for

NAME = "cpu"
EDGE_FEATURES = frozenset({"additive", "dropout", "edge_bias", "edge_scale", "edge_key", "edge_value"})
_numba_setup.install()  # before the kernels below are decorated with cache=True
_numba_setup.launch_pool()  # now, so that no later kernel call changes torch's thread count
_FASTMATH = {"nsz", "contract", "reassoc", "arcp"}  # no nnan/ninf: -inf scores are meaningful
_jit = dict(parallel=True, cache=True, fastmath=_FASTMATH, nogil=True)


def unsupported(like: Tensor) -> str | None:
    if like.device.type != "cpu":
        return f"the cpu backend takes CPU tensors, got device {like.device}"
    return None


# --------------------------------------------------------------------------------------
# numba kernels: edge attention
#
# One score function serves both forms (see `_edge.py`); `flags` says which optional terms
# are present (bit set) and which form is used, so one compiled kernel serves every case.
# Per-edge tensors are indexed by the caller's edge id `pe = perm[e]` of sorted edge `e`.
# --------------------------------------------------------------------------------------

_BIAS, _EKEY, _EVALUE, _ADDITIVE, _DROPOUT, _DATTN = 1, 2, 4, 8, 16, 32


@njit(inline="always")
def _mul32(x, constant):
    """(x * constant) mod 2^32 in int64 (see `_dropout.py`)."""
    return (x * (constant & 0xFFFF) + (((x * (constant >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF


@njit(inline="always")
def _fmix32(x):
    x ^= x >> 16
    x = _mul32(x, 0x85EBCA6B)
    x ^= x >> 13
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


@njit(inline="always")
def _drop_factor(pe, h, heads, flags, drop, inv_keep):
    """1/(1-p) if caller edge `pe`, head `h` is kept by the dropout mask, else 0 (1 without dropout)."""
    if not flags & _DROPOUT:
        return 1.0
    counter = pe * heads + h
    x = _fmix32((counter & 0xFFFFFFFF) ^ drop[0])
    x = _fmix32(x ^ ((counter >> 32) & 0xFFFFFFFF) ^ drop[1])
    return inv_keep if x >= drop[2] else 0.0


@intrinsic
def _prefetch_line(typingctx, arr, j, offset):
    """Hint the CPU to fetch the cache line at byte ``offset`` of row ``j`` of ``arr`` into
    every cache level (no fault)."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        stride = builder.extract_value(ary.strides, 0)
        start = builder.add(builder.mul(args[1], stride), args[2])
        i8p = ir.IntType(8).as_pointer()
        address = builder.gep(builder.bitcast(ary.data, i8p), [start])
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(prefetch, [address, i32(0), i32(3), i32(1)])  # read, every level, data
        return context.get_dummy_value()
    return types.void(arr, types.intp, types.intp), codegen


@njit(inline="always")
def _prefetch_row(arr, j):
    """Prefetch every cache line of row ``j`` of a C-contiguous array.

    The kernels' per-edge rows are random reads (an edge's K|V row, a destination's Q and dO
    rows); hinting them a few edges ahead lets their cache misses overlap with the arithmetic
    of the edges before, instead of stalling on each in turn (measured 3x on the forward pass
    of a 1M-edge random graph)."""
    for offset in range(0, arr.strides[0], 64):
        _prefetch_line(arr, j, offset)


# Edges ahead to prefetch. With 1 KB K|V rows (H=4, D=32) on a 1M-edge random graph, one thread:
# 2 ahead 86/104/82 ms (forward, backward rows, backward columns), 4 ahead 73/85/59, 8 ahead
# 63/72/48, 12-24 alike; 4 KB rows (H=8, D=64) alike from 2 to 16 (compute-bound there).
_AHEAD = 8


def _kv_row(kv, j, scratch):
    """Row j of the packed K|V array, as floats: the row itself, or, for bf16 storage
    (``kv`` holds bf16 bit patterns as uint16), the row widened into ``scratch`` (float32)."""


@overload(_kv_row, inline="always")
def _kv_row_impl(kv, j, scratch):
    if kv.dtype == types.uint16:
        def widen(kv, j, scratch):
            bits = scratch.view(np.uint32)
            for c in range(kv.shape[1]):
                bits[c] = np.uint32(kv[j, c]) << 16  # bf16 is the top half of a float32
            return scratch
        return widen
    return lambda kv, j, scratch: kv[j]


@njit(inline="always")
def _edge_kv_row(kv, col, e, scratch):
    """Sorted edge e's K|V row (`_kv_row`), after prefetching the row of the edge `_AHEAD`
    further on: the per-edge fetch of the forward, the backward rows pass and `_edge_probs`.
    (An earlier forward prefetched into L2 only, 8-15 % faster two edges ahead; eight ahead
    the full prefetch is 4-7 % faster.)"""
    if e + _AHEAD < col.shape[0]:
        _prefetch_row(kv, col[e + _AHEAD])
    return _kv_row(kv, col[e], scratch)


def _zero(like):
    """0 in ``like``'s dtype: the per-edge dot products and updates run in the operands' own
    precision (float32 for float32 inputs, vectorised), not widened to float64 per element."""


@overload(_zero, inline="always")
def _zero_impl(like):
    kind = like.dtype
    return lambda like: kind(0)


def _cast(like, x):
    """``x`` in ``like``'s dtype (a per-edge weight, before a loop over the channels)."""


@overload(_cast, inline="always")
def _cast_impl(like, x):
    kind = like.dtype
    return lambda like, x: kind(x)


@njit(inline="always", fastmath=_FASTMATH)
def _additive_input(q, kh, ekey, i, pe, h, d, has_ekey):
    """q_id + k_jd (+ edge_key_ed): what the additive score's LeakyReLU sees (`kh`: k_j of head h)."""
    z = q[i, h, d] + kh[d]
    if has_ekey:
        z += ekey[pe, h, d]
    return z


@njit(inline="always", fastmath=_FASTMATH)
def _score(q, kvrow, ekey, escale, att, bias, i, pe, h, scale, slope, flags, scale_mode):
    """The score of edge (j -> i), head h (`kvrow`: source j's K|V row): dot form or additive form."""
    dim = q.shape[2]
    # a slice per head: indices from range() are known non-negative (no wraparound checks),
    # so the loops over d vectorise
    kh = kvrow[h * dim:(h + 1) * dim]
    has_ekey = flags & _EKEY
    dot = _zero(q)
    if flags & _ADDITIVE:
        slope_ = _cast(q, slope)
        for d in range(dim):
            z = _additive_input(q, kh, ekey, i, pe, h, d, has_ekey)
            if z <= 0.0:
                z = z * slope_
            dot += att[h, d] * z
        s = float(dot)
    else:
        if has_ekey or scale_mode == 2:
            for d in range(dim):
                u = kh[d]
                if has_ekey:
                    u += ekey[pe, h, d]
                if scale_mode == 2:
                    u *= escale[pe, h, d]
                dot += q[i, h, d] * u
        else:  # the plain dot product: a branch-free loop that vectorises
            qh = q[i, h]
            for d in range(dim):
                dot += qh[d] * kh[d]
        s = float(dot)
        if scale_mode == 1:
            s *= escale[pe, h, 0]
        s *= scale
    if flags & _BIAS:
        s += bias[pe, h]
    return s


_EXP_FLOOR = -87.0  # below this a float32 exp is under the smallest normal float32: taken as 0


def _exp_into(x, out, n, bits):
    """``out[:n] = exp(x[:n])``, -inf giving 0 (``bits``: int32 scratch of the same size).

    For float32 a branch-free Cephes-style exponential (range reduction by ln 2 in two parts,
    a degree-6 polynomial, then 2^k built in the exponent bits), which vectorises where
    ``math.exp`` is one libm call per element: the kernels' softmax computes all of a row's
    exponentials in one such loop. Relative error about 1e-7, as float32 allows. float64
    keeps libm's exp."""


@overload(_exp_into, inline="always")
def _exp_into_impl(x, out, n, bits):
    if x.dtype != types.float32:
        def exact(x, out, n, bits):
            for k in range(n):
                out[k] = math.exp(x[k])
        return exact
    f32 = np.float32

    def fast(x, out, n, bits):
        for k in range(n):
            clamped = min(max(x[k], f32(_EXP_FLOOR)), f32(88.0))
            whole = f32(math.floor(clamped * f32(1.4426950408889634) + f32(0.5)))  # math.floor gives an int
            r = clamped - whole * f32(0.693359375)  # ln 2 = 0.693359375 - 2.12194440e-4 (+ 1e-12)
            r = r - whole * f32(-2.12194440e-4)
            poly = f32(1.9875691500e-4)
            poly = poly * r + f32(1.3981999507e-3)
            poly = poly * r + f32(8.3334519073e-3)
            poly = poly * r + f32(4.1665795894e-2)
            poly = poly * r + f32(1.6666665459e-1)
            poly = poly * r + f32(5.0000001201e-1)
            out[k] = (poly * r * r + r + f32(1.0)) * f32(x[k] >= f32(_EXP_FLOOR))  # 0 under the floor
            bits[k] = (np.int32(whole) + np.int32(127)) << 23
        powers = bits.view(np.float32)
        for k in range(n):
            out[k] *= powers[k]
    return fast


@njit(inline="always")
def _row_buffers(bounds, chunk, rowptr, heads, like):
    """Per-chunk scratch for a row's per-edge, per-head values, sized by the chunk's longest
    row (the forward keeps them head-major, [head, edge]; the backward edge-major)."""
    longest = 0
    for i in range(bounds[chunk], bounds[chunk + 1]):
        longest = max(longest, rowptr[i + 1] - rowptr[i])
    size = max(1, longest * heads)
    return (np.empty(size, dtype=like.dtype), np.empty(size, dtype=like.dtype), np.empty(size, dtype=like.dtype),
            np.empty(size, dtype=np.int32))


@njit(inline="always", fastmath=_FASTMATH)
def _row_exponentials(scores, probs, bits, degree, heads, row_max, row_sum):
    """The middle step of a row's softmax over its ``degree`` edges, the scores head-major
    (``scores[h * degree + e]``): each head's maximum, ``probs = exp(scores - maximum)`` for
    the whole row in one vectorised loop, and each head's sum.

    Head-major, every step is a contiguous loop; edge-major ([edge, head]) the maximum and
    the sums index the head by ``k % heads``, which does not vectorise (measured: the step
    took 14 ns an edge against 4 ns head-major, H=4, about a third of the forward's
    arithmetic)."""
    for h in range(heads):
        segment = scores[h * degree:(h + 1) * degree]
        top = segment[0] if degree > 0 else -np.inf
        for k in range(degree):
            top = max(top, segment[k])
        # no finite score: every exponential below is exp(-inf) = 0
        row_max[h] = top if top != -np.inf else 0.0
        top = row_max[h]
        for k in range(degree):
            segment[k] -= top
    _exp_into(scores, probs, degree * heads, bits)
    for h in range(heads):
        segment = probs[h * degree:(h + 1) * degree]
        total = _zero(probs)
        for k in range(degree):
            total += segment[k]
        row_sum[h] = total


@njit(inline="always", fastmath=_FASTMATH)
def _normalise_row(i, acc, lse, row_max, row_sum):
    """The last step: divide row i's weighted sums by each head's sum, and its log-sum-exp
    (-inf, with zeros out, where a head had no finite score)."""
    for h in range(acc.shape[0]):
        if row_sum[h] > 0.0:
            inv = _cast(acc, 1.0 / row_sum[h])
            for d in range(acc.shape[1]):
                acc[h, d] *= inv
            lse[i, h] = row_max[h] + math.log(row_sum[h])
        else:
            lse[i, h] = -np.inf


@njit(inline="always", fastmath=_FASTMATH)
def _fwd_row(i, node, rowptr, col, perm, q, kv, ekey, evalue, escale, att, bias, scale, slope, flags,
             scale_mode, drop, inv_keep, out, lse, row_max, row_sum, scores, probs, bits, scratch):
    """Softmax over CSR row i's incoming edges (destination `node`), all heads per edge:
    out[node] and lse[node].

    Three steps: every edge's scores (and each head's maximum), then all of the row's
    exponentials in one vectorised loop, then the weighted sum of the values. The K|V rows
    of the row's edges are fetched in the first step and are still in cache for the third."""
    heads, dv = out.shape[1], out.shape[2]
    vofs = heads * q.shape[2]
    start, stop = rowptr[i], rowptr[i + 1]
    degree = stop - start
    acc = out[node]
    acc[:] = 0.0
    for e in range(start, stop):
        kvrow = _edge_kv_row(kv, col, e, scratch)
        for h in range(heads):
            scores[h * degree + e - start] = _cast(
                scores, _score(q, kvrow, ekey, escale, att, bias, node, perm[e], h, scale, slope, flags, scale_mode))
    _row_exponentials(scores, probs, bits, degree, heads, row_max, row_sum)
    for e in range(start, stop):
        pe = perm[e]
        kvrow = _kv_row(kv, col[e], scratch)
        for h in range(heads):
            w = _cast(out, probs[h * degree + e - start] * _drop_factor(pe, h, heads, flags, drop, inv_keep))
            if w != 0.0:
                vh = kvrow[vofs + h * dv:vofs + (h + 1) * dv]
                acc_h = acc[h]
                if flags & _EVALUE:
                    for d in range(dv):
                        acc_h[d] += w * (vh[d] + evalue[pe, h, d])
                else:
                    for d in range(dv):
                        acc_h[d] += w * vh[d]
    _normalise_row(node, acc, lse, row_max, row_sum)


@njit(inline="always", fastmath=_FASTMATH)
def _fwd_row_dot(i, node, rowptr, col, q, kv, scale, out, lse, row_max, row_sum, scores, probs, bits, scratch):
    """`_fwd_row` for the plain dot form (no per-edge terms, no dropout): the common case."""
    heads, dim, dv = q.shape[1], q.shape[2], out.shape[2]
    vofs = heads * dim
    start, stop = rowptr[i], rowptr[i + 1]
    degree = stop - start
    scale_ = _cast(q, scale)
    qi, acc = q[node], out[node]
    acc[:] = 0.0
    for e in range(start, stop):
        kvrow = _edge_kv_row(kv, col, e, scratch)
        for h in range(heads):
            qh, kh = qi[h], kvrow[h * dim:(h + 1) * dim]
            dot = _zero(q)
            for d in range(dim):
                dot += qh[d] * kh[d]
            scores[h * degree + e - start] = dot * scale_
    _row_exponentials(scores, probs, bits, degree, heads, row_max, row_sum)
    for e in range(start, stop):
        kvrow = _kv_row(kv, col[e], scratch)
        for h in range(heads):
            w = probs[h * degree + e - start]
            vh, acc_h = kvrow[vofs + h * dv:vofs + (h + 1) * dv], acc[h]
            for d in range(dv):
                acc_h[d] += w * vh[d]
    _normalise_row(node, acc, lse, row_max, row_sum)


@njit(inline="always")
def _node(nodes, i):
    """The node of CSR row (or CSC column) i: ``nodes[i]`` for a graph stored in a locality
    order (:class:`gattn.kernels.csr.ScheduledCSR`), else i itself (``nodes`` empty)."""
    return nodes[i] if nodes.shape[0] > 0 else i


@njit(inline="always")
def _prefetch_next_node(nodes, i, stop, first, second):
    """In a locality order the rows of the next destination (or source) are not the next rows
    in memory, so the hardware does not stream them: prefetch the two arrays' rows of node
    ``nodes[i + 1]`` while row i is processed."""
    if nodes.shape[0] > 0 and i + 1 < stop:
        following = nodes[i + 1]
        _prefetch_row(first, following)
        _prefetch_row(second, following)


@njit(**_jit)
def _edge_attention_fwd(bounds, rowptr, col, perm, q, kv, ekey, evalue, escale, att, bias, scale, slope,
                        flags, scale_mode, drop, inv_keep, out, lse, nodes):
    for chunk in prange(bounds.shape[0] - 1):
        row_max = np.empty(out.shape[1], dtype=q.dtype)
        row_sum = np.empty(out.shape[1], dtype=q.dtype)
        scratch = np.empty(kv.shape[1], dtype=np.float32)
        scores, probs, _, bits = _row_buffers(bounds, chunk, rowptr, out.shape[1], q)
        for i in range(bounds[chunk], bounds[chunk + 1]):
            node = _node(nodes, i)
            _prefetch_next_node(nodes, i, bounds[chunk + 1], q, out)
            if flags == 0 and scale_mode == 0:
                _fwd_row_dot(i, node, rowptr, col, q, kv, scale, out, lse, row_max, row_sum, scores, probs, bits,
                             scratch)
            else:
                _fwd_row(i, node, rowptr, col, perm, q, kv, ekey, evalue, escale, att, bias, scale, slope, flags,
                         scale_mode, drop, inv_keep, out, lse, row_max, row_sum, scores, probs, bits, scratch)


@njit(**_jit)
def _edge_probs(bounds, rowptr, col, perm, q, kv, ekey, escale, att, bias, scale, slope, flags, scale_mode,
                lse, probs, nodes):
    """Attention [E, H] (caller's order, before dropout) from the saved log-sum-exp."""
    for chunk in prange(bounds.shape[0] - 1):
        scratch = np.empty(kv.shape[1], dtype=np.float32)
        for i in range(bounds[chunk], bounds[chunk + 1]):
            node = _node(nodes, i)
            for e in range(rowptr[i], rowptr[i + 1]):
                pe = perm[e]
                kvrow = _edge_kv_row(kv, col, e, scratch)
                for h in range(lse.shape[1]):
                    if lse[node, h] == -np.inf:
                        probs[pe, h] = 0.0
                    else:
                        s = _score(q, kvrow, ekey, escale, att, bias, node, pe, h, scale, slope, flags, scale_mode)
                        probs[pe, h] = math.exp(s - lse[node, h])


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_row(node, edges, col, perm, q, kv, ekey, evalue, escale, att, bias, scale, slope, flags,
             scale_mode, drop, inv_keep, out, lse, dout, dattn, delta_extra,
             dq, wds, descale, dekey, devalue, datt_rows, delta, scratch):
    """The CSR row of destination `node` (edge positions ``edges`` = (start, stop); one
    argument, as numba inlines functions of at most 30), all heads per edge: dQ, the per-edge
    P*mask and dS (``wds[e]``, in CSR order) and the per-edge input gradients."""
    heads, dim = q.shape[1], q.shape[2]
    dvdim = dout.shape[2]
    vofs = heads * dim
    additive = flags & _ADDITIVE
    has_ekey = flags & _EKEY
    qi, douti, dqi = q[node], dout[node], dq[node]
    for h in range(heads):
        for d in range(dim):
            dqi[h, d] = 0.0
            if additive:
                datt_rows[node, h, d] = 0.0
        total = 0.0
        for d in range(dvdim):
            total += douti[h, d] * out[node, h, d]
        if flags & _DATTN:
            total += delta_extra[node, h]
        delta[h] = total
    for e in range(edges[0], edges[1]):
        pe = perm[e]
        kvrow = _edge_kv_row(kv, col, e, scratch)
        for h in range(heads):
            if lse[node, h] == -np.inf:
                wds[e, 0, h] = 0.0
                wds[e, 1, h] = 0.0
                continue
            s = _score(q, kvrow, ekey, escale, att, bias, node, pe, h, scale, slope, flags, scale_mode)
            p = math.exp(s - lse[node, h])
            factor = _drop_factor(pe, h, heads, flags, drop, inv_keep)
            vh = kvrow[vofs + h * dvdim:vofs + (h + 1) * dvdim]
            dpv = _zero(dout)
            if flags & _EVALUE:
                for d in range(dvdim):
                    dpv += douti[h, d] * (vh[d] + evalue[pe, h, d])
            else:
                for d in range(dvdim):
                    dpv += douti[h, d] * vh[d]
            dp = factor * float(dpv)
            if flags & _DATTN:
                dp += dattn[pe, h]
            ds = p * (dp - delta[h])
            w = p * factor
            wds[e, 0, h] = w
            wds[e, 1, h] = ds
            if flags & _EVALUE:
                w_ = _cast(dout, w)
                for d in range(dvdim):
                    devalue[pe, h, d] = w_ * douti[h, d]
            kh = kvrow[h * dim:(h + 1) * dim]
            if additive:
                ds_, slope_ = _cast(q, ds), _cast(q, slope)
                for d in range(dim):
                    z = _additive_input(q, kh, ekey, node, pe, h, d, has_ekey)
                    gz = ds_ * att[h, d]
                    if z <= 0.0:  # torch's LeakyReLU gradient takes the slope at 0
                        z = z * slope_
                        gz = gz * slope_
                    dqi[h, d] += gz
                    if has_ekey:
                        dekey[pe, h, d] = gz
                    datt_rows[node, h, d] += ds_ * z
                continue
            g = _cast(q, ds * scale)
            if scale_mode == 2:
                for d in range(dim):
                    u = kh[d]
                    if has_ekey:
                        u += ekey[pe, h, d]
                    es = escale[pe, h, d]
                    dqi[h, d] += g * u * es
                    descale[pe, h, d] = g * qi[h, d] * u
                    if has_ekey:
                        dekey[pe, h, d] = g * qi[h, d] * es
            else:
                if scale_mode == 1:
                    g_es = g * escale[pe, h, 0]
                else:
                    g_es = g
                qu = _zero(q)
                if has_ekey:
                    for d in range(dim):
                        u = kh[d] + ekey[pe, h, d]
                        dqi[h, d] += g_es * u
                        qu += qi[h, d] * u
                        dekey[pe, h, d] = g_es * qi[h, d]
                else:
                    for d in range(dim):
                        dqi[h, d] += g_es * kh[d]
                    if scale_mode == 1:
                        for d in range(dim):
                            qu += qi[h, d] * kh[d]
                if scale_mode == 1:
                    descale[pe, h, 0] = g * qu


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_row_dot(i, node, rowptr, col, q, kv, scale, out, lse, dout, dq, wds, delta, scores, probs, dps, bits,
                 scratch):
    """`_bwd_row` for the plain dot form (no per-edge terms, no dropout): every edge's scores
    and dO.v first, the row's exponentials in one vectorised loop, then dS, wds and dQ."""
    heads, dim, dv = q.shape[1], q.shape[2], dout.shape[2]
    vofs = heads * dim
    start, stop = rowptr[i], rowptr[i + 1]
    count = (stop - start) * heads
    scale_ = _cast(q, scale)
    qi, douti, dqi = q[node], dout[node], dq[node]
    dqi[:] = 0.0
    for h in range(heads):
        total = _zero(dout)
        for d in range(dv):
            total += douti[h, d] * out[node, h, d]
        delta[h] = total
    for e in range(start, stop):
        kvrow = _edge_kv_row(kv, col, e, scratch)
        base = (e - start) * heads
        for h in range(heads):
            qh, kh = qi[h], kvrow[h * dim:(h + 1) * dim]
            dh, vh = douti[h], kvrow[vofs + h * dv:vofs + (h + 1) * dv]
            dot = _zero(q)
            for d in range(dim):
                dot += qh[d] * kh[d]
            dpv = _zero(dout)
            for d in range(dv):
                dpv += dh[d] * vh[d]
            top = lse[node, h]
            # a row whose scores were all -inf has no probability mass: exp(-inf) = 0 below
            scores[base + h] = dot * scale_ - top if top != -np.inf else -np.inf
            dps[base + h] = dpv - delta[h]
    _exp_into(scores, probs, count, bits)
    for e in range(start, stop):
        kvrow = _kv_row(kv, col[e], scratch)
        base = (e - start) * heads
        we = wds[e]
        for h in range(heads):
            p = probs[base + h]
            ds = p * dps[base + h]
            we[0, h] = p
            we[1, h] = ds
            g = _cast(q, ds) * scale_
            dqh, kh = dqi[h], kvrow[h * dim:(h + 1) * dim]
            for d in range(dim):
                dqh[d] += g * kh[d]


@njit(**_jit)
def _edge_attention_bwd_rows(bounds, rowptr, col, perm, q, kv, ekey, evalue, escale, att, bias, scale, slope,
                             flags, scale_mode, drop, inv_keep, out, lse, dout, dattn, delta_extra,
                             dq, wds, descale, dekey, devalue, datt_rows, nodes):
    for chunk in prange(bounds.shape[0] - 1):
        delta = np.empty(q.shape[1], dtype=np.float64)
        scratch = np.empty(kv.shape[1], dtype=np.float32)
        dot_form = flags == 0 and scale_mode == 0
        if dot_form:
            scores, probs, dps, bits = _row_buffers(bounds, chunk, rowptr, q.shape[1], q)
            delta_ = np.empty(q.shape[1], dtype=q.dtype)
            for i in range(bounds[chunk], bounds[chunk + 1]):
                node = _node(nodes, i)
                _prefetch_next_node(nodes, i, bounds[chunk + 1], q, dout)
                _prefetch_next_node(nodes, i, bounds[chunk + 1], out, dq)
                _bwd_row_dot(i, node, rowptr, col, q, kv, scale, out, lse, dout, dq, wds, delta_, scores, probs, dps,
                             bits, scratch)
            continue
        for i in range(bounds[chunk], bounds[chunk + 1]):
            node = _node(nodes, i)
            _prefetch_next_node(nodes, i, bounds[chunk + 1], q, dout)
            _prefetch_next_node(nodes, i, bounds[chunk + 1], out, dq)
            edges = (rowptr[i], rowptr[i + 1])
            _bwd_row(node, edges, col, perm, q, kv, ekey, evalue, escale, att, bias, scale, slope, flags,
                     scale_mode, drop, inv_keep, out, lse, dout, dattn, delta_extra,
                     dq, wds, descale, dekey, devalue, datt_rows, delta, scratch)


@njit(inline="always")
def _prefetch_col_edge(t, row, csc_pos, q, dout, wds):
    """The columns pass's prefetch for the CSC edge `_AHEAD` after t: its destination's Q and dO
    rows and its P|dS row."""
    if t + _AHEAD < row.shape[0]:
        ahead = row[t + _AHEAD]
        _prefetch_row(q, ahead)
        _prefetch_row(dout, ahead)
        _prefetch_row(wds, csc_pos[t + _AHEAD])


@njit(inline="always")
def _zeroed_dkv_row(dkv, j, q, dout):
    """Row j of ``dkv`` [N_src, H*D + H*Dv] as zeroed dK_j [H, D] and dV_j [H, Dv] views."""
    heads, dim = q.shape[1], q.shape[2]
    dkj = dkv[j, :heads * dim].reshape(heads, dim)
    dvj = dkv[j, heads * dim:].reshape(heads, dout.shape[2])
    dkj[:] = 0.0
    dvj[:] = 0.0
    return dkj, dvj


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_col_dot(j, node, colptr, row, csc_pos, q, scale, dout, wds, dkv):
    """`_bwd_col` for the dot form without per-edge scale (the common case): dK and dV of
    `node` depend on the edge only through its P*mask and dS, so the loop is branch-free."""
    heads = q.shape[1]
    dkj, dvj = _zeroed_dkv_row(dkv, node, q, dout)
    scale_ = _cast(dkv, scale)
    for t in range(colptr[j], colptr[j + 1]):
        _prefetch_col_edge(t, row, csc_pos, q, dout, wds)
        i = row[t]
        qi, douti = q[i], dout[i]
        wrow = wds[csc_pos[t]]
        for h in range(heads):
            w = _cast(dkv, wrow[0, h])
            g = _cast(dkv, wrow[1, h]) * scale_
            dvh, douth, dkh, qh = dvj[h], douti[h], dkj[h], qi[h]
            for d in range(dvh.shape[0]):
                dvh[d] += w * douth[d]
            for d in range(dkh.shape[0]):
                dkh[d] += g * qh[d]


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_col(j, node, colptr, row, csc_pos, csc_edge, q, kv, ekey, escale, att, scale, slope, flags, scale_mode,
             dout, wds, dkv, scratch):
    """CSC column j (source `node`): dK and dV (row `node` of ``dkv``, laid out as the K|V
    array) from the P*mask and dS of its outgoing edges (``wds`` in CSR order, reached
    through ``csc_pos``; per-edge inputs through the caller's id ``csc_edge``)."""
    heads, dim = q.shape[1], q.shape[2]
    dvdim = dout.shape[2]
    additive = flags & _ADDITIVE
    has_ekey = flags & _EKEY
    dkj, dvj = _zeroed_dkv_row(dkv, node, q, dout)
    kvrow = _kv_row(kv, node, scratch)  # the additive form's gradient reads k_j
    for t in range(colptr[j], colptr[j + 1]):
        _prefetch_col_edge(t, row, csc_pos, q, dout, wds)
        e = csc_pos[t]
        pe = csc_edge[t]
        i = row[t]
        qi, douti = q[i], dout[i]
        wrow = wds[e]
        for h in range(heads):
            w = _cast(dkv, wrow[0, h])
            ds = wrow[1, h]
            dvh, douth = dvj[h], douti[h]
            for d in range(dvdim):
                dvh[d] += w * douth[d]
            dkh = dkj[h]
            if additive:
                kh = kvrow[h * dim:(h + 1) * dim]
                slope_ = _cast(dkv, slope)
                for d in range(dim):
                    gz = ds * att[h, d]
                    dkh[d] += gz * slope_ if _additive_input(q, kh, ekey, i, pe, h, d, has_ekey) <= 0.0 else gz
            elif scale_mode == 2:
                g = _cast(dkv, ds * scale)
                for d in range(dim):
                    dkh[d] += g * qi[h, d] * escale[pe, h, d]
            else:
                g = _cast(dkv, ds * scale)
                if scale_mode == 1:
                    g *= escale[pe, h, 0]
                qh = qi[h]
                for d in range(dim):
                    dkh[d] += g * qh[d]


@njit(**_jit)
def _edge_attention_bwd_cols(bounds, colptr, row, csc_pos, csc_edge, q, kv, ekey, escale, att, scale, slope, flags,
                             scale_mode, dout, wds, dkv, nodes):
    """Walks outgoing edges per source, so dK and dV need no atomics (deterministic). They are
    written side by side into ``dkv`` [N_src, H*D + H*Dv], the layout of the K|V array, so
    that the gradient of a packed K|V projection needs no concatenation."""
    for chunk in prange(bounds.shape[0] - 1):
        scratch = np.empty(kv.shape[1], dtype=np.float32)
        for j in range(bounds[chunk], bounds[chunk + 1]):
            node = _node(nodes, j)
            if not flags & _ADDITIVE and scale_mode == 0:
                _prefetch_next_node(nodes, j, bounds[chunk + 1], dkv, dkv)  # (K|V itself is not read here)
                _bwd_col_dot(j, node, colptr, row, csc_pos, q, scale, dout, wds, dkv)
                continue
            _prefetch_next_node(nodes, j, bounds[chunk + 1], dkv, kv)
            _bwd_col(j, node, colptr, row, csc_pos, csc_edge, q, kv, ekey, escale, att, scale, slope, flags,
                     scale_mode, dout, wds, dkv, scratch)


# --------------------------------------------------------------------------------------
# numba kernels: segment softmax and pooling
# --------------------------------------------------------------------------------------

@njit(**_jit)
def _segment_softmax_fwd(ptr, scores, out):
    segments = ptr.shape[0] - 1
    heads = scores.shape[1]
    for s in prange(segments):
        start, end = ptr[s], ptr[s + 1]
        for h in range(heads):
            top = -np.inf
            for r in range(start, end):
                if scores[r, h] > top:
                    top = scores[r, h]
            if top == -np.inf:
                for r in range(start, end):
                    out[r, h] = 0.0
                continue
            total = 0.0
            for r in range(start, end):
                p = math.exp(scores[r, h] - top)
                out[r, h] = p
                total += p
            inv = 1.0 / total
            for r in range(start, end):
                out[r, h] *= inv


@njit(**_jit)
def _segment_softmax_bwd(ptr, probs, grad, out):
    """d scores = p * (g - sum_seg(p * g))."""
    segments = ptr.shape[0] - 1
    heads = probs.shape[1]
    for s in prange(segments):
        start, end = ptr[s], ptr[s + 1]
        for h in range(heads):
            dot = 0.0
            for r in range(start, end):
                dot += probs[r, h] * grad[r, h]
            for r in range(start, end):
                out[r, h] = probs[r, h] * (grad[r, h] - dot)


@njit(**_jit)
def _pool_fwd(ptr, weights, value, out):
    """out[s, q] = sum_{r in s} weights[r, q] * value[r]."""
    segments, nq, dv = out.shape
    for s in prange(segments):
        out[s] = 0.0
        for r in range(ptr[s], ptr[s + 1]):
            for qi in range(nq):
                w = weights[r, qi]
                for d in range(dv):
                    out[s, qi, d] += w * value[r, d]


@njit(**_jit)
def _pool_bwd(ptr, weights, value, dout, dweights, dvalue):
    """dweights[r, q] = <dout[s, q], value_r>; dvalue_r = sum_q weights[r, q] dout[s, q]."""
    segments, nq, dv = dout.shape
    for s in prange(segments):
        for r in range(ptr[s], ptr[s + 1]):
            dvalue[r] = 0.0
            for qi in range(nq):
                w = weights[r, qi]
                acc = 0.0
                for d in range(dv):
                    acc += dout[s, qi, d] * value[r, d]
                    dvalue[r, d] += w * dout[s, qi, d]
                dweights[r, qi] = acc


@njit(**_jit)
def _segment_query_scores(ptr, x, query, scale, scores):
    """scores[r, q] = scale * <x_r, query[s, q]> for a per-segment query."""
    segments, nq, dim = query.shape
    for s in prange(segments):
        for r in range(ptr[s], ptr[s + 1]):
            for qi in range(nq):
                acc = 0.0
                for d in range(dim):
                    acc += x[r, d] * query[s, qi, d]
                scores[r, qi] = acc * scale


@njit(**_jit)
def _segment_query_scores_bwd(ptr, x, query, scale, dscores, dx, dquery):
    segments, nq, dim = query.shape
    for s in prange(segments):
        dquery[s] = 0.0
        for r in range(ptr[s], ptr[s + 1]):
            dx[r] = 0.0
            for qi in range(nq):
                g = dscores[r, qi] * scale
                for d in range(dim):
                    dx[r, d] += g * query[s, qi, d]
                    dquery[s, qi, d] += g * x[r, d]


# --------------------------------------------------------------------------------------
# autograd wrappers
# --------------------------------------------------------------------------------------

def _balanced_bounds(ptr: Tensor) -> np.ndarray:
    """Row boundaries of chunks holding about equal numbers of edges (plus one row each).

    Parallel loops run over these chunks rather than over rows, so a power-law graph's hub
    rows do not leave the other threads idle. Several chunks per thread even out the rest.
    """
    rows = ptr.numel() - 1
    chunks = max(1, min(rows, 16 * numba.get_num_threads()))
    work = ptr[1:] + torch.arange(1, rows + 1)  # edges plus a unit per row, cumulated
    targets = torch.linspace(0, float(work[-1]) if rows else 0.0, chunks + 1)[1:-1]
    inner = torch.searchsorted(work.to(torch.float64), targets.to(torch.float64), right=True)
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([rows])])
    return bounds.numpy()


def _np(tensor: Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Operands(NamedTuple):
    """numpy views of the operands in the compute dtype; placeholders stand for absent terms."""

    q: np.ndarray
    kv: np.ndarray  # [N_src, H*D + H*Dv]: row j holds k_j then v_j
    dv: int  # the value dimension Dv
    ekey: np.ndarray
    evalue: np.ndarray
    escale: np.ndarray
    att: np.ndarray
    bias: np.ndarray
    scale: float
    slope: float
    flags: int
    scale_mode: int
    drop: np.ndarray
    inv_keep: float
    dtype: torch.dtype  # the compute dtype


def _packed_kv(k: Tensor, v: Tensor, work: torch.dtype, bf16: bool = False) -> np.ndarray:
    """K and V side by side, [N_src, H*D + H*Dv]: an edge's key and value are one contiguous
    row (one random fetch per edge instead of two). Taken without a copy when k and v are
    already views of such a buffer (:func:`gattn.kernels.split_kv`, as gattn's layers
    project them), else packed here (a copy of O(N) size, small beside the O(E) kernels).
    With ``bf16``: packed as bfloat16 (rounded to nearest even), handed to the kernels as
    uint16 bit patterns (numba has no bf16), which widen each fetched row to float32."""
    num, heads, dim = k.shape
    width = heads * dim
    if not bf16 and k.dtype == work and kv_halves(k, v):
        return torch.as_strided(k.detach(), (num, width + heads * v.shape[2]), (k.stride(0), 1)).numpy()
    # packed into reused memory (see _workspace), each half converted as it is copied
    packed = _workspace.take((num, width + heads * v.shape[2]), torch.bfloat16 if bf16 else work)
    packed[:, :width].copy_(k.detach().reshape(num, width))
    packed[:, width:].copy_(v.detach().reshape(num, heads * v.shape[2]))
    return packed.view(torch.int16).numpy().view(np.uint16) if bf16 else packed.numpy()


def _prepare(t: EdgeTerms) -> _Operands:
    work = _compute_dtype(t.q.dtype)
    heads, dim = t.q.shape[1], t.q.shape[2]

    def arr(tensor: Tensor | None, placeholder_shape: tuple[int, ...]) -> np.ndarray:
        if tensor is None:
            return np.zeros(placeholder_shape, dtype=np.float64 if work == torch.float64 else np.float32)
        return _np(tensor.to(work))

    flags = 0
    for bit, tensor in ((_BIAS, t.edge_bias), (_EKEY, t.edge_key), (_EVALUE, t.edge_value)):
        if tensor is not None:
            flags |= bit
    scale_mode = 0
    escale = t.edge_scale
    if escale is not None:
        scale_mode = 1 if escale.dim() == 2 else 2
        escale = escale.unsqueeze(-1) if escale.dim() == 2 else escale
    att = None
    if t.additive:
        flags |= _ADDITIVE
        att = t.att if t.att is not None else torch.ones(heads, dim, dtype=work)
    drop = np.zeros(3, dtype=np.int64)
    inv_keep = 1.0
    if t.dropout_p > 0:
        flags |= _DROPOUT
        drop[0], drop[1] = split_seed(t.seed)
        drop[2] = dropout_threshold(t.dropout_p)
        inv_keep = 1.0 / (1.0 - t.dropout_p)
    return _Operands(
        _np(t.q.to(work)), _packed_kv(t.k, t.v, work, t.kv_bf16), int(t.v.shape[2]),
        arr(t.edge_key, (1, 1, 1)), arr(t.edge_value, (1, 1, 1)), arr(escale, (1, 1, 1)),
        arr(att, (1, 1)), arr(t.edge_bias, (1, 1)),
        float(t.scale), float(t.negative_slope), flags, scale_mode, drop, inv_keep, work,
    )


def _edge_work(csr, ops: _Operands) -> int:
    """Multiply-adds of one pass over the edges: every edge reads its key and value row."""
    return csr.num_edges * ops.kv.shape[1]


def _score_args(ops: _Operands) -> tuple:
    return (ops.q, ops.kv, ops.ekey, ops.escale, ops.att, ops.bias, ops.scale, ops.slope, ops.flags,
            ops.scale_mode)


_IDENTITY = np.empty(0, dtype=np.int64)


def _nodes(nodes: Tensor | None) -> np.ndarray:
    """A CSR's node of each stored row or column for the kernels (empty: row i is node i)."""
    return _IDENTITY if nodes is None else _np(nodes)


def edge_forward(t: EdgeTerms) -> tuple[Tensor, Tensor]:
    """out [N_dst, H, Dv] (in q's dtype) and the per-row log-sum-exp [N_dst, H] (no autograd)."""
    ops = _prepare(t)
    csr = t.csr
    # the backward's kept buffers are idle until the backward: their memory goes back meanwhile
    _workspace.release_idle()
    out = _workspace.empty((ops.q.shape[0], ops.q.shape[1], ops.dv), ops.dtype)  # the caller keeps it
    lse = torch.empty(ops.q.shape[0], ops.q.shape[1], dtype=ops.dtype)
    with _threads_for(_edge_work(csr, ops)):
        _edge_attention_fwd(
            csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(csr.perm),
            ops.q, ops.kv, ops.ekey, ops.evalue, ops.escale, ops.att, ops.bias, ops.scale, ops.slope,
            ops.flags, ops.scale_mode, ops.drop, ops.inv_keep, out.numpy(), lse.numpy(), _nodes(csr.dst_nodes),
        )
    return out.to(t.q.dtype), lse


def edge_probabilities(t: EdgeTerms, lse: Tensor) -> Tensor:
    """Attention [E, H] in the caller's edge order (before dropout), from the log-sum-exp."""
    ops = _prepare(t)
    csr = t.csr
    probs = torch.empty(csr.num_edges, ops.q.shape[1], dtype=ops.dtype)
    with _threads_for(_edge_work(csr, ops)):
        _edge_probs(
            csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(csr.perm),
            *_score_args(ops), _np(lse.to(ops.dtype)), probs.numpy(), _nodes(csr.dst_nodes),
        )
    return probs.to(t.q.dtype)


def edge_backward(
    t: EdgeTerms, out: Tensor, lse: Tensor, dout: Tensor, dattention: Tensor | None,
    attention_delta: Tensor | None, need_kv: bool = True,
) -> EdgeGrads:
    """Gradients of every input from the saved out and log-sum-exp (scores recomputed).

    ``dattention`` [E, H] is a gradient arriving at the returned attention weights, with
    ``attention_delta`` [N_dst, H] its row sums weighted by the attention. Only one [E, 2, H]
    per-edge temporary (P * mask and dS, in CSR order so the rows pass writes it in
    sequence) is stored, besides the per-edge gradients of per-edge inputs.
    """
    ops = _prepare(t)
    csr = t.csr
    work = ops.dtype
    num_dst, heads, dim = ops.q.shape
    flags = ops.flags
    if dattention is not None:
        flags |= _DATTN
        dattn, delta_extra = _np(dattention.to(work)), _np(attention_delta.to(work))
    else:
        dattn, delta_extra = np.zeros((1, 1), dtype=ops.q.dtype), np.zeros((1, 1), dtype=ops.q.dtype)
    out_np, lse_np, dout_np = (_np(x.to(work)) for x in (out, lse, dout))
    # large outputs and the per-edge temporary come from reused memory (no page faults per call)
    dq = _workspace.take((num_dst, heads, dim), work)
    wds = _workspace.take((csr.num_edges, 2, heads), work)

    def per_edge(present: bool, shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, dtype=work) if present else torch.zeros((1,) * len(shape), dtype=work)

    descale = per_edge(ops.scale_mode > 0, ops.escale.shape if ops.scale_mode else (1, 1, 1))
    dekey = per_edge(t.edge_key is not None, tuple(ops.ekey.shape))
    devalue = per_edge(t.edge_value is not None, tuple(ops.evalue.shape))
    datt_rows = torch.empty(num_dst, heads, dim, dtype=work) if t.additive else torch.zeros(1, 1, 1, dtype=work)
    dk = dv = None
    with _threads_for(_edge_work(csr, ops)):
        _edge_attention_bwd_rows(
            csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(csr.perm),
            ops.q, ops.kv, ops.ekey, ops.evalue, ops.escale, ops.att, ops.bias, ops.scale, ops.slope,
            flags, ops.scale_mode, ops.drop, ops.inv_keep, out_np, lse_np, dout_np, dattn, delta_extra,
            dq.numpy(), wds.numpy(), descale.numpy(), dekey.numpy(), devalue.numpy(), datt_rows.numpy(),
            _nodes(csr.dst_nodes),
        )
        if need_kv:
            # the caller's edge id per source-sorted edge: only per-edge inputs read it (an E-long
            # index array the plain layer never builds)
            per_edge_inputs = bool(ops.flags & _ADDITIVE) or ops.scale_mode != 0
            colptr, row, csc_pos = csr.csc_index()
            csc_edge = csr.csc()[2] if per_edge_inputs else csc_pos
            # dK and dV as the two halves of one [N_src, H*D + H*Dv] buffer: split_kv's backward
            # then hands that buffer on as the gradient of the packed K|V projection, uncopied
            dkv = _workspace.take((t.k.shape[0], heads * (dim + ops.dv)), work)
            dk, dv = kv_views(dkv, heads, dim, ops.dv)
            _edge_attention_bwd_cols(
                csr.bounds(_balanced_bounds, transposed=True), _np(colptr), _np(row), _np(csc_pos),
                _np(csc_edge), ops.q, ops.kv, ops.ekey, ops.escale, ops.att, ops.scale, ops.slope, ops.flags,
                ops.scale_mode, dout_np, wds.numpy(), dkv.numpy(), _nodes(csr.src_nodes),
            )

    def cast(grad: Tensor | None, like: Tensor | None) -> Tensor | None:
        return None if grad is None or like is None else grad.to(like.dtype)

    if t.edge_scale is not None and t.edge_scale.dim() == 2:
        descale = descale.squeeze(-1)
    dbias = csr.to_caller_order(wds[:, 1].contiguous()) if t.edge_bias is not None else None
    datt = datt_rows.sum(0) if t.additive and t.att is not None else None
    return EdgeGrads(
        cast(dq, t.q), cast(dk, t.k), cast(dv, t.v), cast(dbias, t.edge_bias), cast(descale, t.edge_scale),
        cast(dekey, t.edge_key), cast(devalue, t.edge_value), cast(datt, t.att),
    )


class _SegmentSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, ptr):
        out = torch.empty_like(scores)
        with _threads_for(scores.numel()):
            _segment_softmax_fwd(_np(ptr), _np(scores), out.numpy())
        ctx.save_for_backward(out, ptr)
        return out

    @staticmethod
    def backward(ctx, grad):
        probs, ptr = ctx.saved_tensors
        dscores = torch.empty_like(probs)
        with _threads_for(probs.numel()):
            _segment_softmax_bwd(_np(ptr), _np(probs), _np(grad), dscores.numpy())
        return *guard_double_backward("gattn.kernels.segment_softmax (cpu backend)", (dscores,), (probs,)), None


def segment_softmax(scores: Tensor, ptr: Tensor) -> Tensor:
    work = _compute_dtype(scores.dtype)
    return _SegmentSoftmax.apply(scores.to(work).contiguous(), ptr).to(scores.dtype)


class _WeightedSegmentSum(torch.autograd.Function):
    """out[s, q] = sum_{r in s} weights[r, q] * value[r] without an R x Q x D product."""

    @staticmethod
    def forward(ctx, weights, value, ptr):
        out = torch.empty(ptr.shape[0] - 1, weights.shape[1], value.shape[1], dtype=value.dtype)
        with _threads_for(weights.numel() * value.shape[1]):
            _pool_fwd(_np(ptr), _np(weights), _np(value), out.numpy())
        ctx.save_for_backward(weights, value, ptr)
        return out

    @staticmethod
    def backward(ctx, dout):
        weights, value, ptr = ctx.saved_tensors
        dweights, dvalue = torch.empty_like(weights), torch.empty_like(value)
        with _threads_for(weights.numel() * value.shape[1]):
            _pool_bwd(_np(ptr), _np(weights), _np(value), _np(dout), dweights.numpy(), dvalue.numpy())
        name = "gattn.kernels.segment_attention_pool (cpu backend)"
        return *guard_double_backward(name, (dweights, dvalue), (weights, value)), None


class _SegmentQueryScores(torch.autograd.Function):
    """scores[r, q] = scale * <x_r, query[segment(r), q]> without gathering the queries."""

    @staticmethod
    def forward(ctx, x, query, ptr, scale):
        scores = torch.empty(x.shape[0], query.shape[1], dtype=x.dtype)
        with _threads_for(x.numel() * query.shape[1]):
            _segment_query_scores(_np(ptr), _np(x), _np(query), scale, scores.numpy())
        ctx.save_for_backward(x, query, ptr)
        ctx.scale = scale
        return scores

    @staticmethod
    def backward(ctx, dscores):
        x, query, ptr = ctx.saved_tensors
        dx, dquery = torch.empty_like(x), torch.empty_like(query)
        with _threads_for(x.numel() * query.shape[1]):
            _segment_query_scores_bwd(_np(ptr), _np(x), _np(query), ctx.scale, _np(dscores), dx.numpy(),
                                      dquery.numpy())
        name = "gattn.kernels.segment_attention_pool (cpu backend)"
        return *guard_double_backward(name, (dx, dquery), (x, query)), None, None


def segment_attention_pool(
    x: Tensor, value: Tensor, ptr: Tensor, query: Tensor | None, scores: Tensor | None,
    normalize: bool, scale: float,
) -> tuple[Tensor, Tensor]:
    return attention_pool(
        x, value, query, scores, normalize, scale,
        work=lambda t: t.to(_compute_dtype(t.dtype)).contiguous(),
        query_scores=lambda x, query, scale: _SegmentQueryScores.apply(x, query, ptr, scale),
        softmax=lambda scores: _SegmentSoftmax.apply(scores, ptr),
        weighted_sum=lambda weights, value: _WeightedSegmentSum.apply(weights, value, ptr),
    )


def set_num_threads(threads: int) -> None:
    """Threads used by the numba kernels (defaults to the number of cores)."""
    numba.set_num_threads(threads)
