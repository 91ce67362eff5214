"""Evaluation metrics: one registry, name -> (function, direction), used by every pipeline and
by ``gattn tune``. The computations are scikit-learn's; this module adapts their inputs.

Every function takes ``y_true`` and ``y_pred`` as torch tensors or array-likes and returns a
Python ``float``. Binary and multi-label scores are **logits** (or any monotone score: the
ranking metrics do not care); the metrics that need probabilities (log loss, F1 at 0.5) apply
the sigmoid themselves, and F1 thresholds logits at 0 (probability 0.5).

========================  ===========  ==================================================================
name                      direction    what
========================  ===========  ==================================================================
``rocauc``                maximize     mean ROC-AUC over tasks, NaN labels ignored (OGB)
``ap``                    maximize     mean average precision over tasks (OGB's ``ap``)
``rmse``                  minimize     root mean squared error, mean over tasks (OGB)
``accuracy``              maximize     class accuracy (labels, scores [N, C] or one logit)
``weighted_accuracy``     maximize     PATTERN / CLUSTER mean per-class accuracy
``f1``                    maximize     binary F1 of class 1
``f1_micro``              maximize     micro F1: multi-class labels, or multi-label at 0.5
``f1_macro``              maximize     macro F1: multi-class labels, or multi-label at 0.5
``f1_macro_pr``           maximize     multi-label F1 of macro precision and macro recall (CAML's)
``rocauc_micro``          maximize     multi-label ROC-AUC over all (row, label) pairs
``rocauc_macro``          maximize     multi-label ROC-AUC per label, mean over labels with both classes
``precision_at_5/8/15``   maximize     multi-label precision of the k top-scored labels per row
``logloss``               minimize     binary cross-entropy of sigmoid(logits) (CTR)
``gauc``                  maximize     grouped AUC: impression-weighted mean of per-group AUC
========================  ===========  ==================================================================

``gauc`` needs the group of every row (the user, for click-through-rate data): the registry
marks it (``Metric.needs_groups``) and :func:`compute` passes ``groups=``.

:func:`register_metric` adds a metric; :func:`get_metric` / :func:`metric_direction` look
one up, :func:`compute` evaluates one by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "ap",
    "compute",
    "f1",
    "f1_macro",
    "f1_macro_pr",
    "f1_micro",
    "gauc",
    "get_metric",
    "logloss",
    "metric_direction",
    "precision_at_k",
    "register_metric",
    "rmse",
    "rocauc",
    "rocauc_macro",
    "rocauc_micro",
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

    .. math:: \mathrm{ROCAUC} = \frac{1}{|T'|}\sum_{t \in T'} \mathrm{AUC}\big(\{(y_{it}, \hat y_{it})
              : i \in L_t\}\big)

    where :math:`L_t` are the rows with a (non-NaN) label for task :math:`t` and :math:`T'` the
    tasks whose labelled rows hold both classes (the others are not scored).

    Args:
        y_true (Tensor or array): 0/1 labels, NaN for a missing label. Shape :math:`[N]` or
            :math:`[N, T]`.
        y_pred (Tensor or array): scores (logits or probabilities), the shape of ``y_true``.

    Returns:
        float: the mean over the scored tasks.

    Raises:
        ValueError: no task has both a positive and a negative label.
    """
    return _mean_over_binary_tasks(y_true, y_pred, roc_auc_score, "rocauc")


def _mean_over_binary_tasks(y_true: Any, y_pred: Any, score: Callable[..., float], name: str) -> float:
    """``score(labels, scores)`` per task over its labelled rows, for the tasks with both classes;
    the mean (OGB's rule for ROC-AUC and AP)."""
    true, pred = _as_2d(y_true, y_pred)
    scores = []
    for task in range(true.shape[1]):
        labelled = ~np.isnan(true[:, task])
        labels = true[labelled, task]
        if labels.size and labels.min() < labels.max():
            scores.append(score(labels, pred[labelled, task]))
    if not scores:
        raise ValueError(f"{name} needs at least one task with both positive and negative labels")
    return float(np.mean(scores))


