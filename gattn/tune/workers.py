"""Many workers on one study: who runs a trial, dead local workers, local worker processes.

Every trial records the worker that runs it (:data:`WORKER_ATTR`: machine, boot, process id
and start time, and the trial's number). A RUNNING trial whose worker ran on this machine and
no longer exists is failed at once (:func:`fail_dead_local_trials`): a restarted worker need
not wait for the heartbeat's grace period to learn that its predecessor died. Trials of other
machines are left to the RDB storage's heartbeat.

:func:`launch_workers` starts ``gattn tune`` worker processes on this machine (``--workers N``)
and waits for them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["WORKER_ATTR", "fail_dead_local_trials", "launch_workers", "worker_env", "worker_identity"]

#: the user attribute of a trial that names its worker
WORKER_ATTR = "worker"
#: environment variable naming this machine in :data:`WORKER_ATTR` (default: the host name);
#: containers that share a host name but not their process ids must set it apart
HOST_ENV = "GATTN_WORKER_HOST"


@lru_cache(maxsize=1)
def _boot_id() -> str:
    """The kernel's boot id (Linux): a host name that comes back after a reboot is another machine."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux; None elsewhere or if gone).

    Told apart from a later process that reuses the id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of proc(5), the 20th after the name


def worker_identity(trial_number: int) -> dict[str, Any]:
    """What :data:`WORKER_ATTR` holds for the trial this process runs.

    Args:
        trial_number (int): the trial's number in its study.
    """
    pid = os.getpid()
    return {"host": os.environ.get(HOST_ENV) or socket.gethostname(), "boot": _boot_id(), "pid": pid,
            "start": _start_ticks(pid), "trial": int(trial_number)}


def _dead_here(identity: Any, trial_number: int) -> bool:
    """True when ``identity`` is a worker of this machine that no longer runs (False when unsure)."""
    if not isinstance(identity, dict) or identity.get("trial") != trial_number:
        return False  # no identity, or one copied from an earlier trial (a retry)
    here = os.environ.get(HOST_ENV) or socket.gethostname()
    if identity.get("host") != here or identity.get("boot") != _boot_id():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = identity.get("start")
    return started is not None and _start_ticks(pid) not in (None, started)


def fail_dead_local_trials(study: Any, on_fail: Callable[[Any, Any], None] | None = None) -> list[int]:
    """Fail the RUNNING trials of ``study`` whose worker ran on this machine and is gone.

    Args:
        study (Any): an Optuna study.
        on_fail (Callable[[Any, Any], None], optional): called with ``(study, frozen_trial)`` for
            each trial failed here (the storage's retry callback). (default: ``None``)

    Returns:
        the numbers of the trials failed.
    """
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead_here(trial.user_attrs.get(WORKER_ATTR), trial.number):
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if frozen.state == TrialState.FAIL:
            failed.append(trial.number)
            if on_fail is not None:
                on_fail(study, frozen)
    return failed


def worker_env(index: int, environ: dict[str, str] | None = None, gpus: int | None = None) -> dict[str, str]:
    """The environment of local worker ``index``: with several GPUs and no ``CUDA_VISIBLE_DEVICES``
    set, worker k sees GPU ``k mod count`` only (so workers do not all land on GPU 0).

    Args:
        index (int): the worker's index ``k``.
        environ (dict[str, str], optional): the environment to start from (``None``:
            ``os.environ``). (default: ``None``)
        gpus (int, optional): the GPU count (``None``: ``torch.cuda.device_count()``).
            (default: ``None``)
    """
    env = dict(os.environ if environ is None else environ)
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def launch_workers(argv: Sequence[str], count: int, *, poll: float = 0.5) -> list[int]:
    """Run ``count`` processes of ``python -m gattn.cli *argv --worker-index K`` and wait for them.

    Ctrl-C (or SIGTERM) reaches every worker: each stops after failing its running trial, as a
    single ``gattn tune`` does. Returns their exit statuses (negative: killed by that signal).

    Args:
        argv (Sequence[str]): the ``gattn`` arguments every worker gets.
        count (int): the number of workers.
        poll (float, optional): seconds between looks at the workers. (default: ``0.5``)
    """
    procs = []
    for index in range(count):
        command = [sys.executable, "-m", "gattn.cli", *argv, "--worker-index", str(index)]
        procs.append(subprocess.Popen(command, env=worker_env(index)))
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reached the workers too (one process group): give them time to stop
        # on their own before passing the signal on (the parent alone may have been interrupted)
        for grace, action in ((10, signal.SIGINT), (60, signal.SIGKILL)):
            deadline = time.monotonic() + grace
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(poll)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(action)
        for p in procs:
            p.wait()
        raise
    return [p.returncode for p in procs]
