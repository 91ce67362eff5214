"""LATTE (Tran & Gao 2020) and HAN / HGT / R-GCN of the same width, full-batch node
classification on heterogeneous graphs in the HeCo layout.

``gattn train latte --dataset acm --model latte``

Data sets (``--dataset``): a HeCo-layout folder under ``<root>/hetero`` (``acm``, ``dblp``,
``imdb``, ``freebase``, ``aminer``), or the path of any folder in that layout
(:func:`gattn.datasets.load_heco`: every relation file present is read, with its reverse; the
target type is inferred). ``--split`` picks HeCo's ``train/val/test_<n>.npy`` (n labelled
nodes per class).

Models (``--model``), all on the same input encoder (a projection per featured node type, a
learned embedding for featureless types) and the same head, width ``--hidden``:
``latte`` (:class:`gattn.models.LATTE`: layer t attends over order-t meta-relations, layers
concatenated; ``--meta-weights structure`` weights them by path counts; ``--proximity-weight``
adds the proximity loss), ``hgt`` (PyG's ``HGTConv``), ``rgcn`` (PyG's ``RGCNConv``), ``han``
(PyG's ``HANConv`` on the first-order relations plus a self-loop relation per node type:
``HANConv`` has no root term, so without it a target node never sees its own features) and
``han-metapath`` (HAN on the meta-path graphs ``<t>...<t>.npz`` of the folder, as in its paper;
each node keeps at most ``--metapath-neighbours`` sampled neighbours per meta-path).

Protocol: one Adam step per epoch on the whole graph (or, with ``--fanout``, one per
mini-batch of ``--batch-size`` labelled target nodes with their sampled neighbourhoods:
:class:`gattn.sampling.HeteroNeighborBatches`, fan-outs per hop for every relation; validation
and test stay on the whole graph), validation every epoch, the epoch with the
best validation Macro-F1 (the selection metric, ``val_f1_macro``) is evaluated on the test
nodes; early stopping after ``--patience`` epochs without improvement. Reported: Micro-F1 and
Macro-F1 (scikit-learn) on validation and test, beside the majority-class level. LATTE runs
write the mean relation attention (beta) per node type and layer as a plot
(``beta_<dataset>.png``) and as JSON (``beta.json``) into the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gattn.pipelines.base import DataLoaders, Pipeline, Split
from gattn.pipelines.config import ConfigError, TrainConfig, option, option_flag
from gattn.pipelines.registry import register_pipeline
from gattn.pipelines.results import save_figure
from gattn.pipelines.task import TaskModule

MODELS = ("latte", "han", "hgt", "rgcn", "han-metapath")
#: per model, the value of ``--layers`` / ``--heads`` left unset (HAN: one layer, as in its paper)
DEFAULT_LAYERS = {"latte": 2, "han": 1, "han-metapath": 1, "hgt": 2, "rgcn": 2}
DEFAULT_HEADS = {"latte": 4, "han": 8, "han-metapath": 8, "hgt": 4, "rgcn": 1}


@dataclass
class LATTEConfig(TrainConfig):
    """Options of the LATTE pipeline."""

    dataset: str = option("acm", "a HeCo-layout folder under <root>/hetero (acm, dblp, imdb, freebase, aminer) "
                          "or the path of a folder in that layout", group="data", metavar="NAME|DIR")
    split: int = option(20, "labelled target nodes per class: HeCo's {train,val,test}_<n>.npy", low=1, group="data")
    model: str = option("latte", "model", choices=MODELS, group="model")
    hidden: int = option(64, "width of every layer (divisible by --heads)", low=1, group="model")
    layers: int | None = option(None, "layers (LATTE: the highest meta-relation order; default 2, HAN 1)", low=1,
                                group="model")
    heads: int | None = option(None, "attention heads (default: LATTE and HGT 4, HAN 8; R-GCN has none)", low=1,
                               group="model")
    dropout: float = option(0.5, "dropout on the inputs, between layers and before the head", low=0, high=1,
                            high_open=True, group="model")
    meta_weights: str = option("attention", "LATTE: weights of the composed meta-relations (the previous "
                               "layer's attention, or path counts)", choices=("attention", "structure"),
                               group="model")
    threshold: float | None = option(0.01, "LATTE: prune composed meta-relation entries below this weight "
                                     "(none: no threshold)", low=0, low_open=True, group="model")
    top_k: int | None = option(None, "LATTE: keep at most this many composed entries per node (none: no limit)",
                               low=1, group="model")
    proximity_weight: float = option(0.0, "LATTE: weight of the proximity (link) loss with negative sampling "
                                     "(0: off)", low=0, group="model")
    metapath_neighbours: int = option(32, "han-metapath: sampled neighbours kept per node and meta-path "
                                      "(0: all)", low=0, group="model")
    fanout: tuple[int, ...] | None = option(None, "mini-batch training: neighbours sampled per node, relation "
                                            "and hop (-1: all; LATTE with L layers reads L(L+1)/2 hops, the "
                                            "others L); none: one full-batch step per epoch",
                                            group="training")
    batch_size: int = option(256, "--fanout: labelled target nodes per mini-batch", low=1, group="training")
    epochs: int = option(100, "maximum number of epochs (one full-batch step each, or a pass over the training "
                         "nodes with --fanout)", low=1, group="training")
    lr: float = option(5e-3, "learning rate", low=0, low_open=True, group="training")
    weight_decay: float = option(1e-3, "weight decay", low=0, group="training")
    patience: int | None = option(50, "early stopping on the validation Macro-F1 (none: never)", low=1,
                                  group="training")
    threads: int | None = option(1, "torch and numba CPU threads (default 1)", low=1, group="hardware",
                                 run_control=True)
    plot: bool = option(True, "LATTE: write the relation-attention (beta) plot", group="output", run_control=True)


def dataset_folder(config: Any) -> Path:
    """The HeCo-layout folder of ``--dataset``: ``<root>/hetero/<name>`` for a known name, else
    the path itself.

    Args:
        config (LATTEConfig): the configuration (``dataset``, ``root``).
    """
    from gattn.datasets.hetero import HECO_DATASETS
    from gattn.datasets.root import resolve_root

    if config.dataset in HECO_DATASETS:
        return resolve_root(config.root) / "hetero" / config.dataset
    path = Path(config.dataset).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--dataset must be one of {', '.join(HECO_DATASETS)} (read from <root>/hetero/<name>) "
                          f"or an existing folder in the HeCo layout; got {config.dataset!r} (no such folder "
                          f"{path.resolve()})")
    return path


def sample_per_destination(edge_index: Tensor, k: int, seed: int) -> Tensor:
    """At most ``k`` incoming edges per destination, drawn uniformly (seeded).

    Args:
        edge_index (Tensor): the edges :math:`(2, E)`.
        k (int): the most incoming edges kept per destination.
        seed (int): the seed of the draw.
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.argsort(torch.rand(edge_index.size(1), generator=gen))
    order = order[torch.argsort(edge_index[1][order], stable=True)]
    dst = edge_index[1][order]
    rank = torch.arange(dst.numel()) - torch.searchsorted(dst, dst)
    return edge_index[:, order[rank < k]]


