"""Graph Transformer pipeline (Dwivedi & Bresson, 2020) and its baselines in one harness.

Data sets (``--dataset``):

=================  ======  ====================  ===========================================
name               task    metric                source
=================  ======  ====================  ===========================================
``ogbg-molbace``   graph   ROC-AUC (max)         OGB raw files, scaffold split, OGB Evaluator
``ogbg-molesol``   graph   RMSE (min)            OGB raw files, scaffold split, OGB Evaluator
``PATTERN``        node    weighted acc. (max)   SBM graphs generated locally (benchmarking-gnns)
``CLUSTER``        node    weighted acc. (max)   SBM graphs generated locally (benchmarking-gnns)
=================  ======  ====================  ===========================================

Models (``--model``): ``gattn`` (:class:`gattn.models.GraphTransformer`, the fused sparse
attention of this library), ``gine`` (:class:`gattn.models.baselines.GINE`) and
``pyg_transformer`` (:class:`gattn.models.baselines.PyGTransformer`: the same block with
PyG's ``TransformerConv``). All three share the embedding, the Laplacian positional encoding,
the readout, the loss and this training loop, so their numbers compare like with like.

The Laplacian PE (``--pe-dim`` eigenvectors) is computed once per data set, batched
(:meth:`gattn.transforms.LaplacianPE.apply`), and kept in memory for the following runs of the
same process (an Optuna study reuses it); the eigenvector signs are flipped at random on
every training batch (:class:`gattn.transforms.RandomSignFlip`, per graph and eigenvector).

Defaults (an option left unset takes the value of the data set's preset): the SBM presets are
the paper's *sparse graph + LapPE + BatchNorm* configuration (10 layers, hidden 80, 8 heads,
Adam lr 5e-4 halved after 10 epochs without validation improvement, stop at lr < 1e-6,
batch 26 (PATTERN) / 32 (CLUSTER), PE dim 2 / 10, weighted cross-entropy); the molecule presets
are smaller (4 layers, hidden 64, PE dim 8, early stopping with patience 20) and use OGB's
atom and bond encoders. ``--num-graphs`` scales the generated SBM sets down (the published
splits are 10,000 / 2,000 / 2,000 graphs for PATTERN and 10,000 / 1,000 / 1,000 for CLUSTER;
``--num-graphs`` is the total, shared in the same proportions).

Losses: masked BCE-with-logits (binary OGB tasks; NaN labels ignored), masked MSE (OGB
regression), and benchmarking-gnns' class-weighted cross-entropy (SBM: each class weighted by
the share of the batch's nodes *not* in it).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.pipelines import parser_defaults, positive_int

NAME = "graph_transformer"
METRIC = "weighted_accuracy"  # for the default data set; see metric(config)
DIRECTION = "maximize"

DATASETS = ("ogbg-molbace", "ogbg-molesol", "PATTERN", "CLUSTER")
MODELS = ("gattn", "gine", "pyg_transformer")

_METRICS = {
    "ogbg-molbace": ("rocauc", "maximize"),
    "ogbg-molesol": ("rmse", "minimize"),
    "PATTERN": ("weighted_accuracy", "maximize"),
    "CLUSTER": ("weighted_accuracy", "maximize"),
}

_SBM = dict(layers=10, hidden=80, heads=8, norm="batch", lr=5e-4, weight_decay=0.0, dropout=0.0,
            epochs=1000, patience=None, scheduler="plateau", lr_factor=0.5, lr_patience=10,
            min_lr=1e-6, edge_features=False)
_MOL = dict(layers=4, hidden=64, heads=8, norm="batch", lr=1e-3, weight_decay=0.0, dropout=0.1,
            epochs=100, patience=20, scheduler="plateau", lr_factor=0.5, lr_patience=10,
            min_lr=1e-5, edge_features=True, pe_dim=8, batch_size=32)
#: per data set, the value of every option left unset
PRESETS: dict[str, dict[str, Any]] = {
    "PATTERN": {**_SBM, "pe_dim": 2, "batch_size": 26},
    "CLUSTER": {**_SBM, "pe_dim": 10, "batch_size": 32},
    "ogbg-molbace": dict(_MOL),
    "ogbg-molesol": dict(_MOL),
}


def metric(config: dict[str, Any]) -> str:
    """The selection metric of ``config["dataset"]``."""
    return _METRICS[_dataset(config)][0]


def direction(config: dict[str, Any]) -> str:
    """``"maximize"`` or ``"minimize"`` for ``config["dataset"]``."""
    return _METRICS[_dataset(config)][1]


def _dataset(config: dict[str, Any]) -> str:
    name = config.get("dataset") or "CLUSTER"
    if name not in _METRICS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    return name


# ------------------------------------------------------------------------------- options
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline's options; ``None`` defaults are filled from :data:`PRESETS`."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="CLUSTER",
                      help="data set (default CLUSTER)")
    data.add_argument("--num-graphs", type=positive_int, default=None,
                      help="SBM: graphs to generate over the three splits, shared as the "
                           "published splits (default: PATTERN 14000, CLUSTER 12000)")
    data.add_argument("--data-seed", type=int, default=0,
                      help="SBM: seed of the generated graphs (default 0)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=MODELS, default="gattn", help="default gattn")
    model.add_argument("--layers", type=positive_int, default=None)
    model.add_argument("--hidden", type=positive_int, default=None)
    model.add_argument("--heads", type=positive_int, default=None)
    model.add_argument("--norm", choices=("batch", "layer"), default=None)
    model.add_argument("--dropout", type=float, default=None)
    model.add_argument("--pe-dim", type=int, default=None,
                      help="Laplacian PE eigenvectors (0: none)")
    edge = model.add_mutually_exclusive_group()
    edge.add_argument("--edge-features", dest="edge_features", action="store_true",
                      default=None, help="use bond features (OGB molecules; default on)")
    edge.add_argument("--no-edge-features", dest="edge_features", action="store_false")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=None)
    train.add_argument("--batch-size", type=positive_int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--weight-decay", type=float, default=None)
    train.add_argument("--patience", type=positive_int, default=None,
                       help="early stopping patience in epochs (SBM preset: none)")
    train.add_argument("--scheduler", choices=("plateau", "cosine", "none"), default=None)
    train.add_argument("--lr-factor", type=float, default=None,
                       help="ReduceLROnPlateau factor (default 0.5)")
    train.add_argument("--lr-patience", type=int, default=None,
                       help="ReduceLROnPlateau patience (default 10)")
    train.add_argument("--min-lr", type=float, default=None,
                       help="stop when the learning rate falls below this")
    train.add_argument("--max-time", type=float, default=None,
                       help="stop training after this many seconds (benchmarking-gnns' max_time)")
    train.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads (default: torch's choice)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto)")
    train.add_argument("--verbose", action="store_true", help="print one line per epoch")
    search = parser.add_argument_group("search space (gattn tune)")
    search.add_argument("--search-max-layers", type=positive_int, default=6,
                        help="largest number of layers tried (default 6)")
    search.add_argument("--search-hidden", default="32,64,80",
                        help="comma-separated widths tried (default 32,64,80)")


def defaults() -> dict[str, Any]:
    """The config of the parser defaults alone (what ``run`` gets with no option)."""
    return parser_defaults(add_arguments)


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every unset (``None`` or missing) option taken from the preset."""
    full = {**defaults(), **{k: v for k, v in config.items() if v is not None}}
    preset = PRESETS[_dataset(full)]
    for key, value in preset.items():
        if full.get(key) is None:
            full[key] = value
    if full["model"] not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {full['model']!r}")
    if full["pe_dim"] < 0:
        raise ValueError(f"pe_dim must be >= 0, got {full['pe_dim']}")
    if not 0.0 <= full["dropout"] < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {full['dropout']}")
    if full["lr"] <= 0:
        raise ValueError(f"lr must be positive, got {full['lr']}")
    if full["model"] != "gine" and full["hidden"] % full["heads"]:
        raise ValueError(
            f"hidden ({full['hidden']}) must be divisible by heads ({full['heads']})")
    return full


