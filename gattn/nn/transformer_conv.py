r"""A fused drop-in for PyG's ``TransformerConv`` (Shi et al., "Masked Label Prediction:
Unified Message Passing Model for Semi-Supervised Classification", IJCAI 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import softmax

from gattn.kernels import edge_attention

from ._checks import check_features
from ._conv import (
    FusedMessagePassing,
    as_graph,
    attention_return,
    channel_pair,
    node_features,
    project_key_value,
    project_query,
)

__all__ = ["TransformerConv"]


class TransformerConv(FusedMessagePassing):
    r"""The graph transformer operator of Shi et al. (2021), computed on the fused kernel:
    the same constructor, parameters (names and initialisation), forward signature and
    outputs as ``torch_geometric.nn.TransformerConv``.

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_1 \mathbf{x}_i +
        \sum_{j \in \mathcal{N}(i)} \alpha_{i,j} \left(\mathbf{W}_2 \mathbf{x}_{j}
        + \mathbf{W}_6 \mathbf{e}_{ij}\right), \qquad
        \alpha_{i,j} = \textrm{softmax} \left(
        \frac{(\mathbf{W}_3\mathbf{x}_i)^{\top} (\mathbf{W}_4\mathbf{x}_j + \mathbf{W}_6 \mathbf{e}_{ij})}
        {\sqrt{d}} \right)

    (the edge terms only with ``edge_dim``), and with ``beta``

    .. math::
        \mathbf{x}^{\prime}_i = \beta_i \mathbf{W}_1 \mathbf{x}_i + (1 - \beta_i) \mathbf{m}_i,
        \qquad \beta_i = \textrm{sigmoid}(\mathbf{w}_5^{\top}
        [ \mathbf{W}_1 \mathbf{x}_i, \mathbf{m}_i, \mathbf{W}_1 \mathbf{x}_i - \mathbf{m}_i ]).

    The attention, its dropout and the weighted sum (with the edge term added to keys and
    values) run in one fused pass (:func:`gattn.kernels.edge_attention` with ``edge_key`` and
    ``edge_value``): no E x H x C message tensor is built, and the backward pass recomputes
    the scores. A PyG model keeps working when ``torch_geometric.nn.TransformerConv`` is
    replaced by this class (``state_dict`` files load both ways).

    Args:
        in_channels (int or tuple[int, int]): size of each input sample, ``-1`` to infer it on
            the first call, or a ``(source, destination)`` pair of sizes.
        out_channels (int): size :math:`C` of each head's output.
        heads (int, optional): number of heads :math:`H`. (default: ``1``)
        concat (bool, optional): concatenate the heads, or average them. (default: ``True``)
        beta (bool, optional): gate the skip connection with :math:`\beta_i` (needs
            ``root_weight``). (default: ``False``)
        dropout (float, optional): dropout probability of the attention coefficients while
            training, fused into the kernel. (default: ``0.0``)
        edge_dim (int, optional): edge feature size; ``None``: no edge features.
            (default: ``None``)
        bias (bool, optional): learn additive biases. (default: ``True``)
        root_weight (bool, optional): add the transformed root features
            :math:`\mathbf{W}_1 \mathbf{x}_i` (``False`` also turns ``beta`` off, as in PyG).
            (default: ``True``)
        backend (str, optional): kernel backend of :func:`gattn.kernels.edge_attention`;
            ``None`` picks by device. (default: ``None``)
        reorder (str, optional): the fused kernel's node ordering for cache locality, undone
            at the boundary: ``"auto"`` (reverse Cuthill-McKee for a CPU graph that comes back
            and gains by it), ``None`` (always the caller's order), ``"rcm"`` or ``"metis"``.
            (default: ``"auto"``)
        kv_dtype (torch.dtype, optional): ``torch.bfloat16`` stores keys and values in bf16
            (opt-in, float32 arithmetic). Both: see :func:`~gattn.kernels.edge_attention`.
            (default: ``None``)
        **kwargs (optional): further arguments of ``MessagePassing``.

    Shapes:
        - **input:** node features ``x`` :math:`(|\mathcal{V}|, F_{in})` or
          ``(x_src, x_dst)`` :math:`((|\mathcal{V}_s|, F_{s}), (|\mathcal{V}_t|, F_{t}))`;
          ``edge_index`` :math:`(2, |\mathcal{E}|)`, an ``EdgeIndex`` or a sparse adjacency;
          edge features ``edge_attr`` :math:`(|\mathcal{E}|, D)` *(optional)*;
          ``return_attention_weights``: when set to a bool (True *or* False, as in PyG) also
          return the attention; ``size`` ``(N_src, N_dst)`` *(optional; gattn's addition)*.
        - **output:** node features :math:`(|\mathcal{V}_t|, H * C)` (``concat=True``) or
          :math:`(|\mathcal{V}_t|, C)`; with ``return_attention_weights``, also
          ``(edge_index, alpha)`` with alpha :math:`(|\mathcal{E}|, H)` before dropout,
          differentiable (a ``SparseTensor`` input gets the adjacency with alpha as values).
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        root_weight: bool = True,
        backend: str | None = None,
        reorder: str | None = "auto",
        kv_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        pair = channel_pair(in_channels)
        self.in_channels = in_channels
        self.init_attention(out_channels, heads, concat, dropout, edge_dim, backend, reorder, kv_dtype)
        self.beta = bool(beta) and bool(root_weight)
        self.root_weight = bool(root_weight)
        self._alpha: Tensor | None = None
        inner = heads * out_channels
        self.lin_key = Linear(pair[0], inner, bias=bias)
        self.lin_query = Linear(pair[1], inner, bias=bias)
        self.lin_value = Linear(pair[0], inner, bias=bias)
        if self.edge_dim is not None:
            self.lin_edge = Linear(self.edge_dim, inner, bias=False)
        else:
            self.register_parameter("lin_edge", None)
        skip = inner if concat else out_channels
        self.lin_skip = Linear(pair[1], skip, bias=bias)
        if self.beta:
            self.lin_beta = Linear(3 * skip, 1, bias=False)
        else:
            self.register_parameter("lin_beta", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge, self.lin_skip, self.lin_beta):
            if lin is not None:
                lin.reset_parameters()

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor],
        edge_index: Any,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        heads, channels = self.heads, self.out_channels
        x_src, x_dst = node_features(x, self.lin_key.in_channels, self.lin_query.in_channels, "TransformerConv")
        graph = as_graph(edge_index, x_src.size(0), x_dst.size(0), size)
        query = project_query(x_dst, self.lin_query, heads, channels)
        key, value = project_key_value(x_src, self.lin_key, self.lin_value, heads, channels)
        edge_attr = graph.edge_attr(edge_attr) if self.lin_edge is not None else edge_attr
        if self.lin_edge is None and edge_attr is not None:
            raise ValueError("`edge_attr` was given but the layer was built with edge_dim=None")
        if self.lin_edge is not None:
            if edge_attr is None:
                raise ValueError(f"`edge_attr` [E, {self.edge_dim}] is required: the layer was built with "
                                 f"edge_dim={self.edge_dim}")
            edge_attr = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
            check_features("edge_attr", edge_attr, self.edge_dim, graph.edge_index.size(1), "one per edge")

        want_alpha = isinstance(return_attention_weights, bool)
        if self.fusable():
            kept: dict[str, Tensor | None] = {}

            def compute(edge_index_, size_, query, key, value, edge_attr):
                edge = None if edge_attr is None else self.lin_edge(edge_attr).view(-1, heads, channels)
                result = edge_attention(
                    query, key, value, graph.edge_index, num_nodes=(graph.num_src, graph.num_dst),
                    edge_key=edge, edge_value=edge, scale=1.0 / math.sqrt(channels),
                    dropout_p=self.dropout if self.training else 0.0, return_attention=want_alpha,
                    backend=self.backend, reorder=self.reorder, kv_dtype=self.kv_dtype,
                )
                out, kept["alpha"] = result if want_alpha else (result, None)
                return out

            out = self.fused_propagate(compute, edge_index, size, query=query, key=key, value=value,
                                       edge_attr=edge_attr)
            alpha = kept["alpha"]
        else:
            out = self.propagate(graph.edge_index, query=query, key=key, value=value, edge_attr=edge_attr,
                                 size=(graph.num_src, graph.num_dst))
            alpha = self._alpha
        self._alpha = None

        out = self.merge_heads(out)
        if self.root_weight:
            x_r = self.lin_skip(x_dst)
            if self.lin_beta is not None:
                beta = self.lin_beta(torch.cat([out, x_r, out - x_r], dim=-1)).sigmoid()
                out = beta * x_r + (1 - beta) * out
            else:
                out = out + x_r
        if want_alpha:
            return out, attention_return(edge_index, graph, alpha, sparse_pair=False)
        return out

    def message(self, query_i: Tensor, key_j: Tensor, value_j: Tensor, edge_attr: Tensor | None,
                index: Tensor, ptr: Tensor | None, size_i: int | None) -> Tensor:
        """PyG's message path (explainers, message hooks): the same attention, materialised."""
        if self.lin_edge is not None:
            edge_attr = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
            key_j = key_j + edge_attr
        alpha = (query_i * key_j).sum(dim=-1) / math.sqrt(self.out_channels)
        alpha = softmax(alpha, index, ptr, size_i)
        self._alpha = alpha
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = value_j if edge_attr is None else value_j + edge_attr
        return out * alpha.view(-1, self.heads, 1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
