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
  (needs psycopg: ``pip install 'gattn[scale]'``), ``mysql+pymysql://user:password@host/db``, or
  ``sqlite:///path.db``.
* ``journal:PATH`` (or a path ending in ``.log``): Optuna's JournalStorage on an append-only
  file, which works on a shared network file system where SQLite locking does not (but has
  no heartbeat: a trial of a worker that died on another machine keeps its slot).

Many workers
------------
Every worker runs the same ``gattn tune ... --storage URL --study-name NAME`` command (or
``--workers N`` starts N of them here). Between them they finish exactly ``n_trials`` trials:
a worker starts a trial only while the finished and running trials are fewer than
``n_trials``; a trial started in the same instant as the last free one is failed at once
(user attribute ``surplus``) and does not count. A worker with nothing left to start waits
for the running trials, so that the slot of a trial that dies is filled again.

Dead workers. RDB storages have a heartbeat: each running trial records one every
``heartbeat_interval`` seconds (:data:`HEARTBEAT_INTERVAL`, 60), and a trial without one for
``grace_period`` seconds (:data:`GRACE_PERIOD`, 180) is failed by the next worker that looks,
and by option (``retries``) queued again with the same parameters. The heartbeat is a Python
thread in the worker: a worker that stalls (a suspended process, a long call holding the GIL,
a swapping machine) misses beats, and another worker then fails its live trial (optuna issues
#5470, #4234; Optuna tests its heartbeat only on SQLite and Redis). The grace period is
therefore three intervals, long enough for a numba compilation or a loaded machine, and a
worker whose trial was failed under it logs it and goes on instead of crashing (Optuna itself
raises "Cannot tell a FAIL trial"). On PostgreSQL the server ends a session left idle inside a
transaction for the grace period, so that a worker frozen mid-transaction does not keep the
others from failing its trial with the row locks it holds (``_engine_kwargs``); a heartbeat
that cannot be written is logged and tried again (``_RDBStorage``). A trial whose worker
ran on this machine and is gone is failed at once, without waiting for the grace period
(:mod:`gattn.tune.workers`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
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
    "TrialSeededTPE",
    "check_heartbeat",
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
#: seconds without a heartbeat after which a running trial is considered dead (three intervals:
#: two beats may be missed by a live worker)
GRACE_PERIOD = 180
#: default number of times a trial whose worker died is queued again with the same parameters
RETRIES = 1


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
    """``sqlite:///<runs_dir>/<pipeline>/study.db`` (absolute path; the folder is created).

    Args:
        pipeline (str): the pipeline's name.
        runs_dir (str or Path, optional): the runs folder. (default: ``"runs"``)
    """
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


#: SQLAlchemy driver name -> (module, what to pip install)
_DRIVERS = {
    "psycopg": ("psycopg", "'psycopg[binary]'"),
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "mysqldb": ("MySQLdb", "mysqlclient"),
    "pymysql": ("pymysql", "pymysql"),
}


def _check_driver(url: str) -> None:
    """The database driver of ``url`` is installed (SQLAlchemy's choice for the dialect: since
    SQLAlchemy 2.1, ``postgresql://`` means psycopg 3; ``postgresql+psycopg2://`` asks for psycopg2)."""
    import importlib.util
    import sys

    from sqlalchemy.engine.url import make_url

    try:
        driver = make_url(url).get_dialect().driver
    except Exception as exc:  # SQLAlchemy's errors: a malformed URL, an unknown dialect
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"storage {_redact(url)}: {first}") from None
    if driver not in _DRIVERS:
        return
    module, package = _DRIVERS[driver]
    # a None in sys.modules blocks an import (Python's convention)
    missing = sys.modules[module] is None if module in sys.modules else importlib.util.find_spec(module) is None
    if missing:
        raise StorageError(f"storage {_redact(url)} needs the {module} driver: pip install {package}")


def check_storage(storage: str | None, pipeline: str, runs_dir: str | Path = "runs") -> str:
    """The storage URL (the default SQLite file for None), checked without creating anything in
    it: its form, the database driver it needs, and that its folder can be written.

    Args:
        storage (str, optional): the storage URL (``None``: the default SQLite file).
        pipeline (str): the pipeline's name (for the default file).
        runs_dir (str or Path, optional): the runs folder (for the default file). (default: ``"runs"``)

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


def check_heartbeat(heartbeat_interval: int, grace_period: int) -> None:
    """Refuse heartbeat settings under which a live worker's trial would be failed.

    Args:
        heartbeat_interval (int): seconds between heartbeats (positive).
        grace_period (int): seconds without one before a trial is failed (at least two intervals).

    Raises:
        ValueError: naming the option.
    """
    for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive whole number of seconds, got {value!r}")
    if grace_period < 2 * heartbeat_interval:
        raise ValueError(
            f"grace_period ({grace_period} s) must be at least twice heartbeat_interval ({heartbeat_interval} s): "
            "a beat can be one interval late, and a live worker's trial would be failed"
        )


def _retry_callback(retries: int) -> Any:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    if not retries:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)


def make_storage(
    storage: str | optuna.storages.BaseStorage | None,
    pipeline: str,
    runs_dir: str | Path = "runs",
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    retries: int = RETRIES,
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (see the module docstring); None: the default SQLite file.

    RDB storages get a heartbeat every ``heartbeat_interval`` seconds; a running trial without one
    for ``grace_period`` seconds is failed and queued again up to ``retries`` times.

    Args:
        storage (str or optuna.storages.BaseStorage, optional): a storage URL (RDB, ``journal:PATH``
            or a ``.log`` path) or object (``None``: ``<runs_dir>/<pipeline>/study.db``).
        pipeline (str): the pipeline's name (for the default file).
        runs_dir (str or Path, optional): the runs folder. (default: ``"runs"``)
        heartbeat_interval (int, optional): seconds between a running trial's heartbeats (RDB
            storages). (default: :data:`HEARTBEAT_INTERVAL`, 60)
        grace_period (int, optional): seconds without a heartbeat after which a trial is failed (at
            least two intervals). (default: :data:`GRACE_PERIOD`, 180)
        retries (int, optional): how many times a trial failed that way is queued again with the same
            parameters. (default: ``1``)

    Raises:
        StorageError: a malformed URL, a missing database driver, an unwritable folder, or a
            database that cannot be opened (the message names it, without its password).
        ValueError: heartbeat settings that would fail live trials (:func:`check_heartbeat`).
    """
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    check_heartbeat(heartbeat_interval, grace_period)
    callback = _retry_callback(retries)
    storage = check_storage(storage, pipeline, runs_dir)
    if storage.startswith("journal:") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(Path(storage.removeprefix("journal:")).expanduser())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return _RDBStorage(
                storage,
                engine_kwargs=_engine_kwargs(storage, grace_period),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
        except ImportError as exc:
            raise StorageError(f"storage {_redact(storage)}: a database driver is missing ({exc})") from None
        except Exception as exc:  # SQLAlchemy's errors: a bad dialect, no server, refused login
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"cannot open the study storage {_redact(storage)}: {first}") from None


def _engine_kwargs(url: str, grace_period: int) -> dict[str, Any] | None:
    """SQLAlchemy engine options for the storage ``url``.

    SQLite: several local workers write one file, so a worker waits up to 60 s for its lock
    rather than failing after 5 s. PostgreSQL: the server ends a session left idle inside a
    transaction for longer than ``grace_period`` (``idle_in_transaction_session_timeout``). A
    worker frozen in the middle of one (a suspended process, a swapping machine) holds row locks
    on its trial, for instance the key-share lock that recording a heartbeat or a user attribute
    takes on the trial's row; without the timeout the worker that fails the trial once its
    heartbeat is stale would wait for those locks until the frozen worker woke. Options already
    in the URL (``?options=...``) or, without them, in ``$PGOPTIONS`` (which libpq would ignore
    once options are passed) are kept, and a timeout set there wins. Pooled connections are
    checked before use (``pool_pre_ping``, as Optuna does for MySQL), so that a worker goes on
    after the server ended its sessions or restarted.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    from sqlalchemy.engine.url import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    options = parsed.query.get("options", os.environ.get("PGOPTIONS", ""))
    options = " ".join(options) if isinstance(options, tuple) else options
    if "idle_in_transaction_session_timeout" in options:
        return {"pool_pre_ping": True}
    timeout = f"-c idle_in_transaction_session_timeout={int(grace_period) * 1000}"
    return {"pool_pre_ping": True, "connect_args": {"options": f"{options} {timeout}".strip()}}


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat outlives a failed write.

    Optuna records heartbeats in a thread that ends at the first exception, so one lost
    database session (the server restarted or ended it, a network blip) would stop the
    heartbeat of a live trial for good, and other workers would fail that trial after the
    grace period. Here a heartbeat that cannot be recorded is logged and the next one is tried
    at the next interval, on a fresh connection (SQLAlchemy drops the broken one).
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            optuna.logging.get_logger("optuna").warning(
                f"the heartbeat of trial id {trial_id} could not be recorded ({first}); "
                f"trying again in {self.heartbeat_interval} s")


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
    """The configuration options that ``pipeline.search_space`` sets for ``config``.

    Args:
        pipeline (Pipeline): the pipeline class.
        config (TrainConfig): a configuration of it.
    """
    return sorted(pipeline.search_space(_RecordingTrial(), config))


def fixed_configuration(pipeline: Any, config: Any) -> dict[str, Any]:
    """What binds a study: the configuration minus the searched options and the run-control
    ones (progress bars, threads, the data folder), as JSON-safe values.

    Args:
        pipeline (Pipeline): the pipeline class.
        config (TrainConfig): the configuration the study tunes.
    """
    from gattn.pipelines.config import config_dict, run_control_fields

    skip = set(searched_options(pipeline, config)) | run_control_fields(type(config))
    return {k: v for k, v in config_dict(config).items() if k not in skip}


def default_study_name(pipeline: Any, config: Any) -> str:
    """``<pipeline>-<run label>-<8 hex digits of the fixed configuration>``: another fixed
    configuration gets another study, never the old one's trials.

    Args:
        pipeline (Pipeline): the pipeline class.
        config (TrainConfig): the configuration the study tunes.
    """
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
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    retries: int = RETRIES,
) -> optuna.Study:
    """Create the study or reopen it (``load_if_exists=True``).

    The sampler is TPE with a constant liar (running trials count as bad, so that parallel
    workers spread out), seeded per trial (:class:`TrialSeededTPE`); the pruner is a
    :class:`~optuna.pruners.MedianPruner` on the validation values reported each epoch (no
    pruning in the first ``n_startup_trials`` trials or the first ``n_warmup_steps`` epochs).
    The heartbeat settings apply to RDB storages (see :func:`make_storage`).

    Args:
        pipeline (str): the pipeline's name (for the default storage).
        direction (str): ``"maximize"`` or ``"minimize"`` (the selection metric's).
        storage (str or optuna.storages.BaseStorage, optional): a storage URL (RDB, ``journal:PATH``
            or a ``.log`` path) or object (``None``: ``<runs_dir>/<pipeline>/study.db``).
        study_name (str, optional): the study's name (``None``: Optuna's). (default: ``None``)
        runs_dir (str or Path, optional): the runs folder. (default: ``"runs"``)
        seed (int, optional): seed of the sampler (trial ``k`` draws with ``seed + k``; ``None``:
            unseeded). (default: ``0``)
        prune (bool, optional): stop unpromising trials early (median pruner). (default: ``True``)
        n_startup_trials (int, optional): trials before TPE and the pruner start to act.
            (default: ``5``)
        n_warmup_steps (int, optional): epochs of a trial before it may be pruned. (default: ``5``)
        heartbeat_interval (int, optional): seconds between a running trial's heartbeats (RDB
            storages). (default: :data:`HEARTBEAT_INTERVAL`, 60)
        grace_period (int, optional): seconds without a heartbeat after which a trial is failed (at
            least two intervals). (default: :data:`GRACE_PERIOD`, 180)
        retries (int, optional): how many times a trial failed that way is queued again with the same
            parameters. (default: ``1``)
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                    n_warmup_steps=n_warmup_steps)
        if prune else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=make_storage(storage, pipeline, runs_dir, heartbeat_interval=heartbeat_interval,
                             grace_period=grace_period, retries=retries),
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar in optuna 4
        study.sampler = TrialSeededTPE(seed) if seed is not None else optuna.samplers.TPESampler(constant_liar=True)
    return study


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random numbers for trial ``k`` are seeded with ``seed + k``.

    One seeded sampler per worker would make workers that start together draw the same
    parameters; seeding by trial number gives every trial its own draws, the same ones whichever
    worker runs it, and a resumed study does not repeat the draws of its first trials.

    Args:
        seed (int): the base seed; trial ``k`` draws with ``seed + k``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._number: int | None = None
        self._tpe: optuna.samplers.TPESampler | None = None

    def _for(self, trial: Any) -> optuna.samplers.TPESampler:
        if self._tpe is None or self._number != trial.number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._tpe = optuna.samplers.TPESampler(seed=self.seed + trial.number, constant_liar=True)
            self._number = trial.number
        return self._tpe

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self._for(trial).after_trial(study, trial, state, values)


