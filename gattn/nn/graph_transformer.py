"""Graph Transformer layer of Dwivedi & Bresson, "A Generalization of Transformer Networks to
Graphs" (AAAI DLG workshop, 2021; arXiv:2012.09699).

Two modules:

* :class:`GraphTransformerConv` - the sparse multi-head attention of the paper: every node
  attends over its incoming edges only, optionally with edge features that scale the
  query-key products elementwise (and that are updated in turn);
* :class:`GraphTransformerLayer` - the paper's whole block: attention, output projection,
  residual, BatchNorm/LayerNorm, feed-forward network, residual, norm, for nodes and (in the
  edge variant) for edges.

The node path runs on the fused :func:`gattn.kernels.edge_attention`, so no E x H x D tensor
is built for the nodes. The edge output of the edge variant is per edge and per dimension by
definition, so it is computed (by gathering) only when edge features are used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import softmax

from gattn.kernels import edge_attention
from gattn.kernels.reorder import check_reorder

from ._checks import check_features, check_positive_int, check_probability
from ._conv import (
    FusedMessagePassing,
    as_graph,
    attention_return,
    channel_pair,
    node_features,
    project_key_value,
    project_query,
)

__all__ = ["GraphTransformerConv", "GraphTransformerLayer"]


class GraphTransformerConv(FusedMessagePassing):
    r"""Sparse multi-head graph attention of the Graph Transformer (Dwivedi & Bresson, 2020).

    Each destination node :math:`i` attends over the sources :math:`j` of its incoming edges.
    Per head :math:`k` with head size :math:`d`, without edge features:

    .. math::
        w_{ij}^{k} = \operatorname{softmax}_{j \in \mathcal{N}(i)}\!\left(
            \frac{Q^{k} h_i \cdot K^{k} h_j}{\sqrt{d}}\right), \qquad
        \hat h_i = \big\Vert_{k=1}^{H} \sum_{j \in \mathcal{N}(i)} w_{ij}^{k}\, V^{k} h_j .

    With edge features :math:`e_{ij}` (``edge_dim`` given), the scaled query-key product is a
    :math:`d`-vector multiplied elementwise by the projected edge feature, and the attention is
    the softmax of its sum over the :math:`d` dimensions:

    .. math::
        \hat w_{ij}^{k} = \left(\frac{Q^{k} h_i \odot K^{k} h_j}{\sqrt{d}}\right)
            \odot E^{k} e_{ij} \in \mathbb{R}^{d}, \qquad
        w_{ij}^{k} = \operatorname{softmax}_{j}\Big(\textstyle\sum_{c=1}^{d}
            \hat w_{ij,c}^{k}\Big), \qquad
        \hat e_{ij} = \big\Vert_{k=1}^{H} \hat w_{ij}^{k} .

    The paper's output projections :math:`O_h` (nodes) and :math:`O_e` (edges) are applied by
    :class:`GraphTransformerLayer`; this module returns the head outputs :math:`\hat h_i` and
    :math:`\hat e_{ij}` concatenated (``concat=True``, size ``heads * out_channels``) or
    averaged over heads (``concat=False``, size ``out_channels``). For a drop-in replacement
    of PyG's ``TransformerConv`` (root weight, ``beta``, additive edge features) use
    :class:`gattn.nn.TransformerConv`.

    A ``MessagePassing`` module (see :mod:`gattn.nn._conv`): works under ``to_hetero`` and
    ``HeteroConv`` (node-only variant, or ``update_edges=False``), with PyG's explainers and
    hooks, lazy ``-1`` sizes, ``EdgeIndex`` and sparse adjacency.

    Differences from the authors' DGL code: the softmax is the exact, max-subtracted softmax
    (the DGL code clamps the summed scores to [-5, 5] before ``exp``); a destination with no
    incoming edge gets zeros.

    Args:
        in_channels (int or tuple[int, int]): size of the input node features, ``-1`` to
            infer it on the first call, or ``(source, destination)`` sizes for a bipartite
            graph (then ``x`` is a ``(x_src, x_dst)`` pair; queries come from the
            destinations, keys and values from the sources).
        out_channels (int): size :math:`d` of each head.
        heads (int, optional): number of heads :math:`H`. (default: ``1``)
        concat (bool, optional): concatenate the heads (``True``) or average them
            (``False``). (default: ``True``)
        dropout (float, optional): dropout probability on the attention coefficients
            :math:`w_{ij}` while training; fused into the kernel (``dropout_p``), no
            E x H x D cost. (default: ``0.0``)
        edge_dim (int, optional): size of the edge features; ``None`` for the node-only
            variant. (default: ``None``)
        bias (bool, optional): whether the projections :math:`Q, K, V, E` have a bias.
            (default: ``True``)
        update_edges (bool, optional): with ``edge_dim``, also return the edge output
            :math:`\hat e_{ij}` (the paper's edge variant). ``False`` uses the edge features
            only inside the attention and returns node features alone. (default: ``True``)
        backend (str, optional): kernel backend for :func:`gattn.kernels.edge_attention`;
            ``None`` picks by device. (default: ``None``)
        reorder (str, optional): the fused kernel's node ordering for cache locality, undone
            at the boundary: ``"auto"`` (reverse Cuthill-McKee for a CPU graph that comes back
            and gains by it), ``None`` (always the caller's order), ``"rcm"`` or ``"metis"``.
            (default: ``"auto"``)
        kv_dtype (torch.dtype, optional): ``torch.bfloat16`` stores keys and values in bf16
            (opt-in, float32 arithmetic). Both: see :func:`~gattn.kernels.edge_attention`.
            (default: ``None``)
        **kwargs (optional): further arguments of ``MessagePassing`` (``decomposed_layers``,
            ...).

    Shapes:
        - input: ``x`` [N, in] or ``([N_src, in_src], [N_dst, in_dst])``, ``edge_index``
          [2, E] (source, destination) or a sparse adjacency, ``edge_attr`` [E, edge_dim]
          (edge variant); ``size`` ``(N_src, N_dst)`` optional.
        - output: node features [N_dst, heads * out_channels] (or [N_dst, out_channels]); in
          the edge variant with ``update_edges``, a pair ``(nodes, edges)`` with edges
          [E, heads * out_channels] (or [E, out_channels]). With
          ``return_attention_weights=True`` a last element ``(edge_index, alpha)`` is added
          (PyG's form for sparse input), ``alpha`` [E, heads] in the caller's edge order,
          differentiable.
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        update_edges: bool = True,
        backend: str | None = None,
        reorder: str | None = "auto",
        kv_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        src_channels, dst_channels = channel_pair(in_channels)
        self.in_channels = (src_channels, dst_channels) if isinstance(in_channels, (tuple, list)) else src_channels
        self.init_attention(out_channels, heads, concat, dropout, edge_dim, backend, reorder, kv_dtype)
        self.update_edges = bool(update_edges) and self.edge_dim is not None
        inner = self.heads * self.out_channels

        def linear(channels: int) -> Linear:
            return Linear(channels, inner, bias=bias, weight_initializer="glorot", bias_initializer="zeros")

        self.lin_query = linear(dst_channels)
        self.lin_key = linear(src_channels)
        self.lin_value = linear(src_channels)
        self.lin_edge = None if self.edge_dim is None else linear(self.edge_dim)
        self.reset_parameters()

    @property
    def output_channels(self) -> int:
        """Size of the node (and edge) output: ``heads * out_channels`` or ``out_channels``."""
        return self.heads * self.out_channels if self.concat else self.out_channels

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_query, self.lin_key, self.lin_value, self.lin_edge):
            if lin is not None:
                lin.reset_parameters()

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor],
        edge_index: Any,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor | tuple:
        x_src, x_dst = node_features(x, self.lin_key.in_channels, self.lin_query.in_channels,
                                     "GraphTransformerConv")
        graph = as_graph(edge_index, x_src.size(0), x_dst.size(0), size)
        heads, dim = self.heads, self.out_channels
        query = project_query(x_dst, self.lin_query, heads, dim)
        key, value = project_key_value(x_src, self.lin_key, self.lin_value, heads, dim)

        edge_scale = None
        if edge_attr is None and self.lin_edge is not None and graph.values is not None:
            edge_attr = graph.values.view(-1, 1) if graph.values.dim() == 1 else graph.values
        if self.lin_edge is not None:
            if edge_attr is None:
                raise ValueError(
                    f"`edge_attr` [E, {self.edge_dim}] is required: the layer was built with "
                    f"edge_dim={self.edge_dim}"
                )
            check_features("edge_attr", edge_attr, self.edge_dim, graph.edge_index.size(1), "one per edge")
            edge_scale = self.lin_edge(edge_attr).view(-1, heads, dim)
        elif edge_attr is not None:
            raise ValueError("`edge_attr` was given but the layer was built with edge_dim=None")

        want_alpha = return_attention_weights is not None and bool(return_attention_weights)
        scale = 1.0 / math.sqrt(dim)
        dropout_p = self.dropout if self.training else 0.0
        kept: dict[str, Tensor] = {}
        if self.fusable():

            def compute(edge_index_, size_, query, key, value, edge_scale):
                result = edge_attention(
                    query, key, value, graph.edge_index, num_nodes=(graph.num_src, graph.num_dst),
                    edge_scale=edge_scale, scale=scale, dropout_p=dropout_p,
                    return_attention=want_alpha, backend=self.backend, reorder=self.reorder,
                    kv_dtype=self.kv_dtype,
                )
                out, kept["alpha"] = result if want_alpha else (result, None)
                return out

            out = self.fused_propagate(
                compute, edge_index, size, query=query, key=key, value=value, edge_scale=edge_scale
            )
        else:
            out = self.propagate(
                graph.edge_index, query=query, key=key, value=value, edge_scale=edge_scale,
                size=(graph.num_src, graph.num_dst),
            )
            kept["alpha"] = self._alpha
        self._alpha = None

        outputs: list = [self.merge_heads(out)]
        if self.update_edges:
            src, dst = graph.edge_index[0], graph.edge_index[1]
            edge_scores = query[dst] * key[src] * edge_scale * scale
            outputs.append(self.merge_heads(edge_scores))
        if want_alpha:
            outputs.append(attention_return(edge_index, graph, kept["alpha"], sparse_pair=False))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def message(self, query_i: Tensor, key_j: Tensor, value_j: Tensor, edge_scale: Tensor | None,
                index: Tensor, ptr: Tensor | None, size_i: int | None) -> Tensor:
        """PyG's message path (explainers, message hooks): the same attention, materialised."""
        products = query_i * key_j / math.sqrt(self.out_channels)
        if edge_scale is not None:
            products = products * edge_scale
        alpha = softmax(products.sum(-1), index, ptr, size_i)
        self._alpha = alpha
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return value_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        extra = "" if self.edge_dim is None else f", edge_dim={self.edge_dim}"
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}, concat={self.concat}{extra})"
        )


