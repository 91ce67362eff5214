"""ABMIL / ACMIL on ragged bags against a per-bag dense computation of the papers' formulas."""

from __future__ import annotations

import pytest
import torch

from gattn.nn.mil import (
    ABMIL,
    ACMIL,
    AttentionMILPooling,
    diversity_loss,
    stochastic_topk_mask,
)

SIZES = [4, 0, 1, 7, 3]


def bags(sizes, dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=gen, dtype=dtype)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return x, ptr


def dense_abmil(pool: AttentionMILPooling, h: torch.Tensor):
    """One bag: a = softmax_k(w^T (tanh(V h_k) [* sigm(U h_k)])), z = sum_k a_k h_k."""
    hidden = torch.tanh(h @ pool.attention_v.weight.t() + pool.attention_v.bias)
    if pool.gated:
        hidden = hidden * torch.sigmoid(h @ pool.attention_u.weight.t() + pool.attention_u.bias)
    scores = hidden @ pool.attention_w.weight.t() + pool.attention_w.bias  # [n, M]
    a = torch.softmax(scores, dim=0)
    return a.t() @ h, a


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("branches", [1, 3])
def test_attention_pooling_matches_dense(gated, branches):
    torch.manual_seed(0)
    x, ptr = bags(SIZES, 6)
    pool = AttentionMILPooling(6, attention_channels=5, branches=branches, gated=gated)
    pooled, weights = pool(x, ptr)
    assert weights.shape == (x.size(0), branches)
    pooled = pooled.view(len(SIZES), branches, 6)
    for b, n in enumerate(SIZES):
        rows = slice(int(ptr[b]), int(ptr[b + 1]))
        if n == 0:
            assert torch.all(pooled[b] == 0)
            continue
        want, a = dense_abmil(pool, x[rows])
        torch.testing.assert_close(pooled[b], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights[rows], a, atol=1e-5, rtol=1e-5)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), ptr[1:] - ptr[:-1])
    again, _ = pool(x, batch=batch, num_bags=len(SIZES))
    torch.testing.assert_close(again.view_as(pooled), pooled)


def test_gradcheck_float64():
    x, ptr = bags([3, 0, 2], 4, dtype=torch.float64)
    pool = AttentionMILPooling(4, 3, branches=2, gated=True).double()
    assert torch.autograd.gradcheck(lambda t: pool(t, ptr)[0], (x.requires_grad_(True),))
    weights = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: diversity_loss(w, ptr), (weights,))


def test_abmil_model_shapes_and_padding_free_batching():
    torch.manual_seed(1)
    x, ptr = bags(SIZES, 8)
    model = ABMIL(8, hidden=(16, 8), attention_channels=4, gated=True).eval()
    logits, attention = model(x, ptr, return_attention=True)
    assert logits.shape == (len(SIZES),) and attention.shape == (x.size(0),)
    # a bag gives the same logit alone as inside the batch
    for b, n in enumerate(SIZES):
        if n:
            rows = slice(int(ptr[b]), int(ptr[b + 1]))
            alone = model(x[rows], torch.tensor([0, n]))
            torch.testing.assert_close(alone[0], logits[b], atol=1e-5, rtol=1e-5)


def test_diversity_loss_matches_pairwise_cosine():
    torch.manual_seed(2)
    x, ptr = bags([4, 3], 2)
    weights = torch.rand(7, 3)
    want = []
    for i in range(3):
        for j in range(i + 1, 3):
            sims = [torch.cosine_similarity(weights[s:e, i], weights[s:e, j], dim=0) for s, e in ((0, 4), (4, 7))]
            want.append(torch.stack(sims).mean())
    torch.testing.assert_close(diversity_loss(weights, ptr), torch.stack(want).mean())
    assert diversity_loss(weights[:, :1], ptr) == 0


def test_stochastic_topk_mask_masks_a_fraction_of_the_topk():
    ptr = torch.tensor([0, 12, 12, 15, 35])
    scores = torch.randn(35, 2)
    gen = torch.Generator().manual_seed(3)
    mask = stochastic_topk_mask(scores, ptr, top_k=5, ratio=0.6, generator=gen)
    for b in range(4):
        s, e = int(ptr[b]), int(ptr[b + 1])
        n = e - s
        for m in range(2):
            masked = mask[s:e, m]
            assert int(masked.sum()) == int(min(5, n) * 0.6)
            top = torch.topk(scores[s:e, m], min(5, n)).indices if n else torch.tensor([])
            assert set(masked.nonzero().flatten().tolist()) <= set(top.tolist())
    # the masked set changes from draw to draw
    other = stochastic_topk_mask(scores, ptr, top_k=5, ratio=0.6, generator=gen)
    assert not torch.equal(mask, other)


def test_acmil_forward_loss_and_eval():
    torch.manual_seed(4)
    x, ptr = bags([30, 2, 0, 12], 6)
    model = ACMIL(6, hidden=(8,), attention_channels=4, branches=3, top_k=4, mask_ratio=0.5)
    out = model(x, ptr)
    assert out.bag_logits.shape == (4,) and out.branch_logits.shape == (4, 3)
    assert out.weights.shape == (x.size(0), 3) and out.bag_weights.shape == (x.size(0),)
    # training masks int(0.5 * min(4, n)) instances per bag and branch to zero weight
    zeros = (out.weights == 0).sum(0)
    assert torch.all(zeros == 2 + 1 + 0 + 2)  # bags of 30, 2, 0 and 12 instances
    loss = model.loss(out, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    first, second = model(x, ptr), model(x, ptr)
    torch.testing.assert_close(first.bag_logits, second.bag_logits)
    assert torch.all(first.weights > 0)  # no masking in evaluation
    sums = torch.zeros(4, 3).index_add(0, torch.repeat_interleave(torch.arange(4), ptr[1:] - ptr[:-1]), first.weights)
    torch.testing.assert_close(sums[[0, 1, 3]], torch.ones(3, 3))
    assert torch.all(first.bag_logits[2] == model.classifier.bias)  # empty bag: zero feature


def test_bad_input():
    pool = AttentionMILPooling(4)
    with pytest.raises(ValueError, match="ptr"):
        pool(torch.randn(3, 4))
    with pytest.raises(ValueError, match="4 features"):
        pool(torch.randn(3, 5), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="floating"):
        pool(torch.ones(3, 4, dtype=torch.long), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="`batch` must be an integer tensor"):
        pool(torch.randn(3, 4), batch=torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="mask_ratio"):
        ACMIL(4, mask_ratio=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(5)
    x, ptr = bags([5, 0, 300, 2], 16)
    model = ACMIL(16, hidden=(8,), attention_channels=4, branches=3).eval()
    want = model(x, ptr)
    model.cuda()
    got = model(x.cuda(), ptr.cuda())
    torch.testing.assert_close(got.bag_logits.cpu(), want.bag_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.weights.cpu(), want.weights, atol=1e-4, rtol=1e-4)
    model.train()
    out = model(x.cuda(), ptr.cuda())
    model.loss(out, torch.tensor([1.0, 0.0, 1.0, 0.0], device="cuda")).backward()
