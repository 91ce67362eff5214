"""Hyperparameter search with Optuna.

:func:`optimize` runs (or resumes) the study of a pipeline (see :mod:`gattn.pipelines`):
TPE sampling over the pipeline's declared search space, median pruning on the validation
metric (per epoch through optuna-integration's Lightning callback, or per split under
cross-validation), and a persistent storage (an SQLite file under
``runs/<pipeline>/study.db`` by default; PostgreSQL/MySQL URLs or a ``journal:`` file for many
machines) so that an interrupted study loses no finished trial. A study is bound to its fixed
configuration (:func:`~gattn.tune.study.fixed_configuration`). :func:`write_report` saves the
best parameters and metrics as JSON and the study's plots as PNG files.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "format_table": "gattn.tune.report",
    "summarize": "gattn.tune.report",
    "summary_table": "gattn.tune.report",
    "write_report": "gattn.tune.report",
    "FINISHED": "gattn.tune.study",
    "StorageError": "gattn.tune.study",
    "StudyMismatch": "gattn.tune.study",
    "check_storage": "gattn.tune.study",
    "fixed_configuration": "gattn.tune.study",
    "create_study": "gattn.tune.study",
    "default_storage": "gattn.tune.study",
    "default_study_name": "gattn.tune.study",
    "finished_trials": "gattn.tune.study",
    "make_storage": "gattn.tune.study",
    "optimize": "gattn.tune.study",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``gattn.tune.report.format_table`` (used by the training
    # command) does not need optuna.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gattn.tune' has no attribute {name!r}")


__all__ = [
    "FINISHED",
    "StorageError",
    "StudyMismatch",
    "check_storage",
    "fixed_configuration",
    "create_study",
    "default_storage",
    "default_study_name",
    "finished_trials",
    "format_table",
    "make_storage",
    "optimize",
    "summarize",
    "summary_table",
    "write_report",
]
