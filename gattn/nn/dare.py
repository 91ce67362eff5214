r"""DARE: decoupled attention and representation embeddings for long behaviour histories
("Long-Sequence Recommendation Models Need Decoupled Embeddings", ICLR 2025).

Two stages over each user's history, as in TWIN-style long-sequence models:

1. **retrieval**: every behaviour is scored against the target with the *attention*
   embeddings, :math:`s_j = \langle e^{att}_A, e^{att}_j \rangle / \sqrt{d_{att}}`, and the
   top-K behaviours are kept (:func:`gattn.kernels.topk.segment_topk`: a heap per user on the
   ragged rows, nothing padded to the longest history, no gradients);
2. **attention**: target attention over the K kept behaviours, weights from the same attention
   embeddings (softmax over the K), values from the *representation* embeddings
   (:func:`gattn.kernels.segment_attention_pool` with one query per user).

The point of the paper is the split: attention and representation pull one shared embedding
in conflicting directions, and decoupling them (the attention dimension may even be smaller)
improves both retrieval and prediction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gattn.kernels import segment_attention_pool
from gattn.kernels.topk import segment_lookup_scores, segment_topk

from .din import TargetAttention

__all__ = ["DAREAttention"]


class DAREAttention(TargetAttention):
    r"""Retrieve the top-K behaviours by attention score, then attend over them.

    .. math::
        \mathcal{K} = \operatorname{top-K}_j\ \langle e^{att}_A, e^{att}_j\rangle,\qquad
        v_U(A) = \sum_{j \in \mathcal{K}}
        \operatorname{softmax}_{j \in \mathcal{K}}\!\Big(\frac{\langle e^{att}_A, e^{att}_j\rangle}
        {\sqrt{d_{att}}}\Big)\, e^{rep}_j

    Args:
        in_channels (int): attention embedding size :math:`d_{att}` (query and keys).
        top_k (int, optional): K; ``None`` attends over the whole history (no retrieval). A
            history shorter than K keeps all its behaviours. (default: ``20``)
        softmax (bool, optional): normalise the weights over the kept behaviours (the paper);
            ``False`` uses the scaled scores as weights. (default: ``True``)
        scale (float, optional): score scale; ``None``: :math:`1/\sqrt{d_{att}}`.
            (default: ``None``)

    Shapes:
        - **input:** ``query`` :math:`(B, d_{att})` (the target's attention embedding);
          ``keys`` :math:`(R, d_{att})` with ``ptr`` :math:`(B + 1)` or ``lengths``
          :math:`(B)`, or padded :math:`(B, L, d_{att})` with ``padding_mask`` :math:`(B, L)`
          (True = padding) or ``lengths``; ``value`` *(optional)* in the layout of ``keys``
          (the representation embeddings, any size :math:`D`; default: ``keys``).
        - **output:** :math:`(B, D)` and, with ``return_attention_weights=True``, the weight of
          every behaviour (zero for those not retrieved; :math:`(R)` or :math:`(B, L)`). An
          empty history gives zeros.
    """

    def __init__(
        self, in_channels: int, top_k: int | None = 20, softmax: bool = True, scale: float | None = None
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"`in_channels` must be a positive int, got {in_channels!r}")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive int or None, got {top_k!r}")
        if scale is not None and not scale > 0:
            raise ValueError(f"`scale` must be positive, got {scale!r}")
        self.in_channels, self.top_k, self.softmax = in_channels, top_k, bool(softmax)
        self.scale = 1.0 / math.sqrt(in_channels) if scale is None else float(scale)

    def reset_parameters(self) -> None:
        """No parameters: the embeddings belong to the model."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, top_k={self.top_k}, softmax={self.softmax})"

    @torch.no_grad()
    def select(self, query: Tensor, keys: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        """Stage one on validated rows: the kept rows [R_k] (ascending) and their ``ptr`` [B+1]."""
        rows = torch.arange(keys.size(0), device=keys.device)
        scores = segment_lookup_scores(keys, rows, query, ptr, scale=self.scale)
        return segment_topk(scores, ptr, self.top_k)

    def attend(self, query: Tensor, keys: Tensor, value: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        """Stage two on validated rows: pooled [B, D] and weights [R']."""
        out, weights = segment_attention_pool(
            keys, query=query.unsqueeze(1), ptr=ptr, value=value, normalize=self.softmax, scale=self.scale
        )
        return out.squeeze(1), weights.squeeze(1)

    def pool(self, query: Tensor, keys: Tensor, value: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        if self.top_k is None:
            return self.attend(query, keys, value, ptr)
        kept, kept_ptr = self.select(query, keys, ptr)
        out, kept_weights = self.attend(query, keys[kept], value[kept], kept_ptr)
        return out, kept_weights.new_zeros(keys.size(0)).index_copy(0, kept, kept_weights)