def finished_trials(study: optuna.Study) -> int:
    """How many trials of ``study`` are complete or pruned.

    Args:
        study (optuna.Study): the study.
    """
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


class _Surplus(Exception):
    """A trial created in the same instant as the study's last free one (it is failed, not run)."""


def _counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of ``study``."""
    finished = running = 0
    for trial in study.get_trials(deepcopy=False):
        finished += trial.state in FINISHED
        running += trial.state == TrialState.RUNNING
    return finished, running


def _heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """Does ``storage`` record heartbeats (an RDB storage made with a heartbeat interval)?"""
    return isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None


def _fail_dead(study: optuna.Study, storage: optuna.storages.BaseStorage, retries: int) -> None:
    """Fail the running trials whose worker is known dead: gone from this machine, or silent
    for the grace period (heartbeat)."""
    from .workers import fail_dead_local_trials

    if _heartbeat(storage):
        fail_dead_local_trials(study, storage.get_heartbeat_stale_trial_callback())
        optuna.storages.fail_stale_trials(study)
    else:
        fail_dead_local_trials(study, _retry_callback(retries))


def check_tunable(config: Any) -> None:
    """Refuse a configuration whose trials would each train on several processes.

    Raises:
        ValueError: naming the options.
    """
    from gattn.pipelines.runner import processes_per_run

    count = processes_per_run(config)
    if count > 1:
        raise ValueError(
            f"a trial would train on {count} processes (--devices {config.devices}, --num-nodes {config.num_nodes}): "
            "tuning trains each trial in one process; give --devices 1 and run trials in parallel with --workers"
        )


def open_study(
    pipeline: Any,
    config: Any,
    *,
    study_name: str | None = None,
    **options: Any,
) -> optuna.Study:
    """The study of ``pipeline`` and ``config`` (created, or reopened and checked against its
    fixed configuration), with the metric, pipeline and configuration stored in its attributes.
    ``options``: the keyword arguments of :func:`create_study` (storage, seed, pruning, heartbeat).

    Raises:
        StudyMismatch: the study was created for another fixed configuration.
        ValueError: a configuration whose trials would train on several processes.
    """
    from gattn.pipelines.config import config_dict

    check_tunable(config)
    study = create_study(pipeline.name, direction=pipeline.direction(config),
                         study_name=study_name or default_study_name(pipeline, config), **options)
    _check_binding(study, fixed_configuration(pipeline, config))
    if "config" not in study.user_attrs:
        study.set_user_attr("config", _json_safe(config_dict(config)))
    study.set_user_attr("metric", pipeline.selection_metric(config))
    study.set_user_attr("pipeline", pipeline.name)
    study.set_user_attr("label", pipeline.describe(config))
    return study


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
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    retries: int = RETRIES,
    poll: float | None = None,
) -> optuna.Study:
    """Tune ``pipeline`` until its study holds ``n_trials`` finished trials (or ``timeout``).

    Each trial trains ``config`` with the options of ``pipeline.search_space(trial, config)``
    in ``<runs_dir>/<pipeline>/<study>/trial-NNNN`` and returns its ``val_<metric>``; all its
    metrics are stored as the trial's user attributes (the report shows the test metrics of
    the best trial), and :data:`~gattn.tune.workers.WORKER_ATTR` names the worker that ran it.
    A trial whose training diverges (``FloatingPointError``) is marked failed and does not
    count. The study is bound to the fixed configuration (see :func:`fixed_configuration`):
    reopening it with another raises :class:`StudyMismatch`.

    Any number of processes may call this on one shared storage (see the module docstring):
    between them they finish ``n_trials`` trials. ``timeout`` stops this worker from starting
    trials after that many seconds; ``poll`` is how often (seconds) a worker with nothing to
    start looks at the running trials (default: the heartbeat interval, at most 5 s).

    Args:
        pipeline (Pipeline): the pipeline class to tune.
        config (TrainConfig): the fixed options; the search space sets the others per trial.
        n_trials (int): finished trials to reach (over all workers).
        runs_dir (str or Path, optional): the runs folder. (default: ``"runs"``)
        timeout (float, optional): seconds after which this worker starts no trial (``None``: no
            limit). (default: ``None``)
        storage (str or optuna.storages.BaseStorage, optional): a storage URL (RDB, ``journal:PATH``
            or a ``.log`` path) or object (``None``: ``<runs_dir>/<pipeline>/study.db``).
        study_name (str, optional): the study's name (``None``: :func:`default_study_name`).
            (default: ``None``)
        seed (int, optional): seed of the sampler (trial ``k`` draws with ``seed + k``; ``None``:
            unseeded). (default: ``0``)
        prune (bool, optional): stop unpromising trials early (median pruner). (default: ``True``)
        n_startup_trials (int, optional): trials before TPE and the pruner start to act.
            (default: ``5``)
        n_warmup_steps (int, optional): epochs of a trial before it may be pruned. (default: ``5``)
        callbacks (list[Callable], optional): Optuna callbacks run after each trial.
            (default: ``None``)
        heartbeat_interval (int, optional): seconds between a running trial's heartbeats (RDB
            storages). (default: :data:`HEARTBEAT_INTERVAL`, 60)
        grace_period (int, optional): seconds without a heartbeat after which a trial is failed (at
            least two intervals). (default: :data:`GRACE_PERIOD`, 180)
        retries (int, optional): how many times a trial failed that way is queued again with the same
            parameters. (default: ``1``)
        poll (float, optional): seconds between looks at the running trials when there is
            nothing to start (``None``: the heartbeat interval, at most 5 s). (default: ``None``)

    Returns:
        the study (its trials are also in the storage).
    """
    from gattn.pipelines.config import config_dict
    from gattn.pipelines.runner import make_config

    from .workers import WORKER_ATTR, worker_identity

    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive int, got {n_trials!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
    metric = pipeline.selection_metric(config)
    name = study_name or default_study_name(pipeline, config)
    store = make_storage(storage, pipeline.name, runs_dir, heartbeat_interval=heartbeat_interval,
                         grace_period=grace_period, retries=retries)
    study = open_study(pipeline, config, storage=store, study_name=name, runs_dir=runs_dir, seed=seed, prune=prune,
                       n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
    base = config_dict(config)
    trials_dir = Path(runs_dir).expanduser() / pipeline.name / name
    key = f"val_{metric}"
    # how the objective of the current trial ended: None (returned) or its exception
    last: dict[str, Any] = {}

    def train(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_identity(trial.number))
        taken = sum(1 for t in study.get_trials(deepcopy=False)
                    if t.number < trial.number and t.state != TrialState.FAIL)
        if taken >= n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"the study already has its {n_trials} trials (another worker took the last one)")
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

    def objective(trial: optuna.Trial) -> float:
        last.clear()
        last["number"] = trial.number
        try:
            value = train(trial)
        except BaseException as exc:
            last["error"] = exc
            raise
        last["error"] = None
        return value

    caught = (FloatingPointError, _Surplus)
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = float(poll) if poll is not None else float(min(heartbeat_interval, 5))
    failures = 0  # trials in a row that failed in this worker
    waiting_shown = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while deadline is None or time.monotonic() < deadline:
            _fail_dead(study, store, retries)
            finished, running = _counts(study)
            if finished >= n_trials:
                break
            if finished + running >= n_trials:
                # nothing to start: wait for the running trials (a dead one frees its slot) when
                # the storage can tell a dead worker from a live one; without a heartbeat, stop
                if not _heartbeat(store):
                    break
                if not waiting_shown:
                    optuna.logging.get_logger("optuna").info(
                        f"waiting for {running} running trial(s) of other workers to finish")
                    waiting_shown = True
                time.sleep(poll)
                continue
            waiting_shown = False
            try:
                study.optimize(objective, n_trials=1, callbacks=callbacks, catch=caught, gc_after_trial=True)
            except (ValueError, AssertionError, optuna.exceptions.UpdateFinishedTrialError) as exc:
                if not _lost(study, last, exc, caught):
                    raise
                optuna.logging.get_logger("optuna").warning(
                    f"trial {last['number']} was failed by another worker while this one ran it (no heartbeat "
                    f"for {grace_period} s: a stalled process?); its result is dropped and the worker goes on")
                continue
            state = _state(study, last.get("number"))
            if state == TrialState.FAIL and not isinstance(last.get("error"), _Surplus):
                failures += 1
                if failures >= max(n_trials - finished, 1):
                    optuna.logging.get_logger("optuna").warning(
                        f"{failures} trials in a row failed: this worker stops (see their errors above)")
                    break
            elif state in FINISHED:
                failures = 0
    return study


def _state(study: optuna.Study, number: int | None) -> TrialState | None:
    if number is None:
        return None
    return next((t.state for t in study.get_trials(deepcopy=False) if t.number == number), None)


def _lost(study: optuna.Study, last: dict[str, Any], exc: BaseException, caught: tuple[type, ...]) -> bool:
    """Did ``exc`` escape ``study.optimize`` because another worker failed the trial this one was
    running? Then the trial is FAIL and the objective returned (Optuna 5 then fails its own
    ``assert False, "Should not reach."`` after "Cannot tell a FAIL trial"), raised one of
    ``caught``, was pruned, or met the finished trial in a report."""
    if "error" not in last or _state(study, last.get("number")) != TrialState.FAIL:
        return False
    error = last["error"]
    if isinstance(exc, AssertionError):
        return error is None
    # StorageInternalError: the server ended this worker's session while it was frozen inside a
    # transaction (see _engine_kwargs), and the trial was failed meanwhile
    return error is None or isinstance(error, (*caught, optuna.TrialPruned,
                                               optuna.exceptions.UpdateFinishedTrialError,
                                               optuna.exceptions.StorageInternalError))
