"""The pipeline contract: a family is one subclass of :class:`Pipeline` in one file.

::

    @dataclass
    class ToyConfig(TrainConfig):
        hidden: int = option(16, "hidden width", low=1, group="model")

    @register_pipeline("toy")
    class Toy(Pipeline):
        Config = ToyConfig
        metric = "rocauc"                      # a name of gattn.metrics (or "loss")

        def prepare(self, config): ...         # load the data once (clear errors if missing)
        def build_model(self, config, data, split): ...
        def datamodule(self, config, data, split): ...   # train/val/test loaders of a split
        def search_space(self, trial, config): ...       # {option: trial.suggest_*(...)}

The platform (:mod:`gattn.pipelines.runner`) does the rest: Lightning training with early
stopping, checkpoints, schedules and logs, cross-validation when :meth:`Pipeline.splits`
yields several splits, the run folder, the ``gattn`` command's options, config files and
Optuna tuning. Optional hooks: :meth:`Pipeline.resolve` (presets), :meth:`Pipeline.loss`,
:meth:`Pipeline.metrics`, :meth:`Pipeline.task` (a family's own :class:`TaskModule`),
:meth:`Pipeline.monitor`, :meth:`Pipeline.chance`, :meth:`Pipeline.artifacts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as L
import torch
from torch import nn

from .config import TrainConfig

__all__ = ["DataLoaders", "Pipeline", "Split"]


@dataclasses.dataclass
class Split:
    """One train/validation/test division of the data (one fold of a cross-validation).

    ``name`` names its sub-folder of the run (``fold-03``); ``index`` is its position;
    ``payload`` is whatever the pipeline needs to build its loaders (indices, subsets).

    Attributes:
        name (str): its sub-folder of the run (``fold-03``).
        index (int, optional): its position among the splits. (default: ``0``)
        payload (Any, optional): what the pipeline builds its loaders from (indices, subsets).
            (default: ``None``)
    """

    name: str
    index: int = 0
    payload: Any = None


class DataLoaders(L.LightningDataModule):
    """A Lightning data module made of ready loaders (any iterables of batches).

    ``val`` or ``test`` may be None: that stage is then skipped (no validation: no early
    stopping, the last epoch is kept).

    Args:
        train (Iterable): the training batches.
        val (Iterable, optional): the validation batches (``None``: no validation). (default: ``None``)
        test (Iterable, optional): the test batches (``None``: no test). (default: ``None``)
    """

    def __init__(self, train: Any, val: Any = None, test: Any = None) -> None:
        super().__init__()
        self.train_loader, self.val_loader, self.test_loader = train, val, test

    def train_dataloader(self) -> Any:
        return self.train_loader

    def val_dataloader(self) -> Any:
        return self.val_loader if self.val_loader is not None else []

    def test_dataloader(self) -> Any:
        return self.test_loader if self.test_loader is not None else []


class Pipeline:
    """Base class of a model family's pipeline (see the module docstring)."""

    #: the registry name (set by :func:`~gattn.pipelines.registry.register_pipeline`)
    name: ClassVar[str] = ""
    #: the typed configuration (a :class:`TrainConfig` dataclass)
    Config: ClassVar[type] = TrainConfig
    #: the selection metric: a name of :data:`gattn.metrics.METRICS`, or ``"loss"``
    metric: ClassVar[str] = "loss"

    # ----------------------------------------------------------------- configuration
    def resolve(self, config: Any) -> Any:
        """``config`` with values that depend on others filled in (presets); default: as is."""
        return config

    def selection_metric(self, config: Any) -> str:
        """The metric reported and tuned (``val_<metric>``); default :attr:`metric`."""
        return self.metric

    def direction(self, config: Any) -> str:
        """``"maximize"`` or ``"minimize"`` for the selection metric (from the metric registry)."""
        return metric_direction(self.selection_metric(config))

    def monitor(self, config: Any) -> str:
        """The validation metric that selects the best epoch and stops early (default: the
        selection metric)."""
        return self.selection_metric(config)

    def describe(self, config: Any) -> str:
        """One line naming the configuration (for logs, plots and run folders)."""
        parts = [self.name]
        for key in ("dataset", "model", "pooling"):
            if hasattr(config, key):
                parts.append(str(getattr(config, key)))
        return " ".join(parts)

    def run_label(self, config: Any) -> str:
        """A short label for the run folder's name (default: the data set, if any)."""
        return str(getattr(config, "dataset", self.name)).replace("/", "_")

    # --------------------------------------------------------------------------- data
    def prepare(self, config: Any) -> Any:
        """Load (and cache in memory) the data of ``config``; raise a clear error if it is missing."""
        raise NotImplementedError(f"pipeline {self.name!r} does not implement prepare()")

    def splits(self, config: Any, data: Any) -> Sequence[Split]:
        """The train/val/test divisions to train on: one (default) or the folds of a CV."""
        return [Split("run")]

    def datamodule(self, config: Any, data: Any, split: Split) -> Any:
        """A Lightning data module (or :class:`DataLoaders`) for ``split``."""
        raise NotImplementedError(f"pipeline {self.name!r} does not implement datamodule()")

    # -------------------------------------------------------------------------- model
    def build_model(self, config: Any, data: Any, split: Split) -> nn.Module:
        """A fresh model for ``split`` (called once per split, after the seed is set)."""
        raise NotImplementedError(f"pipeline {self.name!r} does not implement build_model()")

    def loss(self, config: Any, data: Any) -> Any:
        """``loss(output, target) -> scalar`` (default: BCE with logits, NaN labels ignored)."""
        from gattn.losses import masked_bce_with_logits

        return masked_bce_with_logits

    def metrics(self, config: Any, data: Any) -> dict[str, Any]:
        """``name -> fn(y_true, y_pred)`` computed on validation and test (default: the
        selection metric and the monitor, from the registry)."""
        from gattn.metrics import METRICS

        names = [n for n in dict.fromkeys([self.selection_metric(config), self.monitor(config)]) if n != "loss"]
        return {name: METRICS[name].fn for name in names}

    def task(self, config: Any, data: Any, model: nn.Module) -> Any:
        """The :class:`~gattn.pipelines.task.TaskModule` that trains ``model``."""
        from gattn.metrics import METRICS

        from .task import TaskModule

        metrics = self.metrics(config, data)
        monitor = self.monitor(config)
        return TaskModule(
            model, self.loss(config, data), metrics, config, monitor=monitor,
            direction=metric_direction(monitor),
            grouped=frozenset(n for n in metrics if n in METRICS and METRICS[n].needs_groups),
            meta={"pipeline": self.name},
        )

    # ---------------------------------------------------------------------- searching
    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """``{option: trial.suggest_*(...)}``: the hyperparameters ``gattn tune`` searches."""
        raise NotImplementedError(f"pipeline {self.name!r} declares no search space")

    # ------------------------------------------------------------------------ running
    def run(self, config: Any, run_dir: Path, *, trial: Any = None, resume: bool = False,
            progress: bool | None = None) -> Any:
        """Train and evaluate ``config`` in ``run_dir``: :func:`gattn.pipelines.runner.run`
        (override only for a family that is not trained by Lightning)."""
        from .runner import run

        return run(self, config, run_dir, trial=trial, resume=resume, progress=progress)

    # ------------------------------------------------------------------------ results
    def chance(self, config: Any, data: Any) -> dict[str, float]:
        """Reference values to print beside the results (chance level, a trivial baseline)."""
        return {}

    def artifacts(self, config: Any, data: Any, model: nn.Module, split: Split, run_dir: Path) -> dict[str, Path]:
        """Extra files written after the last split is trained (plots); ``name -> path``."""
        return {}


def metric_direction(name: str) -> str:
    """``"minimize"`` for ``"loss"``, else the registry's direction of ``name``."""
    if name == "loss":
        return "minimize"
    from gattn.metrics import metric_direction as registry_direction

    return registry_direction(name)


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def to_device_batch(batch: Any, device: torch.device) -> Any:
    """``batch`` moved to ``device`` (tensors, PyG data, and tuples/dicts of them)."""
    if isinstance(batch, Mapping):
        return {k: to_device_batch(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device_batch(v, device) for v in batch)
    return batch.to(device) if hasattr(batch, "to") else batch
