"""Tuning workers on a real PostgreSQL server (``make test-scale``; tests/tune/postgres.py starts it).

Worker processes are ``gattn tune fake`` commands (tests/tune/fake_pipeline.py, each trial
lasting FAKE_SLEEP seconds). Heartbeats here are 1 s apart with a 3 s grace period, so that a
dead worker is noticed within the test; real studies keep the defaults (60 s and 180 s, see
gattn.tune.study). Two workers run "on two machines" by naming themselves apart
(GATTN_WORKER_HOST), so that only the heartbeat can tell that one of them died.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from gattn.tune.study import make_storage

from .postgres import Unavailable, create_database, postgres_server, wait_for

pytestmark = pytest.mark.scale
ROOT = Path(__file__).resolve().parents[2]
FAST_HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]
_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    try:
        with postgres_server() as url:
            yield url
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")


@pytest.fixture
def database(server):
    return create_database(server, f"study_{os.getpid()}_{next(_names)}")


def _tune(database, tmp_path, trials, *extra, **env):
    command = [sys.executable, "-m", "gattn.cli", "--plugin", "tests.tune.fake_pipeline", "tune", "fake",
               "--trials", str(trials), "--storage", database, "--study-name", "shared", "--runs-dir",
               str(tmp_path), "--no-plots", *extra]
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "FAKE_SLEEP": "0.3", **env}
    return subprocess.Popen(command, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc, timeout=180):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker did not finish in {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def _study(database):
    return optuna.load_study(study_name="shared", storage=database)


def _running_worker(database, number):
    """The worker record of trial ``number`` once it runs (None before)."""
    try:
        trials = _study(database).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return None
    trial = next((t for t in trials if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING:
        return None
    return trial.user_attrs.get("worker")


def test_two_workers_share_the_trials_without_duplicates_or_losses(database, tmp_path):
    code, out = _finish(_tune(database, tmp_path, 8, "--workers", "2"))
    assert code == 0, out[-3000:]
    assert "8 finished trials" in out
    trials = _study(database).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 8  # exactly the count asked for, between the two workers
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in trials if t not in finished)
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 8  # no parameters drawn twice
    workers = {t.user_attrs["worker"]["pid"] for t in finished}
    assert len(workers) == 2, "both workers ran trials"


def test_a_worker_killed_mid_trial_is_failed_by_the_heartbeat_and_the_study_finishes(database, tmp_path):
    first = _tune(database, tmp_path, 6, *FAST_HEARTBEAT, "--retries", "1", FAKE_HANG_AT="2",
                  GATTN_WORKER_HOST="machine-a")
    second = _tune(database, tmp_path, 6, *FAST_HEARTBEAT, "--retries", "1", FAKE_HANG_AT="2",
                   GATTN_WORKER_HOST="machine-b")
    procs = {p.pid: p for p in (first, second)}
    try:
        assert wait_for(lambda: _running_worker(database, 2) is not None, timeout=120), "trial 2 never started"
        hung = _running_worker(database, 2)["pid"]
        os.kill(hung, signal.SIGKILL)
        survivor = procs[next(pid for pid in procs if pid != hung)]
        code, out = _finish(survivor)
        assert code == 0, out[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    trials = _study(database).trials
    killed = trials[2]
    assert killed.state == TrialState.FAIL  # by the survivor, through the heartbeat
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE and retried[0].params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_restarting_a_killed_worker_resumes_the_study(database, tmp_path):
    """Default heartbeat (180 s grace): the restarted worker fails its dead predecessor's trial at
    once (same machine, process gone) instead of waiting for the grace period."""
    proc = _tune(database, tmp_path, 5, FAKE_HANG_AT="2")
    try:
        assert wait_for(lambda: _running_worker(database, 2) is not None, timeout=120), "trial 2 never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    kept = {t.number: t.params for t in _study(database).trials if t.state == TrialState.COMPLETE}
    assert sorted(kept) == [0, 1]
    start = time.monotonic()
    code, out = _finish(_tune(database, tmp_path, 5))
    assert code == 0, out[-3000:]
    assert time.monotonic() - start < 120
    trials = _study(database).trials
    assert trials[2].state == TrialState.FAIL
    complete = {t.number: t.params for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == 5 and all(complete[n] == p for n, p in kept.items())


def test_a_stalled_worker_whose_trial_was_failed_goes_on(database, tmp_path):
    """A worker stopped for longer than the grace period loses its trial to the heartbeat; when it
    wakes, Optuna refuses its result ("Cannot tell a FAIL trial", optuna #5470): it goes on."""
    stalled = _tune(database, tmp_path, 4, *FAST_HEARTBEAT, "--retries", "0", FAKE_SLEEP="2",
                    GATTN_WORKER_HOST="machine-a")
    other = None
    try:
        assert wait_for(lambda: _running_worker(database, 0) is not None, timeout=120), "trial 0 never started"
        os.kill(stalled.pid, signal.SIGSTOP)
        other = _tune(database, tmp_path, 4, *FAST_HEARTBEAT, "--retries", "0", FAKE_SLEEP="0.3",
                      GATTN_WORKER_HOST="machine-b")
        assert wait_for(lambda: _study(database).trials[0].state == TrialState.FAIL, timeout=120)
        os.kill(stalled.pid, signal.SIGCONT)
        code, out = _finish(stalled)
        assert code == 0, out[-3000:]
        assert "was failed by another worker while this one ran it" in out
        code, out = _finish(other)
        assert code == 0, out[-3000:]
    finally:
        for proc in (stalled, other):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.communicate()
    trials = _study(database).trials
    assert trials[0].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4


def _heartbeat_time(database, trial_id):
    engine = sqlalchemy.create_engine(database)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :i"),
                                      {"i": trial_id}).scalar_one()
    finally:
        engine.dispose()


