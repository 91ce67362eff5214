"""Conversion between DGL graphs and PyG data: :func:`from_dgl`, :func:`to_dgl`.

DGL is imported only inside :func:`to_dgl` (and :func:`from_dgl` checks its argument by DGL's
own class), so gattn never needs it installed. Its PyPI wheels import only with an old torch:
``benchmarks/peers/make_dgl_env.sh`` makes an environment with it.

Both directions keep every node and edge feature under its own name, the edge order (edge
``k`` of DGL is column ``k`` of ``edge_index``) and the node counts, isolated nodes included.
A DGL graph with one node type and one edge type becomes a :class:`~torch_geometric.data.Data`;
any other (a heterograph) a :class:`~torch_geometric.data.HeteroData` keyed by DGL's canonical
edge types ``(source type, relation, destination type)``, and back. (PyG's own
``torch_geometric.utils.from_dgl`` stores a heterograph's edge feature *schemes* instead of
their values, and its ``to_dgl`` infers heterograph node counts from the largest index, losing
trailing isolated nodes.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData

__all__ = ["from_dgl", "to_dgl"]


def _is_dgl_graph(graph: Any) -> bool:
    return any(f"{c.__module__}.{c.__name__}".startswith("dgl.") and c.__name__ == "DGLGraph"
               for c in type(graph).__mro__)


def from_dgl(graph: Any) -> Data | HeteroData:
    """A DGL graph as PyG data (see the module docstring).

    Args:
        graph (Any): a ``dgl.DGLGraph`` (homogeneous or heterogeneous).

    Raises:
        TypeError: ``graph`` is not a DGL graph.
    """
    if not _is_dgl_graph(graph):
        raise TypeError(f"from_dgl expects a dgl.DGLGraph, got {type(graph).__name__}")
    if len(graph.ntypes) == 1 and len(graph.canonical_etypes) == 1:
        source, target = graph.edges(order="eid")
        data = Data(edge_index=torch.stack([source, target]).long(), num_nodes=int(graph.num_nodes()))
        for key, value in graph.ndata.items():
            data[key] = value
        for key, value in graph.edata.items():
            data[key] = value
        return data
    hetero = HeteroData()
    for node_type in graph.ntypes:
        hetero[node_type].num_nodes = int(graph.num_nodes(node_type))
        for key, value in graph.nodes[node_type].data.items():
            hetero[node_type][key] = value
    for edge_type in graph.canonical_etypes:
        source, target = graph.edges(order="eid", etype=edge_type)
        store = hetero[edge_type]
        store.edge_index = torch.stack([source, target]).long()
        for key, value in graph.edges[edge_type].data.items():
            store[key] = value
    return hetero


def _edge_index(store: Any, where: str) -> Tensor:
    edge_index = store.get("edge_index") if hasattr(store, "get") else None
    if edge_index is None:
        raise ValueError(f"to_dgl: {where} has no edge_index")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"to_dgl: {where}.edge_index must be a [2, E] tensor, got "
                         f"{tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__}")
    return edge_index.long()


def _check_range(edge_index: Tensor, num_src: int, num_dst: int, where: str) -> None:
    if edge_index.numel() == 0:
        return
    for row, count, side in ((0, num_src, "source"), (1, num_dst, "destination")):
        low, high = int(edge_index[row].min()), int(edge_index[row].max())
        if low < 0 or high >= count:
            raise ValueError(f"to_dgl: {where}.edge_index has {side} ids in [{low}, {high}], expected [0, {count})")


def _features(store: Any, skip: tuple[str, ...]) -> dict[str, Tensor]:
    return {key: value for key, value in store.items() if key not in skip and isinstance(value, Tensor)}


def _dgl() -> Any:
    try:
        import dgl
    except ImportError as exc:
        raise ImportError(f"to_dgl needs DGL ({exc}); its PyPI wheels need torch 2.2: "
                          "bash benchmarks/peers/make_dgl_env.sh makes an environment with it") from None
    return dgl


def to_dgl(data: Data | HeteroData) -> Any:
    """PyG data as a DGL graph (see the module docstring); needs ``dgl``.

    Node attributes are the tensors with one row per node, edge attributes those with one row
    per edge (a tensor that fits both, on a graph with as many nodes as edges, is a node
    attribute unless its name starts with ``edge_``).

    Args:
        data (Data or HeteroData): the graph; every node and edge attribute goes along.

    Raises:
        TypeError: ``data`` is neither ``Data`` nor ``HeteroData``.
        ValueError: no ``edge_index``, or ids outside the node counts.
        ImportError: DGL is not installed (saying how to get it).
    """
    if not isinstance(data, (Data, HeteroData)):
        raise TypeError(f"to_dgl expects torch_geometric Data or HeteroData, got {type(data).__name__}")
    if isinstance(data, Data):
        edge_index = _edge_index(data, "data")
        num_nodes = int(data.num_nodes)
        _check_range(edge_index, num_nodes, num_nodes, "data")
        num_edges = edge_index.size(1)
        nodes, edges = {}, {}
        for key, value in _features(data, ("edge_index", "num_nodes")).items():
            rows = value.size(0) if value.dim() else -1
            is_node = rows == num_nodes and not (rows == num_edges and key.startswith("edge_"))
            if is_node:
                nodes[key] = value
            elif rows == num_edges:
                edges[key] = value
            else:
                raise ValueError(f"to_dgl: data.{key} has {rows} rows: neither the {num_nodes} nodes nor the "
                                 f"{num_edges} edges")
        graph = _dgl().graph((edge_index[0], edge_index[1]), num_nodes=num_nodes)
        graph.ndata.update(nodes)
        graph.edata.update(edges)
        return graph
    counts = {node_type: int(store.num_nodes) for node_type, store in data.node_items()}
    relations = {}
    for edge_type, store in data.edge_items():
        where = f"data[{edge_type!r}]"
        edge_index = _edge_index(store, where)
        source_type, _, target_type = edge_type
        for node_type in (source_type, target_type):
            if node_type not in counts:
                raise ValueError(f"to_dgl: {where} joins node type {node_type!r}, which has no nodes in data")
        _check_range(edge_index, counts[source_type], counts[target_type], where)
        relations[edge_type] = (edge_index[0], edge_index[1])
    graph = _dgl().heterograph(relations, num_nodes_dict=counts)
    for node_type, store in data.node_items():
        for key, value in _features(store, ("num_nodes",)).items():
            graph.nodes[node_type].data[key] = value
    for edge_type, store in data.edge_items():
        for key, value in _features(store, ("edge_index",)).items():
            graph.edges[edge_type].data[key] = value
    return graph
