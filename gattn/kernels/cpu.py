"""Fast CPU backend: numba kernels over CSR rows, parallel across rows.

Edge attention walks each destination's incoming edges once with an online (running max)
softmax, so nothing of size E x H x D is ever stored. The backward pass recomputes the
scores from the saved per-row log-sum-exp: a CSR pass (per destination) gives dQ, the
edge-term gradients and the per-edge P and dS [E, H]; a CSC pass (per source) then
accumulates dK and dV without atomics, so results are deterministic.

Inputs in fp16/bf16 are computed in float32 and cast back. The kernels are compiled on first
use and cached on disk across processes (see `_numba_setup.py`: where, and the one-time
notice while compiling).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from . import _numba_setup
from ._compose import attention_pool
from ._dropout import split_seed
from ._dropout import threshold as dropout_threshold
from ._edge import EdgeGrads, EdgeTerms, guard_double_backward

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


@njit(inline="always", fastmath=_FASTMATH)
def _additive_input(q, k, ekey, i, j, pe, h, d, has_ekey):
    """q_id + k_jd (+ edge_key_ed): what the additive score's LeakyReLU sees."""
    z = q[i, h, d] + k[j, h, d]
    if has_ekey:
        z += ekey[pe, h, d]
    return z


@njit(inline="always", fastmath=_FASTMATH)
def _score(q, k, ekey, escale, att, bias, i, j, pe, h, scale, slope, flags, scale_mode):
    """The score of edge (j -> i), head h: dot form or additive form (GAT/GATv2)."""
    dim = q.shape[2]
    has_ekey = flags & _EKEY
    s = 0.0
    if flags & _ADDITIVE:
        for d in range(dim):
            z = _additive_input(q, k, ekey, i, j, pe, h, d, has_ekey)
            if z <= 0.0:
                z *= slope
            s += att[h, d] * z
    else:
        for d in range(dim):
            u = k[j, h, d]
            if has_ekey:
                u += ekey[pe, h, d]
            if scale_mode == 2:
                u *= escale[pe, h, d]
            s += q[i, h, d] * u
        if scale_mode == 1:
            s *= escale[pe, h, 0]
        s *= scale
    if flags & _BIAS:
        s += bias[pe, h]
    return s


@njit(inline="always", fastmath=_FASTMATH)
def _fwd_row(i, rowptr, col, perm, q, k, v, ekey, evalue, escale, att, bias, scale, slope, flags,
             scale_mode, drop, inv_keep, out, lse):
    """Online softmax over row i's incoming edges: out[i] and lse[i]."""
    heads, dv = out.shape[1], out.shape[2]
    for h in range(heads):
        acc = out[i, h]
        acc[:] = 0.0
        run_max = -np.inf
        run_sum = 0.0
        for e in range(rowptr[i], rowptr[i + 1]):
            j = col[e]
            pe = perm[e]
            s = _score(q, k, ekey, escale, att, bias, i, j, pe, h, scale, slope, flags, scale_mode)
            if s == -np.inf:
                continue
            if s > run_max:
                correction = math.exp(run_max - s)
                run_sum *= correction
                for d in range(dv):
                    acc[d] *= correction
                run_max = s
            p = math.exp(s - run_max)
            run_sum += p
            w = p * _drop_factor(pe, h, heads, flags, drop, inv_keep)
            if w != 0.0:
                if flags & _EVALUE:
                    for d in range(dv):
                        acc[d] += w * (v[j, h, d] + evalue[pe, h, d])
                else:
                    for d in range(dv):
                        acc[d] += w * v[j, h, d]
        if run_sum > 0.0:
            inv = 1.0 / run_sum
            for d in range(dv):
                acc[d] *= inv
            lse[i, h] = run_max + math.log(run_sum)
        else:
            lse[i, h] = -np.inf


@njit(**_jit)
def _edge_attention_fwd(bounds, rowptr, col, perm, q, k, v, ekey, evalue, escale, att, bias, scale, slope,
                        flags, scale_mode, drop, inv_keep, out, lse):
    for chunk in prange(bounds.shape[0] - 1):
        for i in range(bounds[chunk], bounds[chunk + 1]):
            _fwd_row(i, rowptr, col, perm, q, k, v, ekey, evalue, escale, att, bias, scale, slope, flags,
                     scale_mode, drop, inv_keep, out, lse)


