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

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = [
    "FINISHED",
    "StorageError",
    "StudyMismatch",
    "check_storage",
    "fixed_configuration",
    "searched_options",
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


class StorageError(ValueError):
    """The study storage cannot be used (bad URL, missing driver, unwritable folder, no server)."""


def _writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {what} folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise StorageError(f"cannot write {what} in {folder}: the folder is not writable "
                           "(choose --runs-dir or --storage)")


def default_storage(pipeline: str, runs_dir: str | Path = "runs") -> str:
    """``sqlite:///<runs_dir>/<pipeline>/study.db`` (absolute path; the folder is created)."""
    folder = Path(runs_dir).expanduser().resolve() / pipeline
    _writable_folder(folder, "the study database")
    return f"sqlite:///{folder / 'study.db'}"


def _redact(url: str) -> str:
    """The URL without its password (for messages)."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        credentials, _, host = tail.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{head}://{user}:***@{host}"
    return url


_DRIVERS = {
    "postgresql": (("psycopg2", "psycopg2-binary"),),
    "postgresql+psycopg2": (("psycopg2", "psycopg2-binary"),),
    "postgresql+psycopg": (("psycopg", "psycopg[binary]"),),
    "mysql": (("MySQLdb", "mysqlclient"),),
    "mysql+pymysql": (("pymysql", "pymysql"),),
}


def _check_driver(url: str) -> None:
    import importlib.util

    scheme = url.split("://", 1)[0].lower()
    for module, package in _DRIVERS.get(scheme, ()):
        if importlib.util.find_spec(module) is None:
            raise StorageError(f"storage {_redact(url)} needs the {module} driver: pip install {package}")


def check_storage(storage: str | None, pipeline: str, runs_dir: str | Path = "runs") -> str:
    """The storage URL (the default SQLite file for None), checked without creating anything in
    it: its form, the database driver it needs, and that its folder can be written.

    Raises:
        StorageError: naming the problem.
    """
    if storage is None:
        return default_storage(pipeline, runs_dir)
    if not isinstance(storage, str) or not storage:
        raise TypeError(f"storage must be a URL string or None, got {storage!r}")
    if storage.startswith("journal:") or storage.endswith(".log"):
        path = Path(storage.removeprefix("journal:").removeprefix("//")).expanduser()
        _writable_folder(path.parent.resolve(), "the study journal")
        return "journal:" + str(path)
    if "://" not in storage:
        raise StorageError(
            "--storage must be an RDB URL (sqlite:///file.db, postgresql://user:pw@host/db, ...) "
            f"or journal:PATH, got {storage!r}"
        )
    if storage.startswith("sqlite:///"):
        target = storage.removeprefix("sqlite:///")
        if target and target != ":memory:":
            _writable_folder(Path(target).expanduser().resolve().parent, "the study database")
    _check_driver(storage)
    return storage


def make_storage(
    storage: str | optuna.storages.BaseStorage | None,
    pipeline: str,
    runs_dir: str | Path = "runs",
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (see the module docstring); None: the default SQLite file.

    Raises:
        StorageError: a malformed URL, a missing database driver, an unwritable folder, or a
            database that cannot be opened (the message names it, without its password).
    """
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    storage = check_storage(storage, pipeline, runs_dir)
    if storage.startswith("journal:") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(Path(storage.removeprefix("journal:")).expanduser())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                storage,
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=GRACE_PERIOD,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1
                ),
            )
        except ImportError as exc:
            raise StorageError(f"storage {_redact(storage)}: a database driver is missing ({exc})") from None
        except Exception as exc:  # SQLAlchemy's errors: a bad dialect, no server, refused login
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"cannot open the study storage {_redact(storage)}: {first}") from None


class StudyMismatch(ValueError):
    """The study exists but was created for another fixed configuration."""


