"""Graph Transformer (Dwivedi & Bresson 2020) and its baselines in one harness.

``gattn train graph_transformer --dataset ogbg-molbace --model gattn``

Data sets (``--dataset``): every OGB molecule graph-property set read offline from its raw
layout under the data root (``ogbg-molbace``, ``ogbg-molesol``, ``ogbg-molhiv``,
``ogbg-molpcba``, ... : the ``mol`` sets of OGB's table; scaffold split; metric and
evaluation by OGB's ``Evaluator``: ROC-AUC, AP or RMSE), and ``PATTERN`` / ``CLUSTER``
(benchmarking-gnns' SBM node classification, generated locally; weighted accuracy).

Models (``--model``): ``gattn`` (:class:`gattn.models.GraphTransformer`, this library's fused
sparse attention), ``gine`` (:class:`gattn.models.GINE`) and ``pyg_transformer`` (the same
block with PyG's ``TransformerConv``). All share the embedding, the Laplacian positional
encoding (computed once per data set, signs flipped at random on every training batch), the
readout, the loss and the training, so their numbers compare like with like.

Presets: an option left unset takes the data set's preset. PATTERN/CLUSTER follow the paper's
sparse graph + LapPE + BatchNorm configuration (10 layers, hidden 80, 8 heads, Adam lr 5e-4
halved after 10 epochs without validation improvement, stop at lr < 1e-6, batch 26 / 32, PE
dim 2 / 10, class-weighted cross-entropy); the molecule sets use 4 layers, hidden 64, PE dim 8,
the atom and bond embeddings and early stopping with patience 20. ``--num-graphs`` scales the
generated SBM sets down (published: 10,000 / 2,000 / 2,000 graphs for PATTERN and
10,000 / 1,000 / 1,000 for CLUSTER; the total is shared in the same proportions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch_geometric.data.lightning import LightningDataset

from gattn.pipelines.base import Pipeline, Split
from gattn.pipelines.config import TrainConfig, option
from gattn.pipelines.registry import register_pipeline

SBM_SETS = ("PATTERN", "CLUSTER")
MODELS = ("gattn", "gine", "pyg_transformer")


def _molecule_sets() -> tuple[str, ...]:
    """The OGB graph-property sets of molecules (OGB's table, shipped with the ogb package)."""
    from gattn.datasets.ogb import master_table

    table = master_table()
    return tuple(name for name in table.columns
                 if str(name).startswith("ogbg-") and str(table[name]["data type"]) == "mol")


DATASETS = (*SBM_SETS, *_molecule_sets())

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
}
#: OGB's metric names -> gattn.metrics names
_OGB_METRICS = {"rocauc": "rocauc", "ap": "ap", "rmse": "rmse", "acc": "accuracy"}


def preset(dataset: str) -> dict[str, Any]:
    return PRESETS.get(dataset, _MOL)


@dataclass
class GraphTransformerConfig(TrainConfig):
    """Options of the Graph Transformer pipeline (``None``: the data set's preset)."""

    dataset: str = option("CLUSTER", "data set", choices=DATASETS, group="data")
    num_graphs: int | None = option(None, "SBM: graphs generated over the three splits (default: the "
                                    "published 14,000 / 12,000)", low=10, group="data")
    data_seed: int = option(0, "SBM: seed of the generated graphs", group="data")
    model: str = option("gattn", "model", choices=MODELS, group="model")
    layers: int | None = option(None, "blocks", low=1, group="model")
    hidden: int | None = option(None, "width (divisible by --heads)", low=1, group="model")
    heads: int | None = option(None, "attention heads", low=1, group="model")
    norm: str | None = option(None, "normalisation", choices=("batch", "layer"), group="model")
    dropout: float | None = option(None, "dropout in the blocks", low=0, high=1, high_open=True, group="model")
    pe_dim: int | None = option(None, "Laplacian PE eigenvectors (0: none)", low=0, group="model")
    edge_features: bool | None = option(None, "use bond features (OGB molecules)", group="model")
    epochs: int | None = option(None, "maximum number of epochs", low=1, group="training")
    batch_size: int | None = option(None, "graphs per step", low=1, group="training")
    lr: float | None = option(None, "learning rate", low=0, low_open=True, group="training")
    weight_decay: float | None = option(None, "weight decay", low=0, group="training")
    scheduler: str | None = option(None, "learning-rate schedule", choices=("plateau", "cosine", "none"),
                                   group="training")
    lr_factor: float | None = option(None, "plateau factor", low=0, high=1, low_open=True, high_open=True,
                                     group="training")
    lr_patience: int | None = option(None, "plateau patience (epochs)", low=0, group="training")
    search_max_layers: int = option(6, "gattn tune: most layers tried", low=2, group="search")
    search_hidden: tuple[int, ...] = option((32, 64, 80), "gattn tune: widths tried", low=1, group="search")


