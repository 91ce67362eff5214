"""bf16 key/value storage (``kv_dtype=torch.bfloat16``): the CPU kernel equals the reference
on the rounded keys and values, and its error against float32 stays within a stated bound."""

from __future__ import annotations

import pytest
import torch

import gattn.nn as gattn_nn
from gattn import kernels as K

from .graphs import awkward_graph, rand_leaf

#: Bound on the relative error (Frobenius norm) of the output against float32, for unit-scale
#: inputs: bf16 keeps 8 significant bits (relative rounding error at most 2^-9 = 2e-3 per
#: element); the output, a convex combination of rounded values under rounded scores, stays
#: within a small multiple of it (about 3e-3 measured).
BF16_OUTPUT_BOUND = 1e-2


def _inputs(dtype, score="dot", seed=0):
    edge_index = awkward_graph(40, 40, 300, seed=seed, hub_degree=8)
    heads, dim = 3, 8 if score == "dot" else 4
    q = rand_leaf(40, heads, dim, seed=seed + 1, dtype=dtype)
    k = rand_leaf(40, heads, dim, seed=seed + 2, dtype=dtype)
    v = rand_leaf(40, heads, 5, seed=seed + 3, dtype=dtype)
    terms = {"edge_bias": rand_leaf(edge_index.size(1), heads, seed=seed + 4, dtype=dtype)}
    if score == "dot":
        terms["edge_key"] = rand_leaf(edge_index.size(1), heads, dim, seed=seed + 5, dtype=dtype)
    else:
        terms["att"] = rand_leaf(heads, dim, seed=seed + 6, dtype=dtype)
    return edge_index, q, k, v, terms


def _run(edge_index, q, k, v, terms, **kwargs):
    out, attention = K.edge_attention(q, k, v, edge_index, return_attention=True, **terms, **kwargs)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + (attention * attention).sum()
    return (out, attention, *torch.autograd.grad(loss, (q, k, v, *terms.values())))


@pytest.mark.parametrize("score", ["dot", "additive"])
def test_cpu_bf16_kv_equals_reference_on_rounded_kv(score):
    edge_index, q, k, v, terms = _inputs(torch.float64, score)
    kwargs = {"kv_dtype": torch.bfloat16, "score": score, "dropout_p": 0.2, "dropout_seed": 3}
    fused = _run(edge_index, q, k, v, terms, backend="cpu", **kwargs)
    reference = _run(edge_index, q, k, v, terms, backend="reference", **kwargs)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bf16_kv_is_exact_for_bf16_representable_kv():
    edge_index, q, k, v, terms = _inputs(torch.float32)
    k_round, v_round = (t.detach().to(torch.bfloat16).float().requires_grad_() for t in (k, v))
    plain = _run(edge_index, q, k_round, v_round, terms, backend="cpu")
    stored = _run(edge_index, q, k_round, v_round, terms, backend="cpu", kv_dtype=torch.bfloat16)
    for a, b in zip(plain, stored):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("score", ["dot", "additive"])
def test_bf16_kv_error_against_float32_is_bounded(score):
    edge_index, q, k, v, terms = _inputs(torch.float32, score, seed=5)
    exact = K.edge_attention(q, k, v, edge_index, score=score, backend="cpu", **terms)
    stored = K.edge_attention(q, k, v, edge_index, score=score, backend="cpu", kv_dtype=torch.bfloat16, **terms)
    error = float(((stored - exact).norm() / exact.norm()).detach())
    assert 1e-5 < error < BF16_OUTPUT_BOUND, error  # rounded (not a no-op), and within the bound


def test_bf16_kv_gradcheck_in_q():
    """The rounding makes the output piecewise constant in k and v (their gradient is
    straight-through by design); in q and the per-edge terms it is smooth."""
    edge_index, q, k, v, terms = _inputs(torch.float64)
    k, v = k.detach(), v.detach()

    def fn(q, bias, key):
        return K.edge_attention(q, k, v, edge_index, edge_bias=bias, edge_key=key, backend="cpu",
                                kv_dtype=torch.bfloat16)

    assert torch.autograd.gradcheck(fn, (q, terms["edge_bias"], terms["edge_key"]))


def test_bf16_kv_with_reordering():
    edge_index, q, k, v, terms = _inputs(torch.float64)
    plain = _run(edge_index, q, k, v, terms, backend="cpu", kv_dtype=torch.bfloat16)
    reordered = _run(edge_index, q, k, v, terms, backend="cpu", kv_dtype=torch.bfloat16, reorder="rcm")
    for a, b in zip(plain, reordered):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_bad_kv_dtype():
    edge_index, q, k, v, _ = _inputs(torch.float32)
    with pytest.raises(ValueError, match="`kv_dtype` must be None or torch.bfloat16"):
        K.edge_attention(q, k, v, edge_index, kv_dtype=torch.float16)
    with pytest.raises(ValueError, match="`kv_dtype` must be None or torch.bfloat16"):
        gattn_nn.GATv2Conv(4, 2, kv_dtype="bf16")


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GraphTransformerConv"])
def test_layer_kv_dtype_reaches_the_kernel(name):
    edge_index = awkward_graph(30, 30, 120, seed=4)
    x = torch.randn(30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    fused = getattr(gattn_nn, name)(6, 4, heads=2, kv_dtype=torch.bfloat16).double()
    torch.manual_seed(0)
    reference = getattr(gattn_nn, name)(6, 4, heads=2, kv_dtype=torch.bfloat16, backend="reference").double()
    torch.manual_seed(0)
    exact = getattr(gattn_nn, name)(6, 4, heads=2).double()
    out = fused(x, edge_index)
    torch.testing.assert_close(out, reference(x, edge_index), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, exact(x, edge_index), rtol=1e-6, atol=1e-6)  # the option did act
