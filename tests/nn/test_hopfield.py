"""Hopfield layers: ragged vs padded, vs a dense implementation of the paper's update rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from gattn.nn.hopfield import Association, Hopfield, HopfieldLayer, HopfieldPooling

SIZES = [3, 0, 5, 1, 4]  # an empty bag in the middle


def ragged(sizes, dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=gen, dtype=dtype)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return x, ptr


def pad(x, ptr):
    sizes = (ptr[1:] - ptr[:-1]).tolist()
    longest = max(max(sizes), 1)
    out = torch.zeros(len(sizes), longest, x.size(1), dtype=x.dtype)
    mask = torch.ones(len(sizes), longest, dtype=torch.bool)
    for b, n in enumerate(sizes):
        out[b, :n] = x[ptr[b] : ptr[b] + n]
        mask[b, :n] = False
    return out, mask


def dense_hopfield(layer: Hopfield, stored, state, projection):
    """The paper's formula on ONE bag, written with plain dense ops (no kernels).

    xi <- softmax(beta xi K^T) K for the update steps, then softmax(beta xi K^T) V W_O.
    """
    heads, hidden, pattern = layer.num_heads, layer.hidden_size, layer.pattern_size

    def proj(x, norm, linear, size):
        x = norm(x) if norm is not None else x
        x = linear(x) if linear is not None else x
        x = x.view(x.size(0), heads, size).transpose(0, 1)  # [H, n, size]
        return x

    q = proj(state, layer.norm_state, layer.proj_state, hidden)
    k = proj(stored, layer.norm_stored, layer.proj_stored, hidden)
    v = proj(projection, layer.norm_projection, layer.proj_value, pattern)
    if layer.norm_hopfield is not None:
        q, k = layer.norm_hopfield(q), layer.norm_hopfield(k)
    beta = layer.scaling
    previous = None
    for _ in range(layer.update_steps_max or 0):
        assoc = torch.softmax(beta * q @ k.transpose(1, 2), dim=-1)
        if previous is not None and (assoc - previous).norm(dim=-1).max() <= layer.update_steps_eps:
            break
        q, previous = assoc @ k, assoc
    assoc = torch.softmax(beta * q @ k.transpose(1, 2), dim=-1)  # [H, m, n]
    out = (assoc @ v).transpose(0, 1).reshape(state.size(0), heads * pattern)
    if layer.proj_out is not None:
        out = layer.proj_out(out)
    return out, assoc


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("hopfield_space", [False, True])
def test_self_association_matches_dense(heads, hopfield_space):
    torch.manual_seed(0)
    x, ptr = ragged(SIZES, 6)
    layer = Hopfield(
        6, hidden_size=4, num_heads=heads, output_size=5, scaling=0.7, normalize_hopfield_space=hopfield_space
    )
    out, assoc = layer(x, ptr=ptr, return_association=True)
    assert out.shape == (x.size(0), 5)
    assert isinstance(assoc, Association)
    for b in range(len(SIZES)):
        rows = slice(int(ptr[b]), int(ptr[b + 1]))
        if SIZES[b] == 0:
            continue
        want, want_assoc = dense_hopfield(layer, x[rows], x[rows], x[rows])
        torch.testing.assert_close(out[rows], want, atol=1e-5, rtol=1e-5)
        # the sparse association of this bag, as a dense [H, m, n] block
        sel = (assoc.edge_index[1] >= rows.start) & (assoc.edge_index[1] < rows.stop)
        got = torch.zeros_like(want_assoc)
        got[:, assoc.edge_index[1, sel] - rows.start, assoc.edge_index[0, sel] - rows.start] = assoc.weights[sel].t()
        torch.testing.assert_close(got, want_assoc, atol=1e-5, rtol=1e-5)


def test_separate_state_and_projection_and_batch_vector():
    torch.manual_seed(1)
    stored, ptr = ragged([4, 2, 3], 5)
    projection = torch.randn(stored.size(0), 7)
    state, state_ptr = ragged([2, 1, 3], 3, seed=2)
    layer = Hopfield(
        stored_pattern_size=5,
        state_pattern_size=3,
        pattern_projection_size=7,
        hidden_size=4,
        pattern_size=6,
        num_heads=2,
        output_size=8,
    )
    out = layer(stored, state, projection, ptr=ptr, state_ptr=state_ptr)
    for b in range(3):
        s, q = slice(int(ptr[b]), int(ptr[b + 1])), slice(int(state_ptr[b]), int(state_ptr[b + 1]))
        want, _ = dense_hopfield(layer, stored[s], state[q], projection[s])
        torch.testing.assert_close(out[q], want, atol=1e-5, rtol=1e-5)
    # the same bags described by shuffled rows and bag-id vectors
    bag = torch.repeat_interleave(torch.arange(3), ptr[1:] - ptr[:-1])
    state_bag = torch.repeat_interleave(torch.arange(3), state_ptr[1:] - state_ptr[:-1])
    perm, sperm = torch.randperm(stored.size(0)), torch.randperm(state.size(0))
    shuffled = layer(stored[perm], state[sperm], projection[perm], batch=bag[perm], state_batch=state_bag[sperm])
    torch.testing.assert_close(shuffled, out[sperm], atol=1e-5, rtol=1e-5)


def test_ragged_and_padded_with_mask_agree():
    torch.manual_seed(3)
    x, ptr = ragged(SIZES, 6)
    layer = Hopfield(6, num_heads=2, hidden_size=3)
    out, assoc = layer(x, ptr=ptr, return_association=True)
    padded, mask = pad(x, ptr)
    # garbage in the padding must not leak into the result
    padded = padded.masked_fill(mask.unsqueeze(-1), 1e4)
    out_p, assoc_p = layer(padded, mask=mask, return_association=True)
    assert out_p.shape == (len(SIZES), padded.size(1), layer.output_size)
    assert assoc_p.shape == (len(SIZES), 2, padded.size(1), padded.size(1))
    for b, n in enumerate(SIZES):
        torch.testing.assert_close(out_p[b, :n], out[ptr[b] : ptr[b] + n], atol=1e-5, rtol=1e-5)
        assert torch.all(assoc_p[b, :, :, n:] == 0)
        if n:
            torch.testing.assert_close(assoc_p[b, :, :n, :n].sum(-1), torch.ones(2, n))


def test_empty_and_fully_masked_bags_give_zeros():
    layer = Hopfield(4)
    state = torch.randn(5, 4)
    stored, ptr = ragged([2, 0, 3], 4)
    out = layer(stored, state, ptr=ptr, state_ptr=torch.tensor([0, 2, 4, 5]))
    assert torch.all(out[2:4] == 0) and torch.isfinite(out).all()
    padded = torch.randn(2, 3, 4)
    mask = torch.tensor([[False, True, False], [True, True, True]])
    out_p = layer(padded, mask=mask)
    assert torch.all(out_p[1] == 0) and torch.isfinite(out_p).all()
    pool = HopfieldPooling(4, quantity=2)
    pooled = pool(stored, ptr)
    assert pooled.shape == (3, 8) and torch.all(pooled[1] == 0)
    pooled.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters() if p.grad is not None)


def test_pooling_matches_dense_and_padded():
    torch.manual_seed(4)
    x, ptr = ragged(SIZES, 8)
    pool = HopfieldPooling(8, quantity=3, num_heads=2, hidden_size=4, output_size=5)
    out, weights = pool(x, ptr, return_association=True)
    assert out.shape == (len(SIZES), 15) and weights.shape == (x.size(0), 2, 3)
    hop = pool.hopfield
    for b, n in enumerate(SIZES):
        if not n:
            continue
        rows = slice(int(ptr[b]), int(ptr[b + 1]))
        want, assoc = dense_hopfield(hop, x[rows], pool.state_pattern, x[rows])
        torch.testing.assert_close(out[b], want.reshape(-1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights[rows], assoc.permute(2, 0, 1), atol=1e-5, rtol=1e-5)
    padded, mask = pad(x, ptr)
    out_p, weights_p = pool(padded, mask=mask, return_association=True)
    torch.testing.assert_close(out_p, out)
    assert weights_p.shape == (len(SIZES), 2, 3, padded.size(1))
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), ptr[1:] - ptr[:-1])
    torch.testing.assert_close(pool(x, batch=batch, num_bags=len(SIZES)), out)


def test_lookup_layer_matches_dense():
    torch.manual_seed(5)
    layer = HopfieldLayer(6, quantity=7, num_heads=2, hidden_size=3, output_size=4)
    x = torch.randn(2, 5, 6)
    out, assoc = layer(x, return_association=True)
    assert out.shape == (2, 5, 4) and assoc.shape == (2, 5, 2, 7)
    want, want_assoc = dense_hopfield(layer.hopfield, layer.lookup, x.reshape(10, 6), layer.targets)
    torch.testing.assert_close(out.reshape(10, 4), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(assoc.reshape(10, 2, 7), want_assoc.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_static_patterns_skip_projection():
    layer = Hopfield(
        4,
        hidden_size=4,
        pattern_size=4,
        stored_pattern_as_static=True,
        state_pattern_as_static=True,
        pattern_projection_as_static=True,
        normalize_stored_pattern=False,
        normalize_state_pattern=False,
        normalize_pattern_projection=False,
        disable_out_projection=True,
    )
    assert layer.proj_stored is None and layer.proj_out is None and layer.proj_state is None
    x, ptr = ragged([3, 2], 4)
    out = layer(x, ptr=ptr)
    for b in range(2):
        rows = slice(int(ptr[b]), int(ptr[b + 1]))
        want = torch.softmax(x[rows] @ x[rows].t() / 2.0, -1) @ x[rows]
        torch.testing.assert_close(out[rows], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="stored_pattern_size"):
        Hopfield(5, hidden_size=4, stored_pattern_as_static=True)


def test_multi_step_update_converges():
    torch.manual_seed(6)
    x, ptr = ragged([6, 4], 8)
    one = Hopfield(8, update_steps_max=3, scaling=2.0)
    many = Hopfield(8, update_steps_max=None, update_steps_eps=1e-6, scaling=2.0)
    many.load_state_dict(one.state_dict())
    for b in range(2):
        rows = slice(int(ptr[b]), int(ptr[b + 1]))
        want, _ = dense_hopfield(one, x[rows], x[rows], x[rows])
        torch.testing.assert_close(one(x, ptr=ptr)[rows], want, atol=1e-5, rtol=1e-5)
    # run to convergence: one more update step changes nothing (a fixed point)
    out, assoc = many(x, ptr=ptr, return_association=True)
    src, dst = assoc.edge_index
    k = many.project_stored(x)
    q_fixed = torch.zeros(x.size(0), 1, k.size(2)).index_add(0, dst, assoc.weights.unsqueeze(-1) * k[src])
    scores = (q_fixed[dst] * k[src]).sum(-1) * many.scaling
    again = torch.exp(scores - scores.max())
    norm = torch.zeros(x.size(0), 1).index_add(0, dst, again)
    torch.testing.assert_close(again / norm[dst], assoc.weights, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(out).all()


def test_gradcheck_float64():
    torch.manual_seed(7)
    x, ptr = ragged([3, 0, 2], 4, dtype=torch.float64)
    x.requires_grad_(True)
    layer = Hopfield(4, num_heads=2, hidden_size=2, update_steps_max=1).double()
    assert torch.autograd.gradcheck(lambda t: layer(t, ptr=ptr), (x,))
    pool = HopfieldPooling(4, quantity=2).double()
    assert torch.autograd.gradcheck(lambda t: pool(t, ptr), (x,))
    # and through the learned state patterns (the queries)
    query = pool.state_pattern.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: functional_call(pool, {"state_pattern": q}, (x.detach(), ptr)), (query,))


def test_dropout_on_association_is_training_only():
    torch.manual_seed(8)
    x, ptr = ragged([5, 3], 4)
    layer = Hopfield(4, dropout=0.5)
    layer.eval()
    reference = layer(x, ptr=ptr)
    layer.train()
    outs = [layer(x, ptr=ptr) for _ in range(20)]
    assert not all(torch.allclose(o, reference) for o in outs)
    # dropout is unbiased: the mean over many draws approaches the eval output
    mean = torch.stack([layer(x, ptr=ptr) for _ in range(150)]).mean(0)
    assert (mean - reference).abs().max() < 0.25 * reference.abs().max() + 0.05


def test_bad_input_is_rejected():
    layer = Hopfield(4)
    x, ptr = ragged([2, 2], 4)
    with pytest.raises(ValueError, match="ptr"):
        layer(x)
    with pytest.raises(ValueError, match="feature size 4"):
        layer(torch.randn(4, 3), ptr=ptr)
    with pytest.raises(TypeError, match="bool"):
        layer(torch.randn(2, 2, 4), mask=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="ptr"):
        layer(x, ptr=torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="num_heads"):
        Hopfield(4, num_heads=0)
    with pytest.raises(ValueError, match="dropout"):
        Hopfield(4, dropout=1.0)
    assert "heads=1" in repr(layer) and math.isclose(layer.scaling, 1 / math.sqrt(4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, ptr = ragged([5, 0, 300, 2], 16)
    for layer in (Hopfield(16, num_heads=2, hidden_size=8), HopfieldPooling(16, quantity=2)):
        want = layer(x, ptr=ptr) if isinstance(layer, Hopfield) else layer(x, ptr)
        want.square().sum().backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        layer.cuda()
        got = layer(x.cuda(), ptr=ptr.cuda()) if isinstance(layer, Hopfield) else layer(x.cuda(), ptr.cuda())
        got.square().sum().backward()
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)
        for p, g in zip(layer.parameters(), grads):
            torch.testing.assert_close(p.grad.cpu(), g, atol=1e-3, rtol=1e-3)
