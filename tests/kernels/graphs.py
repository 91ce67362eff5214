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


def rand_leaf(*shape, dtype=torch.float64, seed=0, grad=True, device="cpu") -> torch.Tensor:
    """A seeded random leaf tensor (drawn in float64 on the CPU, then cast and moved)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_(grad)


def pool_inputs(mode: str, sizes: list[int], dim=5, nq=2, dtype=torch.float64, device="cpu"):
    """(ptr, x, kwargs) for `segment_attention_pool` in one of the pooling modes:
    shared_query, segment_query, scores (softmax), scores_raw (DIN-style), value."""
    ptr = ragged_ptr(sizes).to(device)
    rows, segs = int(ptr[-1]), len(sizes)
    x = rand_leaf(rows, dim, dtype=dtype, seed=1, device=device)
    kw = {}
    if mode in ("shared_query", "value"):
        kw["query"] = rand_leaf(nq, dim, dtype=dtype, seed=2, device=device)
    elif mode == "segment_query":
        kw["query"] = rand_leaf(segs, nq, dim, dtype=dtype, seed=2, device=device)
    else:
        kw["scores"] = rand_leaf(rows, nq, dtype=dtype, seed=2, device=device)
        kw["normalize"] = mode == "scores"
    if mode == "value":
        kw["value"] = rand_leaf(rows, 3, dtype=dtype, seed=4, device=device)
    return ptr, x, kw


def edge_inputs(num_src, num_dst, heads, dim, dim_v, num_edges, edge_term,
                dtype=torch.float64, hub=0, seed=0, device="cpu", score="dot"):
    """(edge_index, q, k, v, kwargs) for `edge_attention` on an awkward graph; `edge_term`
    adds an edge bias ("bias"), a per-head or per-dim edge scale ("scale_head",
    "scale_dim"), both bias and per-head scale ("both"), an edge key and value ("key_value"),
    all additive terms ("bias_key_value") or nothing ("none"). `score="additive"` adds
    the per-dimension attention vector `att` (GATv2's form)."""
    edge_index = awkward_graph(num_src, num_dst, num_edges, seed=seed, hub_degree=hub).to(device)
    e = edge_index.size(1)

    def leaf(*shape, offset):
        return rand_leaf(*shape, dtype=dtype, seed=seed + offset, device=device)

    q = leaf(num_dst, heads, dim, offset=1)
    k = leaf(num_src, heads, dim, offset=2)
    v = leaf(num_src, heads, dim_v, offset=3)
    kwargs = {}
    if edge_term in ("bias", "both"):
        kwargs["edge_bias"] = leaf(e, heads, offset=4)
    if edge_term in ("scale_head", "both"):
        kwargs["edge_scale"] = leaf(e, heads, offset=5)
    if edge_term == "scale_dim":
        kwargs["edge_scale"] = leaf(e, heads, dim, offset=5)
    if edge_term in ("key_value", "bias_key_value"):
        kwargs["edge_key"] = leaf(e, heads, dim, offset=6)
        kwargs["edge_value"] = leaf(e, heads, dim_v, offset=7)
    if edge_term == "bias_key_value":
        kwargs["edge_bias"] = leaf(e, heads, offset=4)
    if score == "additive":
        kwargs["score"] = "additive"
        kwargs["att"] = leaf(heads, dim, offset=8)
    return edge_index, q, k, v, kwargs
