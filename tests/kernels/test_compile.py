"""torch.compile(fullgraph=True) over the fused edge attention: same values and gradients,
with attention dropout, the additive (GAT) score and returned attention weights."""

from __future__ import annotations

import pytest
import torch

from gattn import kernels as K

from .graphs import awkward_graph


def _layer_inputs(dtype=torch.float32):
    edge_index = awkward_graph(30, 30, 150, hub_degree=20)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(8, 3 * 2 * 4, generator=gen, dtype=dtype, requires_grad=True)
    bias = torch.randn(edge_index.size(1), 2, generator=gen, dtype=dtype, requires_grad=True)
    return edge_index, x, weight, bias


def _layer(x, weight, edge_index, bias, backend=None):
    q, k, v = (x @ weight).view(-1, 3, 2, 4).unbind(1)
    return K.edge_attention(q, k, v, edge_index, edge_bias=bias, backend=backend).relu().sum(dim=1)


def _compare(fn, leaves, compiler="aot_eager"):
    """fn(*leaves) -> tuple of tensors: compiled (fullgraph) equals eager, gradients too."""
    torch._dynamo.reset()
    eager = fn(*leaves)
    compiled = torch.compile(fn, fullgraph=True, backend=compiler)(*leaves)
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want)
    loss = lambda outs: sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)
    for got, want in zip(torch.autograd.grad(loss(compiled), leaves), torch.autograd.grad(loss(eager), leaves)):
        torch.testing.assert_close(got, want)
    torch._dynamo.reset()


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("compiler", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_layer_matches_eager(compiler, with_bias):
    edge_index, x, weight, bias = _layer_inputs()
    if with_bias:
        _compare(lambda x, w, b: (_layer(x, w, edge_index, b, backend="cpu"),), (x, weight, bias), compiler)
    else:
        _compare(lambda x, w: (_layer(x, w, edge_index, None, backend="cpu"),), (x, weight), compiler)


def test_compiled_attention_weights_dropout_and_additive_score():
    """Defect 5 of issue 9: fullgraph compile with return_attention=True (the backend was
    loaded through importlib, which dynamo skips) and with attention dropout (a
    data-dependent guard); the additive score and edge terms go through the same op."""
    edge_index, x, weight, _ = _layer_inputs()
    num_edges = edge_index.size(1)
    edge_key = torch.randn(num_edges, 2, 4, requires_grad=True)
    att = torch.randn(2, 4, requires_grad=True)
    seed = torch.tensor(1234)

    def attention_only(x, w):
        q, k, v = (x @ w).view(-1, 3, 2, 4).unbind(1)
        return K.edge_attention(q, k, v, edge_index, return_attention=True)

    def dropout_and_additive(x, w, edge_key, att):
        q, k, v = (x @ w).view(-1, 3, 2, 4).unbind(1)
        return K.edge_attention(q, k, v, edge_index, score="additive", att=att, edge_key=edge_key,
                                edge_value=edge_key, dropout_p=0.4, dropout_seed=seed, return_attention=True)

    _compare(attention_only, (x, weight))
    _compare(dropout_and_additive, (x, weight, edge_key, att))


def test_compiled_dropout_with_a_drawn_seed_compiles_in_one_graph():
    """Without an explicit seed the seed is drawn from torch's RNG inside the graph."""
    torch.manual_seed(0)
    edge_index, x, weight, _ = _layer_inputs()

    def fn(x, w):
        q, k, v = (x @ w).view(-1, 3, 2, 4).unbind(1)
        return K.edge_attention(q, k, v, edge_index, dropout_p=0.5)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    first, second = compiled(x, weight), compiled(x, weight)
    assert not torch.equal(first, second)  # a new mask each call
    full = K.edge_attention(*(x @ weight).view(-1, 3, 2, 4).unbind(1), edge_index)
    has_edges = torch.bincount(edge_index[1], minlength=30) > 0
    # E[dropped out] = out: the mean over many draws approaches the undropped output
    mean = torch.stack([compiled(x, weight) for _ in range(200)]).mean(0)
    torch.testing.assert_close(mean[has_edges], full[has_edges], atol=0.25, rtol=0.1)
    torch._dynamo.reset()


def test_custom_op_gradcheck_and_opcheck():
    from gattn.kernels._ops import edge_attention_op

    edge_index, x, weight, bias = _layer_inputs(torch.float64)
    q, k, v = (t.detach().requires_grad_() for t in (x @ weight).view(-1, 3, 2, 4).unbind(1))
    num_edges = edge_index.size(1)
    gen = torch.Generator().manual_seed(2)
    scale_per_dim = torch.randn(num_edges, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    edge_key = torch.randn(num_edges, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    edge_value = torch.randn(num_edges, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    att = torch.randn(2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    seed = torch.tensor(7)
    dot = (q, k, v, edge_index, bias, scale_per_dim, edge_key, edge_value, None, seed, 0.5, False, 0.2, 0.3,
           True, "cpu")
    additive = (q, k, v, edge_index, bias, None, edge_key, edge_value, att, seed, 1.0, True, 0.2, 0.3, True,
                "cpu")
    for args in (dot, additive):
        torch.library.opcheck(edge_attention_op, args)
    assert torch.autograd.gradcheck(
        lambda q, k, v, b, s, ek, ev: edge_attention_op(
            q, k, v, edge_index, b, s, ek, ev, None, seed, 0.5, False, 0.2, 0.3, True, "cpu")[::2],
        (q, k, v, bias, scale_per_dim, edge_key, edge_value),
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v, b, ek, a: edge_attention_op(
            q, k, v, edge_index, b, None, ek, None, a, seed, 1.0, True, 0.2, 0.3, True, "cpu")[::2],
        (q, k, v, bias, edge_key, att),
    )


def test_triton_explicit_forward_backward_match_cpu():
    """The functions the custom op calls on CUDA, checked in Triton's interpreter."""
    triton_backend = pytest.importorskip("gattn.kernels.triton_backend")
    from gattn.kernels import cpu
    from gattn.kernels._edge import EdgeTerms, attention_delta

    edge_index, x, weight, bias = _layer_inputs(torch.float64)
    q, k, v = (t.detach().contiguous() for t in (x @ weight).view(-1, 3, 2, 4).unbind(1))
    csr = K.get_csr(edge_index, 30, 30)
    gen = torch.Generator().manual_seed(1)
    scale_dim = torch.randn(csr.num_edges, 2, 4, generator=gen, dtype=torch.float64)
    edge_key = torch.randn(csr.num_edges, 2, 4, generator=gen, dtype=torch.float64)
    att = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    cases = [
        (bias.detach(), None, None, None, 0.5, False, 0.0),
        (bias.detach(), scale_dim, edge_key, edge_key, 0.5, False, 0.3),
        (None, None, edge_key, None, 1.0, True, 0.3),
    ]
    for edge_bias, escale, ekey, evalue, scale, additive, p in cases:
        results = []
        for backend in (cpu, triton_backend):
            terms = EdgeTerms(q, k, v, csr, edge_bias, escale, ekey, evalue, att if additive else None, scale,
                              additive, 0.2, p, 99)
            out, lse = backend.edge_forward(terms)
            attention = backend.edge_probabilities(terms, lse)
            dout = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
            dattention = torch.linspace(0, 1, attention.numel(), dtype=out.dtype).view_as(attention)
            delta = attention_delta(attention, dattention, csr)
            results.append((out, lse, attention, *backend.edge_backward(terms, out, lse, dout, dattention, delta)))
        for got, want in zip(*results):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want)
