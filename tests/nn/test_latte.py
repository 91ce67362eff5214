"""LATTEConv against a plain-torch reference, gradients, meta-relation composition, proximity loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.utils import softmax

from gattn.nn import LATTEConv, compose_meta_relations, meta_relations

SIZES = {"p": 11, "a": 7, "s": 3}


def hetero_graph(seed: int = 0, dtype: torch.dtype = torch.float32, channels: int = 6):
    """ACM-like schema with isolated nodes (author 6 has no paper) and a duplicate edge."""
    gen = torch.Generator().manual_seed(seed)
    pa = torch.stack([torch.randint(0, 11, (18,), generator=gen), torch.randint(0, 6, (18,), generator=gen)])
    pa = torch.cat([pa, pa[:, :1]], 1)
    ps = torch.stack([torch.arange(10), torch.randint(0, 3, (10,), generator=gen)])  # paper 10: no subject
    edge_index_dict = {("p", "pa", "a"): pa, ("a", "ap", "p"): pa.flip(0),
                       ("p", "ps", "s"): ps, ("s", "sp", "p"): ps.flip(0)}
    x_dict = {t: torch.randn(n, channels, generator=gen, dtype=dtype) for t, n in SIZES.items()}
    return x_dict, edge_index_dict


def metadata(edge_index_dict):
    return list(SIZES), list(edge_index_dict)


def reference_latte(conv: LATTEConv, x_dict, edge_index_dict):
    """The layer's equations with gathers, PyG's softmax and index_add (no fused kernel)."""
    heads, dim = conv.heads, conv.out_channels // conv.heads
    out, betas = {}, {}
    for node_type in conv.node_types:
        slots = []
        for n, edge_type in enumerate(conv.edge_types):
            if edge_type[2] != node_type:
                continue
            src_type = edge_type[0]
            q = conv.lin_query[n](x_dict[node_type]).view(-1, heads, dim) * conv.sharpen[n].view(1, -1, 1)
            k = conv.lin_key[n](x_dict[src_type]).view(-1, heads, dim)
            v = conv.lin[src_type](x_dict[src_type]).view(-1, heads, dim)
            src, dst = edge_type_index = edge_index_dict[edge_type]
            del edge_type_index
            scores = (q[dst] * k[src]).sum(-1) / math.sqrt(dim)
            alpha = softmax(scores, dst, num_nodes=x_dict[node_type].size(0))
            agg = torch.zeros(x_dict[node_type].size(0), heads, dim, dtype=v.dtype)
            agg.index_add_(0, dst, alpha.unsqueeze(-1) * v[src])
            slots.append(agg.reshape(-1, heads * dim))
        slots.append(conv.lin[node_type](x_dict[node_type]))
        beta = torch.softmax(conv.lin_beta[node_type](x_dict[node_type]), -1)
        out[node_type] = torch.relu(sum(beta[:, i : i + 1] * s for i, s in enumerate(slots)))
        betas[node_type] = beta
    return out, betas


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_latte_conv_matches_reference(backend: str) -> None:
    x_dict, edge_index_dict = hetero_graph()
    torch.manual_seed(0)
    conv = LATTEConv(6, 8, metadata(edge_index_dict), heads=2, backend=backend)
    with torch.no_grad():
        conv.sharpen.uniform_(0.5, 2.0)
    out, beta, alpha = conv(x_dict, edge_index_dict, return_beta=True, return_attention_weights=True)
    expected_out, expected_beta = reference_latte(conv, x_dict, edge_index_dict)
    for node_type in SIZES:
        torch.testing.assert_close(out[node_type], expected_out[node_type], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(beta[node_type], expected_beta[node_type])
        assert beta[node_type].shape == (SIZES[node_type], len(conv.relation_slots(node_type)))
    assert conv.relation_slots("p") == ["ap", "sp", "self"]
    for edge_type, weights in alpha.items():
        dst = edge_index_dict[edge_type][1]
        sums = torch.zeros(SIZES[edge_type[2]], 2).index_add_(0, dst, weights)
        has_edges = torch.bincount(dst, minlength=SIZES[edge_type[2]]) > 0
        torch.testing.assert_close(sums[has_edges], torch.ones_like(sums[has_edges]))


def test_latte_conv_empty_neighbourhoods_give_zeros_not_nan() -> None:
    x_dict, edge_index_dict = hetero_graph()
    conv = LATTEConv(6, 8, metadata(edge_index_dict), heads=2, act=None)
    conv.eval()
    empty = dict(edge_index_dict)
    empty[("p", "pa", "a")] = torch.empty(2, 0, dtype=torch.long)
    out = conv(x_dict, empty)
    assert torch.isfinite(out["a"]).all()
    # authors receive nothing: their output is the self slot alone, weighted by its beta
    beta = torch.softmax(conv.lin_beta["a"](x_dict["a"]), -1)
    torch.testing.assert_close(out["a"], beta[:, -1:] * conv.lin["a"](x_dict["a"]))
    del empty[("s", "sp", "p")]  # a missing relation contributes zeros too
    assert torch.isfinite(conv(x_dict, empty)["p"]).all()


def test_latte_conv_gradcheck_float64() -> None:
    x_dict, edge_index_dict = hetero_graph(dtype=torch.float64, channels=3)
    conv = LATTEConv(3, 4, metadata(edge_index_dict), heads=2, act="tanh").double()
    inputs = tuple(x_dict[t].requires_grad_() for t in SIZES)

    def run(*xs):
        out = conv(dict(zip(SIZES, xs)), edge_index_dict)
        return tuple(out[t] for t in SIZES)

    assert torch.autograd.gradcheck(run, inputs, atol=1e-6, fast_mode=True)
    params = list(conv.parameters())
    loss = sum(o.square().sum() for o in run(*inputs))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert all(g is not None for g in grads), "every parameter (sharpening included) gets a gradient"


def test_latte_conv_per_type_input_sizes_and_bad_input() -> None:
    x_dict, edge_index_dict = hetero_graph()
    x_dict["a"] = torch.randn(7, 5)
    conv = LATTEConv({"p": 6, "a": 5, "s": 6}, 8, metadata(edge_index_dict), heads=4, layer_norm=True)
    assert conv(x_dict, edge_index_dict)["a"].shape == (7, 8)
    with pytest.raises(ValueError, match=r"x_dict\['a'\]"):
        conv({**x_dict, "a": torch.randn(7, 6)}, edge_index_dict)
    with pytest.raises(ValueError, match="not in the layer's metadata"):
        conv(x_dict, {**edge_index_dict, ("p", "cites", "p"): torch.zeros(2, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="out of range|index"):
        bad = dict(edge_index_dict)
        bad[("p", "pa", "a")] = torch.tensor([[0], [7]])  # author 7 does not exist
        conv(x_dict, bad)
    with pytest.raises(ValueError, match="divisible"):
        LATTEConv(6, 10, metadata(edge_index_dict), heads=4)
    with pytest.raises(ValueError, match="metadata"):
        LATTEConv(6, 8, (["p"], [("p", "pa", "a")]))
    assert "relations=4" in repr(conv)


def test_meta_relation_names_follow_the_message_path() -> None:
    _, edge_index_dict = hetero_graph()
    second = meta_relations(list(edge_index_dict), 2)
    assert ("p", "pa.ap", "p") in second and ("a", "ap.pa", "a") in second
    # one meta-relation per walk on the schema p-a, p-s: sum of M^t for its adjacency M
    schema = torch.tensor([[0, 1, 1], [1, 0, 0], [1, 0, 0]])
    assert ("s", "sp.pa", "a") in second and len(second) == int((schema @ schema).sum()) == 6
    third = meta_relations(list(edge_index_dict), 3)
    assert len(third) == int((schema @ schema @ schema).sum()) == 8
    assert all(e[1].count(".") == 2 for e in third)


def dense(edge_index, weight, rows, cols):
    matrix = torch.zeros(rows, cols)
    matrix.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    return matrix


@pytest.mark.parametrize("threshold,top_k", [(None, None), (0.2, None), (None, 2), (0.1, 3)])
@pytest.mark.parametrize("budget", [1, 7, 1 << 20])
def test_compose_meta_relations_matches_dense_products(threshold, top_k, budget) -> None:
    _, first = hetero_graph(seed=3)
    gen = torch.Generator().manual_seed(1)
    previous = {}
    for edge_type, edge_index in first.items():  # a row-stochastic weight, like attention
        raw = torch.rand(edge_index.size(1), generator=gen)
        previous[edge_type] = (edge_index, softmax(raw, edge_index[1], num_nodes=SIZES[edge_type[2]]))
    composed = compose_meta_relations(previous, first, SIZES, threshold=threshold, top_k=top_k,
                                      max_product_nnz=budget)
    assert set(composed) <= set(meta_relations(list(first), 2))
    for (a, name, c), (edge_index, weight) in composed.items():
        first_name, rest_name = name.split(".")
        (first_type,) = [e for e in first if e[0] == a and e[1] == first_name]
        b = first_type[2]
        one = first[first_type]
        a1 = dense(one, torch.ones(one.size(1)), SIZES[b], SIZES[a])
        a1 = a1 / a1.sum(1, keepdim=True).clamp(min=1)
        w_prev = dense(*previous[(b, rest_name, c)], SIZES[c], SIZES[b])
        expected = w_prev @ a1
        assert (expected.sum(1) <= 1 + 1e-5).all()
        if threshold is not None:
            expected = torch.where(expected >= threshold, expected, 0.0)
        got = dense(edge_index, weight, SIZES[c], SIZES[a])
        kept = got > 0
        torch.testing.assert_close(got[kept], expected[kept])  # kept entries keep their weight
        if top_k is None:
            torch.testing.assert_close(got, expected)
        else:  # ties may be broken either way: each row keeps k of its largest entries
            assert torch.equal(kept.sum(1), (expected > 0).sum(1).clamp(max=top_k))
            smallest_kept = torch.where(kept, got, math.inf).min(1).values
            largest_dropped = torch.where(kept, 0.0, expected).max(1).values
            assert (largest_dropped <= smallest_kept + 1e-6).all()
        per_row = torch.bincount(edge_index[1], minlength=SIZES[c])
        bound = min(top_k or SIZES[a], int(1 / threshold) if threshold else SIZES[a])
        assert int(per_row.max()) <= bound
        unchunked = compose_meta_relations(previous, first, SIZES, threshold=threshold, top_k=top_k)
        torch.testing.assert_close(dense(*unchunked[(a, name, c)], SIZES[c], SIZES[a]), got)  # chunks: same


def test_proximity_loss_uses_negative_samples_and_trains_queries_and_keys() -> None:
    x_dict, edge_index_dict = hetero_graph()
    conv = LATTEConv(6, 8, metadata(edge_index_dict), heads=2)
    torch.manual_seed(0)
    loss = conv.proximity_loss(x_dict, edge_index_dict, num_neg_per_edge=2.0)
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert conv.lin_query[0].weight.grad.abs().sum() > 0
    assert conv.sharpen.grad.abs().sum() > 0
    # logits are the node-level attention scores averaged over heads
    edge_index = edge_index_dict[("a", "ap", "p")]
    logits = conv.link_logits(x_dict, ("a", "ap", "p"), edge_index)
    q = conv.lin_query[1](x_dict["p"]).view(-1, 2, 4) * conv.sharpen[1].view(1, -1, 1)
    k = conv.lin_key[1](x_dict["a"]).view(-1, 2, 4)
    expected = (q[edge_index[1]] * k[edge_index[0]]).sum(-1).mean(-1) / 2.0
    torch.testing.assert_close(logits, expected)
    with pytest.raises(ValueError, match="num_neg_per_edge"):
        conv.proximity_loss(x_dict, edge_index_dict, num_neg_per_edge=0)
