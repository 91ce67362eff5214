"""Models that compare GIN-Attention with plain multi-head attention of the same size: one
pre-norm Transformer block whose attention is either :class:`gattn.nn.GINAttention` or plain
multi-head attention (on graphs: :class:`gattn.nn.GraphTransformerConv` plus an output
projection; on sequences: ``torch.nn.MultiheadAttention``), a node classifier for graphs and
a token/sequence model for sequences.

"Same size": GIN-Attention has no value projection but one MLP per head; with the MLP ratio
:math:`\\gamma = H / 2` (the default here) its attention has the parameters of plain attention
(:math:`Q, K, O` plus :math:`2 \\gamma D^2 / H = D^2` against :math:`Q, K, V, O`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.nn._checks import check_positive_int, check_probability
from gattn.nn.gin_attention import GINAttention, SparseGINAdapter
from gattn.nn.graph_transformer import GraphTransformerConv

__all__ = ["AttentionBlock", "GraphAttentionClassifier", "SequenceTransformer"]

ATTENTIONS = ("gin", "mha")


class AttentionBlock(nn.Module):
    r"""Pre-norm Transformer block
    :math:`h \leftarrow h + \mathrm{Drop}(\mathrm{Attn}(\mathrm{LN}(h)))`,
    :math:`h \leftarrow h + \mathrm{Drop}(\mathrm{FFN}(\mathrm{LN}(h)))` with a GELU FFN.

    Args:
        channels (int): width :math:`D`.
        heads (int, optional): attention heads. (default: ``4``)
        attention (str, optional): ``"gin"`` (:class:`gattn.nn.GINAttention`) or ``"mha"`` (plain multi-head
            attention of the same size). (default: ``"gin"``)
        graph (bool, optional): ``True`` for the sparse graph form (``forward(x [N, D], edge_index)``),
            ``False`` for sequences (``forward(x [B, L, D], key_padding_mask, is_causal)``).
            (default: ``False``)
        mlp_ratio (float, optional): GIN-Attention's per-head MLP ratio; ``None`` (default) takes ``heads / 2``,
            which gives both attentions the same parameter count.
        ffn_ratio (int, optional): FFN hidden size as a multiple of ``channels``. (default: ``2``)
        dropout (float, optional): on the attention and FFN outputs (both attentions alike).
            (default: ``0.0``)
        mlp_dropout (float, optional): dropout inside GIN-Attention's per-head MLPs (default 0: plain attention
            has no dropout inside it either).
        temperature (float, optional): GIN-Attention's softmax temperature. (default: ``1.0``)

    The attention module is ``attention``; :meth:`adapt` swaps a sequence block's
    ``MultiheadAttention`` for a :class:`gattn.nn.SparseGINAdapter` around it.

    Shapes:
        - **input:** a graph block: ``x`` :math:`(N, D)` and ``edge_index`` :math:`(2, E)`; a
          sequence block: ``x`` :math:`(B, L, D)`, ``key_padding_mask`` *(optional)* :math:`(B, L)`
          bool (True = padding), ``is_causal``.
        - **output:** the shape of ``x``.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        attention: str = "gin",
        graph: bool = False,
        mlp_ratio: float | None = None,
        ffn_ratio: int = 2,
        dropout: float = 0.0,
        temperature: float = 1.0,
        mlp_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.heads = check_positive_int("heads", heads)
        if attention not in ATTENTIONS:
            raise ValueError(f"`attention` must be one of {ATTENTIONS}, got {attention!r}")
        if channels % heads:
            raise ValueError(f"`channels` ({channels}) must be divisible by `heads` ({heads})")
        self.kind, self.graph = attention, bool(graph)
        self.dropout = check_probability("dropout", dropout)
        if attention == "gin":
            ratio = heads / 2 if mlp_ratio is None else mlp_ratio
            self.attention: nn.Module = GINAttention(channels, heads, mlp_ratio=ratio, dropout=mlp_dropout,
                                                     temperature=temperature)
        elif graph:
            self.attention = GraphTransformerConv(channels, channels // heads, heads=heads)
            self.lin_attention_out = nn.Linear(channels, channels)
        else:
            self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        ratio = check_positive_int("ffn_ratio", ffn_ratio)
        self.ffn = nn.Sequential(
            nn.Linear(channels, ratio * channels), nn.GELU(), nn.Linear(ratio * channels, channels)
        )

    def adapt(self, **adapter_options) -> SparseGINAdapter:
        """Freeze this sequence block's ``MultiheadAttention`` inside a
        :class:`gattn.nn.SparseGINAdapter` (options passed through) and use the adapter."""
        if not isinstance(self.attention, nn.MultiheadAttention):
            raise ValueError("only a sequence block with attention='mha' can be adapted")
        self.attention = SparseGINAdapter(self.attention, **adapter_options)
        return self.attention

    def _attend(self, h: Tensor, edge_index: Tensor | None, key_padding_mask: Tensor | None,
                is_causal: bool) -> Tensor:
        attention = self.attention
        if self.graph:
            out = attention(h, edge_index)
            return out if self.kind == "gin" else self.lin_attention_out(out)
        if isinstance(attention, GINAttention):
            return attention(h, key_padding_mask=key_padding_mask, is_causal=is_causal)
        causal_mask = None
        if is_causal:
            causal_mask = torch.ones(h.size(1), h.size(1), dtype=torch.bool, device=h.device).triu(1)
        if isinstance(attention, SparseGINAdapter):
            return attention(h, key_padding_mask=key_padding_mask, attn_mask=causal_mask)[0]
        return attention(h, h, h, key_padding_mask=key_padding_mask, attn_mask=causal_mask, need_weights=False)[0]

    def forward(self, x: Tensor, edge_index: Tensor | None = None, key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        if self.graph and edge_index is None:
            raise ValueError("a graph block needs `edge_index`")
        attended = self._attend(self.norm1(x), edge_index, key_padding_mask, is_causal)
        x = x + F.dropout(attended, p=self.dropout, training=self.training)
        return x + F.dropout(self.ffn(self.norm2(x)), p=self.dropout, training=self.training)


class GraphAttentionClassifier(nn.Module):
    r"""Node classifier: input projection, ``num_layers`` graph :class:`AttentionBlock`, final
    LayerNorm, linear head:

    .. math::
        h^{(0)} = W_{\mathrm{in}}\, x,\qquad h^{(\ell + 1)} = \mathrm{Block}_{\ell}\big(h^{(\ell)},
        \mathcal{E}\big),\qquad y = W_{\mathrm{out}}\, \mathrm{LN}\big(h^{(L)}\big).

    Args:
        in_channels (int): input feature size.
        hidden_channels (int): width of the blocks.
        out_channels (int): classes.
        num_layers (int, optional): blocks. (default: ``2``)
        heads (int, optional): attention heads. (default: ``4``)
        attention (str, optional): ``"gin"`` or ``"mha"``. (default: ``"gin"``)
        dropout (float, optional): on the input and in every block. (default: ``0.5``)
        input_dropout (float, optional): dropout on the raw features (default: ``dropout``).
        mlp_ratio (float, optional): the blocks' ``mlp_ratio`` (:class:`AttentionBlock`). (default: ``None``)
        ffn_ratio (int, optional): the blocks' ``ffn_ratio``. (default: ``2``)
        temperature (float, optional): the blocks' ``temperature``. (default: ``1.0``)

    Shapes:
        - **input:** ``x`` :math:`(N, \text{in\_channels})`, ``edge_index`` :math:`(2, E)`.
        - **output:** logits :math:`(N, \text{out\_channels})`.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 heads: int = 4, attention: str = "gin", dropout: float = 0.5, input_dropout: float | None = None,
                 mlp_ratio: float | None = None, ffn_ratio: int = 2, temperature: float = 1.0) -> None:
        super().__init__()
        self.dropout = check_probability("dropout", dropout)
        self.input_dropout = self.dropout if input_dropout is None else check_probability("input_dropout",
                                                                                         input_dropout)
        self.lin_in = nn.Linear(check_positive_int("in_channels", in_channels), hidden_channels)
        self.blocks = nn.ModuleList(
            AttentionBlock(hidden_channels, heads, attention, graph=True, mlp_ratio=mlp_ratio,
                           ffn_ratio=ffn_ratio, dropout=dropout, temperature=temperature)
            for _ in range(check_positive_int("num_layers", num_layers))
        )
        self.norm = nn.LayerNorm(hidden_channels)
        self.head = nn.Linear(hidden_channels, check_positive_int("out_channels", out_channels))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.lin_in(F.dropout(x, p=self.input_dropout, training=self.training))
        for block in self.blocks:
            h = block(h, edge_index)
        return self.head(F.dropout(self.norm(h), p=self.dropout, training=self.training))


class SequenceTransformer(nn.Module):
    r"""Token embeddings plus learned positions, ``num_layers`` sequence
    :class:`AttentionBlock`, final LayerNorm, linear head per token (``pooling="token"``) or on
    the mean over unpadded tokens (``pooling="mean"``):

    .. math::
        h^{(0)}_p = E[t_p] + P_p,\qquad h^{(\ell + 1)} = \mathrm{Block}_{\ell}\big(h^{(\ell)}\big),
        \qquad y_p = W\, \mathrm{LN}\big(h^{(L)}_p\big)
        \ \text{ or }\ y = W\, \frac{1}{|\{p\}|}\sum_{p} \mathrm{LN}\big(h^{(L)}_p\big).

    Args:
        vocab_size (int): number of token ids.
        max_length (int): longest sequence (learned positions).
        channels (int): width.
        out_channels (int): classes.
        num_layers (int, optional): sequence blocks. (default: ``2``)
        heads (int, optional): attention heads of the blocks. (default: ``4``)
        attention (str, optional): the blocks' ``attention``. (default: ``"gin"``)
        dropout (float, optional): dropout in the blocks. (default: ``0.0``)
        mlp_ratio (float, optional): the blocks' ``mlp_ratio`` (:class:`AttentionBlock`). (default: ``None``)
        ffn_ratio (int, optional): the blocks' ``ffn_ratio``. (default: ``2``)
        temperature (float, optional): the blocks' ``temperature``. (default: ``1.0``)
        causal (bool, optional): causal self-attention in every block. (default: ``False``)
        pooling (str, optional): ``"token"`` (logits [B, L, out]) or ``"mean"`` ([B, out]).
            (default: ``"token"``)

    ``forward(tokens [B, L] long, key_padding_mask [B, L] bool = None)``.

    Shapes:
        - **input:** ``tokens`` :math:`(B, L)` int64, ``key_padding_mask`` *(optional)*
          :math:`(B, L)` bool (True = padding).
        - **output:** logits :math:`(B, L, \text{out\_channels})` (``pooling="token"``) or
          :math:`(B, \text{out\_channels})` (``pooling="mean"``).
    """

    def __init__(self, vocab_size: int, max_length: int, channels: int, out_channels: int, num_layers: int = 2,
                 heads: int = 4, attention: str = "gin", dropout: float = 0.0, causal: bool = False,
                 pooling: str = "token", mlp_ratio: float | None = None, ffn_ratio: int = 2,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if pooling not in ("token", "mean"):
            raise ValueError(f"`pooling` must be 'token' or 'mean', got {pooling!r}")
        self.max_length = check_positive_int("max_length", max_length)
        self.causal, self.pooling = bool(causal), pooling
        self.dropout = check_probability("dropout", dropout)
        self.token = nn.Embedding(check_positive_int("vocab_size", vocab_size), channels)
        self.position = nn.Embedding(max_length, channels)
        self.blocks = nn.ModuleList(
            AttentionBlock(channels, heads, attention, graph=False, mlp_ratio=mlp_ratio, ffn_ratio=ffn_ratio,
                           dropout=dropout, temperature=temperature)
            for _ in range(check_positive_int("num_layers", num_layers))
        )
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, check_positive_int("out_channels", out_channels))

    def encode(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Hidden states [B, L, channels] after the final norm."""
        if tokens.dim() != 2 or tokens.dtype != torch.long or tokens.size(1) > self.max_length:
            raise ValueError(f"`tokens` must be a long tensor [B, L <= {self.max_length}], got "
                             f"{tokens.dtype} {tuple(tokens.shape)}")
        positions = torch.arange(tokens.size(1), device=tokens.device)
        h = F.dropout(self.token(tokens) + self.position(positions), p=self.dropout, training=self.training)
        for block in self.blocks:
            h = block(h, key_padding_mask=key_padding_mask, is_causal=self.causal)
        return self.norm(h)

    def forward(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        h = self.encode(tokens, key_padding_mask)
        if self.pooling == "mean":
            if key_padding_mask is None:
                keep = torch.ones_like(tokens, dtype=h.dtype)
            else:
                keep = (~key_padding_mask).to(h.dtype)
            h = (h * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
        return self.head(h)
