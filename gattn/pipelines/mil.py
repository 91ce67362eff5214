"""Multiple-instance learning: attention / Hopfield pooling over ragged bags, cross-validated.

``gattn train mil --dataset musk1 --pooling {abmil,gated,hopfield,acmil}``

Data sets (``--dataset``): every benchmark :mod:`gattn.datasets.mil` reads (``musk1``,
``musk2``, ``elephant``, ``fox``, ``tiger``, ``protein``, ``corel-dogs``, ... from the data root
or the ``mil`` package) and the embedded ``digit-bags`` (no download).

Models (``--pooling``), all on the same instance encoder (``--hidden``, Linear+ReLU layers):
``abmil`` - attention pooling of Ilse et al. 2018 (:class:`gattn.nn.ABMIL`); ``gated`` - its
gated attention; ``hopfield`` - Hopfield pooling of Ramsauer et al. 2021
(:class:`gattn.nn.HopfieldMIL`); ``acmil`` - multiple branch attention with stochastic top-K
masking and the diversity loss (:class:`gattn.nn.ACMIL`; the loss lives in this file's task
module, not in shared code).

Protocol (the defaults): the MIL-benchmark protocol of Ilse et al. 2018, section 5.1, whose
network is MI-Net's (Wang et al. 2018). ``--folds`` 10-fold cross-validation stratified by bag
label, ``--repeats`` 5 times with other fold assignments (seeded); each fold is one split of
the platform (its own folder, checkpoint and metrics). Instance encoder fc-256, fc-128, fc-64
with ReLU and ``--dropout`` 0.5 after each layer; attention size 64; Adam (betas 0.9, 0.999),
learning rate 5e-4, weight decay 5e-3, one bag per step, 100 epochs. In each fold a stratified
``--val-fraction`` (10%) of the training bags is held out, every epoch is evaluated on it and
the epoch with the lowest validation error + loss (``--monitor error_loss``) is the fold's
model, evaluated on the test fold; no early stop (``--patience none``). Features are
standardised with the statistics of the fold's remaining training bags
(:meth:`gattn.datasets.mil.MILBags.standardize`). Results: mean and standard deviation over
all folds of all repetitions (50 test folds) of the test ROC-AUC and accuracy (scikit-learn),
next to the chance level (the majority class; ROC-AUC 0.5).

Where each default comes from, and where gattn differs:

* verified in the authors' code: Adam (0.9, 0.999), lr 5e-4 and one bag per step
  (AMLab-Amsterdam/AttentionDeepMIL ``main.py``, MNIST-bags); 5 x 10-fold CV, the encoder
  widths, dropout 0.5 and weight decay 5e-3 on Musk1 (yanyongluan/MINNs, MI-Net; it uses
  other decays on Musk2 0.03, Fox 0.01, learning rate 1e-4 on Fox and Elephant, one dropout
  after the last layer, SGD with momentum 0.9, 50 epochs, and its decay is a Keras L2 penalty
  on the weight matrices, not Adam's decay of every parameter as here and in Ilse et al.'s code);
* from the paper, not re-checked against its text here: weight decay 5e-3 on all the MIL
  benchmarks, dropout after every encoder layer (rate not given: MI-Net's 0.5 is used), 100
  epochs, the best epoch by the lowest validation error + loss;
* not specified by the paper, gattn's choice: the validation share (10% of the training bags,
  stratified), no early stop;
* different: Ilse et al. chose the attention size on validation among 64, 128 and 256; here it
  is 64 (``gattn tune mil`` searches it). Ramsauer et al.'s Hopfield-pooling figures come from
  a per-data-set hyperparameter search (learning rate, widths, heads, beta, bag dropout) in a
  nested cross-validation; the ``hopfield`` defaults here are one fixed configuration (one
  head, beta 1/sqrt(64)) on the same protocol as ABMIL. ACMIL has no published MIL-benchmark
  protocol; it runs on this one.

This protocol costs 50 folds x 100 epochs x one step per training bag (about 7,400 steps per
Musk1 fold); ``--repeats 1``, ``--max-folds`` and ``--patience`` make quick runs. Unless
``--no-plot``, a PNG of the instance attention of a few test bags of the last fold is written
to the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from gattn.pipelines.base import DataLoaders, Pipeline, Split
from gattn.pipelines.config import TrainConfig, option
from gattn.pipelines.registry import register_pipeline
from gattn.pipelines.results import save_figure
from gattn.pipelines.task import TaskModule


def _datasets() -> tuple[str, ...]:
    from gattn.datasets.mil import EMBEDDED, MIL_DATASETS

    return (*MIL_DATASETS, EMBEDDED)


DATASETS = _datasets()
POOLINGS = ("abmil", "gated", "hopfield", "acmil")
MONITORS = ("error_loss", "loss")


@dataclass
class MILConfig(TrainConfig):
    """Options of the MIL pipeline; the defaults are the MIL-benchmark protocol of Ilse et al. 2018
    (see the module docstring for where each comes from and where gattn differs)."""

    dataset: str = option("musk1", "data set", choices=DATASETS, group="data")
    folds: int = option(10, "cross-validation folds", low=2, group="data")
    repeats: int = option(5, "repetitions of the cross-validation with other fold assignments (Ilse et al.: 5)",
                          low=1, group="data")
    max_folds: int | None = option(None, "run only the first N folds (quick runs, tuning)", low=1, group="data")
    val_fraction: float = option(0.1, "share of each fold's training bags held out to pick the best epoch "
                                 "(0: none, the last epoch is kept)", low=0, high=0.5, high_open=True, group="data")
    pooling: str = option("abmil", "bag pooling", choices=POOLINGS, group="model")
    hidden: tuple[int, ...] = option((256, 128, 64), "instance encoder widths", low=1, group="model")
    attention: int = option(64, "attention MLP size / Hopfield association size per head", low=1, group="model")
    heads: int = option(1, "Hopfield heads", low=1, group="model")
    quantity: int = option(1, "Hopfield learned state patterns", low=1, group="model")
    beta: float | None = option(None, "Hopfield inverse temperature (default 1/sqrt(attention))", low=0,
                                low_open=True, group="model")
    branches: int = option(5, "ACMIL branches", low=1, group="model")
    top_k: int = option(10, "ACMIL masked top-K", low=0, group="model")
    mask_ratio: float = option(0.6, "ACMIL share of the top-K masked in training", low=0, high=1,
                               high_open=True, group="model")
    dropout: float = option(0.5, "dropout after every encoder layer (MI-Net's rate)", low=0, high=1,
                            high_open=True, group="model")
    epochs: int = option(100, "epochs per fold", low=1, group="training")
    batch_size: int = option(1, "bags per step (Ilse et al.: 1)", low=1, group="training")
    lr: float = option(5e-4, "learning rate", low=0, low_open=True, group="training")
    weight_decay: float = option(5e-3, "weight decay (Adam's L2 term)", low=0, group="training")
    monitor: str = option("error_loss", "the validation quantity that picks each fold's best epoch (and that "
                          "--patience watches): error_loss = (1 - accuracy) + BCE loss, or loss",
                          choices=MONITORS, group="training")
    patience: int | None = option(None, "stop a fold after this many epochs without a better --monitor "
                                  "(none: train every epoch, keep the best)", low=1, group="training")
    threads: int | None = option(1, "torch and numba CPU threads (default 1: the models are small, and more "
                                 "threads only add synchronisation, badly so on a busy machine)", low=1,
                                 group="hardware", run_control=True)
    plot: bool = option(True, "write the instance-attention PNG", group="output", run_control=True)


class BagSet(Dataset):
    """The bags of a :class:`~gattn.datasets.mil.MILBags` as a map-style data set (one bag per
    item), so Lightning can shard it across processes; :func:`collate_bags` batches them.

    Args:
        bags (MILBags): the bags.
    """

    def __init__(self, bags: Any) -> None:
        self.bags = bags

    def __len__(self) -> int:
        return self.bags.num_bags

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.bags.bag(index), self.bags.labels[index]


def collate_bags(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """``(instances [R, D], ptr [B+1], labels [B] float)`` of a list of bags.

    Args:
        items (list[tuple[Tensor, Tensor]]): ``(instances [n, D], label)`` per bag.
    """
    sizes = torch.tensor([x.size(0) for x, _ in items], dtype=torch.long)
    ptr = torch.zeros(len(items) + 1, dtype=torch.long)
    torch.cumsum(sizes, 0, out=ptr[1:])
    return torch.cat([x for x, _ in items]), ptr, torch.stack([y for _, y in items]).float()


def error_plus_loss(y_true: Any, y_pred: Any) -> float:
    """Ilse et al.'s model-selection quantity: the classification error of the bag logits
    ``y_pred`` (positive when > 0) plus their binary cross-entropy against 0/1 ``y_true``
    (:func:`gattn.metrics.accuracy`, :func:`gattn.metrics.logloss`).

    On the 8 to 20 validation bags of a MIL-benchmark fold the error alone ties across many
    epochs, and the loss alone picked epoch 2 of 100 in a Musk1 fold (it is lowest before the
    model commits to confident predictions); the sum breaks the error's ties by the loss.

    Args:
        y_true (Tensor or array): 0/1 bag labels :math:`(B)`.
        y_pred (Tensor or array): bag logits :math:`(B)`.
    """
    from gattn.metrics import accuracy, logloss

    return (1.0 - accuracy(y_true, y_pred)) + logloss(y_true, y_pred)


def _register_error_loss() -> None:
    # the platform looks the monitor's direction up in the metric registry
    from gattn.metrics import register_metric

    register_metric("error_loss", error_plus_loss, "minimize")


_register_error_loss()


class MILTask(TaskModule):
    """ACMIL's training loss (bag + branch + diversity terms) and its bag logits for metrics."""

    def training_loss(self, output: Any, target: Tensor, batch: Any) -> Tensor:
        from gattn.nn.mil import ACMILOutput

        if isinstance(output, ACMILOutput):
            return self.model.loss(output, target)
        return self.loss_fn(output, target)

    def predictions(self, output: Any) -> Tensor:
        from gattn.nn.mil import ACMILOutput

        return output.bag_logits if isinstance(output, ACMILOutput) else output


