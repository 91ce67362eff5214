"""Multiple-instance learning pipeline: attention / Hopfield pooling over ragged bags.

``gattn train mil --dataset musk1 --pooling {hopfield,abmil,gated,acmil}``

Data sets (``--dataset``): ``musk1``, ``musk2``, ``elephant``, ``fox``, ``tiger`` from the data
root (see :mod:`gattn.datasets.mil` for the files and formats) and the embedded
``digit-bags`` (no download).

Models (``--pooling``), all on the same instance encoder (``--hidden``, Linear+ReLU layers):

* ``abmil`` - attention pooling of Ilse et al. 2018 (:class:`gattn.nn.mil.ABMIL`);
* ``gated`` - its gated attention;
* ``hopfield`` - Hopfield pooling of Ramsauer et al. 2021 (:class:`gattn.nn.mil.HopfieldMIL`);
* ``acmil`` - multiple branch attention with stochastic top-K masking and the diversity loss
  (:class:`gattn.nn.mil.ACMIL`).

Protocol: ``--folds``-fold cross-validation stratified by bag label (10, as the papers),
seeded, ``--repeats`` times. In each fold a stratified ``--val-fraction`` of the training
bags is held out for early stopping (on the validation loss, ``--patience`` epochs; with
``--val-fraction 0`` there is no validation split and every fold trains ``--epochs``); features
are standardised with the statistics of the training bags. The model is trained with
:func:`gattn.train.fit` on whole batches of ragged bags (``--batch-size`` bags per step, no
padding). ``run`` returns the mean and standard deviation over the folds of the test ROC-AUC
and accuracy (scikit-learn), and the mean validation ones. Unless ``--no-plot``, a PNG of the
instance attention of a few test bags of the last fold is written to ``runs_dir``; with
``--checkpoint`` (CLI) the last fold's weights are saved there.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.pipelines import parser_defaults, positive_int

NAME = "mil"
METRIC = "rocauc"
DIRECTION = "maximize"
DATASETS = ("musk1", "musk2", "elephant", "fox", "tiger", "digit-bags")
POOLINGS = ("hopfield", "abmil", "gated", "acmil")


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma separated widths, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="musk1", help="default musk1")
    data.add_argument("--folds", type=positive_int, default=10, help="CV folds (default 10)")
    data.add_argument(
        "--repeats", type=positive_int, default=1, help="repetitions of the CV with different seeds (default 1)"
    )
    data.add_argument(
        "--max-folds", type=positive_int, default=None, help="run only the first N folds (quick runs, tuning)"
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of training bags held out for early stopping (default 0.1; 0: no early stopping, train --epochs)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--pooling", choices=POOLINGS, default="abmil", help="default abmil")
    model.add_argument(
        "--hidden", type=_widths, default=(256, 128, 64), help="instance encoder widths (default 256,128,64)"
    )
    model.add_argument(
        "--attention",
        type=positive_int,
        default=64,
        help="attention MLP size / Hopfield association size per head (default 64)",
    )
    model.add_argument("--heads", type=positive_int, default=1, help="Hopfield heads")
    model.add_argument("--quantity", type=positive_int, default=1, help="Hopfield learned state patterns (default 1)")
    model.add_argument(
        "--beta", type=float, default=None, help="Hopfield inverse temperature (default 1/sqrt(attention))"
    )
    model.add_argument("--branches", type=positive_int, default=5, help="ACMIL branches")
    model.add_argument("--top-k", type=int, default=10, help="ACMIL masked top-K (default 10)")
    model.add_argument(
        "--mask-ratio", type=float, default=0.6, help="ACMIL share of the top-K masked in training (default 0.6)"
    )
    model.add_argument("--dropout", type=float, default=0.0, help="encoder dropout")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=100)
    train.add_argument("--batch-size", type=positive_int, default=4, help="bags per step")
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--patience", type=positive_int, default=20)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="cpu, cuda, ... (default auto)")
    train.add_argument("--verbose", action="store_true", help="print one line per fold")
    train.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the attention PNG")


def defaults() -> dict[str, Any]:
    """The config of the parser defaults alone (what ``run`` gets with no option)."""
    return parser_defaults(add_arguments)


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    full = {**defaults(), **{k: v for k, v in config.items() if v is not None}}
    if full["dataset"] not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {full['dataset']!r}")
    if full["pooling"] not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {full['pooling']!r}")
    if not 0.0 <= full["val_fraction"] < 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5), got {full['val_fraction']}")
    if not 0.0 <= full["dropout"] < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {full['dropout']}")
    if isinstance(full["hidden"], str):
        full["hidden"] = _widths(full["hidden"])
    return full


def search_space(trial: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Learning rate, weight decay, dropout, attention size; per pooling its own options."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "attention": trial.suggest_categorical("attention", [16, 32, 64, 128]),
    }
    pooling = config.get("pooling") or "abmil"
    if pooling == "hopfield":
        params["heads"] = trial.suggest_categorical("heads", [1, 2, 4])
        params["beta"] = trial.suggest_float("beta", 0.01, 2.0, log=True)
    if pooling == "acmil":
        params["branches"] = trial.suggest_int("branches", 2, 6)
        params["mask_ratio"] = trial.suggest_float("mask_ratio", 0.0, 0.8)
    return params


# ----------------------------------------------------------------------------------- model
def build_model(config: dict[str, Any], in_channels: int) -> nn.Module:
    from gattn.nn.mil import ABMIL, ACMIL, HopfieldMIL

    pooling, hidden = config["pooling"], tuple(config["hidden"])
    if pooling in ("abmil", "gated"):
        return ABMIL(in_channels, hidden, config["attention"], gated=pooling == "gated", dropout=config["dropout"])
    if pooling == "hopfield":
        return HopfieldMIL(
            in_channels,
            hidden,
            num_heads=config["heads"],
            hopfield_hidden=config["attention"],
            quantity=config["quantity"],
            scaling=config["beta"],
            dropout=config["dropout"],
        )
    return ACMIL(
        in_channels,
        hidden,
        config["attention"],
        branches=config["branches"],
        top_k=config["top_k"],
        mask_ratio=config["mask_ratio"],
        dropout=config["dropout"],
    )


def _forward(model: nn.Module, batch: Any, device: torch.device) -> tuple[Any, Tensor]:
    from gattn.nn.mil import ACMILOutput

    x, ptr, y = (t.to(device) for t in batch)
    out = model(x, ptr)
    if isinstance(out, ACMILOutput) and not model.training:
        out = out.bag_logits
    return out, y


def _loss(model: nn.Module):
    def loss_fn(output: Any, target: Tensor) -> Tensor:
        if hasattr(output, "bag_logits"):
            return model.loss(output, target)
        return F.binary_cross_entropy_with_logits(output, target)

    return loss_fn


def _scores(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    auc = roc_auc_score(y, logits) if 0 < y.sum() < y.size else math.nan
    return {"rocauc": float(auc), "accuracy": float(accuracy_score(y, logits > 0))}


def _evaluate_fn(model: nn.Module, loader: Any) -> dict[str, float]:
    from gattn.train import predict

    logits, target = predict(model, loader, forward=_forward)
    result = _scores(target.numpy(), logits.numpy())
    result["loss"] = float(F.binary_cross_entropy_with_logits(logits, target))
    return result


# ------------------------------------------------------------------------------------- run
def _nanmean(values) -> float:
    """Mean over the finite values (NaN, without a warning, when there is none)."""
    arr = np.asarray(list(values), dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_bags(config: dict[str, Any]):
    from gattn.datasets.mil import load_mil

    if config["dataset"] == "digit-bags":
        return load_mil("digit-bags", seed=config["seed"])
    return load_mil(config["dataset"], config.get("root"))


def run(config: dict[str, Any], trial: Any = None) -> dict[str, float]:
    """Cross-validate one configuration; mean (and std) of the fold metrics."""
    from sklearn.model_selection import train_test_split

    from gattn.datasets.mil import BagLoader, cross_validation_folds
    from gattn.train import fit, seed_everything

    config = resolve_config(config)
    bags = load_bags(config)
    device = _device(config["device"])
    folds = cross_validation_folds(bags.labels, config["folds"], config["seed"], config["repeats"])
    if config["max_folds"]:
        folds = folds[: config["max_folds"]]
    tests, vals, epochs = [], [], []
    model = test_bags = None
    for fold, (train_idx, test_idx) in enumerate(folds):
        seed_everything(config["seed"] * 1000 + fold)
        labels = bags.labels[train_idx].numpy()
        if config["val_fraction"] > 0:
            fit_idx, val_idx = train_test_split(
                train_idx, test_size=config["val_fraction"], stratify=labels, random_state=config["seed"] + fold
            )
        else:  # no early stopping: train for `epochs` on all the training bags
            fit_idx, val_idx = train_idx, None
        train_bags, mean, std = bags.subset(fit_idx).standardize()
        val_loader = None
        if val_idx is not None:
            val_loader = BagLoader(bags.subset(val_idx).standardize(mean, std)[0], 64)
        test_bags, _, _ = bags.subset(test_idx).standardize(mean, std)
        model = build_model(config, bags.num_features)
        result = fit(
            model,
            BagLoader(train_bags, config["batch_size"], shuffle=True, seed=config["seed"] + fold),
            val_loader,
            loss_fn=_loss(model),
            evaluate=_evaluate_fn if val_loader is not None else None,
            metric="loss",
            direction="minimize",
            lr=config["lr"],
            weight_decay=config["weight_decay"],
            epochs=config["epochs"],
            patience=config["patience"] if val_loader is not None else None,
            forward=_forward,
            device=device,
            progress=config.get("progress", False),
        )
        vals.append(result.best_metrics or {"rocauc": math.nan, "accuracy": math.nan, "loss": math.nan})
        tests.append(_evaluate_fn(model, BagLoader(test_bags, 64)))
        epochs.append(result.best_epoch)
        if config["verbose"]:
            print(f"fold {fold + 1}/{len(folds)}: test {tests[-1]} (best epoch {result.best_epoch})")
        if trial is not None:
            trial.report(_nanmean([v["rocauc"] for v in vals]), fold)
            if trial.should_prune():
                import optuna

                raise optuna.TrialPruned()
    out: dict[str, float] = {}
    for key in ("rocauc", "accuracy"):
        test_values = np.array([t[key] for t in tests])
        out[f"val_{key}"] = _nanmean([v[key] for v in vals])
        out[f"test_{key}"] = _nanmean(test_values)
        finite = test_values[~np.isnan(test_values)]
        out[f"test_{key}_std"] = float(finite.std()) if finite.size else math.nan
    out["val_loss"] = _nanmean([v["loss"] for v in vals])
    out["folds"] = float(len(folds))
    out["epochs"] = float(np.mean(epochs))
    if config.get("checkpoint") and model is not None:
        from gattn.train import save_checkpoint

        save_checkpoint(
            config["checkpoint"], model, fold=len(folds), dataset=config["dataset"], pooling=config["pooling"]
        )
    if config["plot"] and model is not None and trial is None:
        path = Path(config.get("runs_dir") or "runs") / f"mil_{config['dataset']}_{config['pooling']}_attention.png"
        plot_attention(model, test_bags, path)
    return out


@torch.no_grad()
def instance_attention(model: nn.Module, x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
    """Bag probabilities [B] and the attention weight of every instance [R] (a heatmap)."""
    from gattn.nn.mil import ACMIL

    was_training = model.training
    model.eval()
    try:
        if isinstance(model, ACMIL):
            out = model(x, ptr)
            logits, weights = out.bag_logits, out.bag_weights
        else:
            logits, weights = model(x, ptr, return_attention=True)
    finally:
        model.train(was_training)
    return torch.sigmoid(logits), weights


def plot_attention(model: nn.Module, bags: Any, path: str | Path, num_bags: int = 6) -> Path:
    """Bar plots of the instance attention of the first ``num_bags`` bags, written as a PNG.

    Bars of instances known to be positive (digit-bags) are drawn in red.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    part = bags.subset(list(range(min(num_bags, bags.num_bags))))
    device = next(model.parameters()).device
    probs, weights = instance_attention(model, part.instances.to(device), part.ptr.to(device))
    weights = weights.cpu()
    fig, axes = plt.subplots(1, part.num_bags, figsize=(2.6 * part.num_bags, 2.4), squeeze=False)
    for b, ax in enumerate(axes[0]):
        lo, hi = int(part.ptr[b]), int(part.ptr[b + 1])
        colors = "tab:blue"
        if part.instance_labels is not None:
            colors = ["tab:red" if v else "tab:blue" for v in part.instance_labels[lo:hi].tolist()]
        ax.bar(range(hi - lo), weights[lo:hi].numpy(), color=colors)
        ax.set_title(f"{part.bag_ids[b]}: y={int(part.labels[b])} p={float(probs[b]):.2f}", fontsize=8)
        ax.set_xlabel("instance", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("attention", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