class _RecordingTrial:
    """Stands in for an Optuna trial to learn which options a search space sets."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def _take(self, name: str, value: Any) -> Any:
        self.names.append(name)
        return value

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> float:
        return self._take(name, low)

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> int:
        return self._take(name, low)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._take(name, list(choices)[0])


def searched_options(pipeline: Any, config: Any) -> list[str]:
    """The configuration options that ``pipeline.search_space`` sets for ``config``."""
    return sorted(pipeline.search_space(_RecordingTrial(), config))


def fixed_configuration(pipeline: Any, config: Any) -> dict[str, Any]:
    """What binds a study: the configuration minus the searched options and the run-control
    ones (progress bars, threads, the data folder), as JSON-safe values."""
    from gattn.pipelines.config import config_dict, run_control_fields

    skip = set(searched_options(pipeline, config)) | run_control_fields(type(config))
    return {k: v for k, v in config_dict(config).items() if k not in skip}


def default_study_name(pipeline: Any, config: Any) -> str:
    """``<pipeline>-<run label>-<8 hex digits of the fixed configuration>``: another fixed
    configuration gets another study, never the old one's trials."""
    fixed = fixed_configuration(pipeline, config)
    digest = hashlib.sha1(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{pipeline.name}-{pipeline.run_label(config)}-{digest}"


def _check_binding(study: optuna.Study, fixed: dict[str, Any]) -> None:
    stored = study.user_attrs.get("fixed_config")
    if stored is None:
        study.set_user_attr("fixed_config", fixed)
        return
    stored = json.loads(json.dumps(stored))
    current = json.loads(json.dumps(fixed, default=str))
    changed = [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(stored) | set(current))
               if stored.get(k) != current.get(k)]
    if changed:
        raise StudyMismatch(
            f"study {study.study_name!r} was created with another configuration ({'; '.join(changed)}): "
            "use another --study-name, or leave it out to get a study named after this configuration"
        )


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
    pipeline: Any,
    config: Any,
    n_trials: int,
    *,
    runs_dir: str | Path = "runs",
    timeout: float | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    seed: int | None = 0,
    prune: bool = True,
    n_startup_trials: int = 5,
    n_warmup_steps: int = 5,
    callbacks: list[Callable] | None = None,
) -> optuna.Study:
    """Tune ``pipeline`` until its study holds ``n_trials`` finished trials (or ``timeout``).

    Each trial trains ``config`` with the options of ``pipeline.search_space(trial, config)``
    in ``<runs_dir>/<pipeline>/<study>/trial-NNNN`` and returns its ``val_<metric>``; all its
    metrics are stored as the trial's user attributes (the report shows the test metrics of
    the best trial). A trial whose training diverges (``FloatingPointError``) is marked failed
    and does not count. The study is bound to the fixed configuration (see
    :func:`fixed_configuration`): reopening it with another raises :class:`StudyMismatch`.

    Returns:
        the study (its trials are also in the storage).
    """
    from gattn.pipelines.config import config_dict
    from gattn.pipelines.runner import make_config

    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive int, got {n_trials!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
    metric = pipeline.selection_metric(config)
    direction = pipeline.direction(config)
    fixed = fixed_configuration(pipeline, config)
    name = study_name or default_study_name(pipeline, config)
    study = create_study(
        pipeline.name, direction=direction, storage=storage, study_name=name,
        runs_dir=runs_dir, seed=seed, prune=prune,
        n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps,
    )
    _check_binding(study, fixed)
    if "config" not in study.user_attrs:
        study.set_user_attr("config", _json_safe(config_dict(config)))
    study.set_user_attr("metric", metric)
    study.set_user_attr("pipeline", pipeline.name)
    study.set_user_attr("label", pipeline.describe(config))
    base = config_dict(config)
    trials_dir = Path(runs_dir).expanduser() / pipeline.name / name
    key = f"val_{metric}"

    def objective(trial: optuna.Trial) -> float:
        params = pipeline.search_space(trial, config)
        trial_config = make_config(pipeline, {**base, **params}, source=f"trial {trial.number}")
        result = pipeline.run(trial_config, trials_dir / f"trial-{trial.number:04d}", trial=trial,
                              progress=False)
        metrics = result.metrics
        if key not in metrics:
            raise KeyError(f"pipeline {pipeline.name} returned no {key!r}: {sorted(metrics)}")
        for mname, value in metrics.items():
            if isinstance(value, (int, float)):
                trial.set_user_attr(mname, value)
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
