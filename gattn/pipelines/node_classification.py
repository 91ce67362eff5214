"""Node classification on one large graph: neighbour-sampled training, layer-wise inference.

``gattn train node_classification --dataset random --conv gattn`` (an ogbn-arxiv-sized random
graph) or ``--dataset ogbn-arxiv`` (its raw OGB files under the data root; time split).

Training batches are neighbour samples of the training nodes (``--fanout`` neighbours per hop
and layer, ``--batch-size`` seed nodes: PyG's ``NeighborLoader`` when its backend is installed,
else :mod:`gattn.sampling`), on which every layer runs on a bipartite block
(:class:`gattn.models.node_gnn.NodeGNN`); ``--full-batch`` trains on the whole graph instead.
Validation and test run inference over the whole graph layer by layer, in mini-batches of
``--inference-batch-size`` destinations with all their neighbours, and score the validation
or test nodes (accuracy, as OGB does for ogbn-arxiv). Layers (``--conv``): ``gattn``
(:class:`gattn.nn.GraphTransformerConv`), ``transformer`` (PyG's ``TransformerConv``), ``gat``
(PyG's ``GATConv``). Trains on one process (the graph and its sampler are not sharded).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gattn.pipelines.base import DataLoaders, Pipeline, Split
from gattn.pipelines.config import ConfigError, TrainConfig, option
from gattn.pipelines.registry import register_pipeline
from gattn.pipelines.task import TaskModule
from gattn.sampling import hop_counts

CONVS = ("gattn", "transformer", "gat")
_ARXIV = (169_343, 1_166_243, 128, 40)


@dataclass
class NodeClassificationConfig(TrainConfig):
    dataset: str = option("random", "ogbn-arxiv (raw OGB files under the data root) or random (a random graph "
                          "of --nodes / --edges)", choices=("ogbn-arxiv", "random"), group="data")
    nodes: int = option(_ARXIV[0], "random: nodes (default ogbn-arxiv's)", low=2, group="data")
    edges: int = option(_ARXIV[1], "random: directed edges (default ogbn-arxiv's)", low=1, group="data")
    features: int = option(_ARXIV[2], "random: node features", low=1, group="data")
    classes: int = option(_ARXIV[3], "random: classes", low=2, group="data")
    data_seed: int = option(0, "random: seed of the graph", group="data")
    conv: str = option("gattn", "attention layer", choices=CONVS, group="model")
    layers: int = option(2, "layers (= sampling hops)", low=1, group="model")
    hidden: int = option(64, "width (divisible by --heads)", low=1, group="model")
    heads: int = option(4, "attention heads", low=1, group="model")
    dropout: float = option(0.1, "dropout on every layer's input", low=0, high=1, high_open=True, group="model")
    fanout: tuple[int, ...] = option((10, 5), "neighbours sampled per node at each hop, one per layer (-1: all)",
                                     group="training")
    full_batch: bool = option(False, "train on the whole graph at every step instead of sampled mini-batches",
                              group="training")
    checkpoint: bool = option(False, "activation checkpointing: each layer keeps only its input and computes its "
                              "forward again in the backward pass (less memory, one more forward per layer)",
                              group="training")
    batch_size: int = option(1024, "seed nodes per mini-batch", low=1, group="training")
    inference_batch_size: int = option(4096, "destination nodes per batch of the layer-wise inference", low=1,
                                       group="training")
    epochs: int = option(10, "maximum number of epochs", low=1, group="training")
    lr: float = option(1e-3, "learning rate", low=0, low_open=True, group="training")


class NodeTask(TaskModule):
    """Trains on sampled blocks (or the whole graph) and evaluates by layer-wise inference."""

    graph: Any = None
    inference_loader: Any = None

    def unpack(self, batch: Any) -> tuple[Tensor, Tensor, None]:
        graph = self.graph
        if isinstance(batch, str):  # "val" / "test": every node layer by layer, then that set's nodes
            mask = graph[f"{batch}_mask"]
            logits = self.model.inference(graph.x, self.inference_loader, device=self.device)
            return logits[mask].to(self.device), graph.y[mask].to(self.device), None
        if hasattr(batch, "batch_size"):  # a neighbour-sampled batch: its seeds come first
            out = self.model(batch.x, batch.edge_index, *hop_counts(batch, self.model.num_layers))
            return out[:batch.batch_size], batch.y[:batch.batch_size], None
        out = self.model(batch.x, batch.edge_index)
        return out[batch.train_mask], batch.y[batch.train_mask], None


class _Once:
    """A loader of one batch (a list would read as several loaders to Lightning)."""

    def __init__(self, item: Any) -> None:
        self.item = item

    def __iter__(self) -> Any:
        yield self.item

    def __len__(self) -> int:
        return 1


@register_pipeline("node_classification")
class NodeClassificationPipeline(Pipeline):
    """Node classification on a large graph: gattn's Graph Transformer layer vs PyG's
    TransformerConv and GATConv, neighbour-sampled training, layer-wise inference."""

    Config = NodeClassificationConfig
    metric = "accuracy"

    def resolve(self, config: Any) -> Any:
        if len(config.fanout) != config.layers:
            raise ConfigError(f"--fanout needs one count per layer ({config.layers}), got {list(config.fanout)}")
        if any(k == 0 or k < -1 for k in config.fanout):
            raise ConfigError(f"--fanout counts must be positive or -1 (all), got {list(config.fanout)}")
        if config.hidden % config.heads:
            raise ConfigError(f"--hidden ({config.hidden}) must be divisible by --heads ({config.heads})")
        from gattn.pipelines.runner import processes_per_run

        if processes_per_run(config) > 1:
            raise ConfigError("node_classification trains on one process: give --devices 1")
        return dataclasses.replace(config)

    def describe(self, config: Any) -> str:
        size = "" if config.dataset != "random" else f" ({config.nodes} nodes, {config.edges} edges)"
        mode = "full batch" if config.full_batch else f"fanout {list(config.fanout)} batch {config.batch_size}"
        mode += " checkpointed" if config.checkpoint else ""
        return (f"{config.conv} on {config.dataset}{size}: L={config.layers} hidden={config.hidden} "
                f"heads={config.heads} {mode} lr={config.lr:g} epochs<={config.epochs}")

    def run_label(self, config: Any) -> str:
        return f"{config.dataset}-{config.conv}"

    def prepare(self, config: Any) -> Any:
        from gattn.datasets.ogbn import load_ogbn_arxiv, random_graph
        from gattn.datasets.root import resolve_root

        if config.dataset == "ogbn-arxiv":
            return load_ogbn_arxiv(resolve_root(config.root))
        return random_graph(config.nodes, config.edges, config.features, config.classes,
                            seed=config.data_seed)

    def splits(self, config: Any, data: Any) -> list[Split]:
        return [Split("run")]

    def datamodule(self, config: Any, data: Any, split: Split) -> DataLoaders:
        from gattn.sampling import neighbor_loader

        if config.full_batch:
            train: Any = _Once(data)
        else:
            train = neighbor_loader(data, config.fanout, input_nodes=data.train_mask, batch_size=config.batch_size,
                                    shuffle=True, seed=config.seed)
        return DataLoaders(train, _Once("val"), _Once("test"))

    def build_model(self, config: Any, data: Any, split: Split) -> nn.Module:
        from gattn.models.node_gnn import NodeGNN

        return NodeGNN(data.num_features, config.hidden, int(data.y.max()) + 1, num_layers=config.layers,
                       conv=config.conv, heads=config.heads, dropout=config.dropout, checkpoint=config.checkpoint)

    def loss(self, config: Any, data: Any) -> Any:
        return nn.functional.cross_entropy

    def task(self, config: Any, data: Any, model: nn.Module) -> TaskModule:
        from gattn.metrics import accuracy
        from gattn.sampling import neighbor_loader

        task = NodeTask(model, self.loss(config, data), {"accuracy": accuracy}, config, monitor="accuracy",
                        direction="maximize", meta={"pipeline": self.name})
        task.graph = data
        task.inference_loader = neighbor_loader(data, [-1], batch_size=config.inference_batch_size)
        return task

    def chance(self, config: Any, data: Any) -> dict[str, float]:
        counts = torch.bincount(data.y[data.train_mask])
        majority = int(counts.argmax())
        return {"test_accuracy": float((data.y[data.test_mask] == majority).float().mean())}

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
                "dropout": trial.suggest_float("dropout", 0.0, 0.5),
                "hidden": trial.suggest_categorical("hidden", [32, 64, 128])}