def model_graph(model: str, data: Any, metapath_neighbours: int = 32) -> dict[tuple[str, str, str], Tensor]:
    """The ``{edge type: edge_index}`` a model reads: the first-order relations; for ``han`` also a
    self-loop relation per node type; for ``han-metapath`` the meta-path graphs only, each
    sampled to ``metapath_neighbours`` per node (0: all).

    Args:
        model (str): ``--model`` (``"latte"``, ``"han"``, ``"han-metapath"``, ...).
        data (HeteroData): the graph.
        metapath_neighbours (int, optional): meta-path neighbours sampled per node (``0``: all).
            (default: ``32``)
    """
    from gattn.datasets.hetero import is_metapath

    metapaths = {e for e in data.edge_types if is_metapath(e[1])}
    if model == "han-metapath":
        if not metapaths:
            raise ConfigError("--model han-metapath needs meta-path files (<t>...<t>.npz, e.g. pap.npz) in the "
                              "data folder; it has none")
        edges = {e: data[e].edge_index for e in data.edge_types if e in metapaths}
        if metapath_neighbours:
            edges = {e: sample_per_destination(t, metapath_neighbours, seed=0) for e, t in edges.items()}
        return edges
    edges = {e: data[e].edge_index for e in data.edge_types if e not in metapaths}
    if model == "han":
        for node_type in data.node_types:
            loop = torch.arange(data[node_type].num_nodes)
            edges[(node_type, "self", node_type)] = torch.stack([loop, loop])
    return edges


