"""Plain-torch reference of the kernel API: the oracle every backend is tested against.

Written for clarity, not speed: it materialises the per-edge products (E x H x D) that the
fused backends avoid. Inputs are already validated by `gattn.kernels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dropout import keep_mask


def segment_softmax(scores: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Softmax of `scores` [R, ...] within segments `index` [R]; all -inf segments give 0."""
    index = index.long()
    shape = (num_segments,) + tuple(scores.shape[1:])
    expanded = index.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    seg_max = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device)
    seg_max = seg_max.scatter_reduce(0, expanded, scores.detach(), "amax", include_self=True)
    seg_max = torch.where(torch.isfinite(seg_max), seg_max, torch.zeros_like(seg_max))
    exp = torch.exp(scores - seg_max[index])
    denom = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add(0, index, exp)
    return exp / denom.clamp_min(torch.finfo(scores.dtype).tiny)[index]


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edge_index: Tensor,
    num_dst: int,
    edge_bias: Tensor | None = None,
    edge_scale: Tensor | None = None,
    scale: float = 1.0,
    *,
    edge_key: Tensor | None = None,
    edge_value: Tensor | None = None,
    additive: bool = False,
    att: Tensor | None = None,
    negative_slope: float = 0.2,
    dropout_p: float = 0.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """out [N_dst, H, Dv] and attention [E, H] (before dropout) in the caller's edge order."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    keys = k[src] if edge_key is None else k[src] + edge_key  # [E, H, D]
    if additive:
        hidden = F.leaky_relu(q[dst] + keys, negative_slope)
        scores = (hidden * att).sum(-1) if att is not None else hidden.sum(-1)
    else:
        products = q[dst] * keys
        if edge_scale is not None:
            products = products * (edge_scale if edge_scale.dim() == 3 else edge_scale.unsqueeze(-1))
        scores = products.sum(-1) * scale
    if edge_bias is not None:
        scores = scores + edge_bias
    attention = segment_softmax(scores, dst, num_dst)
    weights = attention
    if dropout_p > 0:
        keep = keep_mask(seed, attention.size(0), attention.size(1), dropout_p, attention.device)
        weights = attention * keep.to(attention.dtype) / (1.0 - dropout_p)
    values = v[src] if edge_value is None else v[src] + edge_value
    out = torch.zeros(num_dst, v.size(1), v.size(2), dtype=v.dtype, device=v.device)
    out = out.index_add(0, dst, weights.unsqueeze(-1) * values)
    return out, attention


def segment_attention_pool(
    x: Tensor,
    value: Tensor,
    index: Tensor,
    num_segments: int,
    query: Tensor | None,
    scores: Tensor | None,
    normalize: bool,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """out [S, Q, Dv] and weights [R, Q]."""
    index = index.long()
    if scores is None:
        if query.dim() == 2:
            scores = x @ query.t()
        else:
            scores = torch.einsum("rd,rqd->rq", x, query[index])
        scores = scores * scale
    weights = segment_softmax(scores, index, num_segments) if normalize else scores
    out = torch.zeros(num_segments, weights.size(1), value.size(1), dtype=value.dtype, device=value.device)
    out = out.index_add(0, index, weights.unsqueeze(-1) * value.unsqueeze(1))
    return out, weights
