"""Random graphs with the awkward cases every kernel must survive."""

from __future__ import annotations

import torch


def awkward_graph(num_src: int, num_dst: int, num_edges: int, seed: int = 0, hub_degree: int = 0) -> torch.Tensor:
    """[2, E] edges with isolated destinations, duplicates, self-loops and (optionally) a hub.

    A quarter of the destinations get no edge; every third edge is a duplicate of an earlier
    one; when the graph is square, self-loops are added; `hub_degree` extra edges all point
    to destination 0.
    """
    gen = torch.Generator().manual_seed(seed)
    reachable = max(1, (3 * num_dst) // 4)
    src = torch.randint(0, num_src, (num_edges,), generator=gen)
    dst = torch.randint(0, reachable, (num_edges,), generator=gen)
    if num_edges >= 3:
        dup = torch.arange(2, num_edges, 3)
        src[dup], dst[dup] = src[dup // 2], dst[dup // 2]
    parts_src, parts_dst = [src], [dst]
    if num_src == num_dst:
        loops = torch.arange(0, reachable, 2)
        parts_src.append(loops)
        parts_dst.append(loops)
    if hub_degree:
        parts_src.append(torch.randint(0, num_src, (hub_degree,), generator=gen))
        parts_dst.append(torch.zeros(hub_degree, dtype=torch.long))
    edge_index = torch.stack([torch.cat(parts_src), torch.cat(parts_dst)])
    shuffle = torch.randperm(edge_index.size(1), generator=gen)
    return edge_index[:, shuffle]


def ragged_ptr(sizes: list[int]) -> torch.Tensor:
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.long), 0)
    return ptr
