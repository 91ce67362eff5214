"""Evaluation metrics: thin wrappers over scikit-learn / numpy.

Every function takes ``y_true`` and ``y_pred`` as torch tensors or array-likes and returns a
Python ``float``. Only the metrics the pipelines use live here:

=====================  ===========  =====================================================
name                   direction    used by
=====================  ===========  =====================================================
``rocauc``             maximize     OGB binary molecule tasks (``ogbg-molbace``), MIL
``rmse``               minimize     OGB regression tasks (``ogbg-molesol``)
``accuracy``           maximize     MIL bag classification
``weighted_accuracy``  maximize     PATTERN / CLUSTER node classification
``f1``                 maximize     MIL bag classification
=====================  ===========  =====================================================

:func:`get_metric` looks a metric up by name and :func:`metric_direction` says whether it is
maximised or minimised (what :func:`gattn.train.fit` and the Optuna studies need).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

__all__ = [
    "METRICS",
    "accuracy",
    "f1",
    "get_metric",
    "metric_direction",
    "rmse",
    "rocauc",
    "weighted_accuracy",
]


def _to_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy() if values.is_floating_point() \
            else values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except Exception as exc:  # pragma: no cover - numpy accepts nearly anything
        raise TypeError(f"{name} must be a tensor or array-like, got {type(values)!r}") from exc


def _as_2d(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both as float ``[N, T]`` arrays of equal shape (1-D inputs become one task)."""
    true = _to_numpy(y_true, "y_true").astype(np.float64)
    pred = _to_numpy(y_pred, "y_pred").astype(np.float64)
    if true.ndim == 1:
        true = true[:, None]
    if pred.ndim == 1:
        pred = pred[:, None]
    if true.ndim != 2 or true.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape [N] or [N, num_tasks], "
            f"got {tuple(true.shape)} and {tuple(pred.shape)}"
        )
    if true.shape[0] == 0:
        raise ValueError("y_true is empty: no rows to evaluate")
    return true, pred


def rocauc(y_true: Any, y_pred: Any) -> float:
    r"""Mean ROC-AUC over tasks, the OGB way.

    ``y_true`` is ``[N]`` or ``[N, T]`` with 0/1 labels and NaN for a missing label;
    ``y_pred`` holds scores (logits or probabilities) of the same shape. Per task, the rows
    whose label is NaN are ignored and a task is only scored when both classes occur in it;
    the result is the mean over the scored tasks.

    Raises:
        ValueError: no task has both a positive and a negative label.
    """
    true, pred = _as_2d(y_true, y_pred)
    scores = []
    for task in range(true.shape[1]):
        labelled = ~np.isnan(true[:, task])
        labels = true[labelled, task]
        if labels.size and labels.min() < labels.max():
            scores.append(roc_auc_score(labels, pred[labelled, task]))
    if not scores:
        raise ValueError("rocauc needs at least one task with both positive and negative labels")
    return float(np.mean(scores))


def rmse(y_true: Any, y_pred: Any) -> float:
    r"""Root mean squared error, averaged over tasks as OGB does.

    .. math:: \frac{1}{T}\sum_{t=1}^{T}\sqrt{\frac{1}{|L_t|}\sum_{i\in L_t}(y_{it}-\hat y_{it})^2}

    where :math:`L_t` are the rows with a (non-NaN) label for task :math:`t`.
    """
    true, pred = _as_2d(y_true, y_pred)
    per_task = []
    for task in range(true.shape[1]):
        labelled = ~np.isnan(true[:, task])
        if labelled.any():
            diff = true[labelled, task] - pred[labelled, task]
            per_task.append(np.sqrt(np.mean(diff * diff)))
    if not per_task:
        raise ValueError("rmse: every label of y_true is NaN")
    return float(np.mean(per_task))


