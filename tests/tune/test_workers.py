"""Many workers on one study, in one process: seeds per trial, dead local workers, a trial failed
under a live worker, surplus trials, heartbeat settings. (Real worker processes on a PostgreSQL
server: tests/tune/test_postgres.py.)"""

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from gattn.pipelines import make_config
from gattn.tune import default_storage, finished_trials, optimize
from gattn.tune import study as study_module
from gattn.tune.study import TrialSeededTPE, check_heartbeat, make_storage
from gattn.tune.workers import WORKER_ATTR, fail_dead_local_trials, worker_env, worker_identity

from .fake_pipeline import FakePipeline

optuna.logging.set_verbosity(optuna.logging.WARNING)
fake = FakePipeline()
CONFIG = make_config(fake, {"epochs": 3})


def _study(tmp_path, name="s"):
    return optuna.load_study(study_name=name, storage=default_storage("fake", tmp_path))


def test_trial_seeded_sampler_draws_per_trial_number():
    """Two workers sharing a study draw different parameters for different trials, and any worker
    draws the same ones for a given trial number."""
    def draws(sampler, numbers):
        study = optuna.create_study(sampler=sampler)
        out = {}
        for number in numbers:
            trial = study.ask()
            assert trial.number == number
            out[number] = trial.suggest_float("x", -4, 4)
            study.tell(trial, 0.0)
        return out

    a, b = draws(TrialSeededTPE(3), range(4)), draws(TrialSeededTPE(3), range(4))
    assert a == b
    assert len(set(a.values())) == 4  # a seed per worker would repeat draws across workers
    assert draws(TrialSeededTPE(4), range(4)) != a


def test_check_heartbeat_refuses_a_grace_period_shorter_than_two_intervals():
    check_heartbeat(60, 180)
    with pytest.raises(ValueError, match="at least twice heartbeat_interval"):
        check_heartbeat(10, 15)
    with pytest.raises(ValueError, match="heartbeat_interval must be a positive whole number"):
        check_heartbeat(0, 10)
    with pytest.raises(ValueError, match="retries must be"):
        make_storage(None, "fake", retries=-1)


def test_storage_gets_the_heartbeat_settings(tmp_path):
    storage = make_storage(None, "fake", tmp_path, heartbeat_interval=7, grace_period=20, retries=2)
    assert storage.get_heartbeat_interval() == 7 and storage.grace_period == 20
    assert storage.get_heartbeat_stale_trial_callback()._max_retry == 2
    assert make_storage(None, "fake", tmp_path, retries=0).get_heartbeat_stale_trial_callback() is None


def test_every_trial_names_its_worker(tmp_path):
    study = optimize(fake, CONFIG, 3, runs_dir=tmp_path, study_name="s")
    for trial in study.trials:
        worker = trial.user_attrs[WORKER_ATTR]
        assert worker["pid"] == os.getpid() and worker["trial"] == trial.number and worker["host"]


def test_a_dead_local_worker_is_failed_at_once_and_its_trial_retried(tmp_path):
    """A RUNNING trial whose process on this machine is gone is failed without waiting for the
    heartbeat's grace period (180 s here), and retried with its parameters."""
    storage = make_storage(None, "fake", tmp_path, retries=1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    identity = {**worker_identity(0), "pid": int(dead.stdout)}
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-4, 4)})
    trial.set_user_attr(WORKER_ATTR, identity)
    alive = study.ask()  # this process: alive
    alive.set_user_attr(WORKER_ATTR, worker_identity(alive.number))
    elsewhere = study.ask()  # another machine: left to the heartbeat
    elsewhere.set_user_attr(WORKER_ATTR, {**identity, "host": "another-machine", "trial": elsewhere.number})
    callback = storage.get_heartbeat_stale_trial_callback()
    assert fail_dead_local_trials(study, callback) == [trial.number]
    states = {t.number: t.state for t in study.trials}
    assert states[trial.number] == TrialState.FAIL
    assert states[alive.number] == states[elsewhere.number] == TrialState.RUNNING
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == trial.params
    assert retry.system_attrs["failed_trial"] == trial.number
    # the retry carries the dead worker's identity for another trial number: never judged by it
    assert fail_dead_local_trials(study, callback) == []