def _only(items: list[Any]) -> Any:
    return items[0]


def whole_graph_loader(batch: dict[str, Any]) -> DataLoader:
    """A loader yielding ``batch`` once per epoch: full-batch training on the whole graph."""
    return DataLoader([batch], batch_size=1, collate_fn=_only)


class SampledBatches:
    """Neighbour-sampled ``HeteroData`` batches (:func:`gattn.sampling.neighbor_loader`) as the
    batches :class:`HeteroNodeTask` reads: the subgraph's features, the model's graph of it,
    the global ids of its nodes (``n_id_dict``: featureless types' embeddings) and a mask of the
    seeds, which come first among the target nodes.

    Args:
        loader (Any): the neighbour loader of ``HeteroData`` batches.
        model (str): the ``--model`` the batches are built for.
        target_type (str): the node type whose labels are predicted.
    """

    def __init__(self, loader: Any, model: str, target_type: str) -> None:
        self.loader, self.model, self.target_type = loader, model, target_type

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for batch in self.loader:
            store = batch[self.target_type]
            mask = torch.zeros(store.num_nodes, dtype=torch.bool)
            mask[:store.batch_size] = True
            yield {"x_dict": {t: batch[t].x for t in batch.node_types if "x" in batch[t]},
                   "edge_index_dict": model_graph(self.model, batch), "y": store.y, "mask": mask,
                   "n_id_dict": {t: batch[t].n_id for t in batch.node_types}}


class HeteroNodeTask(TaskModule):
    """A step on the whole graph or on a sampled subgraph (:class:`SampledBatches`); the loss
    and metrics on the nodes of the batch's ``mask``; LATTE's proximity loss added in training
    when its weight is positive."""

    def unpack(self, batch: Any) -> tuple[Any, Tensor, None]:
        mask, n_id = batch["mask"], batch.get("n_id_dict")
        weight = self.config.proximity_weight
        if self.training and weight > 0:
            output = self.model.encode(batch["x_dict"], batch["edge_index_dict"], proximity=True, n_id_dict=n_id)
            logits, extra = self.model.classify(output), weight * output.proximity_loss
        else:
            logits, extra = self.model(batch["x_dict"], batch["edge_index_dict"], n_id), None
        return (logits[mask], extra), batch["y"][mask], None

    def training_loss(self, output: Any, target: Tensor, batch: Any) -> Tensor:
        logits, extra = output
        loss = self.loss_fn(logits, target)
        return loss if extra is None else loss + extra

    def predictions(self, output: Any) -> Tensor:
        return output[0]


