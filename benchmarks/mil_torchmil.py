"""MIL: gattn's ABMIL against torchmil's ABMIL, on the same folds, side by side.

Both models are Ilse et al.'s MIL-benchmark network: the instance encoder fc-256, fc-128,
fc-64 (ReLU, then ``--dropout`` after each layer), attention pooling with an attention size of
64 (tanh), one logit. gattn's is
:class:`gattn.nn.ABMIL` on ragged bags (instances of a batch stacked, ``ptr``), torchmil's is
``torchmil.models.ABMIL`` with the same encoder as its ``feat_ext``, on bags padded by
``torchmil.data.pad_tensors`` with their mask (torchmil's own batching).

The folds are gattn's (:func:`gattn.datasets.mil.cross_validation_folds`, 10-fold stratified,
seeded); in each fold a stratified ``--val-fraction`` of the training bags is held out for
early stopping, exactly as the ``mil`` pipeline does, and the features are standardised with
:meth:`MILBags.standardize` fitted on the remaining training bags. This process writes the
standardised features of every fold and the split indices to one ``.npz`` file per data set;
each method then runs in its own process (torchmil in its own environment, made by
``benchmarks/peers/make_torchmil_env.sh``) and reads that file. Both run the same training
loop, the ``mil`` pipeline's protocol (Ilse et al.'s, :mod:`gattn.pipelines.mil`): Adam
(betas 0.9, 0.999), ``--lr`` 5e-4, ``--weight-decay`` 5e-3, binary cross-entropy on the logit,
``--batch-size`` 1 bag per step in a seeded random order, ``--epochs`` 100, and the weights of
the epoch with the lowest validation error + loss (``--monitor``; or the loss) restored for the
test fold (``--patience N`` stops a fold after N epochs without a better one; default: never).
One thread per process unless ``--threads`` (torch's, and
for gattn also its numba kernels': on a loaded machine their default, one thread per core,
costs far more in waiting than it gains on bags this small).

Printed per data set: test accuracy and ROC-AUC (mean +- std over the folds) of both, the
median time of one training epoch (forward, backward and optimiser steps over the training
bags of a fold, batching included; median over all epochs of all folds) and the ratios
(torchmil time / gattn time: above 1, gattn is faster; accuracy gattn / torchmil). A PNG of
the ratios goes to ``--chart``.

    bash benchmarks/peers/make_torchmil_env.sh          # once: benchmarks/peers/.venv-torchmil
    python benchmarks/mil_torchmil.py                   # musk1, musk2, elephant, 10 folds
    python benchmarks/mil_torchmil.py --datasets musk1 --batch-size 8 --epochs 50 --patience 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from benchmarks._common import fmt, print_table, run_child, write_ratio_chart

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / "benchmarks" / "peers" / ".venv-torchmil" / "bin" / "python"
METHODS = ("gattn", "torchmil")


# ---------------------------------------------------------------------------- the folds
def export_folds(name: str, path: Path, root: str | None, folds: int, seed: int, val_fraction: float) -> dict:
    """Write the standardised features of every fold and its split to ``path`` (.npz).

    The split and the standardisation are the ``mil`` pipeline's: folds of
    :func:`cross_validation_folds`, a stratified ``val_fraction`` of each training part held
    out (seed + fold), statistics fitted on the rest.
    """
    from sklearn.model_selection import train_test_split

    from gattn.datasets.mil import cross_validation_folds, load_mil

    bags = load_mil(name, root)
    arrays: dict[str, np.ndarray] = {"ptr": bags.ptr.numpy(), "labels": bags.labels.numpy()}
    for fold, (train_idx, test_idx) in enumerate(cross_validation_folds(bags.labels, folds, seed)):
        fit_idx, val_idx = train_test_split(
            train_idx,
            test_size=val_fraction,
            stratify=bags.labels[train_idx].numpy(),
            random_state=seed + fold,
        )
        _, mean, std = bags.subset(fit_idx).standardize()
        arrays[f"x{fold}"] = bags.standardize(mean, std)[0].instances.numpy()
        arrays[f"fit{fold}"], arrays[f"val{fold}"], arrays[f"test{fold}"] = fit_idx, val_idx, test_idx
    np.savez(path, **arrays)
    return {"bags": bags.num_bags, "instances": int(bags.ptr[-1]), "features": bags.num_features}


# ------------------------------------------------------------------------------ models
def build_gattn(in_channels: int, hidden: Sequence[int], attention: int,
                dropout: float = 0.0) -> tuple[torch.nn.Module, Callable]:
    """gattn's ABMIL and its forward on a list of bags (stacked rows + CSR ``ptr``)."""
    from gattn.nn import ABMIL

    model = ABMIL(in_channels, tuple(hidden), attention, dropout=dropout)

    def forward(bags: list[torch.Tensor]) -> torch.Tensor:
        sizes = torch.tensor([b.size(0) for b in bags])
        ptr = torch.zeros(len(bags) + 1, dtype=torch.long)
        torch.cumsum(sizes, 0, out=ptr[1:])
        return model(torch.cat(bags), ptr)

    return model, forward