@njit(**_jit)
def _edge_probs(bounds, rowptr, col, perm, q, k, ekey, escale, att, bias, scale, slope, flags, scale_mode,
                lse, probs):
    """Attention [E, H] (caller's order, before dropout) from the saved log-sum-exp."""
    for chunk in prange(bounds.shape[0] - 1):
        for i in range(bounds[chunk], bounds[chunk + 1]):
            for e in range(rowptr[i], rowptr[i + 1]):
                pe = perm[e]
                for h in range(lse.shape[1]):
                    if lse[i, h] == -np.inf:
                        probs[pe, h] = 0.0
                    else:
                        s = _score(q, k, ekey, escale, att, bias, i, col[e], pe, h, scale, slope, flags,
                                   scale_mode)
                        probs[pe, h] = math.exp(s - lse[i, h])


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_row(i, rowptr, col, perm, q, k, v, ekey, evalue, escale, att, bias, scale, slope, flags,
             scale_mode, drop, inv_keep, out, lse, dout, dattn, delta_extra,
             dq, wprobs, dscores, descale, dekey, devalue, datt_rows):
    """Row i: dQ, the per-edge weights P*mask and dS, and the per-edge input gradients."""
    heads, dim = q.shape[1], q.shape[2]
    dvdim = v.shape[2]
    additive = flags & _ADDITIVE
    has_ekey = flags & _EKEY
    for h in range(heads):
        for d in range(dim):
            dq[i, h, d] = 0.0
            if additive:
                datt_rows[i, h, d] = 0.0
        if lse[i, h] == -np.inf:
            for e in range(rowptr[i], rowptr[i + 1]):
                wprobs[perm[e], h] = 0.0
                dscores[perm[e], h] = 0.0
            continue
        delta = 0.0
        for d in range(dvdim):
            delta += dout[i, h, d] * out[i, h, d]
        if flags & _DATTN:
            delta += delta_extra[i, h]
        for e in range(rowptr[i], rowptr[i + 1]):
            j = col[e]
            pe = perm[e]
            s = _score(q, k, ekey, escale, att, bias, i, j, pe, h, scale, slope, flags, scale_mode)
            p = math.exp(s - lse[i, h])
            factor = _drop_factor(pe, h, heads, flags, drop, inv_keep)
            dpv = 0.0
            if flags & _EVALUE:
                for d in range(dvdim):
                    dpv += dout[i, h, d] * (v[j, h, d] + evalue[pe, h, d])
            else:
                for d in range(dvdim):
                    dpv += dout[i, h, d] * v[j, h, d]
            dp = factor * dpv
            if flags & _DATTN:
                dp += dattn[pe, h]
            ds = p * (dp - delta)
            w = p * factor
            wprobs[pe, h] = w
            dscores[pe, h] = ds
            if flags & _EVALUE:
                for d in range(dvdim):
                    devalue[pe, h, d] = w * dout[i, h, d]
            if additive:
                for d in range(dim):
                    z = _additive_input(q, k, ekey, i, j, pe, h, d, has_ekey)
                    gz = ds * att[h, d]
                    if z <= 0.0:  # torch's LeakyReLU gradient takes the slope at 0
                        z *= slope
                        gz *= slope
                    dq[i, h, d] += gz
                    if has_ekey:
                        dekey[pe, h, d] = gz
                    datt_rows[i, h, d] += ds * z
                continue
            g = ds * scale
            if scale_mode == 2:
                for d in range(dim):
                    u = k[j, h, d]
                    if has_ekey:
                        u += ekey[pe, h, d]
                    es = escale[pe, h, d]
                    dq[i, h, d] += g * u * es
                    descale[pe, h, d] = g * q[i, h, d] * u
                    if has_ekey:
                        dekey[pe, h, d] = g * q[i, h, d] * es
            else:
                if scale_mode == 1:
                    g_es = g * escale[pe, h, 0]
                else:
                    g_es = g
                qu = 0.0
                for d in range(dim):
                    u = k[j, h, d]
                    if has_ekey:
                        u += ekey[pe, h, d]
                    dq[i, h, d] += g_es * u
                    qu += q[i, h, d] * u
                    if has_ekey:
                        dekey[pe, h, d] = g_es * q[i, h, d]
                if scale_mode == 1:
                    descale[pe, h, 0] = g * qu


