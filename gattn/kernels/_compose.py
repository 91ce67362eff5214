"""The segment attention pooling pipeline, shared by the fused backends.

Scores (one dense matmul for queries shared by all segments, a backend kernel for one query
set per segment, or the caller's), then the optional segment softmax, then the weighted
segment sum. Each backend supplies the three primitives, bound to its own description of
the segments (a ptr, a chunk plan), and the function casting inputs to its compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor


def attention_pool(
    x: Tensor,
    value: Tensor,
    query: Tensor | None,
    scores: Tensor | None,
    normalize: bool,
    scale: float,
    *,
    work: Callable[[Tensor], Tensor],
    query_scores: Callable[[Tensor, Tensor, float], Tensor],
    softmax: Callable[[Tensor], Tensor],
    weighted_sum: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """(out [S, Q, Dv], weights [R, Q]) in x's dtype."""
    dtype = x.dtype
    x, value = work(x), work(value)
    if scores is None:
        query = work(query)
        scores = (x @ query.t()) * scale if query.dim() == 2 else query_scores(x, query, scale)
    else:
        scores = work(scores)
    weights = softmax(scores.contiguous()) if normalize else scores
    out = weighted_sum(weights.contiguous(), value)
    return out.to(dtype), weights.to(dtype)
