"""What gattn's graph layers share: a :class:`~torch_geometric.nn.conv.MessagePassing` base
whose fast path is one fused kernel call, the graph formats PyG accepts, and PyG's return
forms for attention weights.

:class:`FusedMessagePassing` keeps PyG's machinery: ``to_hetero`` and ``HeteroConv`` see a
``MessagePassing`` module (a leaf, wired per edge type and summed per node type), lazy
``-1`` input sizes work through PyG's ``Linear``, and the layer's ``message`` /
``edge_update`` give the same result as the fused kernel. The kernel runs unless PyG needs
the messages themselves, in which case the layer runs PyG's own ``propagate`` (messages
materialised, E x H x D) and every PyG feature works as in PyG:

* the explainer (``explain=True``, which masks messages),
* message, aggregate, message-and-aggregate or edge-update hooks,
* ``decomposed_layers > 1``.

Propagate-level hooks (``register_propagate_forward_pre_hook`` / ``..._hook``) also run on
the fused path, with the same ``(edge_index, size, kwargs)`` arguments.

Graph formats (:func:`as_graph`): an ``edge_index`` [2, E] integer tensor or a PyG
``EdgeIndex`` (source, destination), a ``torch.sparse`` adjacency (COO, CSR or CSC) or a
``torch_sparse.SparseTensor`` (when torch_sparse is installed) holding the *transposed*
adjacency ``adj_t[dst, src]`` as PyG expects. Anything else raises a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.modules import module as torch_module
from torch.nn.parameter import UninitializedParameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import add_self_loops, is_torch_sparse_tensor, remove_self_loops, to_edge_index

from gattn.kernels import _workspace, split_kv
from gattn.kernels._cache import cached
from gattn.kernels._validate import check_edge_index_shape
from gattn.kernels.reorder import check_reorder

from ._checks import check_channels, check_features, check_positive_int, check_probability

__all__ = [
    "FusedMessagePassing", "Graph", "as_graph", "attention_return", "channel_pair", "node_features", "split_pair",
    "with_self_loops",
]


class Graph(NamedTuple):
    """A graph argument in the form the kernels take.

    ``edge_index`` [2, E] (source, destination) in the caller's edge order (for a sparse
    adjacency: its storage order); ``values`` the sparse adjacency's values (or None).
    """

    edge_index: Tensor
    num_src: int
    num_dst: int
    values: Tensor | None
    kind: str  # "dense", "torch.sparse" or "SparseTensor"

    def edge_attr(self, edge_attr: Tensor | None) -> Tensor | None:
        """PyG's rule for a sparse adjacency's values: they stand in for a missing
        ``edge_attr`` (a ``torch.sparse`` one only when they are multi-dimensional)."""
        if edge_attr is not None or self.values is None:
            return edge_attr
        if self.kind == "torch.sparse" and self.values.dim() == 1:
            return None
        return self.values


def _is_sparse_tensor(obj: object) -> bool:
    return isinstance(obj, SparseTensor) and type(obj).__module__.startswith("torch_sparse")


def check_graph(edge_index: Any) -> None:
    """The graph argument is one of the supported formats (no pass over its values)."""
    if _is_sparse_tensor(edge_index):
        return
    if not isinstance(edge_index, Tensor):
        raise TypeError(
            "`edge_index` must be a [2, E] integer tensor, a PyG EdgeIndex, a torch.sparse "
            f"adjacency or a torch_sparse.SparseTensor, got {type(edge_index).__name__}"
        )
    if is_torch_sparse_tensor(edge_index):
        return
    if edge_index.layout != torch.strided:
        raise TypeError(f"`edge_index` has an unsupported sparse layout {edge_index.layout}")
    check_edge_index_shape(edge_index)


def as_graph(edge_index: Any, num_src: int | None, num_dst: int | None,
             size: tuple[int | None, int | None] | None = None) -> Graph:
    """Normalise a graph argument (see the module docstring) and its node counts.

    ``num_src`` / ``num_dst`` are the counts implied by the node features (None: unknown);
    ``size`` is PyG's ``(N_src, N_dst)``. Disagreements raise a ``ValueError``.
    """
    check_graph(edge_index)
    kind = "dense"
    if _is_sparse_tensor(edge_index) or (isinstance(edge_index, Tensor) and is_torch_sparse_tensor(edge_index)):
        kind = "SparseTensor" if _is_sparse_tensor(edge_index) else "torch.sparse"
        adj_size = (edge_index.size(1), edge_index.size(0))  # adj_t is [N_dst, N_src]
        if kind == "SparseTensor":
            row, col, values = edge_index.coo()  # values None for an unweighted adjacency
            indices = torch.stack([row, col])
        else:
            indices, values = to_edge_index(edge_index)
        size = _merge_size("the sparse adjacency's shape", adj_size, size)
        edge_index = torch.stack([indices[1], indices[0]])
    else:
        values = None
        sparse_size = getattr(edge_index, "sparse_size", None)
        if callable(sparse_size):  # a PyG EdgeIndex knows its (N_src, N_dst), possibly None
            size = _merge_size("the EdgeIndex's sparse_size", tuple(sparse_size()), size)
    counts = []
    for position, (given, from_features, what) in enumerate(
        zip(size or (None, None), (num_src, num_dst), ("source", "destination"))
    ):
        if given is not None and from_features is not None and given != from_features:
            raise ValueError(
                f"`size`[{position}]={given} disagrees with the {from_features} {what} nodes of the features"
            )
        counts.append(given if given is not None else from_features)
    if counts[1] is None:  # PyG: with no destination features, the graph is assumed square
        counts[1] = counts[0]
    return Graph(edge_index, int(counts[0]), int(counts[1]), values, kind)


def _merge_size(what: str, implied: tuple, size: tuple | None) -> tuple:
    if size is None:
        return implied
    if len(size) != 2:
        raise ValueError(f"`size` must be a pair (N_src, N_dst), got {size!r}")
    for position in range(2):
        if implied[position] is not None and size[position] is not None and implied[position] != size[position]:
            raise ValueError(f"`size`={tuple(size)} disagrees with {what} {implied}")
    return tuple(s if s is not None else i for s, i in zip(size, implied))


def _plain_linear(lin: torch.nn.Module) -> bool:
    """Whether calling `lin` is exactly ``F.linear(x, lin.weight, lin.bias)``: a torch or PyG
    ``Linear`` (not a subclass or a replacement such as an adapter), initialised, with no
    forward or backward hooks of its own or global ones. Only then may a projection below
    stand in for the call."""
    hooks = (
        lin._forward_hooks, lin._forward_pre_hooks, lin._backward_hooks, lin._backward_pre_hooks,
        torch_module._global_forward_hooks, torch_module._global_forward_pre_hooks,
        torch_module._global_backward_hooks, torch_module._global_backward_pre_hooks,
    )
    return (
        type(lin) in (torch.nn.Linear, PyGLinear) and not isinstance(lin.weight, UninitializedParameter)
        and not any(hooks)
    )


def project_query(x: Tensor, lin_query: torch.nn.Module, heads: int, channels: int) -> Tensor:
    """Queries [N, H, C] of `x`: ``lin_query(x)``, its output in the kernels' reused memory
    when large (:func:`gattn.kernels._workspace.linear`: the 87 MB query of the
    ogbn-arxiv-sized graph is mapped afresh, and faulted in page by page, on every call
    otherwise). Anything but a plain ``Linear`` is called as it is."""
    if not _plain_linear(lin_query):
        return lin_query(x).view(-1, heads, channels)
    return _workspace.linear(x, lin_query.weight, lin_query.bias).view(-1, heads, channels)


def project_key_value(x: Tensor, lin_key: torch.nn.Module, lin_value: torch.nn.Module, heads: int,
                      channels: int) -> tuple[Tensor, Tensor]:
    """Keys and values [N, H, C] of `x` from one matmul with the two layers' weights stacked,
    as views of one [N, 2*H*C] tensor: the layout the CPU kernel reads without a copy
    (:func:`gattn.kernels.split_kv`). The parameters stay those of the two layers (PyG's
    names, state dicts unchanged); lazy (``-1``) layers are initialised by a first plain call,
    and layers that are not a plain ``Linear`` (an adapter, a hooked layer) are called as
    they are."""
    if not (_plain_linear(lin_key) and _plain_linear(lin_value)):
        return lin_key(x).view(-1, heads, channels), lin_value(x).view(-1, heads, channels)
    weight = torch.cat([lin_key.weight, lin_value.weight])
    bias = None if lin_key.bias is None else torch.cat([lin_key.bias, lin_value.bias])
    return split_kv(_workspace.linear(x, weight, bias), heads, channels)


def channel_pair(in_channels: int | tuple[int, int]) -> tuple[int, int]:
    """``in_channels`` (an int or -1 for both, or a (source, destination) pair), validated."""
    if isinstance(in_channels, (tuple, list)):
        if len(in_channels) != 2:
            raise ValueError(f"`in_channels` must be an int or a (source, destination) pair, got {in_channels!r}")
        return check_channels("in_channels[0]", in_channels[0]), check_channels("in_channels[1]", in_channels[1])
    channels = check_channels("in_channels", in_channels)
    return channels, channels


def node_features(x: Any, src_channels: int, dst_channels: int, layer: str,
                  need_dst: bool = True) -> tuple[Tensor, Tensor | None]:
    """``x`` or ``(x_src, x_dst)`` validated against the layer's input sizes (-1: lazy)."""
    x_src, x_dst = split_pair(x)
    if x_dst is None and need_dst:
        raise ValueError(
            f"`x` = (x_src, None): {layer} computes with the destination features, so x_dst is required"
        )
    check_features("x" if x_src is x_dst else "x[0] (sources)", x_src, src_channels)
    if x_dst is not None and x_dst is not x_src:
        check_features("x[1] (destinations)", x_dst, dst_channels)
    return x_src, x_dst


