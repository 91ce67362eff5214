import math

import numpy as np
import pytest
import torch

from gattn.metrics import (
    METRICS,
    accuracy,
    f1,
    get_metric,
    metric_direction,
    rmse,
    rocauc,
    weighted_accuracy,
)


def test_rocauc_single_task_by_hand():
    # positives {0.8, 0.4}, negatives {0.6, 0.2}: pairs (pos > neg): 0.8>0.6, 0.8>0.2, 0.4>0.2
    # -> 3 of 4 pairs ordered correctly.
    y = torch.tensor([1, 0, 1, 0])
    s = torch.tensor([0.8, 0.6, 0.4, 0.2])
    assert rocauc(y, s) == pytest.approx(0.75)


def test_rocauc_ties_count_half():
    assert rocauc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)


def test_rocauc_multitask_ignores_nan_and_single_class_tasks():
    nan = math.nan
    y = np.array([[1, 0, 1], [0, nan, 1], [1, 1, 1], [0, 0, nan]], dtype=float)
    s = np.array([[0.9, 0.1, 0.3], [0.2, 5.0, 0.4], [0.1, 0.7, 0.5], [0.3, 0.2, 0.6]])
    # task 0: pos {0.9, 0.1}, neg {0.2, 0.3} -> 2 of 4 pairs -> 0.5
    # task 1: rows 0, 2, 3 (row 1 NaN): pos {0.7}, neg {0.1, 0.2} -> 1.0
    # task 2: only positives -> not scored
    assert rocauc(y, s) == pytest.approx((0.5 + 1.0) / 2)


def test_rocauc_no_scorable_task_raises():
    with pytest.raises(ValueError, match="both positive and negative"):
        rocauc([1, 1, 1], [0.1, 0.2, 0.3])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        rmse(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        rmse(torch.zeros(0), torch.zeros(0))


def test_rmse_by_hand_and_nan_ignored():
    assert rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(math.sqrt(4 / 3))
    y = torch.tensor([[1.0, math.nan], [3.0, 2.0]])
    p = torch.tensor([[2.0, 100.0], [3.0, 0.0]])
    # task 0: sqrt((1 + 0) / 2); task 1: only row 1 -> 2.0; mean over tasks (OGB)
    assert rmse(y, p) == pytest.approx((math.sqrt(0.5) + 2.0) / 2)


def test_accuracy_labels_scores_and_binary_column():
    assert accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == pytest.approx(0.75)
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert accuracy(torch.tensor([0, 1, 1]), scores) == pytest.approx(2 / 3)
    # one logit column: threshold at 0; one probability column: threshold at 0.5
    assert accuracy([1, 0, 1], torch.tensor([[0.3], [-0.2], [-1.0]])) == pytest.approx(2 / 3)
    assert accuracy([1, 0, 1], torch.tensor([[0.7], [0.2], [0.4]])) == pytest.approx(2 / 3)


def test_weighted_accuracy_is_mean_per_class_recall():
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 0])
    # class 0: 3/4, class 1: 1/2 -> 0.625 (plain accuracy would be 4/6)
    assert weighted_accuracy(y, p) == pytest.approx(0.625)
    assert accuracy(y, p) == pytest.approx(4 / 6)


def test_weighted_accuracy_matches_benchmarking_gnns_definition():
    # Independent re-statement of benchmarking-gnns' accuracy_SBM: confusion matrix over the
    # union of labels and predictions; per class CM[r, r] / #targets of r (0 if none).
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 4, size=50)
        p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 5, size=50))
        labels = np.union1d(y, p)
        cm = np.zeros((len(labels), len(labels)))
        for t, q in zip(y, p, strict=True):
            cm[np.searchsorted(labels, t), np.searchsorted(labels, q)] += 1
        per_class = [cm[i, i] / (y == c).sum() if (y == c).sum() else 0.0
                     for i, c in enumerate(labels)]
        assert weighted_accuracy(y, p) == pytest.approx(np.mean(per_class))


def test_weighted_accuracy_predicted_class_without_labels_counts_zero():
    # class 2 is predicted but never a label: counts as accuracy 0 in the mean
    assert weighted_accuracy([0, 1], [0, 2]) == pytest.approx((1 + 0 + 0) / 3)


def test_weighted_accuracy_from_scores():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert weighted_accuracy(torch.tensor([0, 1, 1]), scores) == pytest.approx((1 + 0.5) / 2)


def test_f1_by_hand():
    y = [1, 1, 0, 0, 1]
    p = [1, 0, 1, 0, 1]
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3
    assert f1(y, p) == pytest.approx(2 / 3)
    # macro: class 0 has tp=1, fp=1, fn=1 -> 1/2
    assert f1(y, p, average="macro") == pytest.approx((2 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="average"):
        f1(y, p, average="samples")


def test_registry():
    assert set(METRICS) == {"rocauc", "rmse", "accuracy", "weighted_accuracy", "f1"}
    assert get_metric("rmse") is rmse
    assert metric_direction("rmse") == "minimize"
    assert metric_direction("rocauc") == "maximize"
    with pytest.raises(ValueError, match="metric must be one of"):
        get_metric("gauc")


def test_bad_class_prediction_shape():
    with pytest.raises(ValueError, match="y_pred"):
        accuracy([0, 1], [[0.1, 0.9, 0.0]])
