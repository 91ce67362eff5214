"""Node reordering (``reorder=``): same results as the caller's order, the ordering cached
per graph (and recomputed after an edit), the caller's node and edge order kept."""

from __future__ import annotations

import pytest
import torch

import gattn.nn as gattn_nn
from gattn import kernels as K
from gattn.kernels import reorder as R

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
    with pytest.raises(ValueError, match="`reorder` must be None or one of"):
        K.edge_attention(q, k, v, edge_index, reorder="amd")
    with pytest.raises(ValueError, match="`reorder` must be None or one of"):
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


def _layer_pair(name, method, **kwargs):
    torch.manual_seed(0)
    plain = getattr(gattn_nn, name)(6, 4, heads=2, **kwargs).double()
    torch.manual_seed(0)
    reordered = getattr(gattn_nn, name)(6, 4, heads=2, reorder=method, **kwargs).double()
    reordered.load_state_dict(plain.state_dict())
    return plain, reordered


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "kwargs"), [
    ("TransformerConv", {"edge_dim": 3, "beta": True}),
    ("GraphTransformerConv", {"edge_dim": 3}),
    ("GATConv", {"edge_dim": 3}),
    ("GATv2Conv", {}),
])
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