def _class_labels(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer class labels: ``y_pred`` may be labels ``[N]`` or scores ``[N, C]`` (argmax)."""
    true = _to_numpy(y_true, "y_true")
    pred = _to_numpy(y_pred, "y_pred")
    if true.ndim == 2 and true.shape[1] == 1:
        true = true[:, 0]
    if true.ndim != 1:
        raise ValueError(f"y_true must hold one class label per row, got shape {true.shape}")
    if pred.ndim == 2:
        if pred.shape[1] == 1:
            # One binary logit / probability column.
            threshold = 0.5 if pred.min() >= 0 and pred.max() <= 1 else 0.0
            pred = (pred[:, 0] > threshold).astype(np.int64)
        else:
            pred = pred.argmax(axis=1)
    if pred.ndim != 1 or pred.shape[0] != true.shape[0]:
        raise ValueError(
            f"y_pred must be labels [N] or scores [N, C] with N = {true.shape[0]}, "
            f"got shape {tuple(pred.shape)}"
        )
    if true.shape[0] == 0:
        raise ValueError("y_true is empty: no rows to evaluate")
    return true.astype(np.int64), pred.astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of rows whose predicted class equals the label.

    ``y_pred`` is either class labels ``[N]`` or scores ``[N, C]`` (the argmax is taken); a
    single score column ``[N, 1]`` is thresholded at 0.5 for probabilities, else at 0 (logits).
    """
    true, pred = _class_labels(y_true, y_pred)
    return float(np.mean(true == pred))


def weighted_accuracy(y_true: Any, y_pred: Any) -> float:
    r"""The PATTERN / CLUSTER metric of benchmarking-gnns (Dwivedi et al., 2020).

    The mean over classes of the per-class accuracy (recall),

    .. math:: \mathrm{WA} = \frac{1}{|C|}\sum_{c\in C}
              \frac{|\{i : y_i = c,\ \hat y_i = c\}|}{|\{i : y_i = c\}|},

    where :math:`C` is the set of classes that occur in the labels or the predictions (the rows
    of benchmarking-gnns' confusion matrix); a class that is predicted but never a label counts
    with accuracy 0, as in ``train/metrics.py::accuracy_SBM`` there. Returned as a fraction in
    [0, 1] (benchmarking-gnns prints percent). benchmarking-gnns averages this value over the
    mini-batches of an epoch; here it is computed once over all the rows given, which does not
    depend on the batch size.
    """
    true, pred = _class_labels(y_true, y_pred)
    classes = np.union1d(true, pred)
    per_class = []
    for cls in classes:
        members = true == cls
        count = int(members.sum())
        per_class.append(float((pred[members] == cls).sum()) / count if count else 0.0)
    return float(np.mean(per_class))


def f1(y_true: Any, y_pred: Any, average: str = "binary") -> float:
    """F1 score (scikit-learn's ``f1_score``); ``y_pred`` as for :func:`accuracy`.

    ``average`` is scikit-learn's: ``"binary"`` (F1 of class 1), ``"macro"``, ``"micro"`` or
    ``"weighted"``. A class with no predicted or true member scores 0 (no warning).
    """
    if average not in ("binary", "macro", "micro", "weighted"):
        raise ValueError(
            f"average must be 'binary', 'macro', 'micro' or 'weighted', got {average!r}"
        )
    true, pred = _class_labels(y_true, y_pred)
    return float(f1_score(true, pred, average=average, zero_division=0))


#: name -> (function, direction)
METRICS: dict[str, tuple[Callable[[Any, Any], float], str]] = {
    "rocauc": (rocauc, "maximize"),
    "rmse": (rmse, "minimize"),
    "accuracy": (accuracy, "maximize"),
    "weighted_accuracy": (weighted_accuracy, "maximize"),
    "f1": (f1, "maximize"),
}


def get_metric(name: str) -> Callable[[Any, Any], float]:
    """The metric function registered under ``name`` (see :data:`METRICS`)."""
    if name not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {name!r}")
    return METRICS[name][0]


def metric_direction(name: str) -> str:
    """``"maximize"`` or ``"minimize"`` for the metric registered under ``name``."""
    if name not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {name!r}")
    return METRICS[name][1]
