r"""Hiformer (Gui et al., "Hiformer: Heterogeneous Feature Interactions Learning with
Transformers for Recommender Systems", 2023): self-attention over feature tokens.

A sample is a short, fixed set of T tokens (one per feature, plus task tokens), so unlike the
ragged histories of DIN and DARE this is dense attention: every sample has the same T, and
the attention itself runs on :func:`torch.nn.functional.scaled_dot_product_attention`. What
makes it Hiformer is where the projections come from:

* **heterogeneous** projections: every token has its own query, key, value and output
  matrices per head (features are different kinds of things; one shared projection forces
  them into one space);
* **composite** key/value projections: the keys (values) of all T tokens come from one
  matrix applied to the concatenation of all tokens, so each key already mixes features;
* its **low-rank** approximation :math:`\hat W \approx U V` with rank :math:`r \ll Td`;
* serving-time **pruning**: the model reads only the task tokens of the last layer, so that
  layer computes queries, attention rows, output projections and the feed-forward block
  for those tokens alone (``query_tokens``); the result is the same as slicing the full
  layer's output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HeterogeneousAttention", "HiformerLayer"]


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")


class _TokenLinear(nn.Module):
    """One linear map per token: ``x`` [B, T', d_in] -> [B, T', d_out] with ``weight[t]``."""

    def __init__(self, num_tokens: int, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tokens, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(num_tokens, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.size(1))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, tokens: Tensor | None = None) -> Tensor:
        weight = self.weight if tokens is None else self.weight[tokens]
        out = torch.einsum("btd,tde->bte", x, weight)
        if self.bias is not None:
            out = out + (self.bias if tokens is None else self.bias[tokens])
        return out


class _CompositeLinear(nn.Module):
    """All tokens' keys (or values) from the concatenation of all tokens, optionally low-rank."""

    def __init__(self, num_tokens: int, in_channels: int, out_channels: int, rank: int | None) -> None:
        super().__init__()
        self.num_tokens, self.out_channels = num_tokens, out_channels
        flat_in, flat_out = num_tokens * in_channels, num_tokens * out_channels
        if rank is None:
            self.down, self.up = None, nn.Linear(flat_in, flat_out)
        else:
            self.down, self.up = nn.Linear(flat_in, rank, bias=False), nn.Linear(rank, flat_out)

    def reset_parameters(self) -> None:
        for lin in (self.down, self.up):
            if lin is not None:
                lin.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.size(0), -1)
        if self.down is not None:
            flat = self.down(flat)
        return self.up(flat).view(x.size(0), self.num_tokens, self.out_channels)


class HeterogeneousAttention(nn.Module):
    r"""Multi-head self-attention over T feature tokens with token-specific projections.

    .. math::
        \mathrm{Att}^h(i, j) = \operatorname{softmax}_j\!\Big(
        \frac{(e_i Q_i^h)(k_j^h)^\top}{\sqrt{d_k}}\Big),\qquad
        o_i = \Big[\textstyle\sum_j \mathrm{Att}^h(i, j)\, v_j^h\Big]_{h} O_i

    with heterogeneous keys and values :math:`k_j^h = e_j K_j^h`, :math:`v_j^h = e_j V_j^h`,
    or composite ones :math:`[k_1^h, \dots, k_T^h] = [e_1 \| \dots \| e_T]\, \hat K^h`
    (:math:`\hat K^h \in \mathbb{R}^{Td \times T d_k}`), optionally low-rank
    :math:`\hat K^h \approx U_K^h V_K^h`; the same for values.

    Args:
        num_tokens (int): number of tokens :math:`T`.
        in_channels (int): token size :math:`d`.
        heads (int, optional): number of heads :math:`H`. (default: ``2``)
        head_channels (int, optional): :math:`d_k` per head; ``None``:
            ``in_channels // heads``. (default: ``None``)
        composite (bool, optional): composite key/value projections (Hiformer); ``False`` is
            the paper's plain heterogeneous attention. (default: ``True``)
        rank (int, optional): rank of the low-rank composite projections; ``None``: full.
            Needs ``composite=True``. (default: ``None``)
        dropout (float, optional): attention dropout (training only). (default: ``0.0``)

    Shapes:
        - **input:** ``x`` :math:`(B, T, d)`; ``query_tokens`` *(optional)*: a 1-D index of
          tokens whose outputs alone are computed (pruning).
        - **output:** :math:`(B, T, d)`, or :math:`(B, |\text{query\_tokens}|, d)`.
    """

    def __init__(
        self,
        num_tokens: int,
        in_channels: int,
        heads: int = 2,
        head_channels: int | None = None,
        composite: bool = True,
        rank: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("num_tokens", num_tokens), ("in_channels", in_channels), ("heads", heads)):
            _positive(name, value)
        head_channels = in_channels // heads if head_channels is None else head_channels
        _positive("head_channels", head_channels)
        if rank is not None:
            _positive("rank", rank)
            if not composite:
                raise ValueError("`rank` approximates the composite projections: it needs `composite=True`")
        self.num_tokens, self.in_channels = num_tokens, in_channels
        self.heads, self.head_channels = heads, head_channels
        self.composite, self.rank, self.dropout = bool(composite), rank, float(dropout)
        inner = heads * head_channels
        self.lin_query = _TokenLinear(num_tokens, in_channels, inner)
        if composite:
            self.lin_key = _CompositeLinear(num_tokens, in_channels, inner, rank)
            self.lin_value = _CompositeLinear(num_tokens, in_channels, inner, rank)
        else:
            self.lin_key = _TokenLinear(num_tokens, in_channels, inner)
            self.lin_value = _TokenLinear(num_tokens, in_channels, inner)
        self.lin_out = _TokenLinear(num_tokens, inner, in_channels)

    def reset_parameters(self) -> None:
        for lin in (self.lin_query, self.lin_key, self.lin_value, self.lin_out):
            lin.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_tokens={self.num_tokens}, {self.in_channels}, heads={self.heads}, "
            f"head_channels={self.head_channels}, composite={self.composite}, rank={self.rank})"
        )

    def _split(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), x.size(1), self.heads, self.head_channels).transpose(1, 2)

    def forward(self, x: Tensor, query_tokens: Sequence[int] | Tensor | None = None) -> Tensor:
        check_tokens(x, self.num_tokens, self.in_channels)
        query_tokens = token_index(query_tokens, self.num_tokens, x.device)
        queries = x if query_tokens is None else x[:, query_tokens]
        q = self._split(self.lin_query(queries, query_tokens))
        k, v = self._split(self.lin_key(x)), self._split(self.lin_value(x))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(x.size(0), queries.size(1), -1)
        return self.lin_out(out, query_tokens)


