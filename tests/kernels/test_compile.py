"""torch.compile(fullgraph=True) over the fused edge attention: same values and gradients."""

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


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("compiler", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_layer_matches_eager(compiler, with_bias):
    torch._dynamo.reset()
    edge_index, x, weight, bias = _layer_inputs()
    if not with_bias:
        bias = None
    eager = _layer(x, weight, edge_index, bias, backend="cpu")
    compiled_fn = torch.compile(_layer, fullgraph=True, backend=compiler)
    compiled = compiled_fn(x, weight, edge_index, bias)
    torch.testing.assert_close(compiled, eager)
    leaves = (x, weight) if bias is None else (x, weight, bias)
    for got, want in zip(torch.autograd.grad(compiled.sum(), leaves), torch.autograd.grad(eager.sum(), leaves)):
        torch.testing.assert_close(got, want)


def test_custom_op_gradcheck_and_opcheck():
    from gattn.kernels._ops import edge_attention_op

    edge_index, x, weight, bias = _layer_inputs(torch.float64)
    q, k, v = (t.detach().requires_grad_() for t in (x @ weight).view(-1, 3, 2, 4).unbind(1))
    scale_per_dim = torch.randn(edge_index.size(1), 2, 4, dtype=torch.float64, requires_grad=True)
    args = (q, k, v, edge_index, bias, scale_per_dim, 0.5, "cpu")
    torch.library.opcheck(edge_attention_op, args)
    assert torch.autograd.gradcheck(
        lambda q, k, v, b, s: edge_attention_op(q, k, v, edge_index, b, s, 0.5, "cpu")[0],
        (q, k, v, bias, scale_per_dim),
    )


def test_triton_explicit_forward_backward_match_cpu():
    """The functions the custom op calls on CUDA, checked in Triton's interpreter."""
    triton_backend = pytest.importorskip("gattn.kernels.triton_backend")
    from gattn.kernels import cpu

    edge_index, x, weight, bias = _layer_inputs(torch.float64)
    q, k, v = (t.detach().contiguous() for t in (x @ weight).view(-1, 3, 2, 4).unbind(1))
    csr = K.get_csr(edge_index, 30, 30)
    sorted_bias = csr.to_sorted_order(bias.detach())
    scale_dim = torch.randn(csr.num_edges, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for escale in (None, scale_dim):
        results = []
        for backend in (cpu, triton_backend):
            out, lse = backend.edge_attention_forward(q, k, v, csr, sorted_bias, escale, 0.5)
            dout = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
            results.append((out, lse, *backend.edge_attention_backward(
                q, k, v, csr, sorted_bias, escale, 0.5, out, lse, dout
            )))
        for got, want in zip(*results):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want)
