"""Node reordering (``reorder=``): same results as the caller's order, the ordering cached
per graph (and recomputed after an edit), the caller's node and edge order kept; ``"auto"``
reorders a graph that comes back and gains locality, and nothing else."""

from __future__ import annotations

import pytest
import torch

import gattn.nn as gattn_nn
from gattn import kernels as K
from gattn.kernels import reorder as R
from gattn.kernels.csr import ScheduledCSR, inverse_permutation

from .graphs import awkward_graph, rand_leaf

METHODS = ["rcm", pytest.param("metis", marks=pytest.mark.skipif(not R.metis_available(), reason="pymetis absent"))]


def _shuffled_grid(side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A side x side grid graph (both directions) under a random relabelling, and the relabelling."""
    ids = torch.arange(side * side).view(side, side)
    pairs = [torch.stack([ids[:, :-1].flatten(), ids[:, 1:].flatten()]),
             torch.stack([ids[:-1].flatten(), ids[1:].flatten()])]
    edges = torch.cat(pairs, dim=1)
    edges = torch.cat([edges, edges.flip(0)], dim=1)
    shuffle = torch.randperm(side * side, generator=torch.Generator().manual_seed(seed))
    return shuffle[edges], shuffle


def _inputs(num_src, num_dst, num_edges, seed=0, dim_value=5):
    edge_index = awkward_graph(num_src, num_dst, num_edges, seed=seed, hub_degree=6)
    heads, dim = 3, 4
    q = rand_leaf(num_dst, heads, dim, seed=seed + 1)
    k = rand_leaf(num_src, heads, dim, seed=seed + 2)
    v = rand_leaf(num_src, heads, dim_value, seed=seed + 3)
    edges = edge_index.size(1)
    terms = {
        "edge_bias": rand_leaf(edges, heads, seed=seed + 4),
        "edge_key": rand_leaf(edges, heads, dim, seed=seed + 5),
        "edge_value": rand_leaf(edges, heads, dim_value, seed=seed + 6),
    }
    return edge_index, q, k, v, terms


def _run(edge_index, q, k, v, terms, **kwargs):
    out, attention = K.edge_attention(q, k, v, edge_index, return_attention=True, **terms, **kwargs)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + (attention * attention).sum()
    leaves = (q, k, v, *terms.values())
    return (out, attention, *torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize(("num_src", "num_dst"), [(40, 40), (30, 45)])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_reordered_equals_plain(method, backend, num_src, num_dst, dropout_p):
    edge_index, q, k, v, terms = _inputs(num_src, num_dst, 220)
    kwargs = {"backend": backend, "dropout_p": dropout_p, "dropout_seed": 11}
    plain = _run(edge_index, q, k, v, terms, **kwargs)
    reordered = _run(edge_index, q, k, v, terms, reorder=method, **kwargs)
    # the cpu backend runs the graph stored in that order (nothing permuted), the reference the
    # relabelled graph
    kind = "reorder-csr" if backend == "cpu" else "reorder"
    assert kind in _cached_kinds(edge_index)
    assert ("reorder-csr" if backend == "reference" else "reorder") not in _cached_kinds(edge_index)
    if backend == "cpu":
        scheduled = R.scheduled_csr(edge_index, num_src, num_dst, method)
        assert not torch.equal(scheduled.dst_nodes, torch.arange(num_dst))  # the kernel did run in that order
    else:
        reordering = R.node_reordering(edge_index, num_src, num_dst, method)
        assert not torch.equal(reordering.src_order, torch.arange(num_src))  # the kernel did run relabelled
    names = ["out", "attention", "dq", "dk", "dv", "dbias", "dkey", "dvalue"]
    for name, a, b in zip(names, plain, reordered):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("method", METHODS)
def test_reordered_gradcheck(method):
    edge_index, q, k, v, terms = _inputs(9, 7, 30, seed=3, dim_value=2)

    def fn(q, k, v, bias, key, value):
        return K.edge_attention(q, k, v, edge_index, edge_bias=bias, edge_key=key, edge_value=value,
                                backend="cpu", reorder=method)

    assert torch.autograd.gradcheck(fn, (q, k, v, *terms.values()))


@pytest.mark.parametrize("method", METHODS)
def test_ordering_is_a_permutation_that_shortens_edges(method):
    edge_index, shuffle = _shuffled_grid(20)
    reordering = R.node_reordering(edge_index, 400, 400, method)
    for order, rank in ((reordering.src_order, reordering.src_rank), (reordering.dst_order, reordering.dst_rank)):
        assert torch.equal(order.sort().values, torch.arange(400))
        assert torch.equal(rank[order], torch.arange(400))
    relabelled = reordering.edge_index
    assert torch.equal(relabelled, reordering.src_rank[edge_index])  # caller's edge order kept
    span_before = (edge_index[0] - edge_index[1]).abs().float().mean()
    span_after = (relabelled[0] - relabelled[1]).abs().float().mean()
    # a random labelling spreads grid neighbours over ~N/3 ids; a locality ordering keeps them within a few rows
    assert span_after < span_before / 4, (float(span_before), float(span_after))


def test_bipartite_ordering_keeps_each_side():
    edge_index = awkward_graph(12, 30, 80, seed=2)
    reordering = R.node_reordering(edge_index, 12, 30, "rcm")
    assert torch.equal(reordering.src_order.sort().values, torch.arange(12))
    assert torch.equal(reordering.dst_order.sort().values, torch.arange(30))
    assert torch.equal(reordering.csr.rowptr[-1], torch.tensor(edge_index.size(1)))


def test_cache_reused_and_recomputed_after_in_place_edit():
    edge_index, _ = _shuffled_grid(8)
    first = R.node_reordering(edge_index, 64, 64, "rcm")
    assert R.node_reordering(edge_index, 64, 64, "rcm") is first
    assert R.node_reordering(edge_index.clone(), 64, 64, "rcm") is not first  # another tensor
    edge_index.numpy()[0, :10] = edge_index.numpy()[1, :10]  # an edit the version counter misses
    fresh = R.node_reordering(edge_index, 64, 64, "rcm")
    assert fresh is not first
    assert torch.equal(fresh.edge_index, torch.stack([fresh.src_rank[edge_index[0]], fresh.dst_rank[edge_index[1]]]))
    # the kernel sees the edited graph: equal to the plain call on it
    q, k, v = (rand_leaf(64, 2, 3, seed=s, grad=False) for s in range(3))
    torch.testing.assert_close(K.edge_attention(q, k, v, edge_index, reorder="rcm", backend="cpu"),
                               K.edge_attention(q, k, v, edge_index, backend="cpu"), rtol=1e-12, atol=1e-12)


def test_bad_reorder_values():
    edge_index, q, k, v, _ = _inputs(10, 10, 30)
    with pytest.raises(ValueError, match="`reorder` must be None, 'auto' or one of"):
        K.edge_attention(q, k, v, edge_index, reorder="amd")
    with pytest.raises(ValueError, match="`reorder` must be None, 'auto' or one of"):
        gattn_nn.TransformerConv(4, 2, reorder="RCM")
    csr = K.get_csr(edge_index, 10, 10)
    with pytest.raises(ValueError, match="not a prebuilt CSR"):
        K.edge_attention(q, k, v, csr, reorder="rcm")
    bad = edge_index.clone()
    bad[0, 3] = 12
    with pytest.raises(ValueError, match="source index 12 is out of range"):
        K.edge_attention(q, k, v, bad, reorder="rcm")


def test_metis_without_pymetis_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(R, "metis_available", lambda: False)
    with pytest.raises(ValueError, match="pymetis"):
        gattn_nn.GATConv(4, 2, reorder="metis")
    edge_index, q, k, v, _ = _inputs(10, 10, 30)
    with pytest.raises(ValueError, match="pymetis"):
        K.edge_attention(q, k, v, edge_index, reorder="metis")


#: The attention layers with reorder=, and the options that reach their per-edge paths.
LAYER_CASES = [
    ("TransformerConv", {"edge_dim": 3, "beta": True}),
    ("GraphTransformerConv", {"edge_dim": 3}),
    ("GATConv", {"edge_dim": 3}),
    ("GATv2Conv", {}),
]


def _layer_pair(name, method, **kwargs):
    torch.manual_seed(0)
    plain = getattr(gattn_nn, name)(6, 4, heads=2, reorder=None, **kwargs).double()
    torch.manual_seed(0)
    reordered = getattr(gattn_nn, name)(6, 4, heads=2, reorder=method, **kwargs).double()
    reordered.load_state_dict(plain.state_dict())
    return plain, reordered


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "kwargs"), LAYER_CASES)
def test_layers_see_their_own_node_order(method, name, kwargs):
    edge_index, _ = _shuffled_grid(6)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(36, 6, generator=gen, dtype=torch.float64)
    edge_attr = torch.randn(edge_index.size(1), 3, generator=gen, dtype=torch.float64)
    results = []
    for layer in _layer_pair(name, method, **kwargs):
        xs = x.clone().requires_grad_()
        args = (xs, edge_index, edge_attr) if "edge_dim" in kwargs else (xs, edge_index)
        result = layer(*args, return_attention_weights=True)
        out, (returned_index, alpha) = result[0], result[-1]  # GraphTransformerConv: (nodes, edges, attention)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        grads = torch.autograd.grad((out * weights).sum() + alpha.square().sum(), [xs, *layer.parameters()])
        results.append((out, returned_index, alpha, grads))
    (out, index, alpha, grads), (out_r, index_r, alpha_r, grads_r) = results
    torch.testing.assert_close(out_r, out, rtol=1e-12, atol=1e-12)
    assert torch.equal(index_r, index)
    torch.testing.assert_close(alpha_r, alpha, rtol=1e-12, atol=1e-12)
    for grad, grad_r in zip(grads, grads_r):
        torch.testing.assert_close(grad_r, grad, rtol=1e-10, atol=1e-12)


def test_graph_transformer_layer_passes_reorder():
    layer = gattn_nn.GraphTransformerLayer(8, heads=2, reorder="rcm")
    assert layer.attention.reorder == "rcm"


# ---- reorder="auto" -------------------------------------------------------------------------

def _cached_kinds(edge_index: torch.Tensor) -> set[str]:
    """What gattn's structure cache holds for this tensor ("csr", "reorder", "reorder-auto")."""
    from gattn.kernels import _cache

    return {key[-1][0] for key in _cache._entries if key[0] == edge_index.data_ptr()}


def _scheduled(edge_index, num_src, num_dst, seed=0):
    """A ScheduledCSR of `edge_index` under random source and destination orders."""
    gen = torch.Generator().manual_seed(seed)
    src_order, dst_order = torch.randperm(num_src, generator=gen), torch.randperm(num_dst, generator=gen)
    src_rank, dst_rank = inverse_permutation(src_order), inverse_permutation(dst_order)
    return ScheduledCSR(torch.stack([src_rank[edge_index[0]], dst_rank[edge_index[1]]]), src_order, dst_order)


@pytest.mark.parametrize(("num_src", "num_dst"), [(40, 40), (30, 45)])
@pytest.mark.parametrize("score", ["dot", "additive"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_scheduled_csr_equals_plain(num_src, num_dst, score, dropout_p):
    """The CPU kernels on a CSR stored in another order, with the caller's ids in it: every
    output and gradient as on the plain CSR (the rows and columns visited in another order)."""
    edge_index, q, k, v, terms = _inputs(num_src, num_dst, 220)
    scheduled = _scheduled(edge_index, num_src, num_dst)
    assert torch.equal(K._csr_edge_index(scheduled), edge_index)  # the caller's edges, in the caller's order
    assert torch.equal(scheduled.sorted_destinations(), scheduled.dst_nodes[K.index_from_ptr(scheduled.rowptr)])
    if score == "dot":
        terms["edge_scale"] = rand_leaf(edge_index.size(1), 3, seed=9)
    else:
        terms["att"] = rand_leaf(3, 4, seed=9)
    kwargs = {"backend": "cpu", "score": score, "dropout_p": dropout_p, "dropout_seed": 5}
    plain = _run(edge_index, q, k, v, terms, **kwargs)
    stored = _run(scheduled, q, k, v, terms, **kwargs)
    for a, b in zip(plain, stored):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    # the plain dot form (its own kernels)
    plain_dot = _run(edge_index, q, k, v, {}, backend="cpu")
    for a, b in zip(plain_dot, _run(scheduled, q, k, v, {}, backend="cpu")):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_scheduled_csr_gradcheck():
    edge_index, q, k, v, terms = _inputs(9, 7, 30, seed=3, dim_value=2)
    scheduled = _scheduled(edge_index, 9, 7, seed=2)

    def fn(q, k, v, bias, key, value):
        return K.edge_attention(q, k, v, scheduled, edge_bias=bias, edge_key=key, edge_value=value, backend="cpu")

    assert torch.autograd.gradcheck(fn, (q, k, v, *terms.values()))


def test_scheduled_csr_is_refused_by_other_backends():
    edge_index, q, k, v, _ = _inputs(10, 10, 30)
    with pytest.raises(ValueError, match="cpu backend only"):
        K.edge_attention(q, k, v, _scheduled(edge_index, 10, 10), backend="triton")


@pytest.fixture
def small_auto(monkeypatch):
    """The "auto" rules at a test's size: any K|V size, a window of 60 rows at 216-byte rows."""
    monkeypatch.setattr(R, "AUTO_MIN_KV_BYTES", 0)
    monkeypatch.setattr(R, "AUTO_WINDOW_BYTES", 60 * 216)


def _grid_inputs(side=30):
    edge_index, _ = _shuffled_grid(side)
    num = side * side
    heads, dim, dim_value = 3, 4, 5  # float64: (3*4 + 3*5) * 8 = 216 bytes of K|V per node
    q, k = rand_leaf(num, heads, dim, seed=1), rand_leaf(num, heads, dim, seed=2)
    v = rand_leaf(num, heads, dim_value, seed=3)
    terms = {"edge_bias": rand_leaf(edge_index.size(1), heads, seed=4)}
    return edge_index, q, k, v, terms


def test_auto_reorders_a_graph_that_comes_back_with_locality(small_auto):
    K.clear_caches()
    edge_index, q, k, v, terms = _grid_inputs()
    plain = _run(edge_index, q, k, v, terms, backend="cpu")
    assert _cached_kinds(edge_index) == {"csr"}
    first = _run(edge_index, q, k, v, terms, backend="cpu", reorder="auto")
    assert _cached_kinds(edge_index) == {"csr", "reorder-auto"}  # first sighting: the caller's order
    for a, b in zip(plain, first):
        assert torch.equal(a, b)
    second = _run(edge_index, q, k, v, terms, backend="cpu", reorder="auto")
    # it came back: reverse Cuthill-McKee kept (a shuffled grid gains), the plain CSR let go
    assert _cached_kinds(edge_index) == {"reorder-auto"}
    kept = R.auto_csr(edge_index, 900, 900, 216)
    assert isinstance(kept, ScheduledCSR)
    assert torch.equal(K._csr_edge_index(kept), edge_index)
    order = kept.dst_nodes
    rank = inverse_permutation(order)
    near = ((rank[edge_index[0]] - rank[edge_index[1]]).abs() < 60).double().mean()
    assert near > 0.9  # a grid of side 30 in reverse Cuthill-McKee order: neighbours within a row or two
    third = _run(edge_index, q, k, v, terms, backend="cpu", reorder="auto")
    names = ["out", "attention", "dq", "dk", "dv", "dbias"]
    for results in (second, third):
        for name, a, b in zip(names, plain, results):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    # an in-place edit is another graph: counted afresh, the caller's order on its first call
    edge_index.numpy()[0, :4] = edge_index.numpy()[1, :4]
    _run(edge_index, q, k, v, terms, backend="cpu", reorder="auto")
    assert "csr" in _cached_kinds(edge_index)
    assert R.auto_csr(edge_index, 900, 900, 216) is not kept


def _community_graph(communities=20, size=45, degree=6, inside=0.9, seed=7):
    """`communities` groups of `size` nodes, `inside` of each node's incoming edges from its
    own group, node ids shuffled."""
    gen = torch.Generator().manual_seed(seed)
    num = communities * size
    dst = torch.arange(num).repeat_interleave(degree)
    same = (dst // size) * size + torch.randint(0, size, (dst.numel(),), generator=gen)
    other = torch.randint(0, num, (dst.numel(),), generator=gen)
    src = torch.where(torch.rand(dst.numel(), generator=gen) < inside, same, other)
    shuffle = torch.randperm(num, generator=gen)
    return torch.stack([shuffle[src], shuffle[dst]])


@pytest.mark.parametrize("with_metis", [True, False])
def test_auto_partitions_communities_that_rcm_cannot_pack(small_auto, monkeypatch, with_metis):
    """Reverse Cuthill-McKee brings a community graph from 9 % to 25 % near (structure, but not
    enough): with pymetis "auto" then tries a METIS partition (85 % near) and keeps it;
    without pymetis the caller's order stays. A random graph never pays for a partition."""
    if with_metis and not R.metis_available():
        pytest.skip("pymetis is not installed")
    monkeypatch.setattr(R, "AUTO_WINDOW_BYTES", 30 * 216)
    monkeypatch.setattr(R, "METIS_PART_SIZE", 45)
    if not with_metis:
        monkeypatch.setattr(R, "metis_available", lambda: False)
    K.clear_caches()
    edge_index = _community_graph()
    _, q, k, v, terms = _grid_inputs()
    terms = {"edge_bias": rand_leaf(edge_index.size(1), 3, seed=4)}
    plain = _run(edge_index, q, k, v, terms, backend="cpu")
    for _ in range(3):
        auto = _run(edge_index, q, k, v, terms, backend="cpu", reorder="auto")
    assert R.auto_ordering(edge_index, 900, 216) == ("metis" if with_metis else None)
    kept = R.auto_csr(edge_index, 900, 900, 216)
    assert isinstance(kept, ScheduledCSR) == with_metis
    for name, a, b in zip(["out", "attention", "dq", "dk", "dv", "dbias"], plain, auto):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")

    def refuse(*args, **kwargs):
        raise AssertionError("a METIS partition was computed for a graph without structure, or too large")

    monkeypatch.setattr(R, "_metis_order", refuse)
    too_large = edge_index.clone()  # another graph (a fresh tensor), over the METIS edge limit
    monkeypatch.setattr(R, "AUTO_METIS_MAX_EDGES", too_large.size(1) - 1)
    assert all(R.auto_csr(too_large, 900, 900, 216) is None for _ in range(3))
    random_graph = awkward_graph(900, 900, 3600, seed=5)
    assert all(R.auto_csr(random_graph, 900, 900, 216) is None for _ in range(3))
    assert R.auto_ordering(random_graph, 900, 216) is None


def test_auto_keeps_the_caller_order_of_a_graph_without_locality(small_auto):
    K.clear_caches()
    edge_index = awkward_graph(900, 900, 3600, seed=5)
    _, q, k, v, _ = _grid_inputs()
    plain = _run(edge_index, q, k, v, {}, backend="cpu")
    for _ in range(3):
        auto = _run(edge_index, q, k, v, {}, backend="cpu", reorder="auto")
        for a, b in zip(plain, auto):
            assert torch.equal(a, b)  # the same CSR, the same arithmetic
    assert _cached_kinds(edge_index) == {"csr", "reorder-auto"}
    assert R.auto_csr(edge_index, 900, 900, 216) is None


def test_auto_never_orders_a_fresh_edge_index(small_auto, monkeypatch):
    """A mini-batch loader hands over a new tensor every step: no ordering is ever computed."""
    def refuse(*args, **kwargs):
        raise AssertionError("an ordering was computed for a graph seen once")

    monkeypatch.setattr(R, "_orders", refuse)
    edge_index, q, k, v, terms = _grid_inputs()
    plain = _run(edge_index, q, k, v, terms, backend="cpu")
    for _ in range(3):
        auto = _run(edge_index.clone(), q, k, v, terms, backend="cpu", reorder="auto")
        for a, b in zip(plain, auto):
            assert torch.equal(a, b)


def test_auto_rules_at_their_defaults(monkeypatch):
    K.clear_caches()
    edge_index, q, k, v, terms = _grid_inputs()
    # 900 rows of 216 bytes fit in cache: nothing is counted or ordered
    for _ in range(3):
        K.edge_attention(q, k, v, edge_index, backend="cpu", reorder="auto")
    assert _cached_kinds(edge_index) == {"csr"}
    assert R.auto_csr(edge_index, 900, 900, 216) is None
    assert R.auto_csr(edge_index, 900, 900, R.AUTO_MIN_KV_BYTES // 900 + 1) is None  # first sighting
    monkeypatch.setattr(R, "AUTO_MIN_KV_BYTES", 0)
    bipartite = awkward_graph(40, 30, 100, seed=1)
    assert all(R.auto_csr(bipartite, 40, 30, 216) is None for _ in range(3))
    monkeypatch.setattr(R, "AUTO_MAX_EDGES", edge_index.size(1) - 1)
    assert all(R.auto_csr(edge_index, 900, 900, 216) is None for _ in range(3))
    # a prebuilt CSR is run as given; the reference backend runs the caller's order
    csr = K.get_csr(edge_index, 900, 900)
    expected = K.edge_attention(q, k, v, edge_index, backend="cpu")
    torch.testing.assert_close(K.edge_attention(q, k, v, csr, backend="cpu", reorder="auto"), expected, rtol=0, atol=0)
    monkeypatch.setattr(R, "AUTO_MAX_EDGES", 1 << 24)
    for _ in range(3):
        torch.testing.assert_close(K.edge_attention(q, k, v, edge_index, backend="reference", reorder="auto"),
                                   expected, rtol=1e-12, atol=1e-12)
    assert R.auto_csr(edge_index.clone(), 900, 900, 216) is None


@pytest.mark.parametrize(("name", "kwargs"), LAYER_CASES)
def test_layers_reorder_automatically_by_default(small_auto, name, kwargs):
    assert getattr(gattn_nn, name)(4, 2).reorder == "auto"
    K.clear_caches()
    edge_index, _ = _shuffled_grid(40)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1600, 6, generator=gen, dtype=torch.float64)
    edge_attr = torch.randn(edge_index.size(1), 3, generator=gen, dtype=torch.float64)
    plain, auto = _layer_pair(name, "auto", **kwargs)
    for _ in range(3):
        outs = []
        for layer in (plain, auto):
            xs = x.clone().requires_grad_()
            out = layer(xs, edge_index, edge_attr) if "edge_dim" in kwargs else layer(xs, edge_index)
            out = out[0] if isinstance(out, tuple) else out  # GraphTransformerConv: (nodes, edges)
            outs.append((out, *torch.autograd.grad(out.square().sum(), [xs, *layer.parameters()])))
        for a, b in zip(*outs):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    from gattn.kernels import _cache

    kept = [value.csr for key, (_, _, value) in _cache._entries.items() if key[-1][0] == "reorder-auto"]
    assert any(isinstance(csr, ScheduledCSR) for csr in kept)  # the default did reorder this graph


def test_graph_transformer_layer_defaults_to_auto():
    assert gattn_nn.GraphTransformerLayer(8, heads=2).attention.reorder == "auto"