def split_pair(x: Any, name: str = "x") -> tuple[Tensor, Tensor | None]:
    """``x`` or ``(x_src, x_dst)`` (``x_dst`` may be None) -> the pair."""
    if isinstance(x, Tensor):
        return x, x
    if isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], Tensor):
        if x[1] is not None and not isinstance(x[1], Tensor):
            raise TypeError(f"`{name}[1]` must be a tensor or None, got {type(x[1]).__name__}")
        return x[0], x[1]
    raise TypeError(f"`{name}` must be a tensor or an (x_src, x_dst) pair, got {type(x).__name__}")


def attention_return(edge_index: Any, graph: Graph, alpha: Tensor, sparse_pair: bool = True) -> Any:
    """PyG's return form of attention weights for the graph argument the caller passed.

    ``[2, E]`` tensor: ``(edge_index, alpha)``; ``SparseTensor``: the adjacency with alpha as
    values; ``torch.sparse``: ``(adjacency with alpha as values, alpha)`` (GAT / GATv2), or,
    with ``sparse_pair=False``, ``(edge_index, alpha)`` as PyG's TransformerConv returns it.
    """
    if _is_sparse_tensor(edge_index):
        return edge_index.set_value(alpha, layout="coo")
    if isinstance(edge_index, Tensor) and is_torch_sparse_tensor(edge_index) and sparse_pair:
        from torch_geometric.utils.sparse import set_sparse_value

        return set_sparse_value(edge_index, alpha), alpha
    return edge_index, alpha


