"""Training pipelines: one file per model family, registered by name, on Lightning.

A family is a :class:`~gattn.pipelines.base.Pipeline` subclass with a typed configuration
(:class:`~gattn.pipelines.config.TrainConfig` plus :func:`~gattn.pipelines.config.option`
fields), registered with :func:`register_pipeline`; the ``gattn`` command, ``gattn tune`` and
``gattn datasets`` find it through the registry (:func:`discover`), never through a list.
:func:`~gattn.pipelines.runner.run` trains one configuration in a run folder.

Importing this package needs the training stack (``pip install 'gattn[pipelines]'``).
"""

from __future__ import annotations

from .base import DataLoaders, Pipeline, Split
from .config import ConfigError, TrainConfig, option
from .registry import discover, get_pipeline, pipeline_names, register_pipeline
from .runner import RunResult, load_checkpoint, make_config, new_run_dir, run

__all__ = [
    "ConfigError",
    "DataLoaders",
    "Pipeline",
    "RunResult",
    "Split",
    "TrainConfig",
    "discover",
    "get_pipeline",
    "load_checkpoint",
    "make_config",
    "new_run_dir",
    "option",
    "pipeline_names",
    "register_pipeline",
    "run",
]
