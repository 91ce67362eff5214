"""Fast CPU backend: numba kernels over CSR rows, parallel across rows.

Edge attention walks each destination's incoming edges once with an online (running max)
softmax, so nothing of size E x H x D is ever stored. The backward pass recomputes the
scores from the saved per-row log-sum-exp: a CSR pass (per destination) gives dQ, the
edge-term gradients and the per-edge P and dS [E, H]; a CSC pass (per source) then
accumulates dK and dV without atomics, so results are deterministic.

Inputs in fp16/bf16 are computed in float32 and cast back.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ._compose import attention_pool
from .csr import CSR

NAME = "cpu"
_FASTMATH = {"nsz", "contract", "reassoc", "arcp"}  # no nnan/ninf: -inf scores are meaningful
_jit = dict(parallel=True, cache=True, fastmath=_FASTMATH, nogil=True)


def unsupported(like: Tensor) -> str | None:
    if like.device.type != "cpu":
        return f"the cpu backend takes CPU tensors, got device {like.device}"
    return None


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------

@njit(inline="always", fastmath=_FASTMATH)
def _score(q, k, escale, i, j, e, h, scale, bias, has_bias, scale_mode):
    """scale * <q_i, k_j> (* edge_scale_e, per head or per dim) (+ bias_e)."""
    dim = q.shape[2]
    s = 0.0
    if scale_mode == 2:
        for d in range(dim):
            s += q[i, h, d] * k[j, h, d] * escale[e, h, d]
    else:
        for d in range(dim):
            s += q[i, h, d] * k[j, h, d]
        if scale_mode == 1:
            s *= escale[e, h, 0]
    s *= scale
    if has_bias:
        s += bias[e, h]
    return s


@njit(inline="always", fastmath=_FASTMATH)
def _fwd_row(i, rowptr, col, q, k, v, bias, escale, has_bias, scale_mode, scale, out, lse):
    """Online softmax over row i's incoming edges: out[i] and lse[i]."""
    heads, dv = out.shape[1], out.shape[2]
    for h in range(heads):
        acc = out[i, h]
        acc[:] = 0.0
        run_max = -np.inf
        run_sum = 0.0
        for e in range(rowptr[i], rowptr[i + 1]):
            j = col[e]
            s = _score(q, k, escale, i, j, e, h, scale, bias, has_bias, scale_mode)
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
            for d in range(dv):
                acc[d] += p * v[j, h, d]
        if run_sum > 0.0:
            inv = 1.0 / run_sum
            for d in range(dv):
                acc[d] *= inv
            lse[i, h] = run_max + math.log(run_sum)
        else:
            lse[i, h] = -np.inf


@njit(**_jit)
def _edge_attention_fwd(bounds, rowptr, col, q, k, v, bias, escale, has_bias, scale_mode, scale, out, lse):
    for chunk in prange(bounds.shape[0] - 1):
        for i in range(bounds[chunk], bounds[chunk + 1]):
            _fwd_row(i, rowptr, col, q, k, v, bias, escale, has_bias, scale_mode, scale, out, lse)


@njit(inline="always", fastmath=_FASTMATH)
def _probs_row(i, rowptr, col, q, k, bias, escale, has_bias, scale_mode, scale, lse, probs):
    for e in range(rowptr[i], rowptr[i + 1]):
        j = col[e]
        for h in range(lse.shape[1]):
            if lse[i, h] == -np.inf:
                probs[e, h] = 0.0
            else:
                s = _score(q, k, escale, i, j, e, h, scale, bias, has_bias, scale_mode)
                probs[e, h] = math.exp(s - lse[i, h])


