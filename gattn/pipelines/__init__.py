"""Example pipelines: a data set, a model, the training loop, a search space.

The ``gattn`` command (:mod:`gattn.cli`) trains and tunes any pipeline registered in
:data:`PIPELINES`; the registry maps a name to a module path and the module is imported only
when it is used (:func:`load_pipeline`).

The pipeline contract
---------------------
A pipeline module exposes:

``NAME: str``
    the registry name (e.g. ``"graph_transformer"``).
``METRIC: str``
    the name of the model-selection metric (one of :data:`gattn.metrics.METRICS`), e.g.
    ``"rocauc"``. When it depends on the data set, the module also defines
    ``metric(config: dict) -> str``; use :func:`pipeline_metric` to resolve it.
``DIRECTION: "maximize" | "minimize"``
    whether ``METRIC`` is maximised. When it depends on the data set, the module also defines
    ``direction(config: dict) -> str``; use :func:`pipeline_direction`.
``add_arguments(parser: argparse.ArgumentParser) -> None``
    adds the pipeline's command-line options (data set, model size, epochs, lr, seed,
    device, ...). Every option's ``dest`` becomes a key of ``config``. The CLI itself adds
    ``--root`` (data directory, resolved into ``config["root"]``), ``--runs-dir``
    (``config["runs_dir"]``), ``--checkpoint`` (``config["checkpoint"]``, train only) and
    ``--no-progress`` (``config["progress"]``); a pipeline must not add those.
``search_space(trial: optuna.Trial, config: dict) -> dict``
    samples hyperparameters with ``trial.suggest_*`` and returns them as a dict of config
    keys; the tuner runs ``run({**config, **params}, trial)``.
``run(config: dict, trial: optuna.Trial | None = None) -> dict[str, float]``
    trains and evaluates one configuration with :func:`gattn.train.fit` (passing ``trial`` on
    so the validation metric is reported every epoch and the trial can be pruned) and returns
    the final metrics of the model selected on validation. The dict must contain
    ``"val_<metric>"`` and ``"test_<metric>"`` for the selection metric; other entries
    (``"train_loss"``, ``"epochs"``, ``"val_loss"``, ...) are allowed. The tuner's objective is
    ``run(...)["val_<metric>"]``.

The module docstring of each pipeline documents its options and data sets. ``run`` returns
its results rather than printing them (the CLI prints the dict as a table) and passes
``config["progress"]`` on to :func:`gattn.train.fit`. ``run`` must work with ``config`` built
from the parser defaults alone (``vars(parser.parse_args([]))`` plus the CLI keys above).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["PIPELINES", "load_pipeline", "pipeline_direction", "pipeline_metric"]

#: pipeline name -> module path (imported lazily)
PIPELINES: dict[str, str] = {
    "graph_transformer": "gattn.pipelines.graph_transformer",
    "mil": "gattn.pipelines.mil",
}

_REQUIRED = ("NAME", "METRIC", "DIRECTION", "add_arguments", "search_space", "run")


def load_pipeline(name: str) -> ModuleType:
    """Import and return the pipeline module registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered.
        ImportError: the module is missing or fails to import (the message says which).
        TypeError: the module does not follow the pipeline contract.
    """
    if name not in PIPELINES:
        raise ValueError(f"pipeline must be one of {sorted(PIPELINES)}, got {name!r}")
    module_path = PIPELINES[name]
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_path.startswith(exc.name):
            raise ImportError(
                f"pipeline {name!r}: module {module_path} is not installed in this copy of gattn"
            ) from exc
        raise ImportError(
            f"pipeline {name!r}: importing {module_path} failed: {exc}"
        ) from exc
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise TypeError(
            f"pipeline module {module_path} does not follow the pipeline contract: "
            f"missing {', '.join(missing)}"
        )
    return module


def pipeline_metric(module: ModuleType, config: dict[str, Any]) -> str:
    """The selection metric of ``module`` for ``config`` (``metric(config)`` or ``METRIC``)."""
    fn = getattr(module, "metric", None)
    return str(fn(config)) if callable(fn) else str(module.METRIC)


def pipeline_direction(module: ModuleType, config: dict[str, Any]) -> str:
    """``"maximize"``/``"minimize"`` for ``config`` (``direction(config)`` or ``DIRECTION``)."""
    fn = getattr(module, "direction", None)
    value = str(fn(config)) if callable(fn) else str(module.DIRECTION)
    if value not in ("maximize", "minimize"):
        raise ValueError(
            f"pipeline {module.__name__} gave direction {value!r}; expected 'maximize' or "
            "'minimize'"
        )
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parser_defaults(add_arguments: Callable[[argparse.ArgumentParser], None]) -> dict[str, Any]:
    """The config made of a pipeline's parser defaults alone (what ``run`` gets with no option)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args([]))
