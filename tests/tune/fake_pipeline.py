"""A pipeline that follows the platform's contract without training anything.

``run`` reports a few intermediate values (so the pruner has something to look at) and returns
``-(x - 2)^2``. The environment variable ``FAKE_INTERRUPT_AT`` makes that trial number raise
KeyboardInterrupt; ``FAKE_HANG_AT`` makes it sleep (for a subprocess to be killed);
``FAKE_SLEEP`` makes every trial last that many seconds (so that several workers overlap). They
are not options, so a resumed study sees the same configuration.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from gattn.pipelines import Pipeline, RunResult, TrainConfig, option, register_pipeline


@dataclass
class FakeConfig(TrainConfig):
    dataset: str = option("toy", "data set name", group="data")
    epochs: int = option(3, "epochs", low=1, group="training")
    x: float = option(0.0, "the searched value", group="model")
    width: int = option(8, "a searched choice", group="model")


@register_pipeline("fake")
class FakePipeline(Pipeline):
    """A pipeline that trains nothing (tests of the tuner)."""

    Config = FakeConfig
    metric = "rocauc"

    def prepare(self, config: Any) -> None:
        return None

    def search_space(self, trial: Any, config: Any) -> dict:
        return {"x": trial.suggest_float("x", -4.0, 4.0), "width": trial.suggest_categorical("width", [8, 16])}

    def run(self, config: Any, run_dir: Path, *, trial: Any = None, resume: bool = False,
            progress: bool | None = None) -> RunResult:
        number = trial.number if trial is not None else None
        if number is not None and number == int(os.environ.get("FAKE_INTERRUPT_AT", -1)):
            raise KeyboardInterrupt
        if number is not None and number == int(os.environ.get("FAKE_HANG_AT", -1)):
            print("HANGING", flush=True)
            time.sleep(600)
        time.sleep(float(os.environ.get("FAKE_SLEEP", 0)))
        value = -((config.x - 2.0) ** 2)
        for epoch in range(1, config.epochs + 1):
            if trial is not None:
                trial.report(value * (1 + 1 / epoch), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        metrics = {"val_rocauc": value, "test_rocauc": value - 1.0, "epochs": config.epochs}
        return RunResult(metrics, [metrics], Path(run_dir), {}, {})
