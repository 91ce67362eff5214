"""The CTR kernels (DIN's fused ops, DARE's retrieval) against plain-torch references."""

from __future__ import annotations

import pytest
import torch

from gattn.kernels.din import dice, gather_rows, segment_broadcast, target_pair
from gattn.kernels.topk import _segment_topk_sorted, segment_lookup_scores, segment_topk

from .graphs import ragged_ptr

SIZES = [3, 0, 7, 1, 0, 12, 2]


def per_segment_topk(scores: torch.Tensor, ptr: torch.Tensor, k: int) -> torch.Tensor:
    """A Python loop: per segment, rows sorted by (score, row) descending, first k, ascending."""
    kept = []
    for s in range(ptr.numel() - 1):
        rows = list(range(int(ptr[s]), int(ptr[s + 1])))
        rows.sort(key=lambda r: (float(scores[r]), r), reverse=True)
        kept += sorted(rows[:k])
    return torch.tensor(kept, dtype=torch.long)


@pytest.mark.parametrize("k", [1, 2, 5, 20])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_segment_topk_matches_loop(k, backend):
    gen = torch.Generator().manual_seed(k)
    ptr = ragged_ptr(SIZES)
    # few distinct values: many ties, which must go to the later row
    scores = torch.randint(0, 4, (int(ptr[-1]),), generator=gen).float()
    rows, topk_ptr = segment_topk(scores, ptr, k, backend=backend)
    assert torch.equal(rows, per_segment_topk(scores, ptr, k))
    assert torch.equal(topk_ptr[1:] - topk_ptr[:-1], (ptr[1:] - ptr[:-1]).clamp(max=k))


def test_segment_topk_backends_agree_on_long_mixed_histories():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(0, 3000, (40,), generator=gen).tolist()
    ptr = ragged_ptr(sizes)
    scores = torch.randn(int(ptr[-1]), generator=gen, dtype=torch.float64)
    rows, topk_ptr = segment_topk(scores, ptr, 20)
    assert torch.equal(rows, _segment_topk_sorted(scores, ptr, 20))
    for s in range(len(sizes)):  # each kept row beats every dropped row of its segment
        seg = scores[int(ptr[s]):int(ptr[s + 1])]
        kept = scores[rows[int(topk_ptr[s]):int(topk_ptr[s + 1])]]
        if seg.numel() > 20:
            assert kept.min() >= seg.topk(21).values[-1]


def test_segment_topk_errors():
    ptr = ragged_ptr([2, 1])
    with pytest.raises(ValueError, match="`k`"):
        segment_topk(torch.randn(3), ptr, 0)
    with pytest.raises(ValueError, match="NaN"):
        segment_topk(torch.tensor([0.0, float("nan"), 1.0]), ptr, 1)
    with pytest.raises(ValueError, match="`ptr`"):
        segment_topk(torch.randn(4), ptr, 1)
    with pytest.raises(TypeError, match="`scores`"):
        segment_topk(torch.arange(3), ptr, 1)


def test_segment_lookup_scores_matches_gather():
    gen = torch.Generator().manual_seed(1)
    ptr = ragged_ptr(SIZES)
    table = torch.randn(30, 5, generator=gen)
    ids = torch.randint(0, 30, (int(ptr[-1]),), generator=gen)
    query = torch.randn(len(SIZES), 5, generator=gen)
    segment = torch.repeat_interleave(torch.arange(len(SIZES)), ptr[1:] - ptr[:-1])
    want = (table[ids] * query[segment]).sum(1) * 0.5
    torch.testing.assert_close(segment_lookup_scores(table, ids, query, ptr, scale=0.5), want)
    with pytest.raises(ValueError, match="`ids`"):
        segment_lookup_scores(table, ids + 30, query, ptr)
    with pytest.raises(ValueError, match="`query`"):
        segment_lookup_scores(table, ids, query[:2], ptr)


