"""The one training / evaluation loop every pipeline uses.

:func:`fit` trains a model for a number of epochs, evaluates it on a validation loader after
each epoch, keeps the best weights (in memory, and atomically on disk when a checkpoint path is
given), stops early when the validation metric has not improved for ``patience`` epochs,
steps a learning-rate schedule, and reports the validation metric to an Optuna trial so that
unpromising trials are pruned. :func:`predict` and :func:`evaluate` run a model over a loader.

The loop knows nothing about the kind of batch. A *forward adapter*
``forward(model, batch, device) -> (output, target)`` turns a batch into the model's output
and the matching target; :func:`default_forward` handles the two usual cases:

* a PyG :class:`~torch_geometric.data.Data` / ``Batch`` (anything with ``.to`` and a ``y``
  attribute): ``model(batch)`` against ``batch.y``;
* a tuple / list ``(input_1, ..., input_k, target)`` of tensors: ``model(input_1, ..., input_k)``
  against ``target``.

Example::

    from gattn.metrics import rocauc
    from gattn.train import fit, evaluate

    result = fit(model, train_loader, val_loader, loss_fn=torch.nn.BCEWithLogitsLoss(),
                 evaluate={"rocauc": rocauc}, metric="rocauc", direction="maximize",
                 lr=1e-3, epochs=100, patience=20, scheduler="plateau",
                 checkpoint="runs/best.pt")
    test = evaluate(model, test_loader, {"rocauc": rocauc})
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "FitResult",
    "default_forward",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "seed_everything",
]

ForwardFn = Callable[[nn.Module, Any, torch.device], tuple[Tensor, Tensor]]
EvaluateFn = Callable[[nn.Module, Iterable], Mapping[str, float]]
MetricFn = Callable[[Tensor, Tensor], float]


# --------------------------------------------------------------------------------- utilities
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(value: Any, device: torch.device) -> Any:
    if hasattr(value, "to") and callable(value.to):
        return value.to(device)
    return value


def default_forward(model: nn.Module, batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``batch``; return ``(output, target)``.

    A PyG batch (has ``.to`` and ``y``) is called as ``model(batch)`` and its target is
    ``batch.y``; a tuple or list is ``(inputs..., target)`` and is called as ``model(*inputs)``.
    """
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise ValueError(
                "a tuple/list batch must be (input_1, ..., input_k, target) with k >= 1, "
                f"got {len(batch)} element(s)"
            )
        moved = [_to_device(item, device) for item in batch]
        return model(*moved[:-1]), moved[-1]
    if hasattr(batch, "to") and hasattr(batch, "y"):
        batch = batch.to(device)
        return model(batch), batch.y
    raise TypeError(
        "default_forward handles PyG Data/Batch objects and (inputs..., target) tuples; "
        f"got {type(batch).__name__}: pass forward= to fit/predict/evaluate"
    )


def _resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    if device is None:
        param = next(iter(model.parameters()), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(device)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta: Any) -> Path:
    """Write ``{"model": state_dict, **meta}`` to ``path`` atomically (tmp file + os.replace).

    ``meta`` values should be numbers, strings, lists or dicts of those (what
    ``torch.load(weights_only=True)`` can read back).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        torch.save({"model": state, **meta}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    With ``model`` given its weights are loaded in place. Returns the whole checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path.name!r} not found (looked in {path.parent})")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a gattn checkpoint (no 'model' entry)")
    if model is not None:
        model.load_state_dict(checkpoint["model"])
    return checkpoint


# ------------------------------------------------------------------------ predict / evaluate
@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    *,
    forward: ForwardFn = default_forward,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Outputs and targets of ``model`` over ``loader`` (eval mode, no grad), on the CPU.

    Returns ``(outputs, targets)`` concatenated along the first dimension.
    """
    device = _resolve_device(device, model)
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    try:
        for batch in loader:
            out, target = forward(model, batch, device)
            outputs.append(out.detach().cpu())
            targets.append(target.detach().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict: the loader yielded no batch")
    return torch.cat(outputs, dim=0), torch.cat(targets, dim=0)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    metrics: Mapping[str, MetricFn],
    *,
    forward: ForwardFn = default_forward,
    device: str | torch.device | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """``{name: metric(target, output)}`` over the whole loader (plus ``"loss"`` if given).

    Metrics take ``(y_true, y_pred)`` as in :mod:`gattn.metrics`; they are computed once over
    all the predictions, not averaged over batches.
    """
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError("metrics must be a non-empty mapping of name -> callable(y_true, y_pred)")
    output, target = predict(model, loader, forward=forward, device=device)
    result = {name: float(fn(target, output)) for name, fn in metrics.items()}
    if loss_fn is not None:
        result["loss"] = float(loss_fn(output, target))
    return result


_evaluate_metrics = evaluate  # fit's ``evaluate`` argument shadows the name inside fit


# ------------------------------------------------------------------------------------ fit
@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch: ``epoch``, ``train_loss``, ``lr``, ``time`` (seconds) and
            the validation metrics prefixed ``val_``.
        best_epoch: the epoch (1-based) whose validation metric was best (the last epoch when
            there is no validation loader); its weights are in the model on return.
        best_value: the best value of the validation metric (NaN without validation).
        best_metrics: all validation metrics of the best epoch.
        stopped_early: True when patience, the minimum learning rate or the time limit ended
            training.
        epochs_run: the number of epochs trained.
        checkpoint: the checkpoint path, if one was written.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = math.nan
    best_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    epochs_run: int = 0
    checkpoint: Path | None = None


def _make_scheduler(
    scheduler: str | Callable | None,
    optimizer: torch.optim.Optimizer,
    direction: str,
    epochs: int,
    factor: float,
    scheduler_patience: int,
) -> tuple[Any, bool]:
    """The scheduler and whether its ``step`` takes the validation metric."""
    if scheduler is None or scheduler == "none":
        return None, False
    if scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max" if direction == "maximize" else "min",
            factor=factor,
            patience=scheduler_patience,
        )
        return sched, True
    if scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1)), False
    if callable(scheduler):
        sched = scheduler(optimizer)
        return sched, isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    raise ValueError(
        f"scheduler must be 'plateau', 'cosine', 'none', None or a callable(optimizer), "
        f"got {scheduler!r}"
    )


