"""Neighbour-sampled mini-batches of one large graph: :func:`neighbor_loader`.

PyG's ``NeighborLoader`` is used when its sampling backend (``pyg-lib`` or ``torch-sparse``)
is installed. Neither has a wheel on PyPI for the torch that gattn pins, so without them
:class:`NeighborBatches` samples in plain torch and yields batches laid out as
``NeighborLoader``'s (``directed=True``, ``disjoint=False``): ``n_id`` (global ids, the seed
nodes first, then each hop's new nodes), ``batch_size``, ``edge_index`` (local ids, source ->
destination, ordered by the hop that sampled them), ``num_sampled_nodes`` /
``num_sampled_edges`` per hop, and the node attributes (``x``, ``y``) of the subgraph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ["NeighborBatches", "has_pyg_sampler", "neighbor_loader"]


def has_pyg_sampler() -> bool:
    """Is PyG's neighbour sampling backend (pyg-lib or torch-sparse) installed?"""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


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
        if not num_neighbors or any(int(k) == 0 or int(k) < -1 for k in num_neighbors):
            raise ValueError(f"num_neighbors must be positive counts or -1 per hop, got {list(num_neighbors)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.num_nodes = int(data.num_nodes)
        self.num_neighbors = [int(k) for k in num_neighbors]
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        if input_nodes is None:
            input_nodes = torch.arange(self.num_nodes)
        elif input_nodes.dtype == torch.bool:
            input_nodes = input_nodes.nonzero().view(-1)
        self.input_nodes = input_nodes.long()
        # in-neighbours in CSR by destination
        source, target = data.edge_index
        order = torch.argsort(target, stable=True)
        self._sources = source[order]
        self._edge_ids = order
        self._ptr = torch.zeros(self.num_nodes + 1, dtype=torch.long)
        self._ptr[1:] = torch.cumsum(torch.bincount(target, minlength=self.num_nodes), 0)
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)

    def __len__(self) -> int:
        return -(-self.input_nodes.numel() // self.batch_size)

    def __iter__(self) -> Iterator[Data]:
        seeds = self.input_nodes
        if self.shuffle:
            seeds = seeds[torch.randperm(seeds.numel(), generator=self.generator)]
        for start in range(0, seeds.numel(), self.batch_size):
            yield self.sample(seeds[start:start + self.batch_size])

    def _neighbours(self, nodes: Tensor, count: int) -> tuple[Tensor, Tensor]:
        """(source, destination) global ids of the sampled in-edges of ``nodes``."""
        begin, degree = self._ptr[nodes], self._ptr[nodes + 1] - self._ptr[nodes]
        owner = torch.repeat_interleave(torch.arange(nodes.numel()), degree)
        offset = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
        position = begin[owner] + offset
        if count != -1 and bool((degree > count).any()):
            # k of each node's edges at random: sort the edges by (node, random key), keep the first k
            keys = torch.rand(owner.numel(), generator=self.generator)
            order = torch.argsort(owner.double() + keys, stable=True)
            owner, position = owner[order], position[order]
            rank = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
            keep = rank < count
            owner, position = owner[keep], position[keep]
        return self._sources[position], nodes[owner]

    def sample(self, seeds: Tensor) -> Data:
        """The subgraph of ``seeds`` (a batch)."""
        local = self._local
        n_id = [seeds]
        local[seeds] = torch.arange(seeds.numel())
        count, frontier = seeds.numel(), seeds
        rows, cols, nodes_per_hop, edges_per_hop = [], [], [seeds.numel()], []
        try:
            for k in self.num_neighbors:
                src, dst = self._neighbours(frontier, k)
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


def neighbor_loader(data: Data, num_neighbors: Sequence[int], input_nodes: Tensor | None = None,
                    batch_size: int = 1, shuffle: bool = False, seed: int | None = None, **kwargs: Any) -> Any:
    """PyG's ``NeighborLoader`` when its backend is installed, else :class:`NeighborBatches`
    (the same batch layout). ``kwargs`` (``num_workers``, ...) go to PyG's loader only.

    Args:
        data (Data): the graph.
        num_neighbors (Sequence[int]): neighbours sampled per node and hop (``-1``: all).
        input_nodes (Tensor, optional): the seed nodes (ids or a boolean mask; ``None``: every node).
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

        return NeighborLoader(data, num_neighbors=list(num_neighbors), input_nodes=input_nodes,
                              batch_size=batch_size, shuffle=shuffle, generator=generator, **kwargs)
    return NeighborBatches(data, num_neighbors, input_nodes, batch_size, shuffle, generator)
