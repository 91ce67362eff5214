"""GIN-Attention (Buehler 2025) vs plain multi-head attention of the same size: full-batch node
classification with the sparse (graph) form on Planetoid citation graphs.

``gattn train gin_attention --dataset Cora --attention gin``

Data sets (``--dataset``): ``Cora``, ``CiteSeer``, ``PubMed`` from Planetoid's raw files in
``<root>/planetoid/<Name>/raw`` (:func:`gattn.datasets.planetoid.load_planetoid`; the public
split: 20 labelled nodes per class, 500 validation and 1,000 test nodes), with a self-loop per
node unless ``--no-self-loops`` (a node then attends to itself as well as to its neighbours).

Model: :class:`gattn.models.GraphAttentionClassifier`: input projection, ``--layers`` pre-norm
blocks whose attention over the edges is GIN-Attention (``--attention gin``: no value
projection, ``MLP_h((1 + eps_h) X_h + A_h X_h)`` per head) or plain multi-head attention
(``--attention mha``, of the same parameter count), a feed-forward block, LayerNorm, a linear
head. Both run on the fused sparse kernel.

Protocol: one Adam step per epoch on the whole graph, validation every epoch; the epoch with the
best validation Micro-F1 (the selection metric ``val_f1_micro``: for one label per node it is the
accuracy) is evaluated on the test nodes. Reported: Micro-F1, Macro-F1 and accuracy
(scikit-learn), beside the majority-class level. The dense form on sequences and the Sparse GIN
adapter are measured by ``benchmarks/gin_attention_results.py`` (``sequence``, ``adapter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.pipelines.base import DataLoaders, Pipeline, Split
from gattn.pipelines.config import TrainConfig, option
from gattn.pipelines.latte import whole_graph_loader
from gattn.pipelines.registry import register_pipeline
from gattn.pipelines.task import TaskModule

ATTENTIONS = ("gin", "mha")


def _datasets() -> tuple[str, ...]:
    from gattn.datasets.planetoid import PLANETOID_DATASETS

    return PLANETOID_DATASETS


@dataclass
class GINAttentionConfig(TrainConfig):
    """Options of the GIN-Attention pipeline."""

    dataset: str = option("Cora", "Planetoid graph under <root>/planetoid/<Name>/raw", choices=_datasets(),
                          group="data")
    self_loops: bool = option(True, "add a self-loop per node", group="data")
    attention: str = option("gin", "attention of the blocks: GIN-Attention or plain multi-head attention",
                            choices=ATTENTIONS, group="model")
    hidden: int = option(64, "width (divisible by --heads)", low=1, group="model")
    heads: int = option(4, "attention heads", low=1, group="model")
    layers: int = option(2, "blocks", low=1, group="model")
    dropout: float = option(0.6, "dropout on the features, in every block and before the head", low=0, high=1,
                            high_open=True, group="model")
    mlp_ratio: float | None = option(None, "GIN-Attention: hidden ratio of the per-head MLPs (default: the "
                                     "block's choice, which matches plain attention's parameter count)", low=0,
                                     low_open=True, group="model")
    ffn_ratio: int = option(2, "feed-forward hidden ratio of the blocks", low=1, group="model")
    temperature: float = option(1.0, "attention temperature T", low=0, low_open=True, group="model")
    epochs: int = option(150, "maximum number of epochs (one full-batch step each)", low=1, group="training")
    lr: float = option(5e-3, "learning rate", low=0, low_open=True, group="training")
    weight_decay: float = option(5e-4, "weight decay", low=0, group="training")
    patience: int | None = option(None, "early stopping on the validation Micro-F1 (none: never)", low=1,
                                  group="training")
    threads: int | None = option(1, "torch and numba CPU threads (default 1)", low=1, group="hardware",
                                 run_control=True)


class NodeTask(TaskModule):
    """A full-batch step on the whole graph; the loss and metrics on the nodes of ``mask``."""

    def unpack(self, batch: Any) -> tuple[Tensor, Tensor, None]:
        mask = batch["mask"]
        return self.model(batch["x"], batch["edge_index"])[mask], batch["y"][mask], None


@register_pipeline("gin_attention")
class GINAttentionPipeline(Pipeline):
    """GIN-Attention vs plain attention of the same size, sparse form, Planetoid node classification."""

    Config = GINAttentionConfig
    metric = "f1_micro"

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def run_label(self, config: Any) -> str:
        return f"{config.dataset}-{config.attention}"

    def describe(self, config: Any) -> str:
        return (f"{config.attention} attention on {config.dataset}: layers={config.layers} hidden={config.hidden} "
                f"heads={config.heads} dropout={config.dropout:g} lr={config.lr:g} epochs<={config.epochs}")

    # --------------------------------------------------------------------------- data
    def prepare(self, config: Any) -> Any:
        from torch_geometric.utils import add_self_loops, remove_self_loops

        from gattn.datasets.planetoid import load_planetoid
        from gattn.datasets.root import resolve_root

        raw = resolve_root(config.root) / "planetoid" / config.dataset / "raw"
        key = (str(raw), config.self_loops)
        if key not in self._cache:
            data = load_planetoid(config.dataset, raw)
            if config.self_loops:  # exactly one per node, whatever the raw graph holds
                edge_index = remove_self_loops(data.edge_index)[0]
                data.edge_index = add_self_loops(edge_index, num_nodes=data.num_nodes)[0]
            self._cache[key] = data
        return self._cache[key]

    def datamodule(self, config: Any, data: Any, split: Split) -> DataLoaders:
        common = {"x": data.x, "edge_index": data.edge_index, "y": data.y}
        return DataLoaders(*(whole_graph_loader({**common, "mask": data[f"{part}_mask"]})
                             for part in ("train", "val", "test")))

    # -------------------------------------------------------------------------- model
    def build_model(self, config: Any, data: Any, split: Split) -> nn.Module:
        from gattn.models import GraphAttentionClassifier

        return GraphAttentionClassifier(
            data.num_features, config.hidden, int(data.y.max()) + 1, num_layers=config.layers, heads=config.heads,
            attention=config.attention, dropout=config.dropout, mlp_ratio=config.mlp_ratio,
            ffn_ratio=config.ffn_ratio, temperature=config.temperature)

    def loss(self, config: Any, data: Any) -> Any:
        return F.cross_entropy

    def metrics(self, config: Any, data: Any) -> dict[str, Any]:
        from gattn.metrics import accuracy, f1_macro, f1_micro

        return {"f1_micro": f1_micro, "f1_macro": f1_macro, "accuracy": accuracy}

    def task(self, config: Any, data: Any, model: nn.Module) -> TaskModule:
        return NodeTask(model, self.loss(config, data), self.metrics(config, data), config, monitor="f1_micro",
                        direction="maximize", meta={"pipeline": self.name})

    def chance(self, config: Any, data: Any) -> dict[str, float]:
        """Accuracy (= Micro-F1) on the test nodes of always predicting the majority class of the
        validation nodes (the training nodes are balanced)."""
        majority = int(torch.bincount(data.y[data.val_mask]).argmax())
        share = float((data.y[data.test_mask] == majority).float().mean())
        return {"test_f1_micro": share, "test_accuracy": share}

    # ---------------------------------------------------------------------- searching
    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, weight decay, dropout, width, heads; GIN-Attention also its temperature."""
        params: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-3, 2e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.8),
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "heads": trial.suggest_categorical("heads", [1, 2, 4, 8]),
        }
        if config.attention == "gin":
            params["temperature"] = trial.suggest_float("temperature", 0.5, 2.0, log=True)
        return params


__all__ = ["GINAttentionConfig", "GINAttentionPipeline", "NodeTask"]
