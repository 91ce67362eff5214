r"""A fused drop-in for PyG's ``GATv2Conv`` (Brody et al., "How Attentive are Graph
Attention Networks?", ICLR 2022)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.utils import softmax

from gattn.kernels import edge_attention

from ._checks import check_channels, check_features, check_positive_int, check_probability, check_real
from ._conv import FusedMessagePassing, as_graph, attention_return, split_pair, with_self_loops
from .gat_conv import draw_seed, dropped_attention

__all__ = ["GATv2Conv"]


class GATv2Conv(FusedMessagePassing):
    r"""The GATv2 operator of Brody et al. (2022), computed on the fused kernel: the same
    constructor, parameters (names and initialisation), forward signature and outputs as
    ``torch_geometric.nn.GATv2Conv``.

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\mathbf{\Theta}_{s}\mathbf{x}_{j}, \qquad
        \alpha_{i,j} = \frac{\exp\left(\mathbf{a}^{\top}\mathrm{LeakyReLU}\left(
        \mathbf{\Theta}_{s} \mathbf{x}_j + \mathbf{\Theta}_{t} \mathbf{x}_{i}
        + \mathbf{\Theta}_{e} \mathbf{e}_{i,j}\right)\right)}
        {\sum_{k \in \mathcal{N}(i) \cup \{ i \}}
        \exp\left(\mathbf{a}^{\top}\mathrm{LeakyReLU}\left(
        \mathbf{\Theta}_{s} \mathbf{x}_k + \mathbf{\Theta}_{t} \mathbf{x}_{i}
        + \mathbf{\Theta}_{e} \mathbf{e}_{i,k}\right)\right)}

    The score is per dimension (LeakyReLU of a sum, then the dot product with
    :math:`\mathbf{a}`); the fused kernel evaluates it while it walks each destination's
    edges (:func:`gattn.kernels.edge_attention` with ``score="additive"`` and ``att``), so
    the E x H x C tensor of PyG's ``edge_update`` is never built, nor the messages.

    Args:
        in_channels: input size, ``-1`` (lazy), or a ``(source, destination)`` pair.
        out_channels: size :math:`C` of each head's output.
        heads: number of heads (default 1).
        concat: concatenate the heads (default ``True``) or average them.
        negative_slope: LeakyReLU slope (default 0.2).
        dropout: dropout of the attention coefficients while training (default 0), fused.
        add_self_loops: replace self-loops by one per node (default ``True``).
        edge_dim: edge feature size (default ``None``).
        fill_value: edge features of the added self-loops (default ``"mean"``).
        bias: learn biases (default ``True``).
        share_weights: one weight matrix for sources and destinations (default ``False``).
        residual: add a linear projection of the destination features (default ``False``).
        backend: kernel backend (``None`` picks by device).
        **kwargs: further arguments of ``MessagePassing``.

    Forward: ``x`` [N, F] or ``(x_src, x_dst)``; ``edge_index`` [2, E], an ``EdgeIndex`` or
    a sparse adjacency; ``edge_attr``; ``return_attention_weights`` (truthy: also return the
    attention after dropout, as PyG does); ``size`` (gattn's addition).
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: int | None = None,
        fill_value: float | Tensor | str = "mean",
        bias: bool = True,
        share_weights: bool = False,
        residual: bool = False,
        backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(node_dim=0, **kwargs)
        self.in_channels = in_channels
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.heads = check_positive_int("heads", heads)
        self.concat = bool(concat)
        self.negative_slope = check_real("negative_slope", negative_slope)
        self.dropout = check_probability("dropout", dropout)
        self.add_self_loops = bool(add_self_loops)
        self.edge_dim = None if edge_dim is None else check_positive_int("edge_dim", edge_dim)
        self.fill_value = fill_value
        self.residual = bool(residual)
        self.share_weights = bool(share_weights)
        self.backend = backend
        inner = heads * out_channels
        if isinstance(in_channels, int):
            pair = (check_channels("in_channels", in_channels),) * 2
        else:
            if len(in_channels) != 2:
                raise ValueError(f"`in_channels` must be an int or a (source, destination) pair, got {in_channels!r}")
            pair = (check_channels("in_channels[0]", in_channels[0]), check_channels("in_channels[1]", in_channels[1]))
        self.lin_l = Linear(pair[0], inner, bias=bias, weight_initializer="glorot")
        if share_weights:
            self.lin_r = self.lin_l
        else:
            self.lin_r = Linear(pair[1], inner, bias=bias, weight_initializer="glorot")
        self.att = Parameter(torch.empty(1, heads, out_channels))
        if self.edge_dim is not None:
            self.lin_edge = Linear(self.edge_dim, inner, bias=False, weight_initializer="glorot")
        else:
            self.lin_edge = None
        total = out_channels * (heads if concat else 1)
        if residual:
            self.res = Linear(pair[1], total, bias=False, weight_initializer="glorot")
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = Parameter(torch.empty(total))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_l.reset_parameters()
        self.lin_r.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.res is not None:
            self.res.reset_parameters()
        glorot(self.att)
        zeros(self.bias)

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor],
        edge_index: Any,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        heads, channels = self.heads, self.out_channels
        x_src, x_dst = split_pair(x)
        if x_dst is None:
            raise ValueError("`x` = (x_src, None): GATv2Conv scores every edge with its destination's "
                             "features, so x_dst is required")
        check_features("x" if x_src is x_dst else "x[0] (sources)", x_src, self.lin_l.in_channels)
        if x_dst is not x_src:
            check_features("x[1] (destinations)", x_dst, self.lin_r.in_channels)
        res = None if self.res is None else self.res(x_dst)
        x_l = self.lin_l(x_src).view(-1, heads, channels)
        x_r = x_l if (x_dst is x_src and self.share_weights) else self.lin_r(x_dst).view(-1, heads, channels)
        if self.add_self_loops:
            num_nodes = min(x_l.size(0), x_r.size(0))
            edge_index, edge_attr = with_self_loops(edge_index, edge_attr, self.fill_value, num_nodes,
                                                    self.edge_dim is not None)
        graph = as_graph(edge_index, x_l.size(0), x_r.size(0), size)
        edge_attr = graph.edge_attr(edge_attr)
        if edge_attr is not None and self.lin_edge is None:
            raise ValueError("`edge_attr` was given but the layer was built with edge_dim=None")
        if edge_attr is not None:
            edge_attr = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
            check_features("edge_attr", edge_attr, self.edge_dim, graph.edge_index.size(1), "one per edge")

        if self.fusable():
            dropout_p = self.dropout if self.training else 0.0
            seed = draw_seed(dropout_p)
            kept: dict[str, Tensor | None] = {}

            def compute(edge_index_, size_, x, edge_attr):
                edge = None if edge_attr is None else self.lin_edge(edge_attr).view(-1, heads, channels)
                result = edge_attention(
                    x[1], x[0], x[0], graph.edge_index, num_nodes=(graph.num_src, graph.num_dst), edge_key=edge,
                    score="additive", att=self.att.view(heads, channels), negative_slope=self.negative_slope,
                    dropout_p=dropout_p, dropout_seed=seed, return_attention=bool(return_attention_weights),
                    backend=self.backend,
                )
                out, kept["alpha"] = result if return_attention_weights else (result, None)
                return out

            out = self.fused_propagate(compute, edge_index, size, x=(x_l, x_r), edge_attr=edge_attr)
            alpha = kept["alpha"]
            if alpha is not None:
                alpha = dropped_attention(alpha, dropout_p, seed)
        else:
            alpha = self.edge_updater(graph.edge_index, x=(x_l, x_r), edge_attr=edge_attr,
                                      size=(graph.num_src, graph.num_dst))
            out = self.propagate(graph.edge_index, x=(x_l, x_r), alpha=alpha, size=(graph.num_src, graph.num_dst))

        out = out.view(-1, heads * channels) if self.concat else out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            return out, attention_return(edge_index, graph, alpha)
        return out

    def edge_update(self, x_j: Tensor, x_i: Tensor, edge_attr: Tensor | None, index: Tensor,
                    ptr: Tensor | None, dim_size: int | None) -> Tensor:
        """PyG's path (explainers, hooks): the coefficients, with the E x H x C tensor."""
        x = x_i + x_j
        if edge_attr is not None:
            x = x + self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
        x = F.leaky_relu(x, self.negative_slope)
        alpha = (x * self.att).sum(dim=-1)
        alpha = softmax(alpha, index, ptr, dim_size)
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return x_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
