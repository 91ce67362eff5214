r"""The layers of TransICD (Biswas, Pham and Zhang, "TransICD: Transformer Based Code-wise
Attention Model for Explainable ICD Coding", AIME 2021).

* :func:`sinusoidal_position_encoding` - the fixed sinusoidal encoding of Vaswani et al.,
  evaluated at each token's position **inside its own document**;
* :class:`CodeWiseAttention` - one attention distribution over the tokens of a document per
  ICD code, :math:`A = \mathrm{softmax}_{tokens}(W_2 \tanh(W_1 H))`, giving one document
  vector per code;
* :class:`LabelWiseLinear` - one logistic output per code, each with its own weight vector
  and bias (the paper's per-code dense layers, in one batched product).

Documents are ragged: the rows of all documents of a batch concatenated, ``x`` [R, D], with a
CSR row pointer ``ptr`` [B+1]. The attention runs on
:func:`gattn.kernels.segment_attention_pool` with the precomputed code scores, so nothing is
padded to the longest note and the memory of the attention grows with R x C, never with
B x longest note x C. The whole model is :class:`gattn.models.TransICD`; its loss, the
label-distribution-aware margin loss of Cao et al., is :class:`gattn.losses.LDAMLoss`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gattn.kernels import segment_attention_pool
from gattn.kernels._validate import check_floating

from ._ragged import check_segments

__all__ = ["CodeWiseAttention", "LabelWiseLinear", "sinusoidal_position_encoding"]


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def sinusoidal_position_encoding(
    position: Tensor, channels: int, *, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""The sinusoidal encoding of each entry of ``position`` [R]: ``[R, channels]``.

    .. math::
        \mathrm{PE}(p, 2i) = \sin\!\left(p / \mathrm{base}^{2i/d}\right),\qquad
        \mathrm{PE}(p, 2i+1) = \cos\!\left(p / \mathrm{base}^{2i/d}\right)

    Pass the position of every token inside its own document
    (:func:`gattn.nn._ragged.position_in_segment`). The authors' TransICD code adds the
    encoding of the *batch index* instead: its table is laid out sequence-first
    ``[max_len, 1, d]`` while the embeddings are batch-first ``[B, L, d]``, so
    ``pe[:x.size(0)]`` selects one row per document and broadcasts it over all its tokens;
    every token of a document then carries the same vector, and word order is lost.

    Args:
        position (Tensor): the position of each row (integer or float). Shape :math:`(R)`.
        channels (int): :math:`d`, the encoding size.
        base (float, optional): the wavelength base. (default: ``10000.0``)
        dtype (torch.dtype, optional): dtype of the result. (default: ``torch.float32``)
    """
    _check_positive("channels", channels)
    if position.dim() != 1:
        raise ValueError(f"`position` must be 1-D [R], got shape {tuple(position.shape)}")
    frequency = torch.exp(
        torch.arange(0, channels, 2, device=position.device, dtype=torch.float64) * (-math.log(base) / channels)
    )
    angle = position.to(torch.float64).unsqueeze(1) * frequency.unsqueeze(0)
    out = torch.empty(position.numel(), channels, device=position.device, dtype=torch.float64)
    out[:, 0::2] = torch.sin(angle)
    out[:, 1::2] = torch.cos(angle[:, : channels // 2])
    return out.to(dtype)


class CodeWiseAttention(nn.Module):
    r"""TransICD's code-wise attention over the tokens of ragged documents.

    For the encoded tokens :math:`H = [h_1, \dots, h_n]` of a document and :math:`C` codes,

    .. math::
        Z = \tanh(W_1 H),\qquad A = \mathrm{softmax}_{tokens}(W_2 Z) \in \mathbb{R}^{C\times n},
        \qquad v_c = \sum_{j} A_{cj}\, h_j

    :math:`W_1` (with bias) maps :math:`D` to ``attention_channels``; :math:`W_2` maps to one
    score per code. :math:`W_2` has no bias: a per-code constant cancels in the softmax over
    tokens (the authors' code carries one; it receives no gradient signal).

    Args:
        in_channels (int): token feature size :math:`D`.
        num_codes (int): number of codes :math:`C`.
        attention_channels (int, optional): hidden size of :math:`W_1`; ``None`` gives
            ``2 * in_channels``, the authors' expansion factor 2. (default: ``None``)

    Shapes:
        - **input:** ``x`` :math:`(R, D)` (the tokens of all documents), ``ptr``
          :math:`(B + 1)`.
        - **output:** the code vectors :math:`(B, C, D)` and the attention :math:`(R, C)`
          (column ``c`` sums to one over the tokens of each document). A document without
          tokens gives zero vectors.
    """

    def __init__(self, in_channels: int, num_codes: int, attention_channels: int | None = None) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_codes", num_codes)
        attention_channels = 2 * in_channels if attention_channels is None else attention_channels
        _check_positive("attention_channels", attention_channels)
        self.in_channels, self.num_codes, self.attention_channels = in_channels, num_codes, attention_channels
        self.w1 = nn.Linear(in_channels, attention_channels)
        self.w2 = nn.Linear(attention_channels, num_codes, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.w1.reset_parameters()
        self.w2.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, num_codes={self.num_codes}, "
            f"attention_channels={self.attention_channels})"
        )

    def scores(self, x: Tensor) -> Tensor:
        """The unnormalised scores :math:`W_2 \\tanh(W_1 h)` of every token: ``[R, C]``."""
        return self.w2(torch.tanh(self.w1(x)))

    def forward(self, x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        check_floating("x", x, (2,))
        if x.size(1) != self.in_channels:
            raise ValueError(f"`x` must be [R, {self.in_channels}], got {tuple(x.shape)}")
        check_segments("ptr", ptr, x.size(0))
        return segment_attention_pool(x, scores=self.scores(x), ptr=ptr)


class LabelWiseLinear(nn.Module):
    r"""One linear output per label on that label's own vector.

    .. math::
        \hat y_{bc} = w_c^\top v_{bc} + b_c

    Input ``[B, C, D]`` (one vector per label, e.g. from :class:`CodeWiseAttention`),
    output the logits ``[B, C]``. Equivalent to ``C`` separate ``nn.Linear(D, 1)`` layers.

    Args:
        in_channels (int): vector size :math:`D`.
        num_labels (int): number of labels :math:`C`.

    Shapes:
        - **input:** ``x`` :math:`(B, C, D)`.
        - **output:** the logits :math:`(B, C)`.
    """

    def __init__(self, in_channels: int, num_labels: int) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("num_labels", num_labels)
        self.in_channels, self.num_labels = in_channels, num_labels
        self.weight = nn.Parameter(torch.empty(num_labels, in_channels))
        self.bias = nn.Parameter(torch.empty(num_labels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The initialisation of C separate nn.Linear(D, 1) layers.
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, num_labels={self.num_labels})"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.num_labels, self.in_channels):
            raise ValueError(
                f"`x` must be [B, {self.num_labels}, {self.in_channels}] (one vector per label), "
                f"got {tuple(x.shape)}"
            )
        return (x * self.weight).sum(-1) + self.bias