def with_self_loops(edge_index: Any, edge_attr: Tensor | None, fill_value: Any, num_nodes: int,
                    has_edge_dim: bool = False) -> tuple[Any, Tensor | None]:
    """What PyG's GATConv / GATv2Conv do with ``add_self_loops=True``: remove the self-loops,
    then add one per node ``0 .. num_nodes-1`` (edge features filled by ``fill_value``).

    For a dense edge list the result is kept in gattn's structure cache (see
    :mod:`gattn.kernels._cache`), so that the looped graph is the same tensor on every call
    and its CSR is built once; sparse adjacency goes through PyG's functions as in PyG.
    """
    check_graph(edge_index)
    if _is_sparse_tensor(edge_index):
        if has_edge_dim:
            raise NotImplementedError(
                "edge features together with add_self_loops=True are not supported for a torch_sparse "
                "SparseTensor adjacency (nor in PyG); pass an edge_index [2, E] instead"
            )
        return edge_index.set_diag(), edge_attr  # the SparseTensor's own method: no torch_sparse import
    if not isinstance(edge_index, Tensor) or edge_index.layout != torch.strided or torch.compiler.is_compiling():
        edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
        return add_self_loops(edge_index, edge_attr, fill_value=fill_value, num_nodes=num_nodes)

    def build() -> tuple[Tensor, Tensor, Tensor]:
        plain = edge_index.as_subclass(Tensor) if type(edge_index) is not Tensor else edge_index
        keep = plain[0] != plain[1]
        without = plain[:, keep]
        return keep, without, add_self_loops(without, num_nodes=num_nodes)[0]

    keep, without, looped = cached(edge_index, ("self-loops", int(num_nodes)), build)
    if edge_attr is None:
        return looped, None
    _, edge_attr = add_self_loops(without, edge_attr[keep], fill_value=fill_value, num_nodes=num_nodes)
    return looped, edge_attr