@register_pipeline("mil")
class MILPipeline(Pipeline):
    """Multiple-instance learning (ABMIL, gated, Hopfield, ACMIL) with the papers' cross-validation."""

    Config = MILConfig
    metric = "rocauc"

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def monitor(self, config: Any) -> str:
        return config.monitor

    def run_label(self, config: Any) -> str:
        return f"{config.dataset}-{config.pooling}"

    def describe(self, config: Any) -> str:
        return (f"mil {config.pooling} on {config.dataset}: {config.folds}-fold CV x{config.repeats}, "
                f"encoder {','.join(map(str, config.hidden))}, dropout {config.dropout:g}, batch {config.batch_size}, "
                f"lr={config.lr:g}, wd={config.weight_decay:g}, {config.epochs} epochs, best by val {config.monitor}")

    # --------------------------------------------------------------------------- data
    def prepare(self, config: Any) -> Any:
        from gattn.datasets.mil import load_mil

        key = (config.dataset, str(config.root), config.seed if config.dataset == "digit-bags" else None)
        if key not in self._cache:
            if config.dataset == "digit-bags":
                self._cache[key] = load_mil("digit-bags", seed=config.seed)
            else:
                self._cache[key] = load_mil(config.dataset, config.root)
        return self._cache[key]

    def splits(self, config: Any, bags: Any) -> list[Split]:
        from sklearn.model_selection import train_test_split

        from gattn.datasets.mil import cross_validation_folds

        folds = cross_validation_folds(bags.labels, config.folds, config.seed, config.repeats)
        if config.max_folds:
            folds = folds[: config.max_folds]
        splits = []
        for index, (train_idx, test_idx) in enumerate(folds):
            repeat, fold = divmod(index, config.folds)
            val_idx = None
            if config.val_fraction > 0:
                labels = bags.labels[train_idx].numpy()
                train_idx, val_idx = train_test_split(train_idx, test_size=config.val_fraction, stratify=labels,
                                                      random_state=config.seed + index)
            name = f"fold-{fold + 1:02d}" if config.repeats == 1 else f"repeat-{repeat + 1}-fold-{fold + 1:02d}"
            splits.append(Split(name, index, (train_idx, val_idx, test_idx)))
        return splits

    def _standardised(self, bags: Any, split: Split) -> tuple[Any, Any, Any]:
        train_idx, val_idx, test_idx = split.payload
        train, mean, std = bags.subset(train_idx).standardize()
        val = None if val_idx is None else bags.subset(val_idx).standardize(mean, std)[0]
        test = bags.subset(test_idx).standardize(mean, std)[0]
        return train, val, test

    def datamodule(self, config: Any, bags: Any, split: Split) -> Any:
        train, val, test = self._standardised(bags, split)
        generator = torch.Generator().manual_seed(config.seed * 1000 + split.index)

        def loader(part: Any, shuffle: bool, size: int) -> DataLoader:
            return DataLoader(BagSet(part), batch_size=size, shuffle=shuffle, collate_fn=collate_bags,
                              num_workers=config.num_workers, generator=generator if shuffle else None)

        return DataLoaders(loader(train, True, config.batch_size),
                           None if val is None else loader(val, False, 64), loader(test, False, 64))

    # -------------------------------------------------------------------------- model
    def build_model(self, config: Any, bags: Any, split: Split) -> nn.Module:
        from gattn.nn.mil import ABMIL, ACMIL, HopfieldMIL

        hidden = tuple(config.hidden)
        if config.pooling in ("abmil", "gated"):
            return ABMIL(bags.num_features, hidden, config.attention, gated=config.pooling == "gated",
                         dropout=config.dropout)
        if config.pooling == "hopfield":
            return HopfieldMIL(bags.num_features, hidden, num_heads=config.heads, hopfield_hidden=config.attention,
                               quantity=config.quantity, scaling=config.beta, dropout=config.dropout)
        return ACMIL(bags.num_features, hidden, config.attention, branches=config.branches, top_k=config.top_k,
                     mask_ratio=config.mask_ratio, dropout=config.dropout)

    def metrics(self, config: Any, bags: Any) -> dict[str, Any]:
        from gattn.metrics import accuracy, rocauc

        return {"rocauc": rocauc, "accuracy": accuracy, "error_loss": error_plus_loss}

    def task(self, config: Any, bags: Any, model: nn.Module) -> TaskModule:
        from gattn.losses import masked_bce_with_logits

        return MILTask(model, masked_bce_with_logits, self.metrics(config, bags), config,
                       monitor=self.monitor(config), direction="minimize", meta={"pipeline": self.name})

    def chance(self, config: Any, bags: Any) -> dict[str, float]:
        """The majority class's share of the bags (what always predicting it scores) and 0.5 ROC-AUC."""
        labels = bags.labels.numpy()
        majority = max(float((labels > 0).mean()), float((labels <= 0).mean()))
        return {"test_accuracy": majority, "test_rocauc": 0.5}

    # ---------------------------------------------------------------------- searching
    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, weight decay, dropout, attention size; per pooling its own options."""
        params: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "attention": trial.suggest_categorical("attention", [32, 64, 128, 256]),
        }
        if config.pooling == "hopfield":
            params["heads"] = trial.suggest_categorical("heads", [1, 2, 4])
            params["beta"] = trial.suggest_float("beta", 0.01, 2.0, log=True)
        if config.pooling == "acmil":
            params["branches"] = trial.suggest_int("branches", 2, 6)
            params["mask_ratio"] = trial.suggest_float("mask_ratio", 0.0, 0.8)
        return params

    # ------------------------------------------------------------------------ results
    def artifacts(self, config: Any, bags: Any, model: nn.Module, split: Split, run_dir: Path) -> dict[str, Path]:
        if not config.plot:
            return {}
        _, _, test = self._standardised(bags, split)
        path = run_dir / f"attention_{config.dataset}_{config.pooling}.png"
        title = f"{config.pooling} on {config.dataset}: instance attention of test bags ({split.name})"
        return {"attention plot": plot_attention(model, test, path, title=title)}


@torch.no_grad()
def instance_attention(model: nn.Module, x: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
    """Bag probabilities [B] and the attention weight of every instance [R] (a heatmap).

    Args:
        model (torch.nn.Module): a MIL model (``return_attention=True`` gives the weights).
        x (Tensor): the instances of all bags :math:`(R, D)`.
        ptr (Tensor): the bags over the instances :math:`(B + 1)`.
    """
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


def plot_attention(model: nn.Module, bags: Any, path: str | Path, num_bags: int = 6, title: str = "") -> Path:
    """Bar plots of the instance attention of the first ``num_bags`` bags, written as a PNG.

    Bars of instances known to be positive (digit-bags) are drawn in red.

    Args:
        model (torch.nn.Module): a MIL model.
        bags (MILBags): the bags to plot from.
        path (str or Path): the PNG file.
        num_bags (int, optional): how many bags (the first ones). (default: ``6``)
        title (str, optional): the figure's title. (default: ``""``)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    part = bags.subset(list(range(min(num_bags, bags.num_bags))))
    device = next(model.parameters()).device
    probs, weights = instance_attention(model, part.instances.to(device), part.ptr.to(device))
    weights = weights.cpu()
    fig, axes = plt.subplots(1, part.num_bags, figsize=(2.6 * part.num_bags, 2.7), squeeze=False)
    for b, ax in enumerate(axes[0]):
        lo, hi = int(part.ptr[b]), int(part.ptr[b + 1])
        colors: Any = "tab:blue"
        if part.instance_labels is not None:
            colors = ["tab:red" if v else "tab:blue" for v in part.instance_labels[lo:hi].tolist()]
        ax.bar(range(hi - lo), weights[lo:hi].numpy(), color=colors)
        ax.set_title(f"{part.bag_ids[b]}: y={int(part.labels[b])} p={float(probs[b]):.2f}", fontsize=8)
        ax.set_xlabel("instance", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("attention", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["BagSet", "MILConfig", "MILPipeline", "MILTask", "collate_bags", "error_plus_loss",
           "instance_attention", "plot_attention"]