@register_pipeline("latte")
class LATTEPipeline(Pipeline):
    """LATTE vs HAN, HGT and R-GCN of one width on HeCo-layout heterogeneous graphs (Micro/Macro-F1)."""

    Config = LATTEConfig
    metric = "f1_macro"

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    # ----------------------------------------------------------------- configuration
    def resolve(self, config: LATTEConfig) -> LATTEConfig:
        if config.proximity_weight > 0 and config.model != "latte":
            raise ConfigError(f"--proximity-weight is LATTE's loss; --model {config.model} has none (use 0)")
        if config.heads is not None and config.model == "rgcn":
            raise ConfigError("--heads: --model rgcn has no attention heads (leave it unset)")
        defaults = LATTEConfig()
        owners = {"meta_weights": "latte", "threshold": "latte", "top_k": "latte",
                  "metapath_neighbours": "han-metapath"}
        for name, owner in owners.items():
            if config.model != owner and getattr(config, name) != getattr(defaults, name):
                raise ConfigError(f"{option_flag(name)} applies to --model {owner} only; --model {config.model} "
                                  "does not use it")
        if config.fanout is not None:
            if config.model == "han-metapath":
                raise ConfigError("--fanout: --model han-metapath reads meta-path graphs sampled once "
                                  "(--metapath-neighbours), not neighbour-sampled batches")
            if any(k < -1 for k in config.fanout):
                raise ConfigError(f"--fanout counts must be >= 0 or -1 (all), got {list(config.fanout)}")
        elif config.batch_size != defaults.batch_size:
            raise ConfigError("--batch-size applies to mini-batch training only: give --fanout too (without it "
                              "every step is the whole graph)")
        filled = {}
        if config.layers is None:
            filled["layers"] = DEFAULT_LAYERS[config.model]
        if config.heads is None and config.model != "rgcn":
            filled["heads"] = DEFAULT_HEADS[config.model]
        return dataclasses.replace(config, **filled)

    def run_label(self, config: Any) -> str:
        return f"{Path(config.dataset).name}-{config.model}"

    def describe(self, config: Any) -> str:
        return (f"{config.model} on {Path(config.dataset).name} (split {config.split}): layers={config.layers} "
                f"hidden={config.hidden} heads={config.heads} dropout={config.dropout:g} lr={config.lr:g} "
                f"epochs<={config.epochs}")

    # --------------------------------------------------------------------------- data
    def prepare(self, config: Any) -> Any:
        """The ``HeteroData`` of the data set (cached per folder, split and meta-path need)."""
        from gattn.datasets.hetero import load_heco

        folder = dataset_folder(config)
        metapaths = config.model == "han-metapath"
        key = (str(folder.resolve()), config.split, metapaths)
        if key not in self._cache:
            self._cache[key] = load_heco(folder, split=config.split, metapaths=metapaths)
        return self._cache[key]

    def datamodule(self, config: Any, data: Any, split: Split) -> DataLoaders:
        store = data[data.target_type]
        common = {"x_dict": {t: data[t].x for t in data.node_types if "x" in data[t]},
                  "edge_index_dict": model_graph(config.model, data, config.metapath_neighbours),
                  "y": store.y}
        val, test = (whole_graph_loader({**common, "mask": store[f"{part}_mask"]}) for part in ("val", "test"))
        if config.fanout is None:
            return DataLoaders(whole_graph_loader({**common, "mask": store.train_mask}), val, test)
        from gattn.sampling import neighbor_loader

        loader = neighbor_loader(data, list(config.fanout), input_nodes=(data.target_type, store.train_mask),
                                 batch_size=config.batch_size, shuffle=True, seed=config.seed)
        return DataLoaders(SampledBatches(loader, config.model, data.target_type), val, test)

    # -------------------------------------------------------------------------- model
    def build_model(self, config: Any, data: Any, split: Split) -> nn.Module:
        from gattn.models import HAN, HGT, LATTE, RGCN

        edges = model_graph(config.model, data, 0 if config.model == "han-metapath" else config.metapath_neighbours)
        node_types = sorted({t for e in edges for t in (e[0], e[2])})
        metadata = (node_types, list(edges))
        in_channels = {t: data[t].x.size(1) for t in node_types if "x" in data[t]}
        common = dict(hidden_channels=config.hidden, num_layers=config.layers, dropout=config.dropout,
                      num_nodes_dict={t: data[t].num_nodes for t in node_types})
        args = (metadata, in_channels, data.num_classes, data.target_type)
        if config.model == "latte":
            return LATTE(*args, heads=config.heads, meta_weights=config.meta_weights, threshold=config.threshold,
                         top_k=config.top_k, **common)
        if config.model in ("han", "han-metapath"):
            return HAN(*args, heads=config.heads, **common)
        if config.model == "hgt":
            return HGT(*args, heads=config.heads, **common)
        return RGCN(*args, **common)

    def loss(self, config: Any, data: Any) -> Any:
        return F.cross_entropy

    def metrics(self, config: Any, data: Any) -> dict[str, Any]:
        from gattn.metrics import f1_macro, f1_micro

        return {"f1_micro": f1_micro, "f1_macro": f1_macro}

    def task(self, config: Any, data: Any, model: nn.Module) -> TaskModule:
        return HeteroNodeTask(model, self.loss(config, data), self.metrics(config, data), config,
                              monitor="f1_macro", direction="maximize", meta={"pipeline": self.name})

    def chance(self, config: Any, data: Any) -> dict[str, float]:
        """Micro-F1 on the test nodes of always predicting the majority class of the validation
        nodes (HeCo's training nodes are balanced)."""
        store = data[data.target_type]
        majority = int(torch.bincount(store.y[store.val_mask]).argmax())
        return {"test_f1_micro": float((store.y[store.test_mask] == majority).float().mean())}

    # ---------------------------------------------------------------------- searching
    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, weight decay, dropout, width; LATTE also heads, layers and pruning."""
        params: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-3, 2e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.7),
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
        }
        if config.model == "latte":
            params["heads"] = trial.suggest_categorical("heads", [2, 4, 8])
            params["layers"] = trial.suggest_int("layers", 1, 3)
            params["threshold"] = trial.suggest_float("threshold", 1e-3, 5e-2, log=True)
        return params

    # ------------------------------------------------------------------------ results
    def artifacts(self, config: Any, data: Any, model: nn.Module, split: Split, run_dir: Path) -> dict[str, Path]:
        if config.model != "latte":
            return {}
        betas = mean_betas(model, data, config)
        path = run_dir / "beta.json"
        path.write_text(json.dumps(betas, indent=1))
        files = {"beta": path}
        if config.plot:
            title = f"LATTE on {Path(config.dataset).name}: mean relation attention (beta) per node type"
            files["beta plot"] = plot_betas(betas, run_dir / f"beta_{Path(config.dataset).name}.png", title)
        return files


@torch.no_grad()
def mean_betas(model: nn.Module, data: Any, config: Any) -> list[dict[str, dict[str, float]]]:
    """Per layer, ``{node type: {relation slot: mean beta over the type's nodes}}`` (eval mode).

    Args:
        model (torch.nn.Module): a LATTE model.
        data (HeteroData): the graph.
        config (LATTEConfig): the run's configuration.
    """
    device = next(model.parameters()).device
    x = {t: data[t].x.to(device) for t in data.node_types if "x" in data[t]}
    edges = {e: t.to(device) for e, t in model_graph(config.model, data, config.metapath_neighbours).items()}
    was_training = model.training
    model.eval()
    try:
        output = model.encode(x, edges)
    finally:
        model.train(was_training)
    return [{t: dict(zip(slots[t], b[t].mean(0).tolist())) for t in b}
            for b, slots in zip(output.betas, output.relation_slots)]


def plot_betas(beta_layers: list[dict[str, dict[str, float]]], path: str | Path, title: str) -> Path:
    """Bar chart of the mean relation attention (beta) per node type and layer: one panel per
    layer, one group of bars per node type, one bar per relation slot (the self slot grey).

    Args:
        beta_layers (list[dict[str, dict[str, float]]]): what :func:`mean_betas` returns.
        path (str or Path): the PNG file.
        title (str): the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(beta_layers), figsize=(5.5 * len(beta_layers), 3.6), squeeze=False)
    for layer, (ax, betas) in enumerate(zip(axes[0], beta_layers), start=1):
        x = 0.0
        ticks, labels = [], []
        for node_type, slots in betas.items():
            for slot, value in slots.items():
                ax.bar(x, value, color="tab:gray" if slot == "self" else "tab:blue")
                ticks.append(x)
                labels.append(f"{node_type}: {slot}")
                x += 1
            x += 0.8
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {layer} (order-{layer} relations)", fontsize=9)
        ax.set_ylabel("mean beta")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["HeteroNodeTask", "LATTEConfig", "LATTEPipeline", "SampledBatches", "dataset_folder", "mean_betas",
           "model_graph", "plot_betas", "sample_per_destination"]
