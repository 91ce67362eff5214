"""LDAMLoss (Cao et al.'s label-distribution-aware margin loss) against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from gattn.losses import LDAMLoss, ldam_margins


def bce(z: float, y: float) -> float:
    """Binary cross-entropy of one logit, written out."""
    p = 1.0 / (1.0 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_margins_by_hand():
    # n^(-1/4): 10000 -> 0.1, 16 -> 0.5, 1 -> 1; normalised so the largest (n=1) is C = 2
    margins = ldam_margins([10000, 16, 1], max_margin=2.0)
    torch.testing.assert_close(margins, torch.tensor([0.2, 1.0, 2.0]))
    # no label of count 1: the rarest seen (16) gets C
    torch.testing.assert_close(ldam_margins([10000, 16], max_margin=0.5), torch.tensor([0.1, 0.5]))


def test_labels_without_positives_get_the_largest_margin():
    torch.testing.assert_close(ldam_margins([81, 0, 1], max_margin=0.6), torch.tensor([0.2, 0.6, 0.6]))
    torch.testing.assert_close(ldam_margins([81, 0, 16], max_margin=1.0), torch.tensor([2 / 3, 1.0, 1.0]))
    torch.testing.assert_close(ldam_margins([0, 0], max_margin=0.5), torch.tensor([0.5, 0.5]))


def test_loss_by_hand():
    loss = LDAMLoss([10000, 16, 1], max_margin=2.0, scale=1.5)
    margins = [0.2, 1.0, 2.0]
    logits = torch.tensor([[1.0, -0.5, 3.0], [0.2, 2.0, -1.0]])
    target = torch.tensor([[1, 0, 1], [0, 1, 1]])
    want = [
        [bce(1.5 * (z - y * m), y) for z, y, m in zip(row_z, row_y, margins)]
        for row_z, row_y in zip(logits.tolist(), target.tolist())
    ]
    torch.testing.assert_close(loss(logits, target), torch.tensor(sum(map(sum, want)) / 6))
    none = LDAMLoss([10000, 16, 1], max_margin=2.0, scale=1.5, reduction="none")(logits, target.bool())
    torch.testing.assert_close(none, torch.tensor(want))
    total = LDAMLoss([10000, 16, 1], max_margin=2.0, scale=1.5, reduction="sum")(logits, target.float())
    torch.testing.assert_close(total, torch.tensor(sum(map(sum, want))))


def test_negatives_are_not_shifted_and_gradients_flow():
    loss = LDAMLoss([5, 1], max_margin=1.0, reduction="none")
    logits = torch.tensor([[0.3, -0.2]], requires_grad=True)
    out = loss(logits, torch.zeros(1, 2))
    torch.testing.assert_close(out, torch.tensor([[bce(0.3, 0), bce(-0.2, 0)]]))
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_from_targets_counts_training_positives():
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]] * 4)  # 16, 4, 0 positives
    loss = LDAMLoss.from_targets(targets, max_margin=1.0)
    torch.testing.assert_close(loss.margins, ldam_margins([16, 4, 0], 1.0))
    torch.testing.assert_close(loss.margins, torch.tensor([0.5**0.5, 1.0, 1.0]))
    assert repr(loss) == "LDAMLoss(num_labels=3, max_margin=1.0, scale=1.0, reduction='mean')"
    assert "margins" in loss.state_dict()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: LDAMLoss([3, -1]), ValueError, "`label_counts` must be finite and >= 0"),
        (lambda: LDAMLoss([[3, 1]]), ValueError, r"`label_counts` must be 1-D \[K\]"),
        (lambda: LDAMLoss([]), ValueError, r"`label_counts` must be 1-D \[K\] with K >= 1"),
        (lambda: LDAMLoss([3, 1], max_margin=0), ValueError, "`max_margin` must be a positive number"),
        (lambda: LDAMLoss([3, 1], scale=-1), ValueError, "`scale` must be a positive number"),
        (lambda: LDAMLoss([3, 1], reduction="avg"), ValueError, "`reduction` must be one of"),
        (lambda: LDAMLoss([3, 1])(torch.zeros(2, 3), torch.zeros(2, 3)), ValueError, r"`logits` must be \[N, 2\]"),
        (lambda: LDAMLoss([3, 1])(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2)), TypeError, "`logits`"),
        (lambda: LDAMLoss([3, 1])(torch.zeros(2, 2), torch.zeros(3, 2)), ValueError, "`target` must be a tensor"),
        (lambda: LDAMLoss([3, 1])(torch.zeros(2, 2), torch.full((2, 2), 0.5)), ValueError, "`target` must hold 0/1"),
        (lambda: LDAMLoss.from_targets(torch.tensor([1, 0])), ValueError, r"`targets` must be \[N, K\]"),
        (lambda: LDAMLoss.from_targets(torch.tensor([[2, 0]])), ValueError, "`targets` must hold 0/1"),
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