def rmse(y_true: Any, y_pred: Any) -> float:
    r"""Root mean squared error, averaged over tasks as OGB does.

    .. math:: \frac{1}{T}\sum_{t=1}^{T}\sqrt{\frac{1}{|L_t|}\sum_{i\in L_t}(y_{it}-\hat y_{it})^2}

    where :math:`L_t` are the rows with a (non-NaN) label for task :math:`t`.

    Args:
        y_true (Tensor or array): targets, NaN where missing. Shape :math:`[N]` or :math:`[N, T]`.
        y_pred (Tensor or array): predictions, the shape of ``y_true``.

    Raises:
        ValueError: every label is NaN.
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
    """Integer class labels from ``y_pred``: integer labels ``[N]``; scores ``[N, C]`` (argmax);
    or one binary logit per row, ``[N]`` or ``[N, 1]`` floating point (positive when > 0)."""
    true = _to_numpy(y_true, "y_true")
    pred = _to_numpy(y_pred, "y_pred")
    if true.ndim == 2 and true.shape[1] == 1:
        true = true[:, 0]
    if true.ndim != 1:
        raise ValueError(f"y_true must hold one class label per row, got shape {true.shape}")
    if pred.ndim == 2:
        pred = (pred[:, 0] > 0).astype(np.int64) if pred.shape[1] == 1 else pred.argmax(axis=1)
    elif pred.ndim == 1 and np.issubdtype(pred.dtype, np.floating):
        pred = (pred > 0).astype(np.int64)  # binary logits (the module's convention)
    if pred.ndim != 1 or pred.shape[0] != true.shape[0]:
        raise ValueError(
            f"y_pred must be labels [N] or scores [N, C] with N = {true.shape[0]}, "
            f"got shape {tuple(pred.shape)}"
        )
    if true.shape[0] == 0:
        raise ValueError("y_true is empty: no rows to evaluate")
    return true.astype(np.int64), pred.astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    r"""Fraction of rows whose predicted class equals the label,
    :math:`\frac{1}{N}\sum_i [\hat y_i = y_i]`.

    Args:
        y_true (Tensor or array): integer class labels. Shape :math:`[N]`.
        y_pred (Tensor or array): integer class labels :math:`[N]`, scores :math:`[N, C]` (the
            argmax is taken), or one binary logit per row (floating point :math:`[N]` or
            :math:`[N, 1]`, class 1 when > 0: threshold a probability ``p`` by passing ``p - 0.5``).
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

    Args:
        y_true (Tensor or array): integer class labels. Shape :math:`[N]`.
        y_pred (Tensor or array): class labels :math:`[N]` or scores :math:`[N, C]`, as for
            :func:`accuracy`.
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
    r"""F1 score, :math:`F_1 = \frac{2\,\mathrm{TP}}{2\,\mathrm{TP} + \mathrm{FP} + \mathrm{FN}}`
    (scikit-learn's ``f1_score``). A class with no predicted or true member scores 0 (no warning).

    Args:
        y_true (Tensor or array): integer class labels. Shape :math:`[N]`.
        y_pred (Tensor or array): labels, scores or one logit per row, as for :func:`accuracy`.
        average (str, optional): scikit-learn's: ``"binary"`` (F1 of class 1), ``"macro"``,
            ``"micro"`` or ``"weighted"``. (default: ``"binary"``)
    """
    if average not in ("binary", "macro", "micro", "weighted"):
        raise ValueError(
            f"average must be 'binary', 'macro', 'micro' or 'weighted', got {average!r}"
        )
    true, pred = _class_labels(y_true, y_pred)
    return float(f1_score(true, pred, average=average, zero_division=0))


def ap(y_true: Any, y_pred: Any) -> float:
    r"""Mean average precision over tasks, the OGB way (NaN labels ignored, tasks with both
    classes only),

    .. math:: \mathrm{AP}_t = \sum_n (R_n - R_{n-1})\,P_n

    over the thresholds :math:`n` of task :math:`t`'s scores (precision :math:`P_n`, recall
    :math:`R_n`), averaged over the scored tasks.

    Args:
        y_true (Tensor or array): 0/1 labels, NaN where missing. Shape :math:`[N]` or :math:`[N, T]`.
        y_pred (Tensor or array): scores, the shape of ``y_true``.
    """
    return _mean_over_binary_tasks(y_true, y_pred, average_precision_score, "ap")


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))