class FusedMessagePassing(MessagePassing):
    """A ``MessagePassing`` layer computed by one fused kernel call when PyG allows it."""

    _HOOK_DICTS = (
        "_message_forward_pre_hooks", "_message_forward_hooks", "_aggregate_forward_pre_hooks",
        "_aggregate_forward_hooks", "_message_and_aggregate_forward_pre_hooks",
        "_message_and_aggregate_forward_hooks", "_edge_update_forward_pre_hooks", "_edge_update_forward_hooks",
    )

    def init_attention(self, out_channels: int, heads: int, concat: bool, dropout: float,
                       edge_dim: int | None, backend: str | None, reorder: str | None = "auto",
                       kv_dtype: torch.dtype | None = None) -> None:
        """The options every attention layer has, validated."""
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.heads = check_positive_int("heads", heads)
        self.concat = bool(concat)
        self.dropout = check_probability("dropout", dropout)
        self.edge_dim = None if edge_dim is None else check_positive_int("edge_dim", edge_dim)
        self.backend = backend
        self.reorder = check_reorder(reorder)
        if kv_dtype not in (None, torch.bfloat16):
            raise ValueError(f"`kv_dtype` must be None or torch.bfloat16, got {kv_dtype!r}")
        self.kv_dtype = kv_dtype

    def merge_heads(self, tensor: Tensor) -> Tensor:
        """[R, H, C] -> [R, H * C] (concat) or [R, C] (mean over heads)."""
        if self.concat:
            return tensor.reshape(tensor.size(0), self.heads * self.out_channels)
        return tensor.mean(dim=1)

    def fusable(self) -> bool:
        """Whether the fused kernel may run: no explainer, no message-level hooks, no
        feature decomposition (all of which need PyG's materialised messages)."""
        if self.explain or self.decomposed_layers > 1:
            return False
        return not any(getattr(self, name) for name in self._HOOK_DICTS)

    def fused_propagate(self, compute: Callable[..., Any], edge_index: Any, size: Any, **kwargs: Any) -> Any:
        """Run ``compute(edge_index, size, **kwargs)`` between the propagate-level hooks,
        exactly where PyG's ``propagate`` would call them."""
        for hook in self._propagate_forward_pre_hooks.values():
            result = hook(self, (edge_index, size, kwargs))
            if result is not None:
                edge_index, size, kwargs = result
        out = compute(edge_index, size, **kwargs)
        for hook in self._propagate_forward_hooks.values():
            result = hook(self, (edge_index, size, kwargs), out)
            if result is not None:
                out = result
        return out
