"""Neighbour-sampled mini-batches of one large graph: :func:`neighbor_loader`.

PyG's ``NeighborLoader`` is used when its sampling backend (``pyg-lib`` or ``torch-sparse``)
is installed. Neither has a wheel on PyPI for the torch that gattn pins, so without them
:class:`NeighborBatches` samples in plain torch and yields batches laid out as
``NeighborLoader``'s (``directed=True``, ``disjoint=False``): ``n_id`` (global ids, the seed
nodes first, then each hop's new nodes), ``batch_size``, ``edge_index`` (local ids, source ->
destination, ordered by the hop that sampled them), ``num_sampled_nodes`` /
``num_sampled_edges`` per hop, and the node attributes (``x``, ``y``) of the subgraph.
:class:`HeteroNeighborBatches` does the same for a ``HeteroData`` (fan-outs per edge type),
as PyG's heterogeneous ``NeighborLoader`` lays its batches out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData

__all__ = ["HeteroNeighborBatches", "NeighborBatches", "has_pyg_sampler", "hop_counts", "neighbor_loader"]


def has_pyg_sampler() -> bool:
    """Is PyG's neighbour sampling backend (pyg-lib or torch-sparse) installed?"""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def hop_counts(batch: Any, num_hops: int | None = None) -> tuple[list[int] | None, list[int] | None]:
    """``(num_sampled_nodes, num_sampled_edges)`` of a neighbour-sampled batch: the sampler's
    own counts where it reports them (PyG's ``NeighborLoader`` with pyg-lib, gattn's samplers),
    else derived from the batch's layout, else ``(None, None)``.

    PyG's ``NeighborLoader`` on torch-sparse reports no counts, but lays its batches out hop by
    hop all the same: the seeds first, each hop's new nodes after the previous hop's, and the
    edges of hop ``k`` (those into the nodes hop ``k - 1`` discovered) before those of hop
    ``k + 1``. The counts are read back from that layout and checked: every edge must fall in
    its hop's block and the hops must account for every node, else ``(None, None)``.
    :class:`~gattn.models.node_gnn.NodeGNN` trims its layers to the hops when it has them and
    runs on the whole sampled subgraph otherwise (the same seed outputs, more work).

    Args:
        batch (Any): a batch of :func:`neighbor_loader` (``batch_size``, ``edge_index``).
        num_hops (int, optional): the hops the consumer expects (a model's layers): derived
            counts are padded with empty hops to that many, and a layout of more hops gives
            ``(None, None)``.
    """
    nodes, edges = getattr(batch, "num_sampled_nodes", None), getattr(batch, "num_sampled_edges", None)
    if nodes is not None and edges is not None:
        return [int(n) for n in nodes], [int(e) for e in edges]
    return _derived_hop_counts(batch, num_hops)


def _derived_hop_counts(batch: Any, num_hops: int | None) -> tuple[list[int] | None, list[int] | None]:
    """Per-hop counts of a hop-ordered batch without them (see :func:`hop_counts`)."""
    seeds, edge_index = getattr(batch, "batch_size", None), getattr(batch, "edge_index", None)
    num_nodes = getattr(batch, "num_nodes", None)
    if seeds is None or not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or num_nodes is None:
        return None, None
    src, dst = edge_index[0], edge_index[1]
    nodes, edges = [int(seeds)], []
    lo, hi, position = 0, int(seeds), 0
    while position < dst.numel():
        if num_hops is not None and len(edges) == num_hops:
            return None, None  # more hops than the consumer has layers
        # this hop's block: the longest run of edges into the nodes the previous hop discovered
        outside = ((dst[position:] < lo) | (dst[position:] >= hi)).nonzero()
        stop = position + (int(outside[0]) if outside.numel() else dst.numel() - position)
        if stop == position:
            return None, None  # an edge outside the next hop's block: not laid out hop by hop
        block = src[position:stop]
        if int(block.min()) < 0:
            return None, None
        reach = max(hi, int(block.max()) + 1)
        edges.append(stop - position)
        nodes.append(reach - hi)
        lo, hi, position = hi, reach, stop
    if hi != int(num_nodes):
        return None, None  # nodes no hop accounts for
    if num_hops is not None:
        nodes += [0] * (num_hops - len(edges))
        edges += [0] * (num_hops - len(edges))
    return nodes, edges