def reset_module(module: nn.Module) -> None:
    """Reset a module once: its own `reset_parameters` if it has one (which owns its
    children's initialisation, e.g. the conv's Xavier init), else each child's."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:
        for child in module.children():
            reset_module(child)


def make_norm(kind: str | None, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.LayerNorm(channels)
    if kind is None or kind == "none":
        return nn.Identity()
    raise ValueError(f"`norm` must be 'batch', 'layer' or None, got {kind!r}")


class _FeedForward(nn.Sequential):
    """Linear -> ReLU -> dropout -> Linear, the FFN of a Transformer block."""

    def __init__(self, channels: int, ratio: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(channels, ratio * channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ratio * channels, channels),
        )


class GraphTransformerLayer(nn.Module):
    r"""One Graph Transformer block (Dwivedi & Bresson, 2020), for nodes and optionally edges.

    With :math:`\hat h_i, \hat e_{ij}` the outputs of :class:`GraphTransformerConv` (heads
    concatenated) and :math:`\mathrm{Norm}` a BatchNorm or LayerNorm:

    .. math::
        h_i' = \mathrm{Norm}\big(h_i + O_h\,\mathrm{Dropout}(\hat h_i)\big), \qquad
        h_i^{\ell+1} = \mathrm{Norm}\big(h_i' + W_2\,\mathrm{Dropout}(
            \mathrm{ReLU}(W_1 h_i'))\big)

    and, in the edge variant, the same for the edges with :math:`O_e`, its own FFN and norms:

    .. math::
        e_{ij}' = \mathrm{Norm}\big(e_{ij} + O_e\,\mathrm{Dropout}(\hat e_{ij})\big), \qquad
        e_{ij}^{\ell+1} = \mathrm{Norm}\big(e_{ij}' + W_{e,2}\,\mathrm{Dropout}(
            \mathrm{ReLU}(W_{e,1} e_{ij}'))\big).

    The FFN's hidden size is ``ffn_ratio * channels`` (the paper uses 2). Dropout sits where
    the authors' code has it (on the attention output before :math:`O`, and inside the FFN);
    attention-coefficient dropout is ``attention_dropout`` (default 0; fused into the kernel,
    see :class:`GraphTransformerConv`).

    Args:
        channels (int): node feature size (input and output); must be divisible by ``heads``.
        heads (int, optional): number of attention heads; each has ``channels // heads``
            dimensions. (default: ``8``)
        dropout (float, optional): dropout probability on the attention output and inside
            the FFNs. (default: ``0.0``)
        norm (str, optional): ``"batch"`` (BatchNorm, the paper's best setting), ``"layer"``
            or ``None``. (default: ``"batch"``)
        edge_dim (int, optional): edge feature size; given, the edge stream is on (edge
            features scale the attention and are updated). ``None`` for the node-only block.
            (default: ``None``)
        ffn_ratio (int, optional): FFN hidden size as a multiple of the input size.
            (default: ``2``)
        residual (bool, optional): add the residual connections. (default: ``True``)
        attention_dropout (float, optional): dropout on the attention coefficients.
            (default: ``0.0``)
        bias (bool, optional): bias of the Q/K/V/E projections. (default: ``True``)
        update_edges (bool, optional): with ``edge_dim``, run the edge stream. ``False`` lets
            the edge features scale the attention but computes no edge output and returns
            ``x`` alone: what a model's last block needs, whose edge output would be discarded
            (it also leaves no unused parameters). (default: ``True``)
        backend (str, optional): kernel backend of :func:`gattn.kernels.edge_attention`;
            ``None`` picks by device. (default: ``None``)
        reorder (str, optional): node ordering of the attention's fused kernel (``"auto"``,
            ``None``, ``"rcm"`` or ``"metis"``; see :class:`GraphTransformerConv`).
            (default: ``"auto"``)
        kv_dtype (torch.dtype, optional): ``torch.bfloat16``: the attention's keys and values
            stored in bf16 (see :class:`GraphTransformerConv`). (default: ``None``)

    Shapes:
        - **input:** ``x`` :math:`(|\mathcal{V}|, \text{channels})`, ``edge_index``
          :math:`(2, |\mathcal{E}|)`, ``edge_attr`` :math:`(|\mathcal{E}|, \text{edge\_dim})`
          *(edge variant)*: ``forward(x, edge_index, edge_attr=None)``.
        - **output:** ``x`` :math:`(|\mathcal{V}|, \text{channels})`, or the pair
          ``(x, edge_attr)`` with ``edge_attr`` :math:`(|\mathcal{E}|, \text{edge\_dim})`
          when the edge stream is on.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        dropout: float = 0.0,
        norm: str | None = "batch",
        edge_dim: int | None = None,
        ffn_ratio: int = 2,
        residual: bool = True,
        attention_dropout: float = 0.0,
        bias: bool = True,
        update_edges: bool = True,
        backend: str | None = None,
        reorder: str | None = "auto",
        kv_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.reorder = check_reorder(reorder)
        self.kv_dtype = kv_dtype
        self.channels = check_positive_int("channels", channels)
        self.heads = check_positive_int("heads", heads)
        if channels % heads:
            raise ValueError(f"`channels` ({channels}) must be divisible by `heads` ({heads})")
        self.dropout = check_probability("dropout", dropout)
        self.edge_dim = None if edge_dim is None else check_positive_int("edge_dim", edge_dim)
        self.ffn_ratio = check_positive_int("ffn_ratio", ffn_ratio)
        self.residual = bool(residual)
        self.norm_kind = norm
        self.update_edges = bool(update_edges)
        self.attention = self._build_attention(
            channels, heads, check_probability("attention_dropout", attention_dropout),
            self.edge_dim, bias, backend,
        )
        self.lin_out = nn.Linear(channels, channels)
        self.norm1 = make_norm(norm, channels)
        self.ffn = _FeedForward(channels, self.ffn_ratio, self.dropout)
        self.norm2 = make_norm(norm, channels)
        if self.updates_edges:
            self.lin_edge_out = nn.Linear(channels, self.edge_dim)
            self.edge_norm1 = make_norm(norm, self.edge_dim)
            self.edge_ffn = _FeedForward(self.edge_dim, self.ffn_ratio, self.dropout)
            self.edge_norm2 = make_norm(norm, self.edge_dim)
        self.reset_parameters()

    def _build_attention(
        self, channels: int, heads: int, attention_dropout: float, edge_dim: int | None,
        bias: bool, backend: str | None,
    ) -> nn.Module:
        """The attention module; subclasses swap it (it must return [N, channels] features,
        or a (nodes, edges [E, channels]) pair when :attr:`updates_edges`)."""
        return GraphTransformerConv(
            channels, channels // heads, heads=heads, concat=True, dropout=attention_dropout,
            edge_dim=edge_dim, bias=bias, update_edges=self.update_edges, backend=backend,
            reorder=self.reorder, kv_dtype=self.kv_dtype,
        )

    @property
    def updates_edges(self) -> bool:
        """Whether the block has the edge stream (its attention returns edge outputs)."""
        return bool(getattr(self.attention, "update_edges", False))

    def reset_parameters(self) -> None:
        for child in self.children():
            reset_module(child)

    def _block(self, x: Tensor, attended: Tensor, out_proj: nn.Module, norm1: nn.Module,
               ffn: nn.Module, norm2: nn.Module) -> Tensor:
        """Residual + norm around the projected attention output, then around the FFN."""
        h = out_proj(F.dropout(attended, p=self.dropout, training=self.training))
        h = norm1(x + h if self.residual else h)
        f = ffn(h)
        return norm2(h + f if self.residual else f)

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        if self.edge_dim is None and edge_attr is not None:
            raise ValueError("`edge_attr` was given but the layer was built with edge_dim=None")
        result = self.attention(x, edge_index, edge_attr)
        if self.updates_edges:
            attended, edge_attended = result
        else:
            attended, edge_attended = result, None
        x_out = self._block(x, attended, self.lin_out, self.norm1, self.ffn, self.norm2)
        if edge_attended is None:
            return x_out
        edge_out = self._block(
            edge_attr, edge_attended, self.lin_edge_out, self.edge_norm1, self.edge_ffn,
            self.edge_norm2,
        )
        return x_out, edge_out

    def __repr__(self) -> str:
        extra = "" if self.edge_dim is None else f", edge_dim={self.edge_dim}"
        return (
            f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
            f"norm={self.norm_kind!r}{extra})"
        )
