r"""A fused drop-in for PyG's ``GATConv`` (Veličković et al., "Graph Attention Networks",
ICLR 2018)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.utils import softmax

from gattn.kernels import dropout_keep_mask, edge_attention

from ._checks import check_real
from ._conv import FusedMessagePassing, as_graph, attention_return, channel_pair, node_features, with_self_loops

__all__ = ["AdditiveAttentionConv", "GATConv", "dropped_attention", "draw_seed"]


def dropped_attention(alpha: Tensor, dropout_p: float, seed: Tensor | int) -> Tensor:
    """The attention after the dropout the fused kernel applied (PyG's GAT layers return
    their coefficients after dropout): ``alpha * mask / (1 - p)``.

    Args:
        alpha (Tensor): the attention the kernel returned, before dropout. Shape :math:`(E, H)`.
        dropout_p (float): the dropout probability the kernel applied (``0``: ``alpha`` unchanged).
        seed (Tensor or int): the seed the kernel drew its mask from (:func:`draw_seed`).
    """
    if dropout_p <= 0:
        return alpha
    keep = dropout_keep_mask(seed, alpha.size(0), alpha.size(1), dropout_p, alpha.device)
    return alpha * keep.to(alpha.dtype) / (1.0 - dropout_p)


def draw_seed(dropout_p: float) -> Tensor | int:
    """A dropout seed from torch's RNG (the layer keeps it to rebuild the mask it applied).

    Args:
        dropout_p (float): the dropout probability; ``0`` draws nothing and returns ``0``.
    """
    return torch.randint(0, 2**62, ()) if dropout_p > 0 else 0


class _HeadDot(torch.autograd.Function):
    """``(x * att).sum(-1)`` for x [N, H, C] and att [1, H, C], whose backward makes one
    [N, H, C] tensor (dx, which the input's gradient needs anyway) rather than autograd's two:
    att's gradient is a batched matrix product over the nodes, reading x in place."""

    @staticmethod
    def forward(ctx, x: Tensor, att: Tensor) -> Tensor:
        ctx.save_for_backward(x, att)
        return (x * att).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, att = ctx.saved_tensors
        dx = datt = None
        if ctx.needs_input_grad[0]:
            dx = grad.unsqueeze(-1) * att
        if ctx.needs_input_grad[1]:  # [H, 1, N] @ [H, N, C]
            datt = torch.bmm(grad.t().unsqueeze(1), x.transpose(0, 1)).transpose(0, 1)
        return dx, datt


def head_dot(x: Tensor, att: Tensor) -> Tensor:
    """Per node and head, the dot product of ``x`` [N, H, C] with ``att`` [1, H, C] -> [N, H]
    (GAT's attention logits of the sources or destinations)."""
    return _HeadDot.apply(x, att)


class AdditiveAttentionConv(FusedMessagePassing):
    r"""Base of the additive-attention graph layers (:class:`GATConv`, :class:`GATv2Conv`): the
    self-loops, the fused (or PyG's) attention with PyG's dropout semantics, the head merge,
    residual, bias and return forms. Subclasses define the score :math:`e_{i,j}`; per head,

    .. math::
        \alpha_{i,j} = \frac{\exp(e_{i,j})}{\sum_{k \in \mathcal{N}(i) \cup \{ i \}}
        \exp(e_{i,k})},\qquad
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\, \mathbf{\Theta}_t \mathbf{x}_j

    with :math:`e_{i,j} = \mathrm{LeakyReLU}(\mathbf{a}^{\top}[\mathbf{\Theta}_s \mathbf{x}_i \,\Vert\,
    \mathbf{\Theta}_t \mathbf{x}_j])` (GAT) or
    :math:`\mathbf{a}^{\top}\mathrm{LeakyReLU}(\mathbf{\Theta}_s \mathbf{x}_i + \mathbf{\Theta}_t \mathbf{x}_j)`
    (GATv2); the heads are concatenated or averaged, then the residual and bias are added.
    A subclass calls ``init_additive`` from its constructor and ``attend`` from its forward.

    Args:
        aggr (str, optional): passed on to PyG's ``MessagePassing``. (default: ``"sum"``)
        aggr_kwargs (dict, optional): passed on to ``MessagePassing``. (default: ``None``)
        flow (str, optional): passed on to ``MessagePassing``. (default: ``"source_to_target"``)
        node_dim (int, optional): passed on to ``MessagePassing``. (default: ``-2``)
        decomposed_layers (int, optional): passed on to ``MessagePassing``. (default: ``1``)

    Shapes (of the subclasses' forward):
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{s}), (|\mathcal{V}_t|, F_{t}))` if bipartite, edge
          indices :math:`(2, |\mathcal{E}|)`, edge features :math:`(|\mathcal{E}|, D)`
          *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, H * F_{out})` if bipartite; with
          ``return_attention_weights=True`` also ``(edge_index, alpha)`` with ``alpha``
          :math:`(|\mathcal{E}|, H)` (self-loops included), as PyG's.
    """

    negative_slope: float
    add_self_loops: bool
    fill_value: Any
    res: Any
    bias: Any

    def init_additive(self, negative_slope: float, add_self_loops: bool, fill_value: Any, residual: bool) -> None:
        self.negative_slope = check_real("negative_slope", negative_slope)
        self.add_self_loops = bool(add_self_loops)
        self.fill_value = fill_value
        self.residual = bool(residual)

    def looped(self, edge_index: Any, edge_attr: Tensor | None, num_nodes: int) -> tuple[Any, Tensor | None]:
        if not self.add_self_loops:
            return edge_index, edge_attr
        return with_self_loops(edge_index, edge_attr, self.fill_value, num_nodes, self.edge_dim is not None)

    def attend(self, edge_index: Any, graph: Any, size: Any, want_alpha: bool, res: Tensor | None,
               kernel_inputs: Any, **propagate_kwargs: Any) -> Tensor | tuple[Tensor, Any]:
        """The layer's output (and PyG's attention return form) from ``propagate_kwargs``
        (what PyG's propagate / edge_updater receive). On the fused path
        ``kernel_inputs(**propagate_kwargs)`` gives the additive score's ``q``, ``k``, ``v``
        (and ``edge_key`` / ``att``) for :func:`gattn.kernels.edge_attention`."""
        num_nodes = (graph.num_src, graph.num_dst)
        if self.fusable():
            dropout_p = self.dropout if self.training else 0.0
            seed = draw_seed(dropout_p)
            kept: dict[str, Tensor | None] = {}

            def compute(edge_index_: Any, size_: Any, **kwargs: Any) -> Tensor:
                inputs = kernel_inputs(**kwargs)
                result = edge_attention(
                    inputs.pop("q"), inputs.pop("k"), inputs.pop("v"), graph.edge_index, num_nodes=num_nodes,
                    score="additive", negative_slope=self.negative_slope, dropout_p=dropout_p,
                    dropout_seed=seed, return_attention=want_alpha, backend=self.backend, reorder=self.reorder,
                    kv_dtype=self.kv_dtype, **inputs,
                )
                out, kept["alpha"] = result if want_alpha else (result, None)
                return out

            out = self.fused_propagate(compute, edge_index, size, **propagate_kwargs)
            alpha = None if kept["alpha"] is None else dropped_attention(kept["alpha"], dropout_p, seed)
        else:
            alpha = self.edge_updater(graph.edge_index, size=num_nodes, **propagate_kwargs)
            out = self.propagate(graph.edge_index, x=propagate_kwargs["x"], alpha=alpha, size=num_nodes)
        out = self.merge_heads(out)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        if want_alpha:
            return out, attention_return(edge_index, graph, alpha)
        return out

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"


class GATConv(AdditiveAttentionConv):
    r"""The graph attention operator of Veličković et al. (2018), computed on the fused
    kernel: the same constructor, parameters (names and initialisation), forward signature
    and outputs as ``torch_geometric.nn.GATConv``.

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\mathbf{\Theta}_{s}\mathbf{x}_{j}, \qquad
        \alpha_{i,j} = \frac{\exp\left(\mathrm{LeakyReLU}\left(
        \mathbf{a}^{\top}_{s} \mathbf{\Theta}_{s}\mathbf{x}_j
        + \mathbf{a}^{\top}_{t} \mathbf{\Theta}_{t}\mathbf{x}_i
        + \mathbf{a}^{\top}_{e} \mathbf{\Theta}_{e} \mathbf{e}_{i,j}
        \right)\right)}
        {\sum_{k \in \mathcal{N}(i) \cup \{ i \}}
        \exp\left(\mathrm{LeakyReLU}\left(
        \mathbf{a}^{\top}_{s} \mathbf{\Theta}_{s}\mathbf{x}_k
        + \mathbf{a}^{\top}_{t}\mathbf{\Theta}_{t}\mathbf{x}_i
        + \mathbf{a}^{\top}_{e} \mathbf{\Theta}_{e} \mathbf{e}_{i,k}
        \right)\right)}

    (the edge term only with ``edge_dim``). The per-node terms
    :math:`\mathbf{a}^{\top}\mathbf{\Theta}\mathbf{x}` are [N, H]; the LeakyReLU, the softmax,
    the attention dropout and the weighted sum of :math:`\mathbf{\Theta}_{s}\mathbf{x}_{j}` run
    in one fused pass (:func:`gattn.kernels.edge_attention` with ``score="additive"``): no
    E x H x C message tensor. The self-loop graph of ``add_self_loops`` is cached with the
    edge index, so it is built once per graph, not per call.

    Args:
        in_channels (int or tuple[int, int]): input size, ``-1`` (lazy), or a
            ``(source, destination)`` pair (then sources and destinations get separate weights
            ``lin_src`` / ``lin_dst``).
        out_channels (int): size :math:`C` of each head's output.
        heads (int, optional): number of heads :math:`H`. (default: ``1``)
        concat (bool, optional): concatenate the heads, or average them. (default: ``True``)
        negative_slope (float, optional): LeakyReLU slope. (default: ``0.2``)
        dropout (float, optional): dropout of the attention coefficients while training,
            fused. (default: ``0.0``)
        add_self_loops (bool, optional): replace self-loops by one per node.
            (default: ``True``)
        edge_dim (int, optional): edge feature size. As in PyG, ``edge_attr`` passed to a
            layer without ``edge_dim`` is ignored by the attention. (default: ``None``)
        fill_value (float or torch.Tensor or str, optional): edge features of the added
            self-loops (see PyG's ``add_self_loops``). (default: ``"mean"``)
        bias (bool, optional): learn an output bias. (default: ``True``)
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
          ``(x_src, x_dst)`` :math:`((|\mathcal{V}_s|, F_{s}), (|\mathcal{V}_t|, F_{t}))`
          (``x_dst`` may be ``None``); ``edge_index`` :math:`(2, |\mathcal{E}|)`, an
          ``EdgeIndex`` or a sparse adjacency; edge features ``edge_attr``
          :math:`(|\mathcal{E}|, D)` *(optional)*; ``size`` *(optional)*;
          ``return_attention_weights`` (truthy: also return the attention).
        - **output:** node features :math:`(|\mathcal{V}_t|, H * C)` (``concat=True``) or
          :math:`(|\mathcal{V}_t|, C)`; with ``return_attention_weights``, also the attention
          after dropout as in PyG, as ``(edge_index, alpha)`` with the self-loops added
          (:math:`(2, |\mathcal{E}'|)`, :math:`(|\mathcal{E}'|, H)`), or in PyG's sparse forms.
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
        residual: bool = False,
        backend: str | None = None,
        reorder: str | None = "auto",
        kv_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        self.in_channels = in_channels
        self.init_attention(out_channels, heads, concat, dropout, edge_dim, backend, reorder, kv_dtype)
        self.init_additive(negative_slope, add_self_loops, fill_value, residual)
        inner = heads * out_channels
        pair = channel_pair(in_channels)
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = Linear(pair[0], inner, bias=False, weight_initializer="glorot")
        else:
            self.lin_src = Linear(pair[0], inner, False, weight_initializer="glorot")
            self.lin_dst = Linear(pair[1], inner, False, weight_initializer="glorot")
        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))
        if self.edge_dim is not None:
            self.lin_edge = Linear(self.edge_dim, inner, bias=False, weight_initializer="glorot")
            self.att_edge = Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)
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
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                lin.reset_parameters()
        glorot(self.att_src)
        glorot(self.att_dst)
        glorot(self.att_edge)
        zeros(self.bias)

    def _project(self, x: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(x_src [N_src, H, C], x_dst [N_dst, H, C] or None, the raw destination features)."""
        heads, channels = self.heads, self.out_channels
        in_src = self.lin.in_channels if self.lin is not None else self.lin_src.in_channels
        in_dst = self.lin.in_channels if self.lin is not None else self.lin_dst.in_channels
        x_src, x_dst = node_features(x, in_src, in_dst, "GATConv", need_dst=False)
        raw_dst = x_dst
        if self.lin is not None:
            src = self.lin(x_src).view(-1, heads, channels)
            dst = src if x_dst is x_src else None if x_dst is None else self.lin(x_dst).view(-1, heads, channels)
        else:
            src = self.lin_src(x_src).view(-1, heads, channels)
            dst = None if x_dst is None else self.lin_dst(x_dst).view(-1, heads, channels)
        return src, dst, raw_dst

    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor | None],
        edge_index: Any,
        edge_attr: Tensor | None = None,
        size: tuple[int, int] | None = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        heads, channels = self.heads, self.out_channels
        x_src, x_dst, raw_dst = self._project(x)
        res = None if self.res is None or raw_dst is None else self.res(raw_dst)
        alpha_src = head_dot(x_src, self.att_src)
        alpha_dst = None if x_dst is None else head_dot(x_dst, self.att_dst)
        num_dst = None if x_dst is None else x_dst.size(0)
        loops = x_src.size(0) if x_dst is None else min(x_src.size(0), x_dst.size(0))
        edge_index, edge_attr = self.looped(edge_index, edge_attr, min(size) if size is not None else loops)
        graph = as_graph(edge_index, x_src.size(0), num_dst, size)
        edge_attr = graph.edge_attr(edge_attr)

        def kernel_inputs(x: tuple, alpha: tuple, edge_attr: Tensor | None) -> dict[str, Tensor | None]:
            alpha_src, alpha_dst = alpha
            q = alpha_dst if alpha_dst is not None else alpha_src.new_zeros(graph.num_dst, heads)
            edge_key = None
            if edge_attr is not None and self.lin_edge is not None:
                edge = self.lin_edge(edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr)
                edge_key = (edge.view(-1, heads, channels) * self.att_edge).sum(-1, keepdim=True)
            return {"q": q.unsqueeze(-1), "k": alpha_src.unsqueeze(-1), "v": x[0], "edge_key": edge_key}

        return self.attend(edge_index, graph, size, bool(return_attention_weights), res, kernel_inputs,
                           x=(x_src, x_dst), alpha=(alpha_src, alpha_dst), edge_attr=edge_attr)

    def edge_update(self, alpha_j: Tensor, alpha_i: Tensor | None, edge_attr: Tensor | None, index: Tensor,
                    ptr: Tensor | None, dim_size: int | None) -> Tensor:
        """PyG's path (explainers, hooks): the coefficients, materialised per edge."""
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i
        if index.numel() == 0:
            return alpha
        if edge_attr is not None and self.lin_edge is not None:
            edge_attr = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
            edge_attr = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
            alpha = alpha + (edge_attr * self.att_edge).sum(dim=-1)
        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = softmax(alpha, index, ptr, dim_size)
        return F.dropout(alpha, p=self.dropout, training=self.training)