def search_space(trial: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Learning rate, weight decay, dropout, width, depth (and heads for the transformers)."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-5, 1e-4]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "hidden": trial.suggest_categorical("hidden", _widths(config)),
        "layers": trial.suggest_int("layers", 2, max(2, int(config.get("search_max_layers")
                                                            or 6))),
    }
    if config.get("model", "gattn") != "gine":
        params["heads"] = trial.suggest_categorical("heads", [4, 8])
    return params


def _widths(config: dict[str, Any]) -> list[int]:
    text = str(config.get("search_hidden") or "32,64,80")
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"search_hidden must be comma-separated ints, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise ValueError(f"search_hidden must list positive widths, got {text!r}")
    if config.get("model", "gattn") != "gine" and any(w % 8 for w in widths):
        raise ValueError(f"search_hidden widths must be multiples of 8 (heads 4 or 8), got {text!r}")
    return widths


# ------------------------------------------------------------------------------------ data
@dataclass
class _Data:
    train: list
    val: list
    test: list
    task: str  # "graph" | "node"
    out_channels: int
    num_embeddings: int | None  # SBM node ids
    atom_encoder: bool  # OGB molecules
    task_type: str  # "binary", "regression", "multiclass"
    evaluator: Any = None  # OGB Evaluator or None


