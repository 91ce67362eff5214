"""A pipeline that follows the contract of gattn.pipelines without training anything.

``run`` reports a few intermediate values (so the pruner has something to look at) and
returns ``-(x - 2)^2``. ``config["interrupt_at"]``: raise KeyboardInterrupt in that trial
number; ``config["hang_at"]``: sleep (for a subprocess to be killed) in that trial number.
"""

from __future__ import annotations

import argparse
import time

import optuna

NAME = "fake"
METRIC = "score"
DIRECTION = "maximize"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--interrupt-at", type=int, default=-1)
    parser.add_argument("--hang-at", type=int, default=-1)
    parser.add_argument("--x", type=float, default=0.0)


def search_space(trial: optuna.Trial, config: dict) -> dict:
    return {"x": trial.suggest_float("x", -4.0, 4.0),
            "width": trial.suggest_categorical("width", [8, 16])}


def run(config: dict, trial: optuna.Trial | None = None) -> dict[str, float]:
    number = trial.number if trial is not None else None
    if number is not None and number == config.get("interrupt_at", -1):
        raise KeyboardInterrupt
    if number is not None and number == config.get("hang_at", -1):
        print("HANGING", flush=True)
        time.sleep(600)
    value = -((config["x"] - 2.0) ** 2)
    for epoch in range(1, config.get("epochs", 3) + 1):
        if trial is not None:
            trial.report(value * (1 + 1 / epoch), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return {"val_score": value, "test_score": value - 1.0, "epochs": float(config["epochs"])}