@njit(**_jit)
def _edge_probs(bounds, rowptr, col, q, k, bias, escale, has_bias, scale_mode, scale, lse, probs):
    """Attention [E, H] (destination-sorted) from the saved log-sum-exp."""
    for chunk in prange(bounds.shape[0] - 1):
        for i in range(bounds[chunk], bounds[chunk + 1]):
            _probs_row(i, rowptr, col, q, k, bias, escale, has_bias, scale_mode, scale, lse, probs)


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_row(
    i, rowptr, col, q, k, v, bias, escale, has_bias, scale_mode, scale, out, lse, dout,
    dq, probs, dscores, descale,
):
    """Row i: dQ, and per incoming edge P, dS (= d bias) and d edge_scale."""
    heads, dim = q.shape[1], q.shape[2]
    dv = v.shape[2]
    for h in range(heads):
        for d in range(dim):
            dq[i, h, d] = 0.0
        if lse[i, h] == -np.inf:
            for e in range(rowptr[i], rowptr[i + 1]):
                probs[e, h] = 0.0
                dscores[e, h] = 0.0
            continue
        delta = 0.0
        for d in range(dv):
            delta += dout[i, h, d] * out[i, h, d]
        for e in range(rowptr[i], rowptr[i + 1]):
            j = col[e]
            s = _score(q, k, escale, i, j, e, h, scale, bias, has_bias, scale_mode)
            p = math.exp(s - lse[i, h])
            dp = 0.0
            for d in range(dv):
                dp += dout[i, h, d] * v[j, h, d]
            ds = p * (dp - delta)
            probs[e, h] = p
            dscores[e, h] = ds
            g = ds * scale
            if scale_mode == 2:
                for d in range(dim):
                    dq[i, h, d] += g * k[j, h, d] * escale[e, h, d]
                    descale[e, h, d] = g * q[i, h, d] * k[j, h, d]
            elif scale_mode == 1:
                qk = 0.0
                for d in range(dim):
                    dq[i, h, d] += g * escale[e, h, 0] * k[j, h, d]
                    qk += q[i, h, d] * k[j, h, d]
                descale[e, h, 0] = g * qk
            else:
                for d in range(dim):
                    dq[i, h, d] += g * k[j, h, d]


@njit(**_jit)
def _edge_attention_bwd_rows(
    bounds, rowptr, col, q, k, v, bias, escale, has_bias, scale_mode, scale, out, lse, dout,
    dq, probs, dscores, descale,
):
    for chunk in prange(bounds.shape[0] - 1):
        for i in range(bounds[chunk], bounds[chunk + 1]):
            _bwd_row(
                i, rowptr, col, q, k, v, bias, escale, has_bias, scale_mode, scale, out, lse, dout,
                dq, probs, dscores, descale,
            )


@njit(inline="always", fastmath=_FASTMATH)
def _bwd_col(j, colptr, row, csc_pos, q, escale, scale_mode, scale, dout, probs, dscores, dk, dv):
    """Source j: dK and dV from the per-edge P and dS of its outgoing edges."""
    heads, dim = dk.shape[1], dk.shape[2]
    dvdim = dv.shape[2]
    dk[j] = 0.0
    dv[j] = 0.0
    for t in range(colptr[j], colptr[j + 1]):
        e = csc_pos[t]
        i = row[t]
        for h in range(heads):
            p = probs[e, h]
            g = dscores[e, h] * scale
            for d in range(dvdim):
                dv[j, h, d] += p * dout[i, h, d]
            if scale_mode == 2:
                for d in range(dim):
                    dk[j, h, d] += g * q[i, h, d] * escale[e, h, d]
            else:
                if scale_mode == 1:
                    g *= escale[e, h, 0]
                for d in range(dim):
                    dk[j, h, d] += g * q[i, h, d]


@njit(**_jit)
def _edge_attention_bwd_cols(bounds, colptr, row, csc_pos, q, escale, scale_mode, scale, dout, probs, dscores, dk, dv):
    """Walks outgoing edges per source, so dK and dV need no atomics (deterministic)."""
    for chunk in prange(bounds.shape[0] - 1):
        for j in range(bounds[chunk], bounds[chunk + 1]):
            _bwd_col(j, colptr, row, csc_pos, q, escale, scale_mode, scale, dout, probs, dscores, dk, dv)


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


_DUMMY: dict[torch.dtype, tuple[Tensor, Tensor]] = {}


