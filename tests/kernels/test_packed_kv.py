"""Keys and values as views of one fused projection: same results, read without a copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gattn import kernels as K
from gattn.kernels import cpu

from .graphs import awkward_graph


def _packed(num, heads, dim, dim_value, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kv = torch.randn(num, heads * (dim + dim_value), generator=gen, dtype=dtype, requires_grad=True)
    return kv


@pytest.mark.parametrize("dim_value", [3, 5])
def test_split_kv_views_match_separate_keys_and_values(dim_value):
    heads, dim, num = 2, 3, 12
    edge_index = awkward_graph(num, num, 60, seed=1)
    q = torch.randn(num, heads, dim, requires_grad=True)
    kv = _packed(num, heads, dim, dim_value, torch.float32)
    k, v = K.split_kv(kv, heads, dim, dim_value)
    out = K.edge_attention(q, k, v, edge_index, backend="cpu")
    k2, v2 = (t.detach().clone().requires_grad_() for t in (k, v))
    q2 = q.detach().clone().requires_grad_()
    ref = K.edge_attention(q2, k2, v2, edge_index, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(q.grad, q2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kv.grad, torch.cat([k2.grad.flatten(1), v2.grad.flatten(1)], 1), rtol=1e-4, atol=1e-5)


def test_split_kv_gradcheck_float64():
    heads, dim, num = 2, 2, 7
    edge_index = awkward_graph(num, num, 25, seed=2)
    q = torch.randn(num, heads, dim, dtype=torch.float64, requires_grad=True)
    kv = _packed(num, heads, dim, dim, torch.float64)

    def fn(q, kv):
        k, v = K.split_kv(kv, heads, dim)
        return K.edge_attention(q, k, v, edge_index, backend="cpu")

    assert torch.autograd.gradcheck(fn, (q, kv))


def test_packed_views_are_read_without_a_copy():
    kv = _packed(9, 2, 4, 4, torch.float32).detach()
    k, v = K.split_kv(kv, 2, 4)
    assert np.shares_memory(cpu._packed_kv(k, v, torch.float32), kv.numpy())
    separate = cpu._packed_kv(k.contiguous(), v.contiguous(), torch.float32)
    assert not np.shares_memory(separate, kv.numpy())
    np.testing.assert_array_equal(separate, kv.numpy())


def test_split_kv_rejects_a_wrong_width():
    with pytest.raises(ValueError, match="kv"):
        K.split_kv(torch.zeros(3, 10), 2, 3)


def test_no_source_nodes_give_zeros():
    q = torch.randn(3, 2, 4, requires_grad=True)
    k, v = torch.zeros(0, 2, 4), torch.zeros(0, 2, 5)
    out = K.edge_attention(q, k, v, torch.zeros(2, 0, dtype=torch.long), num_nodes=(0, 3), backend="cpu")
    assert out.shape == (3, 2, 5) and not out.any()


@pytest.mark.parametrize("used", ["k", "v", "both"])
def test_split_kv_gradient_matches_slicing(used):
    """split_kv's own backward (one concatenation) equals autograd's slice backward, also when
    only one half reaches the loss."""
    heads, dim, dim_value, num = 3, 2, 5, 6
    kv = _packed(num, heads, dim, dim_value, torch.float64)
    k, v = K.split_kv(kv, heads, dim, dim_value)
    plain = kv.detach().clone().requires_grad_()
    k2, v2 = plain[:, : heads * dim].view(num, heads, dim), plain[:, heads * dim :].view(num, heads, dim_value)
    gen = torch.Generator().manual_seed(3)
    wk = torch.randn(k.shape, generator=gen, dtype=torch.float64)
    wv = torch.randn(v.shape, generator=gen, dtype=torch.float64)
    for a, b in ((k, v), (k2, v2)):
        terms = [(a * wk).sum()] if used != "v" else []
        terms += [(b * wv).sum()] if used != "k" else []
        sum(terms).backward()
    torch.testing.assert_close(kv.grad, plain.grad, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda x: K.split_kv(x, heads, dim, dim_value), (kv.detach().requires_grad_(),))


def test_cpu_backward_hands_the_kv_gradient_over_uncopied():
    """The CPU kernels write dK and dV as the two halves of one buffer; split_kv's backward
    passes that buffer on as kv's gradient (no concatenation) and it equals the reference's."""
    heads, dim, dim_value, num = 2, 4, 3, 11
    edge_index = awkward_graph(num, num, 50, seed=4)
    q = torch.randn(num, heads, dim)
    kv = _packed(num, heads, dim, dim_value, torch.float32)
    seen = {}

    def keep(grad):
        seen["kv"] = grad
        return grad

    kv.register_hook(keep)
    k, v = K.split_kv(kv, heads, dim, dim_value)
    grad_out = torch.randn(num, heads, dim_value)
    dk, dv = torch.autograd.grad(K.edge_attention(q, k, v, edge_index, backend="cpu"), (k, v), grad_out,
                                 retain_graph=False)
    assert K._edge.kv_halves(dk, dv)
    k, v = K.split_kv(kv, heads, dim, dim_value)
    (K.edge_attention(q, k, v, edge_index, backend="cpu") * grad_out).sum().backward()
    assert seen["kv"].is_contiguous() and seen["kv"].shape == kv.shape
    plain = kv.detach().clone().requires_grad_()
    k2, v2 = plain[:, : heads * dim].view(num, heads, dim), plain[:, heads * dim :].view(num, heads, dim_value)
    (K.edge_attention(q, k2, v2, edge_index, backend="reference") * grad_out).sum().backward()
    torch.testing.assert_close(kv.grad, plain.grad, rtol=1e-4, atol=1e-5)


def test_split_kv_backward_takes_adjacent_halves_without_a_copy():
    num, heads, dim, dim_value = 5, 2, 3, 4
    buffer = torch.randn(num, heads * (dim + dim_value))
    dk = buffer[:, : heads * dim].unflatten(1, (heads, dim))
    dv = buffer[:, heads * dim :].unflatten(1, (heads, dim_value))
    ctx = type("Ctx", (), {"shapes": (num, heads, dim, dim_value)})()
    grad = K._SplitKV.backward(ctx, dk, dv)[0]
    assert grad.data_ptr() == buffer.data_ptr() and torch.equal(grad, buffer)
    apart = K._SplitKV.backward(ctx, dk.contiguous(), dv.contiguous())[0]
    assert apart.data_ptr() != buffer.data_ptr() and torch.equal(apart, buffer)