def build_torchmil(in_channels: int, hidden: Sequence[int], attention: int,
                   dropout: float = 0.0) -> tuple[torch.nn.Module, Callable]:
    """torchmil's ABMIL with the same encoder as ``feat_ext``; bags padded by torchmil."""
    from torchmil.data import pad_tensors
    from torchmil.models import ABMIL

    layers: list[torch.nn.Module] = []
    size = in_channels
    for width in hidden:  # the same encoder as gattn.nn.mil_encoder
        layers += [torch.nn.Linear(size, width), torch.nn.ReLU()]
        if dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
        size = width
    model = ABMIL(in_shape=(in_channels,), att_dim=attention, feat_ext=torch.nn.Sequential(*layers))

    def forward(bags: list[torch.Tensor]) -> torch.Tensor:
        padded, mask = pad_tensors(bags)
        return model(padded, mask)

    return model, forward


BUILDERS = {"gattn": build_gattn, "torchmil": build_torchmil}


# ---------------------------------------------------------------------------- training
def _predict(forward: Callable, bags: list[torch.Tensor], chunk: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([forward(bags[i : i + chunk]) for i in range(0, len(bags), chunk)])


def selection_value(logits: torch.Tensor, labels: torch.Tensor, monitor: str) -> float:
    """The validation quantity that picks the best epoch: the BCE loss, or the classification
    error plus the loss (``error_loss``, Ilse et al.'s rule; gattn's pipeline computes it as
    ``gattn.pipelines.mil.error_plus_loss``, which the torchmil environment cannot import)."""
    import torch.nn.functional as F

    loss = float(F.binary_cross_entropy_with_logits(logits, labels))
    if monitor == "loss":
        return loss
    return float(((logits > 0).float() != labels).float().mean()) + loss


def train_fold(method: str, data: dict, fold: int, config: dict, epoch_times: list[float]) -> dict:
    """Train ``method``'s ABMIL on one fold: the test logits and labels, the best epoch."""
    import torch.nn.functional as F

    ptr, labels = data["ptr"], torch.from_numpy(data["labels"]).float()
    x = torch.from_numpy(data[f"x{fold}"])
    bags = [x[ptr[b] : ptr[b + 1]] for b in range(len(labels))]
    fit_idx, val_idx, test_idx = (torch.from_numpy(data[f"{part}{fold}"]) for part in ("fit", "val", "test"))
    torch.manual_seed(config["seed"] * 1000 + fold)
    model, forward = BUILDERS[method](x.size(1), config["hidden"], config["attention"], config["dropout"])
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config["lr"], betas=(0.9, 0.999), weight_decay=config["weight_decay"]
    )
    order = torch.Generator().manual_seed(config["seed"] + fold)
    best_value, best_state, best_epoch = float("inf"), None, 0
    for epoch in range(config["epochs"]):
        model.train()
        shuffled = fit_idx[torch.randperm(fit_idx.numel(), generator=order)]
        start = time.perf_counter()
        for i in range(0, shuffled.numel(), config["batch_size"]):
            batch = shuffled[i : i + config["batch_size"]]
            loss = F.binary_cross_entropy_with_logits(forward([bags[b] for b in batch.tolist()]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_times.append(time.perf_counter() - start)
        model.eval()
        val_logits = _predict(forward, [bags[b] for b in val_idx.tolist()])
        value = selection_value(val_logits, labels[val_idx], config["monitor"])
        if value < best_value:
            best_value, best_epoch = value, epoch + 1
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif config["patience"] is not None and epoch + 1 - best_epoch >= config["patience"]:
            break
    model.load_state_dict(best_state)
    model.eval()
    logits = _predict(forward, [bags[b] for b in test_idx.tolist()])
    return {
        "logits": logits.tolist(),
        "labels": labels[test_idx].tolist(),
        "best_epoch": best_epoch,
        "params": sum(p.numel() for p in model.parameters()),
    }


def child(spec: dict) -> dict:
    """One method on every fold of one exported data set (runs in its own process)."""
    torch.set_num_threads(spec["threads"])
    if spec["method"] == "gattn":  # gattn's numba kernels have their own thread pool
        from gattn.kernels import cpu

        cpu.set_num_threads(spec["threads"])
    data = dict(np.load(spec["data"]))
    folds = sum(1 for key in data if key.startswith("test"))
    epoch_times: list[float] = []
    results = [train_fold(spec["method"], data, fold, spec, epoch_times) for fold in range(folds)]
    out = {key: [r[key] for r in results] for key in ("logits", "labels", "best_epoch")}
    out["params"] = results[0]["params"]
    out["epoch_s"] = statistics.median(epoch_times)
    out["epochs_run"] = len(epoch_times)
    return out


# -------------------------------------------------------------------------------- main
def fold_metrics(result: dict) -> dict[str, list[float]]:
    """Test accuracy and ROC-AUC of every fold (scikit-learn), from a child's logits."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    out: dict[str, list[float]] = {"accuracy": [], "rocauc": []}
    for logits, labels in zip(result["logits"], result["labels"]):
        y, scores = np.asarray(labels) > 0.5, np.asarray(logits)
        out["accuracy"].append(float(accuracy_score(y, scores > 0)))
        out["rocauc"].append(float(roc_auc_score(y, scores)) if 0 < y.sum() < y.size else float("nan"))
    return out


def _mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return f"{arr.mean():.3f} +- {arr.std():.3f}" if arr.size else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="musk1,musk2,elephant")
    parser.add_argument("--root", default=None, help="data root (default: $GATTN_DATA, ../shared/data)")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=None, help="stop a fold after N epochs without a "
                        "better --monitor (default: train every epoch)")
    parser.add_argument("--monitor", choices=("error_loss", "loss"), default="error_loss",
                        help="validation quantity that picks the best epoch (default: error + loss)")
    parser.add_argument("--batch-size", type=int, default=1, help="bags per step (default 1, as Ilse et al.)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=5e-3)
    parser.add_argument("--dropout", type=float, default=0.5, help="after every encoder layer")
    parser.add_argument("--hidden", default="256,128,64", help="instance encoder widths")
    parser.add_argument("--attention", type=int, default=64, help="attention size (L)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--peer-python", default=str(PEER_PYTHON), help="the torchmil environment's python")
    parser.add_argument("--workdir", default=None, help="where the fold files go (default: a temporary folder)")
    parser.add_argument("--chart", default="runs/mil_torchmil.png")
    parser.add_argument("--json", default=None, help="also write every figure as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not Path(args.peer_python).is_file():
        raise SystemExit(
            f"torchmil environment not found ({args.peer_python}); "
            "make it with: bash benchmarks/peers/make_torchmil_env.sh"
        )
    config = {
        "seed": args.seed,
        "epochs": args.epochs,
        "patience": args.patience,
        "monitor": args.monitor,
        "dropout": args.dropout,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "hidden": [int(w) for w in args.hidden.split(",")],
        "attention": args.attention,
        "threads": args.threads,
    }
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mil_torchmil_"))
    workdir.mkdir(parents=True, exist_ok=True)
    datasets = args.datasets.split(",")
    results: dict[str, dict] = {}
    for name in datasets:
        path = workdir / f"{name}.npz"
        sizes = export_folds(name, path, args.root, args.folds, args.seed, args.val_fraction)
        results[name] = {"sizes": sizes}
        for method in METHODS:
            spec = {**config, "method": method, "data": str(path)}
            python = sys.executable if method == "gattn" else args.peer_python
            results[name][method] = run_child("benchmarks.mil_torchmil", spec, timeout=6 * 3600, python=python)
            done = results[name][method]
            summary = done.get("error") or {k: done[k] for k in ("params", "epoch_s", "epochs_run", "best_epoch")}
            print(f"{name} {method}: {summary}", flush=True)
    rows, speed, accuracy = [], [], []
    for name in datasets:
        ours, peer = results[name]["gattn"], results[name]["torchmil"]
        if "error" in ours or "error" in peer:
            rows.append([name, *(["failed"] * 7)])
            speed.append(None)
            accuracy.append(None)
            continue
        ours_m, peer_m = fold_metrics(ours), fold_metrics(peer)
        results[name]["metrics"] = {"gattn": ours_m, "torchmil": peer_m}
        speed.append(peer["epoch_s"] / ours["epoch_s"])
        accuracy.append(float(np.mean(ours_m["accuracy"])) / float(np.mean(peer_m["accuracy"])))
        rows.append(
            [
                name,
                _mean_std(ours_m["accuracy"]),
                _mean_std(peer_m["accuracy"]),
                _mean_std(ours_m["rocauc"]),
                _mean_std(peer_m["rocauc"]),
                fmt(ours["epoch_s"] * 1e3, 1),
                fmt(peer["epoch_s"] * 1e3, 1),
                f"{speed[-1]:.2f}x",
            ]
        )
    stop = f"patience {args.patience}" if args.patience else "no early stop"
    title = (
        f"ABMIL, gattn vs torchmil: {args.folds}-fold CV, batch {args.batch_size}, <= {args.epochs} epochs "
        f"(best by val {args.monitor}, {stop}), dropout {args.dropout:g}, wd {args.weight_decay:g}, "
        f"{args.threads} thread(s)"
    )
    header = [
        "data set",
        "acc gattn",
        "acc torchmil",
        "AUC gattn",
        "AUC torchmil",
        "ms/epoch gattn",
        "ms/epoch torchmil",
        "speed (torchmil/gattn)",
    ]
    print_table(title, header, rows)
    Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
    chart = write_ratio_chart(
        args.chart,
        f"ABMIL, gattn / torchmil: same {args.folds} folds, batch {args.batch_size}",
        datasets,
        {"speed vs torchmil (time per epoch)": speed, "accuracy vs torchmil": accuracy},
        ylabel="gattn / torchmil (higher is better)",
    )
    print(f"chart: {chart}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": config, "results": results}, indent=1))


if __name__ == "__main__":
    main()