def _dummies(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Placeholder bias [1, 1] / edge_scale [1, 1, 1], so one compiled kernel serves all cases."""
    if dtype not in _DUMMY:
        _DUMMY[dtype] = (torch.zeros(1, 1, dtype=dtype), torch.ones(1, 1, 1, dtype=dtype))
    return _DUMMY[dtype]


def _edge_operands(
    q: Tensor, k: Tensor, v: Tensor, edge_bias: Tensor | None, edge_scale: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, bool, int]:
    """Contiguous compute-dtype operands, with placeholders so one compiled kernel serves
    every case: bias [E, H] or [1, 1]; edge scale [E, H, 1] (mode 1), [E, H, D] (mode 2)
    or [1, 1, 1] (mode 0)."""
    work = _compute_dtype(q.dtype)
    q, k, v = (t.to(work).contiguous() for t in (q, k, v))
    dummy_bias, dummy_scale = _dummies(work)
    bias = dummy_bias if edge_bias is None else edge_bias.to(work).contiguous()
    if edge_scale is None:
        escale, scale_mode = dummy_scale, 0
    elif edge_scale.dim() == 2:
        escale, scale_mode = edge_scale.to(work).unsqueeze(-1).contiguous(), 1
    else:
        escale, scale_mode = edge_scale.to(work).contiguous(), 2
    return q, k, v, bias, escale, edge_bias is not None, scale_mode


def edge_attention_forward(
    q: Tensor, k: Tensor, v: Tensor, csr: CSR, edge_bias: Tensor | None, edge_scale: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """out [N_dst, H, Dv] (in q's dtype) and the per-row log-sum-exp [N_dst, H] (no autograd)."""
    dtype = q.dtype
    q, k, v, bias, escale, has_bias, scale_mode = _edge_operands(q, k, v, edge_bias, edge_scale)
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=q.dtype)
    lse = torch.empty(q.shape[0], q.shape[1], dtype=q.dtype)
    _edge_attention_fwd(
        csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(q), _np(k), _np(v), _np(bias),
        _np(escale), has_bias, scale_mode, scale, out.numpy(), lse.numpy(),
    )
    return out.to(dtype), lse


def edge_attention_backward(
    q: Tensor, k: Tensor, v: Tensor, csr: CSR, edge_bias: Tensor | None, edge_scale: Tensor | None,
    scale: float, out: Tensor, lse: Tensor, dout: Tensor, need_kv: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """(dq, dk, dv, d edge_bias, d edge_scale) from the saved out and log-sum-exp.

    Scores are recomputed; only [E, H] per-edge temporaries (P and dS) are stored.
    """
    dtype = q.dtype
    q, k, v, bias, escale, has_bias, scale_mode = _edge_operands(q, k, v, edge_bias, edge_scale)
    out, lse, dout = (t.to(q.dtype).contiguous() for t in (out, lse, dout))
    dq = torch.empty_like(q)
    probs = torch.empty(csr.num_edges, q.shape[1], dtype=q.dtype)
    dscores = torch.empty(csr.num_edges, q.shape[1], dtype=q.dtype)
    descale = torch.zeros_like(escale) if scale_mode else escale
    _edge_attention_bwd_rows(
        csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(q), _np(k), _np(v), _np(bias),
        _np(escale), has_bias, scale_mode, scale, _np(out), _np(lse), _np(dout),
        dq.numpy(), probs.numpy(), dscores.numpy(), descale.numpy(),
    )
    dk = dv = None
    if need_kv:
        colptr, row, csc_pos = csr.csc()
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        _edge_attention_bwd_cols(
            csr.bounds(_balanced_bounds, transposed=True), _np(colptr), _np(row), _np(csc_pos),
            _np(q), _np(escale), scale_mode, scale, _np(dout), probs.numpy(), dscores.numpy(),
            dk.numpy(), dv.numpy(),
        )
    dbias = dscores.to(dtype) if has_bias else None
    if scale_mode == 0:
        descale = None
    elif scale_mode == 1:
        descale = descale.squeeze(-1).to(dtype)
    else:
        descale = descale.to(dtype)
    cast = (lambda t: None if t is None else t.to(dtype))
    return dq.to(dtype), cast(dk), cast(dv), dbias, descale


class _EdgeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, edge_bias, edge_scale, csr, scale):
        out, lse = edge_attention_forward(q, k, v, csr, edge_bias, edge_scale, scale)
        ctx.save_for_backward(q, k, v, edge_bias, edge_scale, out, lse)
        ctx.csr, ctx.scale = csr, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, edge_bias, edge_scale, out, lse = ctx.saved_tensors
        need_kv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grads = edge_attention_backward(q, k, v, ctx.csr, edge_bias, edge_scale, ctx.scale, out, lse, dout, need_kv)
        return (*grads, None, None)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def edge_attention(
    q: Tensor, k: Tensor, v: Tensor, csr: CSR, edge_bias: Tensor | None,
    edge_scale: Tensor | None, scale: float, return_attention: bool,
) -> tuple[Tensor, Tensor | None]:
    out, lse = _EdgeAttention.apply(q, k, v, edge_bias, edge_scale, csr, scale)
    attention = None
    if return_attention:
        qc, kc, _, bias, escale, has_bias, scale_mode = _edge_operands(
            q.detach(), k.detach(), v.detach(),
            None if edge_bias is None else edge_bias.detach(),
            None if edge_scale is None else edge_scale.detach(),
        )
        attention = torch.empty(csr.num_edges, q.shape[1], dtype=qc.dtype)
        _edge_probs(
            csr.bounds(_balanced_bounds), _np(csr.rowptr), _np(csr.col), _np(qc), _np(kc), _np(bias),
            _np(escale), has_bias, scale_mode, scale, _np(lse), attention.numpy(),
        )
        attention = attention.to(q.dtype)
    return out, attention


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
        return dscores, None


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
        return dweights, dvalue, None


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
        return dx, dquery, None, None


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
