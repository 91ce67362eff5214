"""Fused CPU kernels of DIN's local activation unit, with plain-torch references.

DIN scores every behaviour of every history with a small MLP. Its matrix products are
dense GEMMs that torch already runs well; what costs on CPU is the memory traffic of the
elementwise work around them, each op a full pass over ``[R, C]``. Three fused ops:

* :func:`target_pair` - ``[k_r, q_s * k_r]`` for every row r of segment s ([R, 2D]), the part
  of ``[q, k, q - k, q * k]`` that depends on the behaviour; backward sums the query's
  gradient per segment (no ``index_add`` over R rows);
* :func:`segment_broadcast` - ``x[s]`` for every row of segment s; backward is a segment sum;
* :func:`gather_rows` - embedding lookup of the history rows; backward is one serial
  scatter-add pass into the table's gradient (torch's sorts the R indices first);
* :func:`dice` - the Dice activation ``x * (alpha + (1 - alpha) * sigmoid(bn(x)))`` with its
  batch statistics, optionally adding a per-segment bias first (the target's share of the
  first layer), in two passes forward and two backward instead of a dozen.

Each takes ``backend``: ``"cpu"`` (numba, CPU float tensors, parallel over chunks of whole
segments so per-segment results need no atomics) or ``"reference"`` (torch ops, any device;
the oracle of the tests). ``None`` picks ``"cpu"`` for CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ._numba_setup import threads_for
from .cpu import _balanced_bounds, _np

__all__ = ["dice", "gather_rows", "segment_broadcast", "target_pair"]

_FASTMATH = {"nsz", "contract", "reassoc", "arcp"}
_jit = dict(parallel=True, cache=True, fastmath=_FASTMATH, nogil=True)
_ROWS_PER_CHUNK = 2048  # row chunks when the rows have no segments of their own


# ------------------------------------------------------------------------------ kernels
@njit(**_jit)
def _pair_fwd(bounds, ptr, query, keys, out):
    dim = keys.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            for r in range(ptr[s], ptr[s + 1]):
                for d in range(dim):
                    k = keys[r, d]
                    out[r, d] = k
                    out[r, dim + d] = query[s, d] * k


@njit(**_jit)
def _pair_bwd(bounds, ptr, query, keys, dout, dquery, dkeys):
    dim = keys.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            for d in range(dim):
                dquery[s, d] = 0.0
            for r in range(ptr[s], ptr[s + 1]):
                for d in range(dim):
                    g = dout[r, dim + d]
                    dkeys[r, d] = dout[r, d] + g * query[s, d]
                    dquery[s, d] += g * keys[r, d]


@njit(**_jit)
def _broadcast_fwd(bounds, ptr, x, out):
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            for r in range(ptr[s], ptr[s + 1]):
                out[r] = x[s]


@njit(**_jit)
def _segment_sum(bounds, ptr, rows, out):
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            out[s] = 0.0
            for r in range(ptr[s], ptr[s + 1]):
                out[s] += rows[r]


@njit(**_jit)
def _dice_stats(bounds, ptr, x, bias, sums, squares):
    """Per-chunk column sums of v and v^2, v = x + bias[segment] (float64 partials)."""
    channels = x.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        total, square = sums[chunk], squares[chunk]
        for s in range(bounds[chunk], bounds[chunk + 1]):
            b = bias[s]
            for r in range(ptr[s], ptr[s + 1]):
                row = x[r]
                for j in range(channels):
                    v = row[j] + b[j]
                    total[j] += v
                    square[j] += v * v


@njit(**_jit)
def _dice_normalise(bounds, ptr, x, bias, mean, rstd, out):
    """out = (v - mean) * rstd, v = x + bias[segment]."""
    channels = x.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            b = bias[s]
            for r in range(ptr[s], ptr[s + 1]):
                row, out_row = x[r], out[r]
                for j in range(channels):
                    out_row[j] = (row[j] + b[j] - mean[j]) * rstd[j]


@njit(**_jit)
def _dice_fwd(bounds, ptr, x, bias, alpha, gate, out):
    """out = v * (alpha + (1 - alpha) * gate)."""
    channels = x.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            b = bias[s]
            for r in range(ptr[s], ptr[s + 1]):
                row, out_row, gate_row = x[r], out[r], gate[r]
                for j in range(channels):
                    out_row[j] = (row[j] + b[j]) * (alpha[j] + (1.0 - alpha[j]) * gate_row[j])


@njit(**_jit)
def _dice_bwd_sums(bounds, ptr, x, bias, mean, rstd, alpha, gate, dout, s_grad, s_grad_norm, s_alpha):
    """Per-chunk column sums of g = dL/dn, g * n and dL/d alpha (n the normalised input)."""
    channels = x.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        t_grad, t_norm, t_alpha = s_grad[chunk], s_grad_norm[chunk], s_alpha[chunk]
        for s in range(bounds[chunk], bounds[chunk + 1]):
            b = bias[s]
            for r in range(ptr[s], ptr[s + 1]):
                row, gate_row, dout_row = x[r], gate[r], dout[r]
                for j in range(channels):
                    v = row[j] + b[j]
                    p = gate_row[j]
                    dv = dout_row[j] * v
                    g = dv * (1.0 - alpha[j]) * p * (1.0 - p)
                    t_grad[j] += g
                    t_norm[j] += g * (v - mean[j]) * rstd[j]
                    t_alpha[j] += dv * (1.0 - p)


@njit(**_jit)
def _dice_bwd(bounds, ptr, x, bias, mean, rstd, alpha, gate, dout, mean_grad, mean_grad_norm, dx, dbias):
    """dx = dy * gate + rstd * (g - mean(g) - n * mean(g n)) (the means are 0 in evaluation);
    dbias[s] = sum of dx over segment s."""
    channels = x.shape[1]
    for chunk in prange(bounds.shape[0] - 1):
        for s in range(bounds[chunk], bounds[chunk + 1]):
            b, db = bias[s], dbias[s]
            db[:] = 0.0
            for r in range(ptr[s], ptr[s + 1]):
                row, gate_row, dout_row, dx_row = x[r], gate[r], dout[r], dx[r]
                for j in range(channels):
                    v = row[j] + b[j]
                    n = (v - mean[j]) * rstd[j]
                    p = gate_row[j]
                    a = alpha[j]
                    g = dout_row[j] * v * (1.0 - a) * p * (1.0 - p)
                    grad = dout_row[j] * (a + (1.0 - a) * p) + rstd[j] * (g - mean_grad[j] - n * mean_grad_norm[j])
                    dx_row[j] = grad
                    db[j] += grad


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _scatter_rows(index, rows, out):
    """out[index[r]] += rows[r]: serial, so repeated ids need no atomics."""
    dim = rows.shape[1]
    for r in range(index.shape[0]):
        target = out[index[r]]
        source = rows[r]
        for d in range(dim):
            target[d] += source[d]


# ------------------------------------------------------------------------------ helpers
def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _resolve(backend: str | None, like: Tensor) -> str:
    if backend is None:
        return "cpu" if like.device.type == "cpu" else "reference"
    if backend not in ("cpu", "reference"):
        raise ValueError(f"`backend` must be 'cpu', 'reference' or None, got {backend!r}")
    if backend == "cpu" and like.device.type != "cpu":
        raise ValueError(f"the cpu backend takes CPU tensors, got device {like.device}")
    return backend


def _row_chunks(num_rows: int) -> Tensor:
    """A pointer cutting rows without segments into chunks (units of parallel work)."""
    ptr = torch.arange(0, num_rows + _ROWS_PER_CHUNK, _ROWS_PER_CHUNK).clamp_(max=num_rows)
    return ptr if num_rows else torch.zeros(1, dtype=torch.long)


def _counts(ptr: Tensor) -> Tensor:
    return ptr[1:] - ptr[:-1]


# ------------------------------------------------------------------------------ target_pair
class _TargetPair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, keys, ptr):
        bounds = _balanced_bounds(ptr)
        out = torch.empty(keys.size(0), 2 * keys.size(1), dtype=keys.dtype)
        with threads_for(out.numel()):
            _pair_fwd(bounds, _np(ptr), _np(query), _np(keys), out.numpy())
        ctx.save_for_backward(query, keys, ptr)
        ctx.bounds = bounds
        return out

    @staticmethod
    def backward(ctx, dout):
        query, keys, ptr = ctx.saved_tensors
        dquery, dkeys = torch.empty_like(query), torch.empty_like(keys)
        with threads_for(dout.numel()):
            _pair_bwd(ctx.bounds, _np(ptr), _np(query), _np(keys), _np(dout), dquery.numpy(), dkeys.numpy())
        return dquery, dkeys, None


def target_pair(query: Tensor, keys: Tensor, ptr: Tensor, *, backend: str | None = None) -> Tensor:
    """``[k_r, q_s * k_r]`` [R, 2D] for the rows r of each segment s; ``query`` [S, D], ``keys`` [R, D].

    Inputs are trusted (validated by the calling layer).

    Args:
        query (torch.Tensor): one target per segment, shape ``[S, D]``.
        keys (torch.Tensor): the rows (history items), shape ``[R, D]``.
        ptr (torch.Tensor): row pointer of the segments, shape ``[S + 1]``, ``ptr[-1] = R``.
        backend (str, optional): ``"cpu"`` (numba; CPU tensors), ``"reference"`` (torch; any
            device) or ``None`` (by device). (default: ``None``)

    Returns:
        torch.Tensor: shape ``[R, 2D]``, dtype of ``keys``, differentiable in ``query`` and
        ``keys``.
    """
    if _resolve(backend, keys) == "reference":
        rows = torch.repeat_interleave(query, _counts(ptr), dim=0, output_size=keys.size(0))
        return torch.cat([keys, rows * keys], dim=1)
    work = _work_dtype(keys.dtype)
    out = _TargetPair.apply(query.to(work).contiguous(), keys.to(work).contiguous(), ptr.long().contiguous())
    return out.to(keys.dtype)


# ------------------------------------------------------------------------------ broadcast
class _SegmentBroadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ptr, num_rows):
        bounds = _balanced_bounds(ptr)
        out = torch.empty(num_rows, x.size(1), dtype=x.dtype)
        with threads_for(out.numel()):
            _broadcast_fwd(bounds, _np(ptr), _np(x), out.numpy())
        ctx.save_for_backward(ptr)
        ctx.bounds = bounds
        return out

    @staticmethod
    def backward(ctx, dout):
        (ptr,) = ctx.saved_tensors
        dx = torch.empty(ptr.numel() - 1, dout.size(1), dtype=dout.dtype)
        with threads_for(dout.numel()):
            _segment_sum(ctx.bounds, _np(ptr), _np(dout), dx.numpy())
        return dx, None, None


def segment_broadcast(x: Tensor, ptr: Tensor, *, backend: str | None = None) -> Tensor:
    """``x[s]`` for every row of segment s: [S, C] -> [R, C]; the backward is a segment sum.

    Args:
        x (torch.Tensor): one row per segment, shape ``[S, C]``.
        ptr (torch.Tensor): row pointer of the segments, shape ``[S + 1]``.
        backend (str, optional): as in :func:`target_pair`. (default: ``None``)

    Returns:
        torch.Tensor: shape ``[R, C]`` with ``R = ptr[-1]``, dtype of ``x``.
    """
    num_rows = int(ptr[-1])
    if _resolve(backend, x) == "reference":
        return torch.repeat_interleave(x, _counts(ptr), dim=0, output_size=num_rows)
    work = _work_dtype(x.dtype)
    return _SegmentBroadcast.apply(x.to(work).contiguous(), ptr.long().contiguous(), num_rows).to(x.dtype)


# ------------------------------------------------------------------------------ gather_rows
class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, index):
        ctx.save_for_backward(index)
        ctx.num_rows = weight.size(0)
        return weight.index_select(0, index)

    @staticmethod
    def backward(ctx, dout):
        (index,) = ctx.saved_tensors
        grad = torch.zeros(ctx.num_rows, dout.size(1), dtype=dout.dtype)
        with threads_for(dout.numel()):
            _scatter_rows(_np(index), _np(dout), grad.numpy())
        return grad, None


def gather_rows(weight: Tensor, index: Tensor, *, backend: str | None = None) -> Tensor:
    """``weight[index]`` ([V, D] table, [R] int64 ids -> [R, D]), differentiable in ``weight``.

    Same values and gradient as :func:`torch.nn.functional.embedding`; on CPU the gradient is
    accumulated in one pass over the R rows. Inputs are trusted (ids validated by the caller).

    Args:
        weight (torch.Tensor): the table, shape ``[V, D]``.
        index (torch.Tensor): row ids, integer, shape ``[R]``, in ``[0, V)``.
        backend (str, optional): as in :func:`target_pair`. (default: ``None``)

    Returns:
        torch.Tensor: shape ``[R, D]``, dtype of ``weight``.
    """
    if _resolve(backend, weight) == "reference" or weight.dtype not in (torch.float32, torch.float64):
        return torch.nn.functional.embedding(index, weight)
    return _GatherRows.apply(weight, index.long().contiguous())


# ------------------------------------------------------------------------------ dice
class _Dice(torch.autograd.Function):
    """Dice of x + bias[segment]; ``bias`` [S, C] is zeros (not differentiated) without one."""

    @staticmethod
    def forward(ctx, x, alpha, bias, ptr, bounds, mean, rstd, training):
        out, gate = torch.empty_like(x), torch.empty_like(x)
        with threads_for(x.numel()):
            _dice_normalise(bounds, _np(ptr), _np(x), _np(bias), _np(mean), _np(rstd), gate.numpy())
            # torch's sigmoid is vectorised; numba's exp is not (no SVML): this pass costs least here
            torch.sigmoid_(gate)
            _dice_fwd(bounds, _np(ptr), _np(x), _np(bias), _np(alpha), _np(gate), out.numpy())
        ctx.save_for_backward(x, alpha, bias, ptr, mean, rstd, gate)
        ctx.bounds, ctx.training = bounds, training
        return out

    @staticmethod
    def backward(ctx, dout):
        x, alpha, bias, ptr, mean, rstd, gate = ctx.saved_tensors
        bounds, chunks, channels = ctx.bounds, ctx.bounds.shape[0] - 1, x.size(1)
        args = (bounds, _np(ptr), _np(x), _np(bias), _np(mean), _np(rstd), _np(alpha), _np(gate), _np(dout))
        sums = np.zeros((3, chunks, channels), dtype=np.float64)
        with threads_for(x.numel()):
            _dice_bwd_sums(*args, sums[0], sums[1], sums[2])
        totals = torch.from_numpy(sums.sum(1))
        if ctx.training:
            rows = max(x.size(0), 1)
            mean_grad, mean_grad_norm = (totals[0] / rows).to(x.dtype), (totals[1] / rows).to(x.dtype)
        else:  # running statistics are constants
            mean_grad = mean_grad_norm = torch.zeros(channels, dtype=x.dtype)
        dx, dbias = torch.empty_like(x), torch.empty_like(bias)
        with threads_for(x.numel()):
            _dice_bwd(*args, _np(mean_grad), _np(mean_grad_norm), dx.numpy(), dbias.numpy())
        dbias = dbias if ctx.needs_input_grad[2] else None
        return dx, totals[2].to(alpha.dtype), dbias, None, None, None, None, None


def dice(
    x: Tensor,
    alpha: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    *,
    training: bool,
    momentum: float,
    eps: float,
    segment_bias: Tensor | None = None,
    ptr: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    r"""Dice of ``v = x + segment_bias[segment]`` ([R, C]; the bias [S, C] by ``ptr``) or of ``x``.

    .. math::
        \mathrm{Dice}(v) = v \odot \big(\alpha + (1 - \alpha)\, p\big), \qquad
        p = \sigma\Big(\frac{v - \mathrm{E}[v]}{\sqrt{\mathrm{Var}[v] + \epsilon}}\Big)

    per channel. In training the statistics are those of the rows (a single row normalises to
    0) and ``running_mean`` / ``running_var`` are updated in place (not from fewer than 2
    rows); otherwise the running statistics are used. Inputs are trusted.

    Args:
        x (torch.Tensor): shape ``[R, C]``.
        alpha (torch.Tensor): :math:`\alpha`, shape ``[C]``.
        running_mean (torch.Tensor): shape ``[C]``, updated in place in training.
        running_var (torch.Tensor): shape ``[C]`` (unbiased), updated in place in training.
        training (bool): batch statistics (and running updates) or running statistics.
        momentum (float): of the running updates.
        eps (float): :math:`\epsilon`.
        segment_bias (torch.Tensor, optional): one bias row per segment, shape ``[S, C]``,
            added to the rows of its segment first; needs ``ptr``. (default: ``None``)
        ptr (torch.Tensor, optional): row pointer of the segments, shape ``[S + 1]``.
            (default: ``None``)
        backend (str, optional): as in :func:`target_pair`. (default: ``None``)

    Returns:
        torch.Tensor: shape ``[R, C]``, dtype of ``x``.
    """
    method = _resolve(backend, x)
    num_rows = x.size(0)
    if num_rows == 0:
        return x * alpha  # empty, but connected to both inputs
    if method == "reference":
        v = x if segment_bias is None else x + segment_broadcast(segment_bias, ptr, backend="reference")
        if training:
            # one row: v - mean is 0 with a zero derivative, whatever rstd (p = 1/2)
            mean, var = v.mean(0), v.var(0, unbiased=False)
        else:
            mean, var = running_mean.to(v.dtype), running_var.to(v.dtype)
        gate = torch.sigmoid((v - mean) * torch.rsqrt(var + eps))
        out = v * (alpha + (1.0 - alpha) * gate)
        stats = (mean.detach(), var.detach())
    else:
        work = _work_dtype(x.dtype)
        xw = x.to(work).contiguous()
        if segment_bias is None:
            seg_ptr = _row_chunks(num_rows)
            bias = torch.zeros(seg_ptr.numel() - 1, x.size(1), dtype=work)
        else:
            seg_ptr, bias = ptr.long().contiguous(), segment_bias.to(work).contiguous()
        bounds = _balanced_bounds(seg_ptr)
        if training:
            sums = np.zeros((2, bounds.shape[0] - 1, x.size(1)), dtype=np.float64)
            _dice_stats(bounds, _np(seg_ptr), _np(xw), _np(bias), sums[0], sums[1])
            totals = torch.from_numpy(sums.sum(1)) / max(num_rows, 1)
            mean64, var64 = totals[0], (totals[1] - totals[0].square()).clamp_(min=0.0)
            mean, var = mean64.to(work), var64.to(work)
        else:
            mean, var = running_mean.to(work), running_var.to(work)
        rstd = torch.rsqrt(var + eps)
        out = _Dice.apply(xw, alpha.to(work), bias, seg_ptr, bounds, mean, rstd, training).to(x.dtype)
        stats = (mean, var)
    if training and num_rows > 1:
        with torch.no_grad():
            mean, var = stats
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * (num_rows / (num_rows - 1))).to(running_var.dtype), momentum)
    return out
