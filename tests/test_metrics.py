import math

import numpy as np
import pytest
import torch

from gattn.metrics import (
    METRICS,
    accuracy,
    ap,
    compute,
    f1,
    f1_macro,
    f1_macro_pr,
    f1_micro,
    gauc,
    get_metric,
    logloss,
    metric_direction,
    precision_at_k,
    register_metric,
    rmse,
    rocauc,
    rocauc_macro,
    rocauc_micro,
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
    # floating-point predictions of one value per row are binary logits: threshold at 0
    assert accuracy([1, 0, 1], torch.tensor([[0.3], [-0.2], [-1.0]])) == pytest.approx(2 / 3)
    assert accuracy([1, 0, 1], torch.tensor([0.3, -0.2, -1.0])) == pytest.approx(2 / 3)
    # logits that happen to lie in [0, 1] are still logits (no probability guess)
    assert accuracy([1, 0, 1], torch.tensor([0.7, 0.2, 0.4])) == pytest.approx(2 / 3)
    assert accuracy(np.array([1, 0, 1]), np.array([1, 1, 1])) == pytest.approx(2 / 3)  # integer labels


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
    assert {"rocauc", "rmse", "accuracy", "weighted_accuracy", "f1", "gauc", "logloss", "rocauc_micro",
            "rocauc_macro", "f1_micro", "f1_macro", "precision_at_5", "precision_at_8",
            "precision_at_15", "ap"} <= set(METRICS)
    assert get_metric("rmse") is rmse
    assert metric_direction("rmse") == "minimize"
    assert metric_direction("logloss") == "minimize"
    assert metric_direction("gauc") == "maximize"
    assert METRICS["gauc"].needs_groups and not METRICS["rocauc"].needs_groups
    with pytest.raises(ValueError, match="metric must be one of"):
        get_metric("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("rmse", lambda t, p: 0.0, "minimize")
    with pytest.raises(ValueError, match="direction"):
        register_metric("new_metric", lambda t, p: 0.0, "up")


def test_gauc_by_hand_weights_by_impressions_and_skips_single_class_users():
    # user 7: 3 rows, pos {0.9}, neg {0.1, 0.95} -> 1 of 2 pairs -> 0.5
    # user 3: 2 rows, pos {0.8}, neg {0.2} -> 1.0
    # user 5: 2 rows, only positives -> skipped
    y = [1, 0, 0, 1, 0, 1, 1]
    s = [0.9, 0.1, 0.95, 0.8, 0.2, 0.3, 0.4]
    users = [7, 7, 7, 3, 3, 5, 5]
    assert gauc(y, s, groups=users) == pytest.approx((3 * 0.5 + 2 * 1.0) / 5)
    assert compute("gauc", y, s, groups=torch.tensor(users)) == pytest.approx((3 * 0.5 + 2 * 1.0) / 5)
    with pytest.raises(ValueError, match="groups"):
        gauc(y, s)
    with pytest.raises(ValueError, match="one entry per row"):
        gauc(y, s, groups=[1, 2])
    with pytest.raises(ValueError, match="no group has both"):
        gauc([1, 1, 0], [0.1, 0.2, 0.3], groups=[1, 1, 2])


def test_logloss_applies_sigmoid_to_logits():
    y = np.array([1, 0, 1])
    logits = np.array([2.0, -1.0, -0.5])
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert logloss(y, logits) == pytest.approx(expected)
    with pytest.raises(ValueError, match="0/1"):
        logloss([2, 0], [0.1, 0.2])


def test_multilabel_auc_micro_macro_by_hand():
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1]])
    s = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.6], [0.4, 0.3, 0.7], [0.6, 0.1, 0.8]])
    # label 0: pos {0.9, 0.4}, neg {0.1, 0.6} -> 3 of 4; label 1: pos {0.8} > all neg -> 1.0;
    # label 2: always positive -> not scored
    assert rocauc_macro(y, s) == pytest.approx((0.75 + 1.0) / 2)
    from sklearn.metrics import roc_auc_score

    assert rocauc_micro(y, s) == pytest.approx(roc_auc_score(y.ravel(), s.ravel()))
    with pytest.raises(ValueError, match="same shape"):
        rocauc_macro(y, s[:, :2])


def test_f1_micro_macro_multilabel_threshold_at_zero_logit_and_multiclass():
    y = np.array([[1, 0], [1, 1], [0, 1]])
    logits = np.array([[2.0, -1.0], [-0.5, 0.5], [1.0, 3.0]])
    # predicted: [1,0], [0,1], [1,1]: label 0 tp=1 fp=1 fn=1 -> 0.5; label 1 tp=2 fp=0 fn=0 -> 1
    assert f1_macro(y, logits) == pytest.approx(0.75)
    # micro: tp=3 fp=1 fn=1 -> 0.75
    assert f1_micro(y, logits) == pytest.approx(0.75)
    # multi-class: labels against argmax of scores
    labels = [0, 1, 2, 2]
    scores = [[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.0, 0.1, 0.9], [0.2, 0.7, 0.1]]
    assert f1_micro(labels, scores) == pytest.approx(0.5)


def test_precision_at_k_by_hand():
    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    s = np.array([[0.9, 0.8, 0.1, 0.0], [0.4, 0.3, 0.2, 0.1]])
    # row 0 top-2 = labels 0, 1 -> 1/2; row 1 top-2 = labels 0, 1 -> 0/2
    assert precision_at_k(y, s, 2) == pytest.approx(0.25)
    assert compute("precision_at_5", np.eye(6), np.eye(6)) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="`k`"):
        precision_at_k(y, s, 5)


def test_ap_matches_sklearn_per_task():
    from sklearn.metrics import average_precision_score

    y = np.array([[1, 0], [0, 1], [1, math.nan], [0, 0]])
    s = np.array([[0.8, 0.3], [0.4, 0.9], [0.3, 0.5], [0.2, 0.1]])
    first = average_precision_score([1, 0, 1, 0], s[:, 0])
    second = average_precision_score([0, 1, 0], s[[0, 1, 3], 1])  # the NaN row is ignored
    expected = (first + second) / 2
    assert ap(y, s) == pytest.approx(expected)


def test_bad_class_prediction_shape():
    with pytest.raises(ValueError, match="y_pred"):
        accuracy([0, 1], [[0.1, 0.9, 0.0]])


def test_f1_macro_pr_is_the_f1_of_macro_precision_and_recall():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]])
    logits = np.array([[2.0, -1.0, -1.0], [1.0, -0.5, -2.0], [0.5, 3.0, -1.0], [-1.0, 1.0, -3.0]])
    # predicted [1,0,0],[1,0,0],[1,1,0],[0,1,0]: label 0 P=2/3 R=1; label 1 P=1/2 R=1/2; label 2
    # never predicted: P=0 R=0. Macro P = 7/18, macro R = 1/2.
    p, r = 7 / 18, 1 / 2
    assert f1_macro_pr(y, logits) == pytest.approx(2 * p * r / (p + r))
    assert f1_macro(y, logits) == pytest.approx((0.8 + 0.5 + 0.0) / 3)  # mean of per-label F1
    assert f1_macro_pr(y, np.full((4, 3), -1.0)) == 0.0
    assert METRICS["f1_macro_pr"].direction == "maximize"
