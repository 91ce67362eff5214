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

from ._checks import check_features
from ._conv import as_graph, channel_pair, node_features
from .gat_conv import AdditiveAttentionConv

__all__ = ["GATv2Conv"]


class GATv2Conv(AdditiveAttentionConv):
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
        in_channels (int or tuple[int, int]): input size, ``-1`` (lazy), or a
            ``(source, destination)`` pair.
        out_channels (int): size :math:`C` of each head's output.
        heads (int, optional): number of heads :math:`H`. (default: ``1``)
        concat (bool, optional): concatenate the heads, or average them. (default: ``True``)
        negative_slope (float, optional): LeakyReLU slope. (default: ``0.2``)
        dropout (float, optional): dropout of the attention coefficients while training,
            fused. (default: ``0.0``)
        add_self_loops (bool, optional): replace self-loops by one per node.
            (default: ``True``)
        edge_dim (int, optional): edge feature size. (default: ``None``)
        fill_value (float or torch.Tensor or str, optional): edge features of the added
            self-loops. (default: ``"mean"``)
        bias (bool, optional): learn biases. (default: ``True``)
        share_weights (bool, optional): one weight matrix for sources and destinations.
            (default: ``False``)
        residual (bool, optional): add a linear projection of the destination features.
            (default: ``False``)
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
          ``return_attention_weights`` (truthy: also return the attention); ``size``
          *(optional; gattn's addition)*.
        - **output:** node features :math:`(|\mathcal{V}_t|, H * C)` (``concat=True``) or
          :math:`(|\mathcal{V}_t|, C)`; with ``return_attention_weights``, also the attention
          after dropout, as PyG returns it.
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
        reorder: str | None = "auto",
        kv_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(node_dim=0, **kwargs)
        self.in_channels = in_channels
        self.init_attention(out_channels, heads, concat, dropout, edge_dim, backend, reorder, kv_dtype)
        self.init_additive(negative_slope, add_self_loops, fill_value, residual)
        self.share_weights = bool(share_weights)
        inner = heads * out_channels
        pair = channel_pair(in_channels)
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
        x_src, x_dst = node_features(x, self.lin_l.in_channels, self.lin_r.in_channels, "GATv2Conv")
        res = None if self.res is None else self.res(x_dst)
        x_l = self.lin_l(x_src).view(-1, heads, channels)
        x_r = x_l if (x_dst is x_src and self.share_weights) else self.lin_r(x_dst).view(-1, heads, channels)
        edge_index, edge_attr = self.looped(edge_index, edge_attr, min(x_l.size(0), x_r.size(0)))
        graph = as_graph(edge_index, x_l.size(0), x_r.size(0), size)
        edge_attr = graph.edge_attr(edge_attr)
        if edge_attr is not None and self.lin_edge is None:
            raise ValueError("`edge_attr` was given but the layer was built with edge_dim=None")
        if edge_attr is not None:
            edge_attr = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
            check_features("edge_attr", edge_attr, self.edge_dim, graph.edge_index.size(1), "one per edge")

        def kernel_inputs(x: tuple, edge_attr: Tensor | None) -> dict[str, Tensor | None]:
            edge_key = None if edge_attr is None else self.lin_edge(edge_attr).view(-1, heads, channels)
            return {"q": x[1], "k": x[0], "v": x[0], "edge_key": edge_key, "att": self.att.view(heads, channels)}

        return self.attend(edge_index, graph, size, bool(return_attention_weights), res, kernel_inputs,
                           x=(x_l, x_r), edge_attr=edge_attr)

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