@register_pipeline("graph_transformer")
class GraphTransformerPipeline(Pipeline):
    """Graph Transformer (Dwivedi & Bresson 2020) vs GINE vs PyG's TransformerConv on OGB and SBM sets."""

    Config = GraphTransformerConfig
    metric = "weighted_accuracy"  # of the default data set; see selection_metric

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, Any]] = {}

    # ----------------------------------------------------------------- configuration
    def resolve(self, config: GraphTransformerConfig) -> GraphTransformerConfig:
        values = preset(config.dataset)
        filled = {key: value for key, value in values.items() if getattr(config, key) is None}
        if config.pe_dim is None and "pe_dim" not in filled:
            filled["pe_dim"] = values.get("pe_dim", 8)
        return dataclasses.replace(config, **filled)

    def selection_metric(self, config: Any) -> str:
        if config.dataset in SBM_SETS:
            return "weighted_accuracy"
        from gattn.datasets.ogb import master_table

        return _OGB_METRICS[str(master_table()[config.dataset]["eval metric"])]

    def describe(self, config: Any) -> str:
        return (f"{config.model} on {config.dataset}: L={config.layers} hidden={config.hidden} heads={config.heads} "
                f"norm={config.norm} pe={config.pe_dim} edge={'on' if config.edge_features else 'off'} "
                f"lr={config.lr:g} batch={config.batch_size} epochs<={config.epochs}")

    def run_label(self, config: Any) -> str:
        return f"{config.dataset}-{config.model}"

    # --------------------------------------------------------------------------- data
    def prepare(self, config: Any) -> dict[str, Any]:
        """Splits with the Laplacian PE, cached per (data set, root, size, seed, PE dim)."""
        from gattn.datasets.root import resolve_root

        root = resolve_root(config.root)
        key = (config.dataset, str(root), config.num_graphs, config.data_seed, config.pe_dim)
        if key not in self._cache:
            if config.dataset in SBM_SETS:
                self._cache[key] = _load_sbm(config)
            else:
                self._cache[key] = _load_ogb(config, root)
        return self._cache[key]

    def datamodule(self, config: Any, data: dict[str, Any], split: Split) -> Any:
        # BatchNorm cannot train on a last batch of one graph with a single node: drop it then
        drop_last = len(data["train"]) % config.batch_size == 1
        return GraphData(data["train"], data["val"], data["test"], drop_last_train=drop_last,
                          batch_size=config.batch_size, num_workers=config.num_workers, pin_memory=False)

    # -------------------------------------------------------------------------- model
    def build_model(self, config: Any, data: dict[str, Any], split: Split) -> nn.Module:
        from gattn.models.baselines import GINE, PyGTransformer
        from gattn.models.graph_transformer import GraphTransformer

        common = dict(
            task=data["task"], pe_dim=config.pe_dim, norm=config.norm, dropout=config.dropout,
            edge_dim=3 if (config.edge_features and data["atom_encoder"]) else None,
            atom_encoder=data["atom_encoder"], num_embeddings=data["num_embeddings"], pe_sign_flip=False,
        )
        args = (None, config.hidden, data["out_channels"], config.layers)
        if config.model == "gine":
            return GINE(*args, **common)
        cls = GraphTransformer if config.model == "gattn" else PyGTransformer
        return cls(*args, heads=config.heads, **common)

    def loss(self, config: Any, data: dict[str, Any]) -> Any:
        from gattn.losses import masked_bce_with_logits, masked_mse, weighted_cross_entropy

        return {"binary": masked_bce_with_logits, "regression": masked_mse,
                "multiclass": weighted_cross_entropy}[data["task_type"]]

    def metrics(self, config: Any, data: dict[str, Any]) -> dict[str, Any]:
        from gattn.metrics import accuracy, weighted_accuracy

        if data["evaluator"] is None:
            return {"weighted_accuracy": weighted_accuracy, "accuracy": accuracy}
        evaluator, name = data["evaluator"], self.selection_metric(config)
        ogb_key = next(k for k, v in _OGB_METRICS.items() if v == name)

        def official(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
            result = evaluator.eval({"y_true": y_true.reshape(y_pred.shape).numpy(), "y_pred": y_pred.numpy()})
            return float(result[ogb_key])

        return {name: official}

    def task(self, config: Any, data: dict[str, Any], model: nn.Module) -> Any:
        task = super().task(config, data, model)
        if config.pe_dim > 0:
            from gattn.transforms.laplacian_pe import RandomSignFlip

            task.train_transform = RandomSignFlip()
        return task

    def chance(self, config: Any, data: dict[str, Any]) -> dict[str, float]:
        name = self.selection_metric(config)
        if data["task_type"] == "multiclass":
            return {f"test_{name}": 1.0 / data["out_channels"]}
        if data["task_type"] == "binary":
            return {f"test_{name}": 0.5} if name == "rocauc" else {}
        # regression: the RMSE of predicting the mean training label
        from gattn.metrics import rmse

        train_y = torch.cat([g.y for g in data["train"]])
        test_y = torch.cat([g.y for g in data["test"]])
        mean = torch.nanmean(train_y, dim=0, keepdim=True)
        return {f"test_{name}": rmse(test_y, mean.expand_as(test_y))}

    # ---------------------------------------------------------------------- searching
    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, weight decay, dropout, width, depth (and heads for the transformers)."""
        widths = list(config.search_hidden)
        if config.model != "gine" and any(w % 8 for w in widths):
            raise ValueError(f"--search-hidden widths must be multiples of 8 (heads 4 or 8), got {widths}")
        params: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-5, 1e-4]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "hidden": trial.suggest_categorical("hidden", widths),
            "layers": trial.suggest_int("layers", 2, config.search_max_layers),
        }
        if config.model != "gine":
            params["heads"] = trial.suggest_categorical("heads", [4, 8])
        return params


class GraphData(LightningDataset):
    """PyG's Lightning data module, with ``drop_last`` for the training loader only."""

    def __init__(self, train: Any, val: Any, test: Any, drop_last_train: bool, **kwargs: Any) -> None:
        super().__init__(train, val, test, **kwargs)
        self.drop_last_train = drop_last_train

    def dataloader(self, dataset: Any, **kwargs: Any) -> Any:
        if dataset is self.train_dataset:
            kwargs["drop_last"] = self.drop_last_train
        return super().dataloader(dataset, **kwargs)


def _add_pe(graphs: list, pe_dim: int) -> list:
    if pe_dim <= 0:
        return graphs
    from gattn.transforms.laplacian_pe import LaplacianPE

    return LaplacianPE(pe_dim).apply(graphs)


def _load_ogb(config: Any, root: Path) -> dict[str, Any]:
    from gattn.datasets.ogb import OGBGraphPropDataset, evaluator

    # The data root holds the OGB folders under ogb/ (<root>/ogb/ogbg_molbace); a root that is
    # itself the OGB folder works too.
    if (root / "ogb").is_dir():
        root = root / "ogb"
    dataset = OGBGraphPropDataset(config.dataset, root)
    split = dataset.get_idx_split()
    graphs = _add_pe([dataset[i] for i in range(len(dataset))], config.pe_dim)
    parts = {part: [graphs[int(i)] for i in split[key]]
             for part, key in (("train", "train"), ("val", "valid"), ("test", "test"))}
    task_type = "regression" if "regression" in dataset.task_type else "binary"
    return dict(parts, task="graph", out_channels=int(dataset.num_tasks), num_embeddings=None,
                atom_encoder=True, task_type=task_type, evaluator=evaluator(config.dataset))


def _load_sbm(config: Any) -> dict[str, Any]:
    from gattn.datasets.sbm import SBMDataset

    parts = {}
    for split in ("train", "val", "test"):
        dataset = SBMDataset(config.dataset, split, num_graphs=config.num_graphs, seed=config.data_seed)
        parts[split] = _add_pe([dataset[i] for i in range(len(dataset))], config.pe_dim)
    graphs = [g for part in parts.values() for g in part]
    num_classes = int(max(int(g.y.max()) for g in graphs)) + 1
    num_ids = int(max(int(g.x.max()) for g in graphs)) + 1
    return dict(parts, task="node", out_channels=num_classes, num_embeddings=num_ids,
                atom_encoder=False, task_type="multiclass", evaluator=None)