class HiformerLayer(nn.Module):
    r"""A Hiformer block: heterogeneous attention, then a feed-forward network, each with a
    residual connection and layer normalisation (post-norm, as the Transformer).

    .. math::
        h = \mathrm{LN}\big(x + \mathrm{HeteroAtt}(x)\big),\qquad
        y = \mathrm{LN}\big(h + W_2\,\mathrm{ReLU}(W_1 h)\big)

    The feed-forward weights are shared by all tokens; the heterogeneity is in the attention's
    token-specific projections.

    Args:
        num_tokens (int): number of tokens :math:`T`, as :class:`HeterogeneousAttention`.
        in_channels (int): token size :math:`d`.
        heads (int, optional): as :class:`HeterogeneousAttention`. (default: ``2``)
        head_channels (int, optional): as :class:`HeterogeneousAttention`.
            (default: ``None``)
        composite (bool, optional): as :class:`HeterogeneousAttention`. (default: ``True``)
        rank (int, optional): as :class:`HeterogeneousAttention`. (default: ``None``)
        ffn_channels (int, optional): hidden size of the feed-forward network; ``None``:
            ``4 * in_channels``. (default: ``None``)
        dropout (float, optional): dropout on the attention and on each residual branch
            (training only). (default: ``0.0``)

    Shapes:
        - **input:** ``x`` :math:`(B, T, d)`; ``query_tokens`` *(optional)* prunes the layer to
          those tokens' outputs, equal to ``layer(x)[:, query_tokens]``.
        - **output:** :math:`(B, T, d)`, or :math:`(B, |\text{query\_tokens}|, d)`.
    """

    def __init__(
        self,
        num_tokens: int,
        in_channels: int,
        heads: int = 2,
        head_channels: int | None = None,
        composite: bool = True,
        rank: int | None = None,
        ffn_channels: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attention = HeterogeneousAttention(num_tokens, in_channels, heads, head_channels, composite, rank, dropout)
        ffn_channels = 4 * in_channels if ffn_channels is None else ffn_channels
        _positive("ffn_channels", ffn_channels)
        self.ffn = nn.Sequential(nn.Linear(in_channels, ffn_channels), nn.ReLU(), nn.Linear(ffn_channels, in_channels))
        self.norm_attention = nn.LayerNorm(in_channels)
        self.norm_ffn = nn.LayerNorm(in_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def reset_parameters(self) -> None:
        self.attention.reset_parameters()
        for module in (self.ffn[0], self.ffn[2], self.norm_attention, self.norm_ffn):
            module.reset_parameters()

    def __repr__(self) -> str:
        att = self.attention
        return (
            f"{type(self).__name__}(num_tokens={att.num_tokens}, {att.in_channels}, heads={att.heads}, "
            f"composite={att.composite}, rank={att.rank})"
        )

    def forward(self, x: Tensor, query_tokens: Sequence[int] | Tensor | None = None) -> Tensor:
        att = self.attention
        check_tokens(x, att.num_tokens, att.in_channels)
        query_tokens = token_index(query_tokens, att.num_tokens, x.device)
        residual = x if query_tokens is None else x[:, query_tokens]
        h = self.norm_attention(residual + self.dropout(self.attention(x, query_tokens)))
        return self.norm_ffn(h + self.dropout(self.ffn(h)))


def check_tokens(x: Tensor, num_tokens: int, in_channels: int) -> None:
    """Boundary check of a token batch [B, T, d]."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"`x` must be a floating-point tensor [B, T, d], got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 3 or x.size(1) != num_tokens or x.size(2) != in_channels:
        raise ValueError(f"`x` must be [B, T={num_tokens}, d={in_channels}], got {tuple(x.shape)}")


def token_index(query_tokens: Sequence[int] | Tensor | None, num_tokens: int, device: torch.device) -> Tensor | None:
    """``query_tokens`` as a validated 1-D int64 index (None stays None)."""
    if query_tokens is None:
        return None
    index = torch.as_tensor(query_tokens, dtype=torch.long, device=device).reshape(-1)
    if index.numel() == 0:
        raise ValueError("`query_tokens` must name at least one token")
    if int(index.min()) < 0 or int(index.max()) >= num_tokens:
        raise ValueError(f"`query_tokens` must lie in [0, {num_tokens}), got {index.tolist()}")
    return index
