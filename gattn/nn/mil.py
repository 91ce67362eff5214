r"""Attention-based multiple-instance learning on ragged bags.

* :class:`AttentionMILPooling` - the attention (and gated attention) pooling of Ilse et al.,
  "Attention-based Deep Multiple Instance Learning" (ICML 2018);
* :class:`ABMIL` - the paper's whole model: instance encoder, attention pooling, classifier;
* :class:`HopfieldMIL` - the MIL model of Ramsauer et al. (ICLR 2021): instance encoder,
  :class:`~gattn.nn.hopfield.HopfieldPooling`, classifier;
* :class:`ACMIL` - Zhang et al., "Attention-Challenging Multiple Instance Learning for Whole
  Slide Image Classification" (ECCV 2024): multiple branch attention, stochastic top-K
  instance masking, and the diversity loss between branches (:func:`diversity_loss`).

All take the instances of a whole batch of bags of any sizes at once: rows ``x`` [R, D] with
a CSR ``ptr`` [B+1] or a ``batch`` vector [R] (any order), or padded ``[B, N, D]`` with a
``mask`` (True = padding), through :func:`gattn.nn.to_segments`; nothing is computed on
padding. The attention scores come from a small MLP and are pooled by
:func:`gattn.kernels.segment_attention_pool`; the weights are returned per instance, in the
caller's layout (``[R, branches]``, or ``[B, N, branches]`` for padded input), for heatmaps.
A bag without instances pools to zeros; zero bags give empty outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from gattn.kernels import segment_attention_pool

from ._checks import check_bool_mask, check_nonnegative_int, check_positive_int, check_probability
from ._ragged import Segments, to_segments
from .hopfield import HopfieldPooling

__all__ = [
    "ABMIL",
    "ACMIL",
    "ACMILOutput",
    "AttentionMILPooling",
    "HopfieldMIL",
    "diversity_loss",
    "mil_encoder",
    "stochastic_topk_mask",
]


def mil_encoder(in_channels: int, hidden: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """The instance encoder of the MIL-benchmark models: (Linear, ReLU, Dropout) per layer.

    Args:
        in_channels (int): instance feature size.
        hidden (Sequence[int]): the width of each layer (empty: an empty ``Sequential``).
        dropout (float, optional): dropout after each layer's ReLU (``0``: none). (default: ``0.0``)
    """
    layers: list[nn.Module] = []
    size = in_channels
    for width in hidden:
        layers += [nn.Linear(size, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        size = width
    return nn.Sequential(*layers)


class AttentionMILPooling(nn.Module):
    r"""Attention pooling of the instances of each bag (ABMIL), optionally gated.

    .. math::
        a_k = \frac{\exp\{w^\top \tanh(V h_k)\}}{\sum_j \exp\{w^\top \tanh(V h_j)\}},
        \qquad z = \sum_k a_k h_k

    and, gated,

    .. math::
        a_k = \mathrm{softmax}_k\!\left(w^\top\left(\tanh(V h_k)\odot
        \mathrm{sigm}(U h_k)\right)\right).

    With ``branches`` > 1, :math:`w` has one column per branch (the multiple branch attention
    of ACMIL); :math:`V` and :math:`U` are shared.

    Args:
        in_channels (int): instance feature size :math:`D`.
        attention_channels (int, optional): hidden size :math:`L` of the attention MLP.
            (default: ``128``)
        branches (int, optional): number of attention branches (columns of :math:`w`).
            (default: ``1``)
        gated (bool, optional): use the gated attention. (default: ``False``)
        dropout (float, optional): dropout on the hidden attention features (training only).
            (default: ``0.0``)

    Shapes:
        - **input:** ``x`` :math:`(R, D)` with ``ptr`` :math:`(B + 1)` or ``batch``
          :math:`(R)`, or padded :math:`(B, N, D)` with ``mask`` (see
          :func:`gattn.nn.to_segments`); ``score_mask`` *(optional)* bool in the layout of
          ``x`` (:math:`(R, \text{branches})` or :math:`(B, N, \text{branches})`; True =
          exclude the instance from that branch).
        - **output:** the pooled bags :math:`(B, D)` (:math:`(B, \text{branches}, D)` when
          ``branches`` > 1) and the weights in the layout of ``x``. A bag without instances
          pools to zeros.
    """

    def __init__(
        self,
        in_channels: int,
        attention_channels: int = 128,
        branches: int = 1,
        gated: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("attention_channels", attention_channels),
            ("branches", branches),
        ):
            check_positive_int(name, value)
        check_probability("dropout", dropout)
        self.in_channels, self.attention_channels = in_channels, attention_channels
        self.branches, self.gated = branches, gated
        self.attention_v = nn.Linear(in_channels, attention_channels)
        self.attention_u = nn.Linear(in_channels, attention_channels) if gated else None
        self.attention_w = nn.Linear(attention_channels, branches)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.attention_v, self.attention_u, self.attention_w):
            if layer is not None:
                layer.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, attention_channels="
            f"{self.attention_channels}, branches={self.branches}, gated={self.gated})"
        )

    def scores(self, x: Tensor) -> Tensor:
        """The unnormalised attention scores ``[R, branches]``."""
        hidden = torch.tanh(self.attention_v(x))
        if self.attention_u is not None:
            hidden = hidden * torch.sigmoid(self.attention_u(x))
        return self.attention_w(self.dropout(hidden))

    def forward(
        self,
        x: Tensor,
        ptr: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        num_bags: int | None = None,
        mask: Tensor | None = None,
        score_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        seg = to_segments(x, ptr, batch, mask, num_bags)
        if score_mask is not None:
            check_bool_mask("score_mask", score_mask, (*x.shape[:-1], self.branches))
            score_mask = seg.group(score_mask)
        pooled, weights = self.pool_segments(seg, score_mask)
        return pooled, seg.ungroup(weights)

    def pool_segments(self, seg: Segments, score_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pool grouped rows; ``score_mask`` [R, branches] and the weights in grouped order."""
        if seg.x.size(1) != self.in_channels:
            raise ValueError(f"`x` must have {self.in_channels} features, got {seg.x.size(1)}")
        scores = self.scores(seg.x)
        if score_mask is not None:
            scores = scores.masked_fill(score_mask, float("-inf"))
        pooled, weights = segment_attention_pool(seg.x, scores=scores, ptr=seg.ptr)
        return (pooled.squeeze(1) if self.branches == 1 else pooled), weights