def test_a_trial_failed_by_another_worker_does_not_crash_this_one(tmp_path):
    """The live worker of a trial that another worker failed (optuna #5470: 'Cannot tell a FAIL
    trial') drops that result and goes on; the study still gets its count."""
    class FailedUnderneath(FakePipeline):
        def run(self, config, run_dir, *, trial=None, resume=False, progress=None):
            if trial.number in (1, 3, 4):
                other = optuna.load_study(study_name="s", storage=default_storage("fake", tmp_path))
                other.tell(trial.number, state=TrialState.FAIL)  # what fail_stale_trials does
            if trial.number == 1:
                return super().run(config, run_dir)  # returns a value for a failed trial
            if trial.number == 4:  # the server ended this worker's session while it was frozen
                raise optuna.exceptions.StorageInternalError("terminating connection due to idle-in-transaction")
            return super().run(config, run_dir, trial=trial)  # trial 3: its report is refused

    study = optimize(FailedUnderneath(), CONFIG, 5, runs_dir=tmp_path, study_name="s")
    assert finished_trials(study) == 5
    assert [t.number for t in study.trials if t.state == TrialState.FAIL] == [1, 3, 4]


def test_a_real_error_is_not_mistaken_for_a_lost_trial(tmp_path):
    class Broken(FakePipeline):
        def run(self, config, run_dir, *, trial=None, resume=False, progress=None):
            raise ValueError("a bug in the pipeline")

    with pytest.raises(ValueError, match="a bug in the pipeline"):
        optimize(Broken(), CONFIG, 2, runs_dir=tmp_path)

    class StorageDown(FakePipeline):
        def run(self, config, run_dir, *, trial=None, resume=False, progress=None):
            raise optuna.exceptions.StorageInternalError("the database went away")

    # a storage error in a trial that nobody failed is the worker's own: raised, not dropped
    with pytest.raises(optuna.exceptions.StorageInternalError, match="the database went away"):
        optimize(StorageDown(), CONFIG, 2, runs_dir=tmp_path, study_name="down")


def test_postgres_sessions_end_when_left_idle_in_a_transaction_for_the_grace_period(monkeypatch):
    """A worker frozen inside a transaction must not hold its trial's row locks past the grace
    period (tests/tune/test_postgres.py runs it on a server); the user's own options are kept."""
    engine = study_module._engine_kwargs
    monkeypatch.delenv("PGOPTIONS", raising=False)
    assert engine("postgresql://u@h/db", 180) == {
        "pool_pre_ping": True, "connect_args": {"options": "-c idle_in_transaction_session_timeout=180000"}}
    assert engine("postgresql+psycopg2://u@h/db?options=-c%20search_path%3Dstudies", 3) == {
        "pool_pre_ping": True,
        "connect_args": {"options": "-c search_path=studies -c idle_in_transaction_session_timeout=3000"}}
    assert engine("postgresql://u@h/db?options=-c%20idle_in_transaction_session_timeout%3D0", 3) == {
        "pool_pre_ping": True}
    assert engine("mysql+pymysql://u@h/db", 3) is None
    assert engine("sqlite:///x.db", 3) == {"connect_args": {"timeout": 60}}
    # libpq ignores $PGOPTIONS once options are passed: its settings travel with gattn's
    monkeypatch.setenv("PGOPTIONS", "-c search_path=studies")
    assert engine("postgresql://u@h/db", 3)["connect_args"] == {
        "options": "-c search_path=studies -c idle_in_transaction_session_timeout=3000"}
    assert engine("postgresql://u@h/db?options=-c%20work_mem%3D64MB", 3)["connect_args"] == {
        "options": "-c work_mem=64MB -c idle_in_transaction_session_timeout=3000"}  # the URL's win, as in libpq
    monkeypatch.setenv("PGOPTIONS", "-c idle_in_transaction_session_timeout=0")
    assert engine("postgresql://u@h/db", 3) == {"pool_pre_ping": True}


def test_a_trial_started_with_the_last_slot_gone_is_surplus(tmp_path, monkeypatch):
    """Two workers that both saw one free slot both start a trial: the later one is failed as
    surplus, not run, and the study holds exactly n finished trials."""
    optimize(fake, CONFIG, 2, runs_dir=tmp_path, study_name="s")
    real, calls = study_module._counts, {"n": 0}

    def stale_counts(study):
        calls["n"] += 1
        return (1, 0) if calls["n"] == 1 else real(study)  # read before the other worker's trial ended

    monkeypatch.setattr(study_module, "_counts", stale_counts)
    study = optimize(fake, CONFIG, 2, runs_dir=tmp_path, study_name="s")
    surplus = study.trials[-1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"] is True and not surplus.params
    assert finished_trials(study) == 2


def test_tuning_refuses_distributed_trials(tmp_path):
    config = make_config(fake, {"epochs": 3, "accelerator": "cpu", "devices": "2"})
    with pytest.raises(ValueError, match="--workers"):
        optimize(fake, config, 2, runs_dir=tmp_path)


def test_worker_env_spreads_workers_over_gpus():
    assert worker_env(3, {}, gpus=2)["CUDA_VISIBLE_DEVICES"] == "1"
    assert worker_env(3, {"CUDA_VISIBLE_DEVICES": "5"}, gpus=2)["CUDA_VISIBLE_DEVICES"] == "5"  # the user's
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(1, {}, gpus=1)