def test_a_worker_frozen_inside_a_transaction_does_not_keep_its_trial_from_being_failed(database, tmp_path):
    """A worker stopped in the middle of a transaction (here: the key-share lock on its trial's row
    that recording a heartbeat or a user attribute takes) would make the worker failing its stale
    trial wait for the lock until it woke (the cause of a hang of the test above). The server ends
    such a session after the grace period; the frozen worker's next heartbeat, on waking, is
    logged as lost and the one after it is recorded on a fresh connection."""
    frozen = make_storage(database, "fake", tmp_path, heartbeat_interval=1, grace_period=3, retries=0)
    study = optuna.create_study(study_name="frozen", storage=frozen)
    trial = study.ask()
    frozen.record_heartbeat(trial._trial_id)
    session = frozen.scoped_session()  # the one this thread's next storage call will use
    session.execute(sqlalchemy.text("SELECT 1 FROM trials WHERE trial_id = :i FOR KEY SHARE"),
                    {"i": trial._trial_id})  # ... and then the worker is frozen, its transaction open
    other = make_storage(database, "fake", tmp_path, heartbeat_interval=1, grace_period=3, retries=0)
    other_study = optuna.load_study(study_name="frozen", storage=other)
    time.sleep(3.5)
    failing = threading.Thread(target=optuna.storages.fail_stale_trials, args=(other_study,), daemon=True)
    failing.start()
    failing.join(timeout=30)
    assert not failing.is_alive(), "the stale trial's row stayed locked by the frozen worker's session"
    assert other.get_trial(trial._trial_id).state == TrialState.FAIL
    before = _heartbeat_time(database, trial._trial_id)
    frozen.record_heartbeat(trial._trial_id)  # on waking: the session was ended; logged, not raised
    assert _heartbeat_time(database, trial._trial_id) == before
    frozen.record_heartbeat(trial._trial_id)
    assert _heartbeat_time(database, trial._trial_id) > before


def test_a_worker_goes_on_after_the_server_ended_its_sessions(database, tmp_path):
    """Sessions ended by the server (a restart, an administrator, the idle-in-transaction timeout)
    are noticed before use and replaced: the heartbeat and the worker's own calls go on."""
    storage = make_storage(database, "fake", tmp_path, heartbeat_interval=1, grace_period=3, retries=0)
    study = optuna.create_study(study_name="lost", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    with sqlalchemy.create_engine(database).connect() as admin:  # the server ends every other session
        ended = admin.execute(sqlalchemy.text(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
    assert ended >= 1
    before = _heartbeat_time(database, trial._trial_id)
    storage.record_heartbeat(trial._trial_id)
    assert _heartbeat_time(database, trial._trial_id) > before
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
    trial.set_user_attr("after", 1)
    assert storage.get_trial(trial._trial_id).user_attrs["after"] == 1