def _is_better(value: float, best: float, direction: str, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    if direction == "maximize":
        return value > best + min_delta
    return value < best - min_delta


def _progress_enabled(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    evaluate: EvaluateFn | Mapping[str, MetricFn] | None = None,
    metric: str | None = None,
    direction: str = "maximize",
    optimizer: torch.optim.Optimizer | Callable[[Iterable], torch.optim.Optimizer] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    epochs: int = 100,
    patience: int | None = None,
    min_delta: float = 0.0,
    scheduler: str | Callable | None = None,
    scheduler_factor: float = 0.5,
    scheduler_patience: int = 10,
    min_lr: float | None = None,
    grad_clip: float | None = None,
    time_limit: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    trial: Any = None,
    forward: ForwardFn = default_forward,
    batch_transform: Callable[[Any], Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    r"""Train ``model``; keep the weights of the best validation epoch.

    Args:
        model: the module to train; it is moved to ``device``.
        train_loader: iterable of training batches (re-iterated every epoch).
        val_loader: iterable of validation batches, or None (no early stopping; the last
            epoch's weights are kept).
        loss_fn: ``loss_fn(output, target) -> scalar tensor``.
        evaluate: how to score the model on ``val_loader``: a callable
            ``(model, loader) -> {name: value}``, or a mapping ``{name: metric(y_true, y_pred)}``
            evaluated with :func:`evaluate` (module-level function) and ``forward``.
        metric: the key of the validation result to select on, early stop on, report to
            Optuna and step ReduceLROnPlateau with. Defaults to the only key when there is one.
        direction: ``"maximize"`` or ``"minimize"`` (for ``metric``).
        optimizer: an optimizer instance, a factory ``params -> optimizer``, or None for
            ``torch.optim.Adam(lr=lr, weight_decay=weight_decay)``.
        lr, weight_decay: used only when ``optimizer`` is None.
        epochs: the maximum number of epochs.
        patience: stop after this many epochs without improvement of ``metric`` (None: never).
        min_delta: the smallest change counted as an improvement.
        scheduler: ``"plateau"`` (ReduceLROnPlateau on ``metric``, as the Graph Transformer
            paper), ``"cosine"`` (cosine annealing over ``epochs``), ``None``, or a callable
            ``optimizer -> scheduler``.
        scheduler_factor, scheduler_patience: ReduceLROnPlateau's ``factor`` and ``patience``.
        min_lr: stop when the learning rate falls below this (benchmarking-gnns' rule).
        grad_clip: clip the gradient norm to this value (None: no clipping).
        time_limit: stop after the epoch during which this many seconds of training have
            passed (benchmarking-gnns' ``max_time``; None: no limit).
        checkpoint: where to write the best weights (atomically, on every improvement); they
            are loaded back from it (``weights_only=True``) at the end.
        trial: an :class:`optuna.trial.Trial`; the validation ``metric`` is reported each
            epoch and :class:`optuna.TrialPruned` raised when the trial should be pruned.
        forward: the forward adapter ``(model, batch, device) -> (output, target)``.
        batch_transform: applied to every *training* batch before ``forward`` (e.g. a random
            sign flip of Laplacian eigenvectors).
        device: where to train (default: where the model's parameters are).
        progress: show a tqdm bar over epochs (None: only when stderr is a terminal).
        log: called with one line per epoch (e.g. ``print``); None: silent.

    Returns:
        a :class:`FitResult`.

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
        optuna.TrialPruned: the trial was pruned.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable(output, target) -> scalar tensor")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be positive seconds or None, got {time_limit!r}")
    if val_loader is not None and evaluate is None:
        raise ValueError("evaluate must be given with val_loader (a callable or metric mapping)")

    device = _resolve_device(device, model)
    model.to(device)

    if isinstance(evaluate, Mapping):
        metric_fns = evaluate

        def evaluate_fn(m: nn.Module, loader: Iterable) -> Mapping[str, float]:
            return _evaluate_metrics(m, loader, metric_fns, forward=forward, device=device)
    else:
        evaluate_fn = evaluate

    if optimizer is None:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(model.parameters())
    else:
        raise TypeError("optimizer must be an Optimizer, a factory params -> Optimizer, or None")
    sched, sched_takes_metric = _make_scheduler(
        scheduler, opt, direction, epochs, scheduler_factor, scheduler_patience
    )

    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    result = FitResult(checkpoint=None)
    best_state: dict[str, Tensor] | None = None
    epochs_without_improvement = 0

    bar = None
    epoch_iter: Iterable[int] = range(1, epochs + 1)
    if _progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(epoch_iter, total=epochs, desc="epochs", leave=False, dynamic_ncols=True)
        epoch_iter = bar

    fit_start = time.perf_counter()
    try:
        for epoch in epoch_iter:
            start = time.perf_counter()
            model.train()
            total_loss, total_items = 0.0, 0
            for batch in train_loader:
                if batch_transform is not None:
                    batch = batch_transform(batch)
                out, target = forward(model, batch, device)
                loss = loss_fn(out, target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss.item()} at epoch {epoch}: lower the learning "
                        "rate or check the inputs"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                items = int(target.shape[0]) if target.dim() > 0 else 1
                total_loss += float(loss.detach()) * items
                total_items += items
            if total_items == 0:
                raise ValueError("fit: the training loader yielded no batch")

            record: dict[str, float] = {
                "epoch": epoch,
                "train_loss": total_loss / total_items,
                "lr": opt.param_groups[0]["lr"],
            }
            value = math.nan
            if val_loader is not None:
                val = dict(evaluate_fn(model, val_loader))
                if metric is None:
                    if len(val) != 1:
                        raise ValueError(
                            f"metric must name one of the validation results {sorted(val)}"
                        )
                    metric = next(iter(val))
                if metric not in val:
                    raise ValueError(
                        f"metric {metric!r} is not among the validation results {sorted(val)}"
                    )
                value = float(val[metric])
                record.update({f"val_{k}": float(v) for k, v in val.items()})
            record["time"] = time.perf_counter() - start
            result.history.append(record)
            result.epochs_run = epoch

            if val_loader is None:
                result.best_epoch = epoch
            elif _is_better(value, result.best_value, direction, min_delta):
                result.best_epoch = epoch
                result.best_value = value
                result.best_metrics = {
                    k[4:]: v for k, v in record.items() if k.startswith("val_")
                }
                epochs_without_improvement = 0
                if checkpoint_path is not None:
                    save_checkpoint(
                        checkpoint_path, model, epoch=epoch, metric=metric or "",
                        value=value, direction=direction,
                    )
                    result.checkpoint = checkpoint_path
                else:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                epochs_without_improvement += 1

            if bar is not None:
                postfix = {"loss": f"{record['train_loss']:.4f}"}
                if val_loader is not None:
                    postfix[f"val_{metric}"] = f"{value:.4f}"
                bar.set_postfix(postfix)
            if log is not None:
                line = f"epoch {epoch:4d}  loss {record['train_loss']:.4f}  lr {record['lr']:.2e}"
                if val_loader is not None:
                    line += f"  val_{metric} {value:.4f}"
                log(line)

            if trial is not None and val_loader is not None:
                import optuna

                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} (val_{metric}={value:.4g})")

            if sched is not None:
                if sched_takes_metric:
                    if val_loader is not None and not math.isnan(value):
                        sched.step(value)
                else:
                    sched.step()
            if patience is not None and epochs_without_improvement >= patience:
                result.stopped_early = True
                break
            if min_lr is not None and opt.param_groups[0]["lr"] < min_lr:
                result.stopped_early = True
                break
            if time_limit is not None and time.perf_counter() - fit_start >= time_limit:
                result.stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()

    # Restore the best epoch's weights (without validation: keep, and save, the last ones).
    if val_loader is None:
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, epoch=result.epochs_run, metric="",
                            value=math.nan, direction=direction)
            result.checkpoint = checkpoint_path
    elif result.checkpoint is not None:
        load_checkpoint(result.checkpoint, model, map_location=device)
    elif best_state is not None:
        model.load_state_dict(best_state)
    return result