_CACHE: dict[tuple, _Data] = {}


def _add_pe(graphs: list, pe_dim: int) -> list:
    if pe_dim <= 0:
        return graphs
    from gattn.transforms.laplacian_pe import LaplacianPE

    return LaplacianPE(pe_dim).apply(graphs)


def load_data(config: dict[str, Any]) -> _Data:
    """Splits with the Laplacian PE added, cached per (data set, root, size, seed, PE dim)."""
    name = config["dataset"]
    key = (name, str(config.get("root")), config.get("num_graphs"), config.get("data_seed"),
           config["pe_dim"])
    if key in _CACHE:
        return _CACHE[key]
    if name.startswith("ogbg-"):
        data = _load_ogb(name, config)
    else:
        data = _load_sbm(name, config)
    _CACHE[key] = data
    return data


def _load_ogb(name: str, config: dict[str, Any]) -> _Data:
    from gattn.cli import resolve_root
    from gattn.datasets.ogb import OGBGraphPropDataset, evaluator

    root = Path(resolve_root(config.get("root")))
    # The data root holds the OGB folders under ogb/ (../shared/data/ogb/ogbg_molbace);
    # a root that is itself the OGB folder works too.
    if (root / "ogb").is_dir():
        root = root / "ogb"
    dataset = OGBGraphPropDataset(name, root)
    split = dataset.get_idx_split()
    graphs = _add_pe([dataset[i] for i in range(len(dataset))], config["pe_dim"])
    parts = [[graphs[int(i)] for i in split[part]] for part in ("train", "valid", "test")]
    task_type = "regression" if "regression" in dataset.task_type else "binary"
    return _Data(*parts, task="graph", out_channels=int(dataset.num_tasks), num_embeddings=None,
                 atom_encoder=True, task_type=task_type, evaluator=evaluator(name))


def _load_sbm(name: str, config: dict[str, Any]) -> _Data:
    from gattn.datasets.sbm import SBMDataset

    total = config.get("num_graphs")
    if total is not None and total < 10:
        raise ValueError(f"num_graphs must be >= 10 (three splits), got {total}")
    seed = int(config.get("data_seed") or 0)
    parts = []
    for split in ("train", "val", "test"):
        dataset = SBMDataset(name, split, num_graphs=total, seed=seed)
        parts.append(_add_pe([dataset[i] for i in range(len(dataset))], config["pe_dim"]))
    num_classes = int(max(int(g.y.max()) for part in parts for g in part)) + 1
    num_ids = int(max(int(g.x.max()) for part in parts for g in part)) + 1
    return _Data(*parts, task="node", out_channels=num_classes, num_embeddings=num_ids,
                 atom_encoder=False, task_type="multiclass")


# ---------------------------------------------------------------------------- model, loss
def build_model(config: dict[str, Any], data: _Data) -> nn.Module:
    """The ``config["model"]`` network for ``data`` (signs are flipped by the loop)."""
    from gattn.models.baselines import GINE, PyGTransformer
    from gattn.models.graph_transformer import GraphTransformer

    common = dict(
        task=data.task, pe_dim=config["pe_dim"], norm=config["norm"], dropout=config["dropout"],
        edge_dim=3 if (config["edge_features"] and data.atom_encoder) else None,
        atom_encoder=data.atom_encoder, num_embeddings=data.num_embeddings, pe_sign_flip=False,
    )
    args = (None, config["hidden"], data.out_channels, config["layers"])
    if config["model"] == "gine":
        return GINE(*args, **common)
    cls = GraphTransformer if config["model"] == "gattn" else PyGTransformer
    return cls(*args, heads=config["heads"], **common)


def masked_bce_with_logits(output: Tensor, target: Tensor) -> Tensor:
    """BCE with logits over the labelled entries (NaN labels ignored, as OGB)."""
    target = target.view(output.shape).to(output.dtype)
    labelled = ~torch.isnan(target)
    return F.binary_cross_entropy_with_logits(output[labelled], target[labelled])