class _InEdges:
    """The in-edges of every destination node in CSR order, to sample from."""

    def __init__(self, edge_index: Tensor, num_dst: int) -> None:
        source, target = edge_index
        order = torch.argsort(target, stable=True)
        self.sources = source[order]
        self.edge_ids = order
        self.ptr = torch.zeros(num_dst + 1, dtype=torch.long)
        self.ptr[1:] = torch.cumsum(torch.bincount(target, minlength=num_dst), 0)

    def sample(self, nodes: Tensor, count: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """(source ids, position in ``nodes`` of the destination, edge ids) of up to ``count``
        in-edges of each of ``nodes`` drawn without replacement (``-1``: all of them)."""
        begin, degree = self.ptr[nodes], self.ptr[nodes + 1] - self.ptr[nodes]
        owner = torch.repeat_interleave(torch.arange(nodes.numel()), degree)
        offset = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
        position = begin[owner] + offset
        if count != -1 and bool((degree > count).any()):
            # k of each node's edges at random: sort the edges by (node, random key), keep the first k
            keys = torch.rand(owner.numel(), generator=generator)
            order = torch.argsort(owner.double() + keys, stable=True)
            owner, position = owner[order], position[order]
            keep = offset < count  # offset: the rank of an edge within its node's (now shuffled) run
            owner, position = owner[keep], position[keep]
        return self.sources[position], owner, self.edge_ids[position]


def _check_counts(name: str, counts: Sequence[int]) -> list[int]:
    if not counts or any(int(k) == 0 or int(k) < -1 for k in counts):
        raise ValueError(f"{name} must be positive counts or -1 per hop, got {list(counts)}")
    return [int(k) for k in counts]


def _seed_order(input_nodes: Tensor | None, num_nodes: int, name: str) -> Tensor:
    if input_nodes is None:
        return torch.arange(num_nodes)
    if input_nodes.dtype == torch.bool:
        if input_nodes.numel() != num_nodes:
            raise ValueError(f"{name}: a mask needs one entry per node ({num_nodes}), got {input_nodes.numel()}")
        return input_nodes.nonzero().view(-1)
    input_nodes = input_nodes.long().view(-1)
    if input_nodes.numel() and (int(input_nodes.min()) < 0 or int(input_nodes.max()) >= num_nodes):
        raise ValueError(f"{name}: node ids must lie in [0, {num_nodes}), got {int(input_nodes.min())}.."
                         f"{int(input_nodes.max())}")
    return input_nodes


class _SeedBatches:
    """Batches of seed ids, reshuffled on every pass."""

    def __init__(self, seeds: Tensor, batch_size: int, shuffle: bool, generator: torch.Generator | None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.seeds, self.batch_size, self.shuffle, self.generator = seeds, int(batch_size), shuffle, generator

    def __len__(self) -> int:
        return -(-self.seeds.numel() // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        seeds = self.seeds
        if self.shuffle:
            seeds = seeds[torch.randperm(seeds.numel(), generator=self.generator)]
        return iter(seeds.split(self.batch_size))


class NeighborBatches:
    """Mini-batches of seed nodes with up to ``num_neighbors[k]`` sampled in-neighbours per node
    at hop ``k`` (``-1``: all of them).

    Args:
        data (Data): the graph (``edge_index`` source -> destination; node attributes of length
            ``num_nodes`` are sliced into each batch).
        num_neighbors (Sequence[int]): neighbours per node and hop.
        input_nodes (Tensor, optional): the seed nodes (ids or a boolean mask); ``None``: every node.
            (default: ``None``)
        batch_size (int, optional): seeds per batch. (default: ``1``)
        shuffle (bool, optional): seeds in a new random order on every pass. (default: ``False``)
        generator (torch.Generator, optional): random numbers of the shuffling and sampling.
            (default: ``None``)
    """

    def __init__(self, data: Data, num_neighbors: Sequence[int], input_nodes: Tensor | None = None,
                 batch_size: int = 1, shuffle: bool = False, generator: torch.Generator | None = None) -> None:
        self.num_neighbors = _check_counts("num_neighbors", num_neighbors)
        self.data = data
        self.num_nodes = int(data.num_nodes)
        self._seeds = _SeedBatches(_seed_order(input_nodes, self.num_nodes, "input_nodes"), batch_size, shuffle,
                                   generator)
        self.batch_size = self._seeds.batch_size
        self.input_nodes = self._seeds.seeds
        self.generator = generator
        self._in_edges = _InEdges(data.edge_index, self.num_nodes)
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self._seeds)

    def __iter__(self) -> Iterator[Data]:
        return (self.sample(seeds) for seeds in self._seeds)

    def sample(self, seeds: Tensor) -> Data:
        """The subgraph of ``seeds`` (a batch)."""
        local = self._local
        n_id = [seeds]
        local[seeds] = torch.arange(seeds.numel())
        count, frontier = seeds.numel(), seeds
        rows, cols, nodes_per_hop, edges_per_hop = [], [], [seeds.numel()], []
        try:
            for k in self.num_neighbors:
                src, owner, _ = self._in_edges.sample(frontier, k, self.generator)
                dst = frontier[owner]
                new = torch.unique(src[local[src] < 0])
                local[new] = torch.arange(count, count + new.numel())
                count += new.numel()
                n_id.append(new)
                rows.append(local[src])
                cols.append(local[dst])
                nodes_per_hop.append(new.numel())
                edges_per_hop.append(src.numel())
                frontier = new
            ids = torch.cat(n_id)
        finally:
            local[torch.cat(n_id)] = -1  # ready for the next batch without an O(N) reset
        batch = Data(edge_index=torch.stack([torch.cat(rows), torch.cat(cols)]), n_id=ids, num_nodes=ids.numel())
        for key, value in self.data.items():
            if key != "edge_index" and isinstance(value, Tensor) and value.dim() > 0 \
                    and value.size(0) == self.num_nodes:
                batch[key] = value[ids]
        batch.batch_size = int(seeds.numel())
        batch.num_sampled_nodes = nodes_per_hop
        batch.num_sampled_edges = edges_per_hop
        return batch


class HeteroNeighborBatches:
    """Mini-batches of seed nodes of one type of a ``HeteroData`` with sampled in-neighbours,
    per edge type and hop, laid out as PyG's heterogeneous ``NeighborLoader`` output
    (``directed=True``, ``disjoint=False``).

    Per node type of a batch: ``n_id`` (global ids: the seeds first for the input type, then
    each hop's new nodes), ``num_sampled_nodes`` (per hop, ``len(hops) + 1`` entries, the
    first one the seeds) and every node attribute sliced; per edge type: ``edge_index``
    (local ids, ordered by hop), ``e_id`` (global edge ids), ``num_sampled_edges`` (per hop),
    and every edge attribute sliced. The input type's store also holds ``batch_size`` and
    ``input_id``. Node types the sampling never reaches hold zero nodes.

    Args:
        data (HeteroData): the graph.
        num_neighbors (Sequence[int] or Mapping): per hop, the neighbours drawn per destination
            node: one list for every edge type, or ``{edge type: list}`` (an edge type left out
            is never sampled; ``-1``: every in-edge, ``0``: none at that hop). All lists have
            one entry per hop.
        input_nodes (str or tuple): ``node type`` or ``(node type, ids or boolean mask)`` of
            the seeds.
        batch_size (int, optional): seeds per batch. (default: ``1``)
        shuffle (bool, optional): seeds in a new random order on every pass.
            (default: ``False``)
        generator (torch.Generator, optional): random numbers of the shuffling and sampling.
            (default: ``None``)
    """

    def __init__(self, data: HeteroData, num_neighbors: Sequence[int] | Mapping[tuple[str, str, str], Sequence[int]],
                 input_nodes: str | tuple[str, Tensor | None], batch_size: int = 1, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> None:
        input_type, ids = (input_nodes, None) if isinstance(input_nodes, str) else input_nodes
        if input_type not in data.node_types:
            raise ValueError(f"input_nodes: {input_type!r} is not a node type of the graph {data.node_types}")
        edge_types = list(data.edge_types)
        if isinstance(num_neighbors, Mapping):
            unknown = [e for e in num_neighbors if tuple(e) not in edge_types]
            if unknown:
                raise ValueError(f"num_neighbors names edge types {unknown} that the graph does not have")
            counts = {tuple(e): list(num_neighbors.get(e, [])) for e in edge_types}
        else:
            counts = {e: list(num_neighbors) for e in edge_types}
        hops = {len(c) for c in counts.values() if c}
        if len(hops) != 1:
            raise ValueError(f"num_neighbors: every edge type needs the same number of hops, got {sorted(hops)}")
        self.num_hops = hops.pop()
        for edge_type, c in counts.items():
            if c and any(int(k) < -1 for k in c):
                raise ValueError(f"num_neighbors[{edge_type}] must hold counts >= 0 or -1 per hop, got {c}")
        self.num_neighbors = {e: [int(k) for k in c] for e, c in counts.items() if c}
        self.data, self.input_type, self.generator = data, input_type, generator
        self.num_nodes = {t: int(data[t].num_nodes) for t in data.node_types}
        self._seeds = _SeedBatches(_seed_order(ids, self.num_nodes[input_type], "input_nodes"), batch_size,
                                   shuffle, generator)
        self.batch_size = self._seeds.batch_size
        self._in_edges = {e: _InEdges(data[e].edge_index, self.num_nodes[e[2]]) for e in self.num_neighbors}
        self._local = {t: torch.full((n,), -1, dtype=torch.long) for t, n in self.num_nodes.items()}

    def __len__(self) -> int:
        return len(self._seeds)

    def __iter__(self) -> Iterator[HeteroData]:
        return (self.sample(seeds) for seeds in self._seeds)

    def sample(self, seeds: Tensor) -> HeteroData:
        """The subgraph of ``seeds`` (global ids of the input type)."""
        types = list(self.num_nodes)
        local = self._local
        empty = torch.empty(0, dtype=torch.long)
        n_id = {t: [seeds if t == self.input_type else empty] for t in types}
        nodes_per_hop = {t: [seeds.numel() if t == self.input_type else 0] for t in types}
        count = {t: n_id[t][0].numel() for t in types}
        edges: dict[tuple, list[tuple[Tensor, Tensor, Tensor]]] = {e: [] for e in self.num_neighbors}
        local[self.input_type][seeds] = torch.arange(seeds.numel())
        frontier = {t: n_id[t][0] for t in types}
        try:
            for hop in range(self.num_hops):
                drawn: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
                for edge_type, counts in self.num_neighbors.items():
                    nodes = frontier[edge_type[2]]
                    if counts[hop] == 0 or nodes.numel() == 0:
                        continue
                    src, owner, eids = self._in_edges[edge_type].sample(nodes, counts[hop], self.generator)
                    drawn[edge_type] = (src, nodes[owner], eids)
                for node_type in types:  # one hop's new nodes of a type, whichever relation reached them
                    sources = [d[0] for e, d in drawn.items() if e[0] == node_type]
                    new = torch.unique(torch.cat(sources)) if sources else empty
                    new = new[local[node_type][new] < 0]
                    local[node_type][new] = torch.arange(count[node_type], count[node_type] + new.numel())
                    count[node_type] += new.numel()
                    n_id[node_type].append(new)
                    nodes_per_hop[node_type].append(new.numel())
                    frontier[node_type] = new
                for edge_type in self.num_neighbors:
                    src, dst, eids = drawn.get(edge_type, (empty, empty, empty))
                    edges[edge_type].append((local[edge_type[0]][src], local[edge_type[2]][dst], eids))
            ids = {t: torch.cat(parts) for t, parts in n_id.items()}
        finally:
            for t, parts in n_id.items():  # ready for the next batch without an O(N) reset
                local[t][torch.cat(parts)] = -1
        return self._batch(seeds, ids, nodes_per_hop, edges)

    def _batch(self, seeds: Tensor, ids: dict[str, Tensor], nodes_per_hop: dict[str, list[int]],
               edges: dict[tuple, list[tuple[Tensor, Tensor, Tensor]]]) -> HeteroData:
        batch = HeteroData()
        for node_type, node_ids in ids.items():
            store, source = batch[node_type], self.data[node_type]
            store.n_id = node_ids
            store.num_nodes = node_ids.numel()
            store.num_sampled_nodes = nodes_per_hop[node_type]
            for key, value in source.items():
                if key not in ("n_id", "num_nodes") and isinstance(value, Tensor) and value.dim() > 0 \
                        and value.size(0) == self.num_nodes[node_type]:
                    store[key] = value[node_ids]
        for edge_type in self.data.edge_types:
            store, source = batch[edge_type], self.data[edge_type]
            parts = edges.get(edge_type, [])
            rows, cols, eids = ([torch.cat(p) for p in zip(*parts)] if parts
                                else [torch.empty(0, dtype=torch.long)] * 3)
            store.edge_index = torch.stack([rows, cols])
            store.e_id = eids
            store.num_sampled_edges = [p[0].numel() for p in parts] or [0] * self.num_hops
            num_edges = source.edge_index.size(1)
            for key, value in source.items():
                if key not in ("edge_index", "e_id") and isinstance(value, Tensor) and value.dim() > 0 \
                        and value.size(0) == num_edges:
                    store[key] = value[eids]
        batch[self.input_type].batch_size = int(seeds.numel())
        batch[self.input_type].input_id = seeds
        return batch


def neighbor_loader(data: Data | HeteroData, num_neighbors: Sequence[int] | Mapping[Any, Sequence[int]],
                    input_nodes: Any = None, batch_size: int = 1, shuffle: bool = False, seed: int | None = None,
                    **kwargs: Any) -> Any:
    """PyG's ``NeighborLoader`` when its backend is installed, else :class:`NeighborBatches`
    (a ``Data``) or :class:`HeteroNeighborBatches` (a ``HeteroData``), with the same batch
    layout. ``kwargs`` (``num_workers``, ...) go to PyG's loader only.

    Args:
        data (Data or HeteroData): the graph.
        num_neighbors (Sequence[int] or Mapping): neighbours sampled per node and hop (``-1``:
            all); for a ``HeteroData`` also a mapping from edge type to such a list.
        input_nodes (Any, optional): the seed nodes (ids or a boolean mask; ``None``: every
            node); for a ``HeteroData`` a node type or ``(node type, ids or mask)``.
            (default: ``None``)
        batch_size (int, optional): seeds per batch. (default: ``1``)
        shuffle (bool, optional): seeds in a new random order on every pass. (default: ``False``)
        seed (int, optional): seed of the shuffling and sampling (``None``: unseeded).
            (default: ``None``)
        **kwargs (optional): for PyG's ``NeighborLoader`` only (``num_workers``, ...).
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if has_pyg_sampler():
        from torch_geometric.loader import NeighborLoader

        fanouts = dict(num_neighbors) if isinstance(num_neighbors, Mapping) else list(num_neighbors)
        return NeighborLoader(data, num_neighbors=fanouts, input_nodes=input_nodes,
                              batch_size=batch_size, shuffle=shuffle, generator=generator, **kwargs)
    if isinstance(data, HeteroData):
        return HeteroNeighborBatches(data, num_neighbors, input_nodes, batch_size, shuffle, generator)
    return NeighborBatches(data, num_neighbors, input_nodes, batch_size, shuffle, generator)
