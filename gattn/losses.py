r"""Losses shared by the pipelines (torch only: this module stays as light as the layers).

* :func:`masked_bce_with_logits` - binary / multi-task BCE over the labelled entries (OGB);
* :func:`masked_mse` - mean squared error over the labelled entries (OGB regression);
* :func:`weighted_cross_entropy` - benchmarking-gnns' class-weighted cross-entropy (SBM);
* :class:`LDAMLoss` - the **label-distribution-aware margin** loss of Cao, Wei, Gaidon,
  Arechiga and Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss"
  (NeurIPS 2019), in the multi-label binary cross-entropy form TransICD trains with.
  Not to be confused with :class:`gattn.models.LabelDependentAttention`, the *label dependent
  attention model* of Niu et al. (2022), which its authors also abbreviate LDAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LDAMLoss", "ldam_margins", "masked_bce_with_logits", "masked_mse", "weighted_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def masked_bce_with_logits(output: Tensor, target: Tensor) -> Tensor:
    r"""BCE with logits over the labelled entries of ``target`` (NaN labels ignored, as OGB),

    .. math:: \mathcal{L} = -\frac{1}{|L|}\sum_{(i,t) \in L} \big(y_{it}\log\sigma(z_{it})
              + (1 - y_{it})\log(1 - \sigma(z_{it}))\big),

    :math:`L` the entries whose label is not NaN. With no labelled entry the loss is 0 (and
    still connected to ``output``'s graph), not NaN.

    Args:
        output (Tensor): logits :math:`z`. Shape :math:`[N]` or :math:`[N, T]`.
        target (Tensor): 0/1 labels, NaN where missing; reshaped to ``output``'s shape.
    """
    target = target.reshape(output.shape).to(output.dtype)
    labelled = ~torch.isnan(target)
    if not bool(labelled.any()):
        return output.sum() * 0.0
    return F.binary_cross_entropy_with_logits(output[labelled], target[labelled])


def masked_mse(output: Tensor, target: Tensor) -> Tensor:
    r"""Mean squared error over the labelled entries,
    :math:`\frac{1}{|L|}\sum_{(i,t) \in L}(z_{it} - y_{it})^2` (NaN labels ignored; none labelled: 0).

    Args:
        output (Tensor): predictions. Shape :math:`[N]` or :math:`[N, T]`.
        target (Tensor): targets, NaN where missing; reshaped to ``output``'s shape.
    """
    target = target.reshape(output.shape).to(output.dtype)
    labelled = ~torch.isnan(target)
    if not bool(labelled.any()):
        return output.sum() * 0.0
    return F.mse_loss(output[labelled], target[labelled])


def weighted_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    r"""benchmarking-gnns' SBM loss: cross-entropy with class weights from the batch,

    .. math:: w_c = \frac{V - n_c}{V}\,[n_c > 0],

    :math:`V` the number of nodes of the batch and :math:`n_c` those of class :math:`c`.

    Args:
        output (Tensor): class scores. Shape :math:`[V, C]`.
        target (Tensor): class labels. Shape :math:`[V]` (or any shape of :math:`V` entries).
    """
    target = target.reshape(-1).long()
    counts = torch.bincount(target, minlength=output.size(1)).to(output.dtype)
    total = target.numel()
    weight = (total - counts) / total * (counts > 0).to(output.dtype)
    return F.cross_entropy(output, target, weight=weight)


def ldam_margins(label_counts: Tensor | Sequence[int], max_margin: float) -> Tensor:
    r"""Cao et al.'s per-label margins from the number of training positives per label.

    .. math::
        m_j = C\,\frac{n_j^{-1/4}}{\max_{k:\,n_k>0} n_k^{-1/4}}
            = C \left(\frac{n_{\min}}{n_j}\right)^{1/4}

    so the rarest label seen in training gets the largest margin, exactly :math:`C`
    (``max_margin``). A label with **no** positive in training gets :math:`C` too: its
    :math:`n^{-1/4}` is unbounded, and :math:`C` is the value that normalisation caps it at
    (the same as the rarest seen label). Its margin only acts when a positive of it appears
    in a batch.

    Args:
        label_counts (Tensor or list[int]): positives per label in the training set. Shape :math:`[K]`.
        max_margin (float): :math:`C`, the largest margin.

    Returns:
        Tensor: the margins, float32. Shape :math:`[K]`.
    """
    counts = torch.as_tensor(label_counts)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"`label_counts` must be 1-D [K] with K >= 1, got shape {tuple(counts.shape)}")
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"`label_counts` must hold numbers of positives, got dtype {counts.dtype}")
    counts = counts.to(torch.float64)
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError("`label_counts` must be finite and >= 0 (positives per label in the training set)")
    if not isinstance(max_margin, (int, float)) or isinstance(max_margin, bool) or not max_margin > 0:
        raise ValueError(f"`max_margin` must be a positive number, got {max_margin!r}")
    seen = counts > 0
    if not bool(seen.any()):
        return torch.full(counts.shape, float(max_margin), dtype=torch.float32)
    raw = torch.where(seen, counts, counts[seen].min()).pow(-0.25)
    return (max_margin * raw / raw.max()).to(torch.float32)


class LDAMLoss(nn.Module):
    r"""Label-distribution-aware margin loss (Cao et al. 2019) for multi-label targets.

    Each label :math:`j` has a margin :math:`m_j` (:func:`ldam_margins`: proportional to
    :math:`n_j^{-1/4}` for :math:`n_j` training positives, the largest equal to
    :math:`C` = ``max_margin``). The margin is subtracted from the logit of every
    **positive** target before a binary cross-entropy:

    .. math::
        \mathcal{L} = \mathrm{BCE}\!\left(s\,(z_{ij} - y_{ij}\, m_j),\ y_{ij}\right)

    so rare labels must be predicted with a larger logit before the loss is satisfied. This
    is the multi-label form TransICD (Biswas et al. 2021) trains with. The scale :math:`s`
    is Cao et al.'s logit scale for normalised features (they use 30 with a cosine
    classifier); TransICD uses none, ``scale=1``. Predictions use the raw logits
    :math:`z`, never the shifted ones.

    Not :class:`gattn.models.LabelDependentAttention` (Niu et al.'s "label dependent
    attention model", also abbreviated LDAM).

    Args:
        label_counts (Tensor or list[int]): positives per label in the **training** set, shape
            :math:`[K]` (:meth:`from_targets` counts them from a target matrix).
        max_margin (float, optional): :math:`C`, the largest margin, Cao et al.'s value by
            default. (The authors' TransICD code uses ``C * n^{-1/4}`` with C = 3 without this
            normalisation, so its largest margin is :math:`3\,n_{\min}^{-1/4}`; pass that
            value to match it.) (default: :obj:`0.5`)
        scale (float, optional): :math:`s`. (default: :obj:`1.0`)
        reduction (str, optional): ``"mean"`` (over all entries, as ``BCEWithLogitsLoss``),
            ``"sum"`` or ``"none"``. (default: ``"mean"``)

    Shapes:
        - **input:** logits :math:`z` :math:`[N, K]` (floating point), target :math:`y`
          :math:`[N, K]` of 0/1 (bool, int or float)
        - **output:** a scalar, or :math:`[N, K]` with ``reduction="none"``
    """

    margins: Tensor

    def __init__(
        self,
        label_counts: Tensor | Sequence[int],
        max_margin: float = 0.5,
        scale: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
            raise ValueError(f"`scale` must be a positive number, got {scale!r}")
        self.register_buffer("margins", ldam_margins(label_counts, max_margin))
        self.max_margin, self.scale, self.reduction = float(max_margin), float(scale), reduction

    @classmethod
    def from_targets(cls, targets: Tensor, **kwargs) -> LDAMLoss:
        """The loss with the label counts of a training target matrix ``[N, K]`` of 0/1."""
        targets = torch.as_tensor(targets)
        if targets.dim() != 2:
            raise ValueError(f"`targets` must be [N, K] (documents x labels), got shape {tuple(targets.shape)}")
        _check_binary("targets", targets)
        return cls(targets.to(torch.float64).sum(0), **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_labels={self.margins.numel()}, max_margin={self.max_margin}, "
            f"scale={self.scale}, reduction={self.reduction!r})"
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise TypeError(f"`logits` must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits))}")
        labels = self.margins.numel()
        if logits.dim() != 2 or logits.size(1) != labels:
            raise ValueError(f"`logits` must be [N, {labels}] (one column per label), got {tuple(logits.shape)}")
        if not isinstance(target, Tensor) or target.shape != logits.shape:
            raise ValueError(
                f"`target` must be a tensor of the shape of logits {tuple(logits.shape)}, "
                f"got {tuple(getattr(target, 'shape', ()))}"
            )
        _check_binary("target", target)
        target = target.to(logits.dtype)
        # the margins follow the logits: a task module moves the loss with the model, but
        # evaluates it on predictions gathered on the CPU
        shifted = self.scale * (logits - target * self.margins.to(device=logits.device, dtype=logits.dtype))
        return F.binary_cross_entropy_with_logits(shifted, target, reduction=self.reduction)


def _check_binary(name: str, values: Tensor) -> None:
    if values.dtype == torch.bool:
        return
    if values.is_complex() or not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(f"`{name}` must hold 0/1 labels only")