@njit(**_jit)
def _edge_attention_bwd_rows(bounds, rowptr, col, perm, q, k, v, ekey, evalue, escale, att, bias, scale, slope,
                             flags, scale_mode, drop, inv_keep, out, lse, dout, dattn, delta_extra,
                             dq, wprobs, dscores, descale, dekey, devalue, datt_rows):
    for chunk in prange(bounds.shape[0] - 1):
        for i in range(bounds[chunk], bounds[chunk + 1]):
            _bwd_row(i, rowptr, col, perm, q, k, v, ekey, evalue, escale, att, bias, scale, slope, flags,
                     scale_mode, drop, inv_keep, out, lse, dout, dattn, delta_extra,
                     dq, wprobs, dscores, descale, dekey, devalue, datt_rows)


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_col(j, colptr, row, csc_edge, q, k, ekey, escale, att, scale, slope, flags, scale_mode,
             dout, wprobs, dscores, dk, dv):
    """Source j: dK and dV from the per-edge P*mask and dS of its outgoing edges."""
    heads, dim = dk.shape[1], dk.shape[2]
    dvdim = dv.shape[2]
    additive = flags & _ADDITIVE
    has_ekey = flags & _EKEY
    dk[j] = 0.0
    dv[j] = 0.0
    for t in range(colptr[j], colptr[j + 1]):
        pe = csc_edge[t]
        i = row[t]
        for h in range(heads):
            w = wprobs[pe, h]
            ds = dscores[pe, h]
            for d in range(dvdim):
                dv[j, h, d] += w * dout[i, h, d]
            if additive:
                for d in range(dim):
                    gz = ds * att[h, d]
                    dk[j, h, d] += gz * slope if _additive_input(q, k, ekey, i, j, pe, h, d, has_ekey) <= 0.0 else gz
            elif scale_mode == 2:
                g = ds * scale
                for d in range(dim):
                    dk[j, h, d] += g * q[i, h, d] * escale[pe, h, d]
            else:
                g = ds * scale
                if scale_mode == 1:
                    g *= escale[pe, h, 0]
                for d in range(dim):
                    dk[j, h, d] += g * q[i, h, d]


@njit(**_jit)
def _edge_attention_bwd_cols(bounds, colptr, row, csc_edge, q, k, ekey, escale, att, scale, slope, flags,
                             scale_mode, dout, wprobs, dscores, dk, dv):
    """Walks outgoing edges per source, so dK and dV need no atomics (deterministic)."""
    for chunk in prange(bounds.shape[0] - 1):
        for j in range(bounds[chunk], bounds[chunk + 1]):
            _bwd_col(j, colptr, row, csc_edge, q, k, ekey, escale, att, scale, slope, flags, scale_mode,
                     dout, wprobs, dscores, dk, dv)


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
    k: np.ndarray
    v: np.ndarray
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
        _np(t.q.to(work)), _np(t.k.to(work)), _np(t.v.to(work)),
        arr(t.edge_key, (1, 1, 1)), arr(t.edge_value, (1, 1, 1)), arr(escale, (1, 1, 1)),
        arr(att, (1, 1)), arr(t.edge_bias, (1, 1)),
        float(t.scale), float(t.negative_slope), flags, scale_mode, drop, inv_keep, work,
    )


def _score_args(ops: _Operands) -> tuple:
    return (ops.q, ops.k, ops.ekey, ops.escale, ops.att, ops.bias, ops.scale, ops.slope, ops.flags,
            ops.scale_mode)


def edge_forward(t: EdgeTerms) -> tuple[Tensor, Tensor]:
    """out [N_dst, H, Dv] (in q's dtype) and the per-row log-sum-exp [N_dst, H] (no autograd)."""
    ops = _prepare(t)
    csr = t.csr
    out = torch.empty(ops.q.shape[0], ops.q.shape[1], ops.v.shape[2], dtype=ops.dtype)
    lse = torch.empty(ops.q.shape[0], ops.q.shape[1], dtype=ops.dtype)
    _edge_attention_fwd(
        csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(csr.perm),
        ops.q, ops.k, ops.v, ops.ekey, ops.evalue, ops.escale, ops.att, ops.bias, ops.scale, ops.slope,
        ops.flags, ops.scale_mode, ops.drop, ops.inv_keep, out.numpy(), lse.numpy(),
    )
    return out.to(t.q.dtype), lse


def edge_probabilities(t: EdgeTerms, lse: Tensor) -> Tensor:
    """Attention [E, H] in the caller's edge order (before dropout), from the log-sum-exp."""
    ops = _prepare(t)
    csr = t.csr
    probs = torch.empty(csr.num_edges, ops.q.shape[1], dtype=ops.dtype)
    q, k, ekey, escale, att, bias, scale, slope, flags, scale_mode = _score_args(ops)
    _edge_probs(
        csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(csr.perm),
        q, k, ekey, escale, att, bias, scale, slope, flags, scale_mode, _np(lse.to(ops.dtype)), probs.numpy(),
    )
    return probs.to(t.q.dtype)