class _BagClassifier(nn.Module):
    """Encoder -> bag pooling -> linear classifier: the parts ABMIL and HopfieldMIL share."""

    encoder: nn.Sequential
    pool: nn.Module
    classifier: nn.Linear
    num_classes: int

    def __repr__(self) -> str:
        return f"{type(self).__name__}(encoder={len(self.encoder)} layers, pool={self.pool!r})"

    in_channels: int

    def _encode(self, x: Tensor, ptr: Tensor | None, batch: Tensor | None, mask: Tensor | None,
                num_bags: int | None) -> Segments:
        """The bags as segments, their rows encoded (padding is never encoded)."""
        seg = to_segments(x, ptr, batch, mask, num_bags)
        if seg.x.size(1) != self.in_channels:
            raise ValueError(f"`x` must have {self.in_channels} features (in_channels), got shape {tuple(x.shape)}")
        return seg._replace(x=self.encoder(seg.x))

    def _logits(self, pooled: Tensor) -> Tensor:
        """Bag logits [B] for one class, [B, num_classes] otherwise."""
        logits = self.classifier(pooled)
        return logits.squeeze(-1) if self.num_classes == 1 else logits


class ABMIL(_BagClassifier):
    r"""Attention-based deep MIL (Ilse et al. 2018): encoder, attention pooling, classifier.

    .. math::
        h_k = f_\psi(x_k),\quad z = \sum_k a_k h_k,\quad
        a_k = \mathrm{softmax}_k\!\left(w^\top\tanh(V h_k)\right),\quad
        \hat y = g_\phi(z)

    (gated: :math:`w^\top(\tanh(V h_k)\odot\mathrm{sigm}(U h_k))`). The default sizes are the
    paper's MIL-benchmark model (fc-256, fc-128, fc-64, attention with L=64, one logit).

    Args:
        in_channels (int): instance feature size :math:`D`.
        hidden (Sequence[int], optional): widths of the instance encoder :math:`f_\psi`
            (Linear, ReLU, Dropout per layer; empty: no encoder). (default: ``(256, 128, 64)``)
        attention_channels (int, optional): hidden size :math:`L` of the attention.
            (default: ``64``)
        gated (bool, optional): use the gated attention. (default: ``False``)
        dropout (float, optional): dropout after each encoder layer (training only).
            (default: ``0.0``)
        num_classes (int, optional): logits per bag. (default: ``1``)

    Shapes:
        - **input:** ``x`` :math:`(R, D)` with ``ptr`` :math:`(B + 1)` or ``batch``
          :math:`(R)`, or padded :math:`(B, N, D)` with ``mask``; ``num_bags`` *(optional)*.
        - **output:** the bag logits :math:`(B)` (:math:`(B, \text{num\_classes})` for more
          than one class) and, with ``return_attention=True``, the instance weights
          (:math:`(R)`, or :math:`(B, N)`).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: Sequence[int] = (256, 128, 64),
        attention_channels: int = 64,
        gated: bool = False,
        dropout: float = 0.0,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.encoder = mil_encoder(in_channels, hidden, dropout)
        width = hidden[-1] if hidden else in_channels
        self.pool = AttentionMILPooling(width, attention_channels, 1, gated)
        self.classifier = nn.Linear(width, num_classes)
        self.num_classes = num_classes

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(
        self,
        x: Tensor,
        ptr: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        num_bags: int | None = None,
        mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        seg = self._encode(x, ptr, batch, mask, num_bags)
        pooled, weights = self.pool.pool_segments(seg)
        logits = self._logits(pooled)
        return (logits, seg.ungroup(weights.squeeze(-1))) if return_attention else logits


class HopfieldMIL(_BagClassifier):
    r"""Hopfield pooling for MIL (Ramsauer et al. 2021): encoder, Hopfield pooling, classifier.

    .. math::
        h_k = f_\psi(x_k),\quad
        z = \mathrm{softmax}\!\left(\beta\, Q K^\top\right) V,\ K = \mathrm{LN}(H) W_K,\
        V = \mathrm{LN}(H) W_V,\quad \hat y = g_\phi(z)

    with ``quantity`` learned state patterns :math:`Q` (:class:`HopfieldPooling`).

    Args:
        in_channels (int): instance feature size :math:`D`.
        hidden (Sequence[int], optional): widths of the instance encoder :math:`f_\psi`
            (Linear, ReLU, Dropout per layer; empty: no encoder). (default: ``(256, 128, 64)``)
        num_heads (int, optional): heads of the Hopfield pooling. (default: ``1``)
        hopfield_hidden (int, optional): the pooling's ``hidden_size`` (of :math:`Q, K`).
            (default: ``32``)
        quantity (int, optional): number of learned state patterns. (default: ``1``)
        scaling (float, optional): :math:`\beta`; ``None``: :class:`HopfieldPooling`'s
            default. (default: ``None``)
        dropout (float, optional): dropout after each encoder layer (training only).
            (default: ``0.0``)
        association_dropout (float, optional): dropout of the association (the pooling's
            ``dropout``). (default: ``0.0``)
        num_classes (int, optional): logits per bag. (default: ``1``)

    Shapes:
        - **input:** ``x`` :math:`(R, D)` with ``ptr`` :math:`(B + 1)` or ``batch``
          :math:`(R)`, or padded :math:`(B, N, D)` with ``mask``; ``num_bags`` *(optional)*.
        - **output:** the bag logits :math:`(B)` and, with ``return_attention=True``, the
          instance weights (:math:`(R)` or :math:`(B, N)`: the association averaged over heads
          and state patterns).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: Sequence[int] = (256, 128, 64),
        num_heads: int = 1,
        hopfield_hidden: int = 32,
        quantity: int = 1,
        scaling: float | None = None,
        dropout: float = 0.0,
        association_dropout: float = 0.0,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.encoder = mil_encoder(in_channels, hidden, dropout)
        width = hidden[-1] if hidden else in_channels
        self.pool = HopfieldPooling(
            width,
            quantity=quantity,
            num_heads=num_heads,
            hidden_size=hopfield_hidden,
            scaling=scaling,
            dropout=association_dropout,
        )
        self.classifier = nn.Linear(self.pool.output_size, num_classes)
        self.num_classes = num_classes

    def reset_parameters(self) -> None:
        for module in self.encoder:
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        self.pool.reset_parameters()
        self.classifier.reset_parameters()

    def forward(
        self,
        x: Tensor,
        ptr: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        num_bags: int | None = None,
        mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        seg = self._encode(x, ptr, batch, mask, num_bags)
        result = self.pool(seg.x, seg.ptr, return_association=return_attention)
        pooled, weights = result if return_attention else (result, None)
        logits = self._logits(pooled)
        return (logits, seg.ungroup(weights.mean((1, 2)))) if return_attention else logits


def _segment_sum(values: Tensor, ptr: Tensor) -> Tensor:
    """Sum of `values` [R, ...] over each segment of `ptr`."""
    index = torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=ptr.device), ptr[1:] - ptr[:-1])
    out = torch.zeros(ptr.numel() - 1, *values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_add(0, index, values)


def diversity_loss(weights: Tensor, ptr: Tensor, eps: float = 1e-8) -> Tensor:
    r"""ACMIL's diversity loss: the mean pairwise cosine similarity of the branch attentions.

    .. math::
        \mathcal{L}_{div} = \frac{2}{M(M-1)}\sum_{i<j}\frac{1}{B}\sum_b
        \cos\!\left(a^{(i)}_b, a^{(j)}_b\right)

    ``weights`` [R, M] are the (normalised) attention weights of M branches over the
    instances of the bags of ``ptr``. Empty bags count as zero similarity. Zero when M = 1.

    Args:
        weights (Tensor): the branches' attention weights. Shape :math:`(R, M)`.
        ptr (Tensor): the bags over the rows. Shape :math:`(B + 1)`.
        eps (float, optional): floor of the squared norms (a branch with all-zero weights).
            (default: ``1e-8``)
    """
    if weights.dim() != 2:
        raise ValueError(f"`weights` must be [R, branches], got {tuple(weights.shape)}")
    branches = weights.size(1)
    bags = ptr.numel() - 1
    if branches < 2 or bags == 0:
        return weights.sum() * 0
    gram = _segment_sum(weights.unsqueeze(2) * weights.unsqueeze(1), ptr)  # [B, M, M]
    norms = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(eps).sqrt()
    cosine = gram / (norms.unsqueeze(2) * norms.unsqueeze(1))
    upper = torch.triu_indices(branches, branches, offset=1, device=weights.device)
    return cosine[:, upper[0], upper[1]].mean()


def stochastic_topk_mask(
    scores: Tensor, ptr: Tensor, top_k: int, ratio: float, generator: torch.Generator | None = None
) -> Tensor:
    """ACMIL's stochastic top-K instance mask ``[R, M]`` (True = masked).

    For every bag and branch, among the ``min(top_k, n_b)`` instances of highest score, a
    random ``floor(ratio * min(top_k, n_b))`` are masked. Fully vectorised over bags: two
    stable sorts give each row its rank within its bag.

    Args:
        scores (Tensor): attention scores of every branch (detached inside). Shape :math:`(R, M)`.
        ptr (Tensor): the bags over the rows. Shape :math:`(B + 1)`.
        top_k (int): :math:`K`, the top instances per bag and branch among which some are masked
            (``< 1``: no mask).
        ratio (float): the share of those :math:`K` that is masked (``<= 0``: no mask).
        generator (torch.Generator, optional): the random source of the draw. (default: ``None``,
            torch's global one)
    """
    rows, branches = scores.shape
    if rows == 0 or top_k < 1 or ratio <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    counts = ptr[1:] - ptr[:-1]
    bag = torch.repeat_interleave(torch.arange(counts.numel(), device=scores.device), counts)
    kept = torch.clamp(counts, max=top_k)[bag]  # top-K size of each row's bag
    n_masked = torch.floor(kept.to(torch.float64) * ratio).long()

    def rank_in_bag(key: Tensor) -> Tensor:
        """Rank (0 = largest key) of every row inside its bag, per branch: [R, M]."""
        order = torch.argsort(key, dim=0, descending=True, stable=True)
        order = torch.gather(order, 0, torch.argsort(bag[order], dim=0, stable=True))
        rank = torch.empty_like(order)
        positions = torch.arange(rows, device=scores.device).unsqueeze(1).expand(-1, branches)
        rank.scatter_(0, order, positions - ptr[bag[order]])
        return rank

    top = rank_in_bag(scores.detach()) < kept.unsqueeze(1)
    noise = torch.rand(rows, branches, generator=generator, device=scores.device)
    noise = torch.where(top, noise, torch.full_like(noise, -1.0))  # others rank last
    return top & (rank_in_bag(noise) < n_masked.unsqueeze(1))


class ACMILOutput(NamedTuple):
    """What :class:`ACMIL` returns.

    ``bag_logits`` [B] (or [B, C]) from the bag classifier; ``branch_logits`` [B, M] (or
    [B, M, C]) from each branch's classifier; ``weights`` [R, M] every branch's attention per
    instance (after the training-time masking), in the caller's layout ([B, N, M] for padded
    input); ``bag_weights`` [R] (or [B, N]) the mean of the branch attentions (the heatmap
    of the bag prediction); ``ptr`` [B+1] the bags over the instances grouped by bag;
    ``segments`` the grouping (see :func:`gattn.nn.to_segments`; None when built by hand).

    Attributes:
        bag_logits (Tensor): the bag classifier's logits :math:`(B)` (or :math:`(B, C)`).
        branch_logits (Tensor): each branch's logits :math:`(B, M)` (or :math:`(B, M, C)`).
        weights (Tensor): every branch's attention per instance :math:`(R, M)` (padded input:
            :math:`(B, N, M)`), after the training-time masking.
        bag_weights (Tensor): the mean of the branch attentions :math:`(R)` (or :math:`(B, N)`).
        ptr (Tensor): the bags over the instances grouped by bag :math:`(B + 1)`.
        segments (Segments, optional): the grouping (``None`` when built by hand).
    """

    bag_logits: Tensor
    branch_logits: Tensor
    weights: Tensor
    bag_weights: Tensor
    ptr: Tensor
    segments: Segments | None = None


class ACMIL(_BagClassifier):
    r"""Attention-challenging MIL (Zhang et al.): multiple branch attention (MBA) with
    stochastic top-K instance masking (STKIM) and a diversity loss.

    With :math:`M` gated attention branches over encoded instances :math:`h_k`,

    .. math::
        a^{(m)}_k = \mathrm{softmax}_k\!\left(\tilde s^{(m)}_k\right),\quad
        z^{(m)} = \sum_k a^{(m)}_k h_k,\quad \hat y^{(m)} = g_m(z^{(m)}),

    .. math::
        \bar a_k = \frac1M\sum_m a^{(m)}_k,\quad \hat y = g\!\left(\sum_k \bar a_k h_k\right),

    where in training :math:`\tilde s^{(m)}` is the score :math:`s^{(m)}` with a random
    fraction ``mask_ratio`` of each bag's top-``top_k`` instances (by :math:`s^{(m)}`) set to
    :math:`-\infty`. The loss (:meth:`loss`) is the bag loss, plus the mean of the branch
    losses, plus ``diversity_weight`` times :func:`diversity_loss` of the :math:`a^{(m)}`.

    Args:
        in_channels (int): instance feature size :math:`D`.
        hidden (Sequence[int], optional): widths of the instance encoder :math:`f_\psi`
            (Linear, ReLU, Dropout per layer; empty: no encoder). (default: ``(256, 128, 64)``)
        attention_channels (int, optional): hidden size of the attention.
            (default: ``64``)
        branches (int, optional): :math:`M`, the attention branches. (default: ``5``)
        top_k (int, optional): instances per bag among which STKIM masks (``0``: none).
            (default: ``10``)
        mask_ratio (float, optional): fraction of the top-``top_k`` instances masked per
            branch in training, in ``[0, 1)``. (default: ``0.6``)
        gated (bool, optional): use the gated attention. (default: ``True``)
        dropout (float, optional): dropout after each encoder layer (training only).
            (default: ``0.0``)
        num_classes (int, optional): logits per bag. (default: ``1``)
        diversity_weight (float, optional): weight of :func:`diversity_loss` in
            :meth:`loss`. (default: ``1.0``)

    Shapes:
        - **input:** ``x`` :math:`(R, D)` with ``ptr`` :math:`(B + 1)` or ``batch``
          :math:`(R)`, or padded :math:`(B, N, D)` with ``mask``; ``num_bags`` *(optional)*.
        - **output:** an :class:`ACMILOutput`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: Sequence[int] = (256, 128, 64),
        attention_channels: int = 64,
        branches: int = 5,
        top_k: int = 10,
        mask_ratio: float = 0.6,
        gated: bool = True,
        dropout: float = 0.0,
        num_classes: int = 1,
        diversity_weight: float = 1.0,
    ) -> None:
        super().__init__()
        check_nonnegative_int("top_k", top_k)
        check_probability("mask_ratio", mask_ratio)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.encoder = mil_encoder(in_channels, hidden, dropout)
        width = hidden[-1] if hidden else in_channels
        self.pool = AttentionMILPooling(width, attention_channels, branches, gated)
        self.branch_classifiers = nn.ModuleList(nn.Linear(width, num_classes) for _ in range(branches))
        self.classifier = nn.Linear(width, num_classes)
        self.branches, self.top_k, self.mask_ratio = branches, top_k, mask_ratio
        self.num_classes, self.diversity_weight = num_classes, diversity_weight

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(branches={self.branches}, top_k={self.top_k}, "
            f"mask_ratio={self.mask_ratio}, pool={self.pool!r})"
        )

    def forward(
        self, x: Tensor, ptr: Tensor | None = None, batch: Tensor | None = None, *, num_bags: int | None = None,
        mask: Tensor | None = None,
    ) -> ACMILOutput:
        seg = self._encode(x, ptr, batch, mask, num_bags)
        h, ptr = seg.x, seg.ptr
        score_mask = None
        if self.training and self.top_k > 0 and self.mask_ratio > 0:
            score_mask = stochastic_topk_mask(self.pool.scores(h), ptr, self.top_k, self.mask_ratio)
        pooled, weights = self.pool.pool_segments(seg, score_mask)
        pooled = pooled.reshape(pooled.size(0), self.branches, h.size(1))
        branch_logits = torch.stack([head(pooled[:, m]) for m, head in enumerate(self.branch_classifiers)], dim=1)
        bag_weights = weights.mean(1, keepdim=True)
        bag_feat, _ = segment_attention_pool(h, scores=bag_weights, ptr=ptr, normalize=False)
        bag_logits = self.classifier(bag_feat.squeeze(1))
        if self.num_classes == 1:
            bag_logits, branch_logits = bag_logits.squeeze(-1), branch_logits.squeeze(-1)
        return ACMILOutput(bag_logits, branch_logits, seg.ungroup(weights), seg.ungroup(bag_weights.squeeze(1)),
                           ptr, seg._replace(x=x[:0]))

    def loss(self, output: ACMILOutput, target: Tensor, criterion: nn.Module | None = None) -> Tensor:
        """Bag loss + mean branch loss + ``diversity_weight`` * diversity loss."""
        if criterion is None:
            criterion = nn.BCEWithLogitsLoss() if self.num_classes == 1 else nn.CrossEntropyLoss()
        bag = criterion(output.bag_logits, target)
        if self.num_classes == 1:
            branch_target = target.unsqueeze(1).expand_as(output.branch_logits)
            branches = criterion(output.branch_logits, branch_target)
        else:
            branches = criterion(output.branch_logits.flatten(0, 1), target.repeat_interleave(self.branches))
        weights = output.weights if output.segments is None else output.segments.group(output.weights)
        return bag + branches + self.diversity_weight * diversity_loss(weights, output.ptr)
