r"""Label-dependent attention: rows of ragged sequences attend to each label by their
compatibility with the label's embedding.

The attention of Niu, Yin, Song, Guo and Yang, "Label Dependent Attention Model for Disease
Risk Prediction Using Multimodal Electronic Health Records" (arXiv:2201.06779, 2022),
which builds on the joint word-label embedding of LEAM (Wang et al., "Joint Embedding of
Words and Labels for Text Classification", ACL 2018). The same layer serves the words of a
note and the hourly steps of a time series; the whole multimodal model is
:class:`gattn.models.LabelDependentAttention`. Niu et al. abbreviate their model LDAM; it is
unrelated to the label-distribution-aware margin loss :class:`gattn.losses.LDAMLoss`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gattn.kernels import segment_attention_pool
from gattn.kernels._validate import check_floating

from ._ragged import check_segments, segment_conv1d

__all__ = ["LABEL_POOLINGS", "LabelCompatibilityAttention"]

LABEL_POOLINGS = ("per_label", "max")


class LabelCompatibilityAttention(nn.Module):
    r"""Attention of the rows of each sequence to each label (label-dependent attention).

    For rows :math:`h_r` (words of a note or steps of a time series, already in the label
    space) and label embeddings :math:`c_k`:

    .. math::
        G_{rk} = \frac{\langle h_r, c_k\rangle}{\sqrt{H}},\qquad
        U_{rk} = \mathrm{ReLU}\!\Big(b + \sum_{o=-n}^{n} w_o\, G_{r+o,k}\Big)

    (the "phrase filter": a 1-D convolution of window ``ngram`` = 2n+1 along the sequence,
    shared by all labels, zero-padded at each sequence's ends, never reaching into the next
    sequence). Then, with ``label_pooling="per_label"`` (default), one distribution per label

    .. math::
        a_{rk} = \mathrm{softmax}_{r \in \text{seq}}(U_{rk}),\qquad z_k = \sum_r a_{rk} h_r,

    and with ``label_pooling="max"`` (LEAM and the authors' code) one distribution from the
    best-matching label, :math:`a_r = \mathrm{softmax}_r(\max_k U_{rk})`, :math:`z = \sum_r a_r h_r`.
    The pooling runs on :func:`gattn.kernels.segment_attention_pool` over the ragged rows.

    Args:
        channels (int): row and label embedding size :math:`H`.
        ngram (int, optional): window of the phrase filter (odd; 1 = no context).
            (default: ``3``)
        label_pooling (str, optional): ``"per_label"`` or ``"max"`` (see above).
            (default: ``"per_label"``)
        dropout (float, optional): dropout on the scores :math:`U` before the softmax
            (training only; the authors' code drops them too). (default: ``0.0``)

    Shapes:
        - **input:** ``x`` :math:`(R, H)` rows of all sequences, ``label_embedding``
          :math:`(K, H)`, ``ptr`` :math:`(B + 1)`.
        - **output:** the pooled :math:`(B, K, H)` (:math:`(B, 1, H)` with ``"max"``) and the
          attention :math:`(R, K)` (:math:`(R, 1)`). A sequence without rows pools to zeros.
    """

    def __init__(self, channels: int, ngram: int = 3, label_pooling: str = "per_label", dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive int, got {channels!r}")
        if not isinstance(ngram, int) or ngram < 1 or ngram % 2 == 0:
            raise ValueError(f"`ngram` must be a positive odd int (the window 2n+1), got {ngram!r}")
        if label_pooling not in LABEL_POOLINGS:
            raise ValueError(f"`label_pooling` must be one of {LABEL_POOLINGS}, got {label_pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        self.channels, self.ngram, self.label_pooling = channels, ngram, label_pooling
        self.phrase_weight = nn.Parameter(torch.empty(ngram))
        self.phrase_bias = nn.Parameter(torch.empty(()))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The weights as nn.Conv1d draws them for one input channel; the bias starts at zero,
        # since a negative one can silence every score behind the ReLU: the attention is
        # then uniform and receives no gradient at all.
        bound = 1.0 / math.sqrt(self.ngram)
        nn.init.uniform_(self.phrase_weight, -bound, bound)
        nn.init.zeros_(self.phrase_bias)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.channels}, ngram={self.ngram}, "
            f"label_pooling={self.label_pooling!r})"
        )

    def scores(self, x: Tensor, label_embedding: Tensor, ptr: Tensor) -> Tensor:
        """The compatibility after the phrase filter, :math:`U` [R, K] (before pooling over labels)."""
        compatibility = x @ label_embedding.t() / math.sqrt(self.channels)
        return torch.relu(segment_conv1d(compatibility, ptr, self.phrase_weight, self.phrase_bias))

    def forward(self, x: Tensor, label_embedding: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        check_floating("x", x, (2,))
        check_floating("label_embedding", label_embedding, (2,))
        if x.size(1) != self.channels or label_embedding.size(1) != self.channels:
            raise ValueError(
                f"`x` [R, H] and `label_embedding` [K, H] must have H={self.channels}, "
                f"got {tuple(x.shape)} and {tuple(label_embedding.shape)}"
            )
        if label_embedding.size(0) < 1:
            raise ValueError("`label_embedding` must hold at least one label, got 0 rows")
        check_segments("ptr", ptr, x.size(0))
        scores = self.scores(x, label_embedding, ptr)
        if self.label_pooling == "max":
            scores = scores.max(dim=1, keepdim=True).values
        return segment_attention_pool(x, scores=self.dropout(scores), ptr=ptr)