def _binary(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels [N] and logits [N] (a trailing dimension of one is dropped)."""
    true, pred = _as_2d(y_true, y_pred)
    if true.shape[1] != 1:
        raise ValueError(f"expected one binary label per row, got shape {tuple(true.shape)}")
    true, pred = true[:, 0], pred[:, 0]
    if not np.isin(true, (0.0, 1.0)).all():
        raise ValueError("y_true must hold 0/1 labels")
    return true, pred


def logloss(y_true: Any, y_pred: Any) -> float:
    r"""Binary cross-entropy (natural log) of the predicted probabilities,

    .. math:: -\frac{1}{N}\sum_i \big(y_i \log \sigma(\hat y_i) + (1 - y_i)\log(1 - \sigma(\hat y_i))\big).

    Args:
        y_true (Tensor or array): 0/1 labels. Shape :math:`[N]` or :math:`[N, 1]`.
        y_pred (Tensor or array): logits, the shape of ``y_true`` (the sigmoid is applied here).
    """
    true, pred = _binary(y_true, y_pred)
    return float(log_loss(true, _sigmoid(pred), labels=[0, 1]))


def gauc(y_true: Any, y_pred: Any, groups: Any = None) -> float:
    r"""Grouped AUC (DIN, Zhou et al. 2018): per-group ROC-AUC averaged with the number of rows
    (impressions) of each group as its weight,

    .. math:: \mathrm{GAUC} = \frac{\sum_u n_u\,\mathrm{AUC}_u}{\sum_u n_u},

    over the groups (users) whose rows hold both a positive and a negative label; the other
    groups are skipped, as in the paper.

    Args:
        y_true (Tensor or array): 0/1 labels. Shape :math:`[N]` or :math:`[N, 1]`.
        y_pred (Tensor or array): scores, the shape of ``y_true``.
        groups (Tensor or array): the group (user) of every row. Shape :math:`[N]`.

    Raises:
        ValueError: ``groups`` is missing or of another length, or no group has both classes.
    """
    true, pred = _binary(y_true, y_pred)
    if groups is None:
        raise ValueError("gauc needs `groups` (the user of every row)")
    group = _to_numpy(groups, "groups").reshape(-1)
    if group.shape[0] != true.shape[0]:
        raise ValueError(f"`groups` must have one entry per row ({true.shape[0]}), got {group.shape[0]}")
    order = np.argsort(group, kind="stable")
    group, true, pred = group[order], true[order], pred[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], group.shape[0]]
    total, weight = 0.0, 0
    for lo, hi in zip(starts, ends):
        labels = true[lo:hi]
        if labels.min() < labels.max():
            total += (hi - lo) * roc_auc_score(labels, pred[lo:hi])
            weight += hi - lo
    if weight == 0:
        raise ValueError("gauc: no group has both a positive and a negative label")
    return float(total / weight)


def _multilabel(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true = _to_numpy(y_true, "y_true")
    pred = _to_numpy(y_pred, "y_pred").astype(np.float64)
    if true.ndim != 2 or true.shape != pred.shape:
        raise ValueError(
            "multi-label metrics need y_true and y_pred of the same shape [N, C], "
            f"got {tuple(true.shape)} and {tuple(pred.shape)}"
        )
    if true.shape[0] == 0:
        raise ValueError("y_true is empty: no rows to evaluate")
    if not np.isin(true, (0, 1)).all():
        raise ValueError("multi-label y_true must hold 0/1 entries")
    return true.astype(np.int64), pred


def rocauc_micro(y_true: Any, y_pred: Any) -> float:
    """Multi-label ROC-AUC over all (row, label) pairs pooled together (micro average).

    Args:
        y_true (Tensor or array): 0/1 entries. Shape :math:`[N, C]`.
        y_pred (Tensor or array): scores. Shape :math:`[N, C]`.
    """
    true, pred = _multilabel(y_true, y_pred)
    if true.min() == true.max():
        raise ValueError("rocauc_micro needs both positive and negative entries")
    return float(roc_auc_score(true.ravel(), pred.ravel()))


def rocauc_macro(y_true: Any, y_pred: Any) -> float:
    r"""Multi-label ROC-AUC per label, averaged over the labels with both classes among the rows
    (as the ICD-coding literature does: a label never or always present is not scored),
    :math:`\frac{1}{|C'|}\sum_{c \in C'} \mathrm{AUC}_c`.

    Args:
        y_true (Tensor or array): 0/1 entries. Shape :math:`[N, C]`.
        y_pred (Tensor or array): scores. Shape :math:`[N, C]`.
    """
    true, pred = _multilabel(y_true, y_pred)
    scorable = (true.min(axis=0) < true.max(axis=0)).nonzero()[0]
    if scorable.size == 0:
        raise ValueError("rocauc_macro: no label has both positive and negative rows")
    return float(roc_auc_score(true[:, scorable], pred[:, scorable], average="macro"))


def _f1_averaged(y_true: Any, y_pred: Any, average: str) -> float:
    true = _to_numpy(y_true, "y_true")
    if true.ndim == 2 and true.shape[1] > 1:  # multi-label: threshold the logits at 0
        true, pred = _multilabel(y_true, y_pred)
        return float(f1_score(true, (pred > 0).astype(np.int64), average=average, zero_division=0))
    labels, pred = _class_labels(y_true, y_pred)
    return float(f1_score(labels, pred, average=average, zero_division=0))


def f1_micro(y_true: Any, y_pred: Any) -> float:
    """Micro-averaged F1 (true and false positives and negatives pooled over classes).

    Args:
        y_true (Tensor or array): class labels :math:`[N]` (multi-class) or 0/1 entries
            :math:`[N, C]` (multi-label).
        y_pred (Tensor or array): multi-class: labels :math:`[N]` or scores :math:`[N, C]`;
            multi-label: logits :math:`[N, C]`, thresholded at 0.
    """
    return _f1_averaged(y_true, y_pred, "micro")


def f1_macro(y_true: Any, y_pred: Any) -> float:
    r"""Macro-averaged F1, :math:`\frac{1}{C}\sum_c F_{1,c}`; a class never predicted nor present
    scores 0.

    Args:
        y_true (Tensor or array): as for :func:`f1_micro`.
        y_pred (Tensor or array): as for :func:`f1_micro`.
    """
    return _f1_averaged(y_true, y_pred, "macro")


def f1_macro_pr(y_true: Any, y_pred: Any) -> float:
    """Multi-label macro F1 as CAML's evaluation (Mullenbach et al. 2018) and many ICD-coding
    papers after it report it (TransICD's code reports :func:`f1_macro` instead): the harmonic mean of the
    macro-averaged precision and recall at 0.5 (logits > 0), a label never predicted counting
    precision 0 and a label never present recall 0. It is not the mean of per-label F1
    (:func:`f1_macro`), and is at least as large.

    Args:
        y_true (Tensor or array): 0/1 entries. Shape :math:`[N, C]`.
        y_pred (Tensor or array): logits (positive: predicted). Shape :math:`[N, C]`.
    """
    true, pred = _multilabel(y_true, y_pred)
    precision, recall, _, _ = precision_recall_fscore_support(
        true, (pred > 0).astype(np.int64), average="macro", zero_division=0)
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def precision_at_k(y_true: Any, y_pred: Any, k: int) -> float:
    r"""Precision at :math:`k` (CAML's P@k): the mean over rows of the share of the :math:`k`
    top-scored labels that are true,

    .. math:: \mathrm{P@}k = \frac{1}{N}\sum_i \frac{1}{k}\sum_{c \in \mathrm{top}_k(\hat y_i)} y_{ic}.

    Args:
        y_true (Tensor or array): 0/1 entries. Shape :math:`[N, C]`.
        y_pred (Tensor or array): scores. Shape :math:`[N, C]`.
        k (int): the number of top-scored labels, in :math:`[1, C]`.
    """
    true, pred = _multilabel(y_true, y_pred)
    if not isinstance(k, int) or not 1 <= k <= true.shape[1]:
        raise ValueError(f"`k` must be an int in [1, {true.shape[1]}], got {k!r}")
    top = np.argpartition(-pred, k - 1, axis=1)[:, :k]
    return float(np.take_along_axis(true, top, axis=1).sum(axis=1).mean() / k)


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(y_true, y_pred[, groups=])`` and whether higher is better.

    Attributes:
        name (str): the registry name.
        fn (callable): ``fn(y_true, y_pred)`` (or with ``groups=``) returning a float.
        direction (str): ``"maximize"`` or ``"minimize"``.
        needs_groups (bool, optional): ``fn`` takes ``groups=`` (GAUC's users). (default: ``False``)
    """

    name: str
    fn: Callable[..., float]
    direction: str
    needs_groups: bool = False


#: name -> :class:`Metric`
METRICS: dict[str, Metric] = {}


def register_metric(name: str, fn: Callable[..., float], direction: str, needs_groups: bool = False) -> Metric:
    """Add a metric to the registry (:data:`METRICS`), so that pipelines can name it.

    Args:
        name (str): the registry name (a pipeline's ``metric``, the ``val_<name>`` columns).
        fn (callable): ``fn(y_true, y_pred)`` (or ``fn(y_true, y_pred, groups=)``) returning a float.
        direction (str): ``"maximize"`` or ``"minimize"``.
        needs_groups (bool, optional): ``fn`` takes the group of every row (as :func:`gauc`).
            (default: :obj:`False`)

    Raises:
        ValueError: another function is registered under ``name``, or a bad ``direction``.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if name in METRICS and METRICS[name].fn is not fn:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = Metric(name, fn, direction, needs_groups)
    return METRICS[name]


for _name, _fn, _direction in (
    ("rocauc", rocauc, "maximize"),
    ("ap", ap, "maximize"),
    ("rmse", rmse, "minimize"),
    ("accuracy", accuracy, "maximize"),
    ("weighted_accuracy", weighted_accuracy, "maximize"),
    ("f1", f1, "maximize"),
    ("f1_micro", f1_micro, "maximize"),
    ("f1_macro", f1_macro, "maximize"),
    ("f1_macro_pr", f1_macro_pr, "maximize"),
    ("rocauc_micro", rocauc_micro, "maximize"),
    ("rocauc_macro", rocauc_macro, "maximize"),
    ("logloss", logloss, "minimize"),
):
    register_metric(_name, _fn, _direction)
for _k in (5, 8, 15):
    register_metric(f"precision_at_{_k}", functools.partial(precision_at_k, k=_k), "maximize")
register_metric("gauc", gauc, "maximize", needs_groups=True)


def _lookup(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {name!r}")
    return METRICS[name]


def get_metric(name: str) -> Callable[..., float]:
    """The metric function registered under ``name`` (see :data:`METRICS`).

    Args:
        name (str): a registered name (``KeyError`` listing the names otherwise).
    """
    return _lookup(name).fn


def metric_direction(name: str) -> str:
    """``"maximize"`` or ``"minimize"`` for the metric registered under ``name``.

    Args:
        name (str): a registered name (``KeyError`` listing the names otherwise).
    """
    return _lookup(name).direction


def compute(name: str, y_true: Any, y_pred: Any, groups: Any = None) -> float:
    """Evaluate the registered metric ``name``.

    Args:
        name (str): a name of :data:`METRICS`.
        y_true (Tensor or array): the labels, as the metric takes them.
        y_pred (Tensor or array): the scores or predictions, as the metric takes them.
        groups (Tensor or array, optional): the group of every row, passed to the metrics that
            need it (``gauc``). (default: :obj:`None`)

    Raises:
        ValueError: an unknown ``name``.
    """
    metric = _lookup(name)
    if metric.needs_groups:
        return float(metric.fn(y_true, y_pred, groups=groups))
    return float(metric.fn(y_true, y_pred))