def masked_mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the labelled entries (NaN labels ignored)."""
    target = target.view(output.shape).to(output.dtype)
    labelled = ~torch.isnan(target)
    return F.mse_loss(output[labelled], target[labelled])


def weighted_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    r"""benchmarking-gnns' SBM loss: cross-entropy with class weights from the batch,

    .. math:: w_c = \frac{V - n_c}{V}\,[n_c > 0],

    :math:`V` the number of nodes of the batch and :math:`n_c` those of class :math:`c`.
    """
    target = target.view(-1).long()
    counts = torch.bincount(target, minlength=output.size(1)).to(output.dtype)
    total = target.numel()
    weight = (total - counts) / total * (counts > 0).to(output.dtype)
    return F.cross_entropy(output, target, weight=weight)


def loss_function(data: _Data):
    return {"binary": masked_bce_with_logits, "regression": masked_mse,
            "multiclass": weighted_cross_entropy}[data.task_type]


def make_evaluate(data: _Data, device: torch.device, name: str):
    """``(model, loader) -> {metric: value}`` for ``data`` (OGB's Evaluator for OGB sets)."""
    from gattn.metrics import accuracy, weighted_accuracy
    from gattn.train import predict

    def evaluate(model: nn.Module, loader) -> dict[str, float]:
        output, target = predict(model, loader, device=device)
        if data.evaluator is not None:
            result = data.evaluator.eval({"y_true": target.view(output.shape).numpy(),
                                          "y_pred": output.numpy()})
            return {k: float(v) for k, v in result.items()}
        return {"weighted_accuracy": weighted_accuracy(target, output),
                "accuracy": accuracy(target, output)}

    return evaluate


def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------ run
def run(config: dict[str, Any], trial: Any = None) -> dict[str, float]:
    """Train ``config["model"]`` on ``config["dataset"]``; metrics of the best epoch.

    Returns ``val_<metric>``/``test_<metric>`` (and ``val_accuracy``/``test_accuracy`` on the
    SBM sets), ``best_epoch``, ``epochs``, ``train_loss``, ``num_params``, ``time_s``.
    """
    from torch_geometric.loader import DataLoader

    from gattn.train import fit, seed_everything
    from gattn.transforms.laplacian_pe import RandomSignFlip

    config = resolve_config(config)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    name = config["dataset"]
    metric_name = metric(config)
    device = _device(config.get("device"))
    data = load_data(config)

    seed_everything(int(config["seed"]))
    model = build_model(config, data).to(device)
    batch_size = config["batch_size"]
    # BatchNorm cannot train on a last batch of one graph's single node; drop such a batch.
    drop_last = len(data.train) % batch_size == 1
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True,
                              drop_last=drop_last)
    val_loader = DataLoader(data.val, batch_size=batch_size)
    test_loader = DataLoader(data.test, batch_size=batch_size)
    evaluate = make_evaluate(data, device, name)
    sign_flip = RandomSignFlip() if config["pe_dim"] > 0 else None

    start = time.perf_counter()
    result = fit(
        model, train_loader, val_loader,
        loss_fn=loss_function(data), evaluate=evaluate, metric=metric_name,
        direction=direction(config), lr=config["lr"], weight_decay=config["weight_decay"],
        epochs=config["epochs"], patience=config["patience"],
        scheduler=None if config["scheduler"] == "none" else config["scheduler"],
        scheduler_factor=config["lr_factor"], scheduler_patience=config["lr_patience"],
        min_lr=config["min_lr"], time_limit=config.get("max_time"),
        checkpoint=config.get("checkpoint"), trial=trial,
        batch_transform=sign_flip, device=device, progress=config.get("progress"),
        log=print if config.get("verbose") else None,
    )
    elapsed = time.perf_counter() - start
    val = evaluate(model, val_loader)
    test = evaluate(model, test_loader)
    out: dict[str, float] = {f"val_{k}": v for k, v in val.items()}
    out.update({f"test_{k}": v for k, v in test.items()})
    out.update(
        best_epoch=float(result.best_epoch), epochs=float(result.epochs_run),
        train_loss=float(result.history[result.best_epoch - 1]["train_loss"]),
        num_params=float(sum(p.numel() for p in model.parameters())), time_s=elapsed,
    )
    if math.isnan(out[f"val_{metric_name}"]):
        raise FloatingPointError(f"val_{metric_name} is NaN")
    return out


def describe(config: dict[str, Any]) -> str:
    """One line naming the resolved configuration (for logs and tables)."""
    c = resolve_config(config)
    return (f"{c['model']} on {c['dataset']}: L={c['layers']} hidden={c['hidden']} "
            f"heads={c['heads']} norm={c['norm']} pe={c['pe_dim']} "
            f"edge={'on' if c['edge_features'] else 'off'} lr={c['lr']:g} "
            f"batch={c['batch_size']} epochs<={c['epochs']}")


__all__ = [
    "DATASETS", "DIRECTION", "METRIC", "MODELS", "NAME", "PRESETS", "add_arguments",
    "build_model", "defaults", "describe", "direction", "load_data", "masked_bce_with_logits",
    "masked_mse", "metric", "resolve_config", "run", "search_space", "weighted_cross_entropy",
]
