"""Retrieval over segments: the top-K rows of every segment by score, and scores read
straight from an embedding table.

These are the retrieval stage of long-history target attention (DARE, TWIN, SIM): score
all of a user's behaviours against the target, keep the K best, attend over those. Nothing
here needs gradients (the kept rows are attended again, with gradients, by the caller).

* :func:`segment_topk` - per segment (CSR ``ptr``), the rows of the ``k`` largest scores,
  returned in their original order (chronological for a history) with the new ``ptr``;
  a segment shorter than ``k`` keeps all its rows. Ties go to the later row (the more
  recent behaviour). CPU: a numba kernel, a size-``k`` heap per segment, parallel over
  segments (O(R log k), no padding to the longest segment); other devices: two stable sorts.
* :func:`segment_lookup_scores` - ``score[r] = scale * <table[ids[r]], query[segment(r)]>``
  without gathering the ``[R, D]`` rows of the table.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from . import _numba_setup
from ._validate import check_floating, check_integer, check_ptr

_numba_setup.launch_pool()  # keeps torch's thread count (see _numba_setup)

__all__ = ["segment_lookup_scores", "segment_topk"]

_jit = dict(parallel=True, cache=True, nogil=True)


@njit(inline="always")
def _worse(score_a, row_a, score_b, row_b):
    """Is (score_a, row_a) ranked below (score_b, row_b)? Equal scores: the earlier row is worse."""
    return score_a < score_b or (score_a == score_b and row_a < row_b)


@njit(inline="always")
def _sift_down(heap_score, heap_row, size, i):
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_score[right], heap_row[right], heap_score[left], heap_row[left]):
            child = right
        if _worse(heap_score[child], heap_row[child], heap_score[i], heap_row[i]):
            heap_score[i], heap_score[child] = heap_score[child], heap_score[i]
            heap_row[i], heap_row[child] = heap_row[child], heap_row[i]
            i = child
        else:
            return


@njit(**_jit)
def _segment_topk(ptr, scores, k, out_ptr, out_rows):
    for s in prange(ptr.shape[0] - 1):
        start, end = ptr[s], ptr[s + 1]
        base = out_ptr[s]
        if end - start <= k:
            for r in range(start, end):
                out_rows[base + r - start] = r
            continue
        # a min-heap of the k best seen so far: its root is the one to evict next
        heap_score = np.empty(k, dtype=scores.dtype)
        heap_row = np.empty(k, dtype=np.int64)
        for i in range(k):
            heap_score[i] = scores[start + i]
            heap_row[i] = start + i
        for i in range(k // 2 - 1, -1, -1):
            _sift_down(heap_score, heap_row, k, i)
        for r in range(start + k, end):
            if _worse(heap_score[0], heap_row[0], scores[r], r):
                heap_score[0] = scores[r]
                heap_row[0] = r
                _sift_down(heap_score, heap_row, k, 0)
        kept = np.sort(heap_row)
        for i in range(k):
            out_rows[base + i] = kept[i]


@njit(**_jit)
def _lookup_scores(ptr, ids, table, query, scale, out):
    dim = table.shape[1]
    for s in prange(ptr.shape[0] - 1):
        for r in range(ptr[s], ptr[s + 1]):
            row = ids[r]
            acc = 0.0
            for d in range(dim):
                acc += table[row, d] * query[s, d]
            out[r] = acc * scale


def _topk_ptr(ptr: Tensor, k: int) -> Tensor:
    kept = (ptr[1:] - ptr[:-1]).clamp(max=k)
    out = torch.zeros_like(ptr)
    torch.cumsum(kept, 0, out=out[1:])
    return out


def segment_topk(scores: Tensor, ptr: Tensor, k: int, *, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """The rows of the ``k`` largest ``scores`` [R] in each segment of ``ptr`` [S+1].

    A segment keeps ``min(size, k)`` rows. Ties are broken towards the later row. No
    gradient flows through the selection (it returns indices).

    Args:
        scores (torch.Tensor): floating scores, shape ``[R]``, without NaN.
        ptr (torch.Tensor): row pointer of the segments, shape ``[S + 1]``.
        k (int): rows kept per segment, ``>= 1``.
        backend (str, optional): ``"cpu"`` (numba; CPU tensors), ``"reference"`` (torch sorts;
            any device) or ``None`` (by device). (default: ``None``)

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``rows`` ``[R_k]`` (``int64`` row ids, ascending, so
        each segment's kept rows stay in their original order) and ``topk_ptr`` ``[S + 1]``
        over them.

    Raises:
        ValueError: a bad ``ptr``, ``k < 1``, NaN scores, an unknown backend, or the
            ``"cpu"`` backend on tensors of another device.
    """
    check_floating("scores", scores, (1,))
    check_ptr(ptr, scores.size(0))
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("`scores` contains NaN; top-K needs ordered scores")
    if backend is None:
        backend = "cpu" if scores.device.type == "cpu" else "reference"
    if backend not in ("cpu", "reference"):
        raise ValueError(f"`backend` must be 'cpu', 'reference' or None, got {backend!r}")
    ptr = ptr.long()
    topk_ptr = _topk_ptr(ptr, k)
    if backend == "reference":
        return _segment_topk_sorted(scores, ptr, k), topk_ptr
    if scores.device.type != "cpu":
        raise ValueError(f"the cpu backend takes CPU tensors, got device {scores.device}")
    rows = torch.empty(int(topk_ptr[-1]), dtype=torch.long)
    work = scores.detach().to(torch.float64 if scores.dtype == torch.float64 else torch.float32).contiguous()
    with _numba_setup.threads_for(work.numel()):
        _segment_topk(ptr.contiguous().numpy(), work.numpy(), k, topk_ptr.numpy(), rows.numpy())
    return rows, topk_ptr


def _segment_topk_sorted(scores: Tensor, ptr: Tensor, k: int) -> Tensor:
    """Two stable sorts: by score (descending, later row first on ties), then by segment."""
    num_rows = scores.size(0)
    counts = ptr[1:] - ptr[:-1]
    segment = torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)
    later_first = torch.arange(num_rows - 1, -1, -1, device=scores.device)
    by_score = later_first[torch.argsort(scores.detach()[later_first], descending=True, stable=True)]
    order = by_score[torch.argsort(segment[by_score], stable=True)]
    rank = torch.arange(num_rows, device=scores.device) - ptr[segment[order]]
    return torch.sort(order[rank < k]).values


def segment_lookup_scores(
    table: Tensor, ids: Tensor, query: Tensor, ptr: Tensor, *, scale: float = 1.0
) -> Tensor:
    r"""``scale * <table[ids[r]], query[s]>`` for every row r of segment s, without autograd.

    .. math::
        s_r = \mathrm{scale}\, \langle \mathrm{table}_{\mathrm{ids}_r}, \mathrm{query}_{g(r)} \rangle

    where :math:`g(r)` is the segment of row :math:`r`. The ``[R, D]`` gathered rows are never
    built on CPU.

    Args:
        table (torch.Tensor): an embedding table, shape ``[V, D]``.
        ids (torch.Tensor): the table row of each segment row, integer, shape ``[R]``, in
            ``[0, V)``.
        query (torch.Tensor): one query per segment, shape ``[S, D]``.
        ptr (torch.Tensor): row pointer of the segments, shape ``[S + 1]``.
        scale (float, optional): multiplies the products. (default: ``1.0``)

    Returns:
        torch.Tensor: the scores, shape ``[R]`` (``float64`` for a ``float64`` table, else
        ``float32``), detached.

    Raises:
        TypeError: a non-floating ``table`` or ``query``, or non-integer ``ids``.
        ValueError: shapes that disagree with ``ptr``, or ``ids`` out of range.
    """
    check_floating("table", table, (2,))
    check_floating("query", query, (2,))
    check_integer("ids", ids)
    if ids.dim() != 1:
        raise ValueError(f"`ids` must be 1-D [R], got shape {tuple(ids.shape)}")
    check_ptr(ptr, ids.numel())
    if query.shape != (ptr.numel() - 1, table.size(1)):
        raise ValueError(
            f"`query` must be [S, D] = [{ptr.numel() - 1}, {table.size(1)}], got {tuple(query.shape)}"
        )
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.size(0)):
        raise ValueError(f"`ids` must lie in [0, {table.size(0)}), got [{int(ids.min())}, {int(ids.max())}]")
    work = torch.float64 if table.dtype == torch.float64 else torch.float32
    if table.device.type != "cpu":
        counts = ptr[1:] - ptr[:-1]
        with torch.no_grad():
            query_rows = torch.repeat_interleave(query.to(work), counts, dim=0, output_size=ids.numel())
            return (table.to(work)[ids] * query_rows).sum(1) * scale
    out = torch.empty(ids.numel(), dtype=work)
    _lookup_scores(
        ptr.long().contiguous().numpy(), ids.long().contiguous().numpy(),
        table.detach().to(work).contiguous().numpy(), query.detach().to(work).contiguous().numpy(),
        float(scale), out.numpy(),
    )
    return out
