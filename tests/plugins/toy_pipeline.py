"""A pipeline from outside gattn: logistic regression on two Gaussian blobs.

Registered by importing this module (``gattn --plugin toy_pipeline`` with this folder on the
path, or ``GATTN_PLUGINS=toy_pipeline``); gattn itself names it nowhere. ``--folds K`` trains
K splits (a cross-validation) instead of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gattn.pipelines import DataLoaders, Pipeline, Split, TrainConfig, option, register_pipeline


@dataclass
class ToyConfig(TrainConfig):
    samples: int = option(240, "samples", low=20, group="data")
    shift: float = option(1.5, "distance between the two blobs", group="data")
    folds: int = option(1, "splits (1: one train/val/test division)", low=1, group="data")
    hidden: int = option(8, "hidden width", low=1, group="model")
    epochs: int = option(4, "maximum number of epochs", low=1, group="training")
    lr: float = option(0.05, "learning rate", low=0, low_open=True, group="training")
    batch_size: int = option(32, "samples per step", low=1, group="training")


@register_pipeline("toy")
class ToyPipeline(Pipeline):
    """Logistic regression on two Gaussian blobs (a test pipeline outside gattn)."""

    Config = ToyConfig
    metric = "rocauc"

    def prepare(self, config: Any) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        y = (torch.rand(config.samples, generator=generator) > 0.5).float()
        x = torch.randn(config.samples, 2, generator=generator) + y[:, None] * config.shift
        return x, y

    def splits(self, config: Any, data: Any) -> list[Split]:
        if config.folds == 1:
            return [Split("run")]  # trains in the run folder itself
        return [Split(f"fold-{k + 1}", k) for k in range(config.folds)]

    def build_model(self, config: Any, data: Any, split: Split) -> nn.Module:
        return nn.Sequential(nn.Linear(2, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1), nn.Flatten(0))

    def datamodule(self, config: Any, data: Any, split: Split) -> DataLoaders:
        x, y = data
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split.index))
        half, three_quarters = len(y) // 2, 3 * len(y) // 4
        parts = [order[:half], order[half:three_quarters], order[three_quarters:]]

        def loader(index: torch.Tensor, shuffle: bool) -> DataLoader:
            return DataLoader(TensorDataset(x[index], y[index]), batch_size=config.batch_size, shuffle=shuffle,
                              generator=torch.Generator().manual_seed(config.seed) if shuffle else None)

        return DataLoaders(loader(parts[0], True), loader(parts[1], False), loader(parts[2], False))

    def chance(self, config: Any, data: Any) -> dict[str, float]:
        return {"test_rocauc": 0.5}

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        return {"lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
                "hidden": trial.suggest_categorical("hidden", [4, 8])}