# ------------------------------------------------------------------------------ DIN ops
def din_inputs(dtype=torch.float64, channels=4, seed=0, sizes=SIZES):
    gen = torch.Generator().manual_seed(seed)
    ptr = ragged_ptr(sizes)
    rows = int(ptr[-1])
    x = torch.randn(rows, channels, generator=gen, dtype=dtype).requires_grad_()
    bias = torch.randn(len(sizes), channels, generator=gen, dtype=dtype).requires_grad_()
    alpha = (0.3 * torch.randn(channels, generator=gen, dtype=dtype)).requires_grad_()
    return x, bias, alpha, ptr


def test_target_pair_and_broadcast_match_reference():
    x, bias, _, ptr = din_inputs(torch.float32)
    for op, args in ((target_pair, (bias, x, ptr)), (segment_broadcast, (bias, ptr))):
        fast = op(*args, backend="cpu")
        ref = op(*args, backend="reference")
        torch.testing.assert_close(fast, ref)
        grad = torch.randn_like(ref)
        inputs = [a for a in args if a.requires_grad]
        torch.testing.assert_close(
            torch.autograd.grad(fast, inputs, grad), torch.autograd.grad(ref, inputs, grad)
        )


GRADCHECK_SIZES = [3, 0, 2]  # small: gradcheck evaluates the function twice per input element


def test_target_pair_and_broadcast_gradcheck():
    x, bias, _, ptr = din_inputs(channels=3, sizes=GRADCHECK_SIZES)
    assert torch.autograd.gradcheck(lambda q, k: target_pair(q, k, ptr, backend="cpu"), (bias, x))
    assert torch.autograd.gradcheck(lambda b: segment_broadcast(b, ptr, backend="cpu"), (bias,))


def run_dice(x, alpha, bias, ptr, training, backend, stats=None):
    if stats is None:
        stats = (torch.zeros(x.size(1), dtype=x.dtype), torch.ones(x.size(1), dtype=x.dtype))
    mean, var = stats
    out = dice(
        x, alpha, mean, var, training=training, momentum=0.1, eps=1e-5,
        segment_bias=bias, ptr=None if bias is None else ptr, backend=backend,
    )
    return out, (mean, var)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_dice_cpu_matches_reference(with_bias, training):
    x, bias, alpha, ptr = din_inputs(torch.float32, channels=6, sizes=[300, 0, 2500, 17])
    bias = bias if with_bias else None
    fast, fast_stats = run_dice(x, alpha, bias, ptr, training, "cpu")
    ref, ref_stats = run_dice(x, alpha, bias, ptr, training, "reference")
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_stats, ref_stats, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    inputs = [t for t in (x, alpha, bias) if t is not None]
    torch.testing.assert_close(
        torch.autograd.grad(fast, inputs, grad), torch.autograd.grad(ref, inputs, grad), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("training", [False, True])
def test_dice_gradcheck(training):
    x, bias, alpha, ptr = din_inputs(channels=3, sizes=GRADCHECK_SIZES)
    stats = (torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5)

    def fn(x, alpha, bias):
        return run_dice(x, alpha, bias, ptr, training, "cpu", stats=tuple(s.clone() for s in stats))[0]

    assert torch.autograd.gradcheck(fn, (x, alpha, bias))


def test_dice_single_row_and_empty():
    x, _, alpha, _ = din_inputs(sizes=[1])
    for backend in ("cpu", "reference"):
        out, (mean, var) = run_dice(x, alpha, None, None, True, backend)
        # one row has no variance: normalised to 0, gate 1/2, running statistics untouched
        torch.testing.assert_close(out, x * (alpha + (1 - alpha) * 0.5))
        assert torch.equal(mean, torch.zeros(4, dtype=x.dtype)) and torch.equal(var, torch.ones(4, dtype=x.dtype))
        empty, _ = run_dice(x[:0], alpha, None, None, True, backend)
        assert empty.shape == (0, 4)


def test_gather_rows_matches_embedding():
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([3, 0, 3, 8, 3, 1])
    out = gather_rows(weight, index, backend="cpu")
    want = torch.nn.functional.embedding(index, weight)
    torch.testing.assert_close(out, want)
    grad = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(out, weight, grad), torch.autograd.grad(want, weight, grad))
    assert torch.autograd.gradcheck(lambda w: gather_rows(w, index, backend="cpu"), (weight,))
