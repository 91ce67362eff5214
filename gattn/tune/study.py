"""Optuna studies for the pipelines: storage, sampler, pruner, resumable optimisation.

Storage
-------
By default a study lives in an SQLite file, ``<runs_dir>/<pipeline>/study.db`` (no server
needed). Every finished trial is committed as it ends, so a study that is interrupted
(Ctrl-C, a killed process, a machine that goes away) resumes when the same command is run
again: ``load_if_exists=True`` reopens it, and :func:`optimize` runs only the trials still
missing to reach ``n_trials`` finished (complete or pruned) trials.

``storage`` takes any other Optuna storage:

* an RDB URL, for many machines sharing one study: ``postgresql://user:password@host/db``
  (needs ``psycopg2``), ``mysql+pymysql://user:password@host/db``, or ``sqlite:///path.db``.
  RDB storages get a heartbeat: a trial whose process died is marked failed after
  :data:`GRACE_PERIOD` seconds and its parameters are queued again
  (``RetryHeartbeatStaleTrialCallback``).
* ``journal:PATH`` (or a path ending in ``.log``): Optuna's JournalStorage on an append-only
  file, which works on a shared network file system where SQLite locking does not.

Every worker runs the same ``gattn tune ... --storage URL --study-name NAME`` command; they
share the trials and stop together once the study holds ``n_trials`` finished trials
(``MaxTrialsCallback``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = [
    "FINISHED",
    "GRACE_PERIOD",
    "HEARTBEAT_INTERVAL",
    "create_study",
    "default_storage",
    "default_study_name",
    "finished_trials",
    "make_storage",
    "optimize",
]

#: trial states that count towards ``n_trials``
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: seconds between heartbeats of a running trial (RDB storages)
HEARTBEAT_INTERVAL = 60
#: seconds without a heartbeat after which a running trial is considered dead
GRACE_PERIOD = 180


def default_storage(pipeline: str, runs_dir: str | Path = "runs") -> str:
    """``sqlite:///<runs_dir>/<pipeline>/study.db`` (absolute path; the folder is created)."""
    folder = Path(runs_dir).expanduser().resolve() / pipeline
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'study.db'}"


def make_storage(
    storage: str | optuna.storages.BaseStorage | None,
    pipeline: str,
    runs_dir: str | Path = "runs",
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (see the module docstring); None: the default SQLite file."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if storage is None:
        storage = default_storage(pipeline, runs_dir)
    if not isinstance(storage, str) or not storage:
        raise TypeError(f"storage must be a URL string or None, got {storage!r}")
    if storage.startswith("journal:") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(storage.removeprefix("journal:").removeprefix("//")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in storage:
        raise ValueError(
            "storage must be an RDB URL (sqlite:///file.db, postgresql://user:pw@host/db, ...) "
            f"or journal:PATH, got {storage!r}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            storage,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        )


def default_study_name(pipeline: str, config: dict[str, Any]) -> str:
    """``<pipeline>[-<dataset>][-<model>]`` from the config keys that exist."""
    parts = [pipeline] + [str(config[k]) for k in ("dataset", "model") if config.get(k)]
    return "-".join(parts)


def create_study(
    pipeline: str,
    *,
    direction: str,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    runs_dir: str | Path = "runs",
    seed: int | None = 0,
    prune: bool = True,
    n_startup_trials: int = 5,
    n_warmup_steps: int = 5,
) -> optuna.Study:
    """Create the study or reopen it (``load_if_exists=True``).

    The sampler is TPE seeded with ``seed + <trials already in the study>``, so a resumed
    study does not re-draw the parameters of its first trials; the pruner is a
    :class:`~optuna.pruners.MedianPruner` on the validation values reported each epoch (no
    pruning in the first ``n_startup_trials`` trials or the first ``n_warmup_steps`` epochs).
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                    n_warmup_steps=n_warmup_steps)
        if prune else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=make_storage(storage, pipeline, runs_dir),
        study_name=study_name or pipeline,
        direction=direction,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {study.study_name!r} exists with direction {study.direction.name.lower()}, "
            f"not {direction}: choose another --study-name"
        )
    if seed is not None:
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    else:
        study.sampler = optuna.samplers.TPESampler()
    return study


def finished_trials(study: optuna.Study) -> int:
    """How many trials of ``study`` are complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _json_safe(config: dict[str, Any]) -> dict[str, Any]:
    safe = {}
    for key, value in config.items():
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        safe[key] = value
    return safe


def optimize(
    pipeline: ModuleType,
    config: dict[str, Any],
    n_trials: int,
    *,
    timeout: float | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    runs_dir: str | Path = "runs",
    seed: int | None = 0,
    prune: bool = True,
    n_startup_trials: int = 5,
    n_warmup_steps: int = 5,
    callbacks: list[Callable] | None = None,
) -> optuna.Study:
    """Tune ``pipeline`` until its study holds ``n_trials`` finished trials (or ``timeout``).

    Each trial runs ``pipeline.run({**config, **pipeline.search_space(trial, config)}, trial)``
    and returns its ``"val_<metric>"``; all the returned metrics are stored as the trial's
    user attributes (so the report can show the test metrics of the best trial). A trial whose
    training diverges (``FloatingPointError``) is marked failed and does not count.

    Returns:
        the study (its trials are also in the storage).
    """
    from gattn.pipelines import pipeline_direction, pipeline_metric

    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive int, got {n_trials!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
    metric = pipeline_metric(pipeline, config)
    direction = pipeline_direction(pipeline, config)
    study = create_study(
        pipeline.NAME, direction=direction, storage=storage,
        study_name=study_name or default_study_name(pipeline.NAME, config),
        runs_dir=runs_dir, seed=seed, prune=prune,
        n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps,
    )
    if "config" not in study.user_attrs:
        study.set_user_attr("config", _json_safe(config))
    study.set_user_attr("metric", metric)

    key = f"val_{metric}"

    def objective(trial: optuna.Trial) -> float:
        params = pipeline.search_space(trial, config)
        metrics = pipeline.run({**config, **params}, trial)
        if key not in metrics:
            raise KeyError(f"pipeline {pipeline.NAME}.run returned no {key!r}: {sorted(metrics)}")
        for name, value in metrics.items():
            trial.set_user_attr(name, float(value))
        value = float(metrics[key])
        if math.isnan(value):
            raise FloatingPointError(f"{key} is NaN")
        return value

    stop = optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Failed trials do not count: go round again, but stop when a round finished nothing.
        while True:
            remaining = n_trials - finished_trials(study)
            if remaining <= 0:
                break
            before = finished_trials(study)
            study.optimize(
                objective, n_trials=remaining, timeout=timeout,
                callbacks=[stop, *(callbacks or [])],
                catch=(FloatingPointError,), gc_after_trial=True,
            )
            if finished_trials(study) == before or timeout is not None:
                break
    return study