def edge_backward(
    t: EdgeTerms, out: Tensor, lse: Tensor, dout: Tensor, dattention: Tensor | None,
    attention_delta: Tensor | None, need_kv: bool = True,
) -> EdgeGrads:
    """Gradients of every input from the saved out and log-sum-exp (scores recomputed).

    ``dattention`` [E, H] is a gradient arriving at the returned attention weights, with
    ``attention_delta`` [N_dst, H] its row sums weighted by the attention. Only [E, H]
    per-edge temporaries (P * mask and dS) are stored, besides the per-edge gradients of
    per-edge inputs.
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
    dq = torch.empty(num_dst, heads, dim, dtype=work)
    wprobs = torch.empty(csr.num_edges, heads, dtype=work)
    dscores = torch.empty(csr.num_edges, heads, dtype=work)

    def per_edge(present: bool, shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, dtype=work) if present else torch.zeros((1,) * len(shape), dtype=work)

    descale = per_edge(ops.scale_mode > 0, ops.escale.shape if ops.scale_mode else (1, 1, 1))
    dekey = per_edge(t.edge_key is not None, tuple(ops.ekey.shape))
    devalue = per_edge(t.edge_value is not None, tuple(ops.evalue.shape))
    datt_rows = torch.empty(num_dst, heads, dim, dtype=work) if t.additive else torch.zeros(1, 1, 1, dtype=work)
    _edge_attention_bwd_rows(
        csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(csr.perm),
        ops.q, ops.k, ops.v, ops.ekey, ops.evalue, ops.escale, ops.att, ops.bias, ops.scale, ops.slope,
        flags, ops.scale_mode, ops.drop, ops.inv_keep, out_np, lse_np, dout_np, dattn, delta_extra,
        dq.numpy(), wprobs.numpy(), dscores.numpy(), descale.numpy(), dekey.numpy(), devalue.numpy(),
        datt_rows.numpy(),
    )
    dk = dv = None
    if need_kv:
        colptr, row, csc_edge = csr.csc()
        dk = torch.empty(ops.k.shape, dtype=work)
        dv = torch.empty(ops.v.shape, dtype=work)
        _edge_attention_bwd_cols(
            csr.bounds(_balanced_bounds, transposed=True), _np(colptr), _np(row), _np(csc_edge),
            ops.q, ops.k, ops.ekey, ops.escale, ops.att, ops.scale, ops.slope, ops.flags, ops.scale_mode,
            dout_np, wprobs.numpy(), dscores.numpy(), dk.numpy(), dv.numpy(),
        )

    def cast(grad: Tensor | None, like: Tensor | None) -> Tensor | None:
        return None if grad is None or like is None else grad.to(like.dtype)

    if t.edge_scale is not None and t.edge_scale.dim() == 2:
        descale = descale.squeeze(-1)
    datt = datt_rows.sum(0) if t.additive and t.att is not None else None
    return EdgeGrads(
        cast(dq, t.q), cast(dk, t.k), cast(dv, t.v), cast(dscores, t.edge_bias), cast(descale, t.edge_scale),
        cast(dekey, t.edge_key), cast(devalue, t.edge_value), cast(datt, t.att),
    )


class _SegmentSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, ptr):
        out = torch.empty_like(scores)
        _segment_softmax_fwd(_np(ptr), _np(scores), out.numpy())
        ctx.save_for_backward(out, ptr)
        return out

    @staticmethod
    def backward(ctx, grad):
        probs, ptr = ctx.saved_tensors
        dscores = torch.empty_like(probs)
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
        _pool_fwd(_np(ptr), _np(weights), _np(value), out.numpy())
        ctx.save_for_backward(weights, value, ptr)
        return out

    @staticmethod
    def backward(ctx, dout):
        weights, value, ptr = ctx.saved_tensors
        dweights, dvalue = torch.empty_like(weights), torch.empty_like(value)
        _pool_bwd(_np(ptr), _np(weights), _np(value), _np(dout), dweights.numpy(), dvalue.numpy())
        name = "gattn.kernels.segment_attention_pool (cpu backend)"
        return *guard_double_backward(name, (dweights, dvalue), (weights, value)), None


class _SegmentQueryScores(torch.autograd.Function):
    """scores[r, q] = scale * <x_r, query[segment(r), q]> without gathering the queries."""

    @staticmethod
    def forward(ctx, x, query, ptr, scale):
        scores = torch.empty(x.shape[0], query.shape[1], dtype=x.dtype)
        _segment_query_scores(_np(ptr), _np(x), _np(query), scale, scores.numpy())
        ctx.save_for_backward(x, query, ptr)
        ctx.scale = scale
        return scores

    @staticmethod
    def backward(ctx, dscores):
        x, query, ptr = ctx.saved_tensors
        dx, dquery = torch.empty_like(x), torch.empty_like(query)
        _segment_query_scores_bwd(_np(ptr), _np(x), _np(query), ctx.scale, _np(dscores), dx.numpy(), dquery.numpy())
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
