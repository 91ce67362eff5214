"""Numba's on-disk cache for the CPU kernels, and a one-time notice while they compile.

The kernels of :mod:`gattn.kernels.cpu` are compiled on their first call after an
installation or an update (10-30 s), then loaded from numba's cache in every later process.
Where the cache lives is numba's choice first: ``$NUMBA_CACHE_DIR`` if set, else the
package's ``__pycache__`` if writable, else the user-wide cache (``~/.cache/numba``). When
none of these is writable (a read-only installation and home directory), numba would refuse
to cache at all; :class:`TempDirCacheLocator` is added after numba's own locators so that
gattn's kernels then go to ``<tempdir>/gattn-numba-cache-<uid>``.

While a gattn kernel compiles (a cache miss), one message per process says what is
happening and where the result is cached (:data:`logger`, ``logging.WARNING``, so it shows
without any logging set-up; silence it with ``logging.getLogger("gattn").setLevel(...)``).

Threads: numba's OpenMP threading layer calls ``omp_set_num_threads`` when it starts its
thread pool (once per process, on the first parallel kernel or ``numba.get_num_threads()``),
and torch's CPU build shares that OpenMP runtime, so a caller's ``torch.set_num_threads(1)``
would silently become the core count. :func:`launch_pool` starts the pool once, before any
gattn kernel runs, and puts torch's setting back, so gattn never changes the caller's thread
settings (``tests/kernels/test_threads.py``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import torch
from numba.core import caching, event

logger = logging.getLogger("gattn")

_MODULE_PREFIX = "gattn."


class TempDirCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Last-resort cache folder for gattn's kernels: a per-user folder in the temp dir."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        root = os.path.join(tempfile.gettempdir(), f"gattn-numba-cache-{os.getuid()}")
        self._cache_path = os.path.join(root, self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if not getattr(py_func, "__module__", "").startswith(_MODULE_PREFIX):
            return None  # numba's choice stands for everybody else's functions
        return super().from_function(py_func, py_file)


def install_cache_fallback() -> None:
    """Append :class:`TempDirCacheLocator` to numba's locators (once)."""
    if TempDirCacheLocator not in caching.CacheImpl._locator_classes:
        caching.CacheImpl._locator_classes.append(TempDirCacheLocator)


class CompileNotice(event.Listener):
    """Logs once per process when a gattn kernel misses the cache and compiles."""

    def __init__(self) -> None:
        self.told = False

    def on_start(self, ev: event.Event) -> None:
        if self.told:
            return
        dispatcher = (ev.data or {}).get("dispatcher")
        py_func = getattr(dispatcher, "py_func", None)
        if not getattr(py_func, "__module__", "").startswith(_MODULE_PREFIX):
            return
        self.told = True
        cache = getattr(dispatcher, "_cache", None)
        where = getattr(cache, "cache_path", None)
        logger.warning(
            "gattn: compiling the numba CPU kernels on first use (once after installing or "
            "updating gattn, typically 10-30 s); %s",
            f"they are cached in {where} for later runs" if where else "caching is unavailable here",
        )

    def on_end(self, ev: event.Event) -> None:
        pass


notice = CompileNotice()


def install() -> None:
    install_cache_fallback()
    if notice not in event._registered.get("numba:compile", []):
        event.register("numba:compile", notice)


_pool_started = False


def launch_pool() -> None:
    """Start numba's thread pool (once) and keep torch's intra-op thread count as it was."""
    global _pool_started
    if _pool_started:
        return
    from numba.np.ufunc.parallel import _launch_threads

    before = torch.get_num_threads()
    _launch_threads()
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
    _pool_started = True


#: Kernels with less work than this (scalar multiply-adds) run on the calling thread alone.
#: Waking numba's pool for them costs more than it saves, and on a busy machine a parallel
#: launch waits for every worker to get a time slice. Measured on 2 cores under a load of 7-8:
#: a one-bag ABMIL training step (5 instances, Ilse et al.'s setting) took 48-109 ms with 2
#: kernel threads before this rule and 10-13 ms after it (1 thread: 12 ms); 2^16 multiply-adds
#: are about 20 us of one core's work, less than one wake-up of the pool.
SERIAL_WORK = 1 << 16


@contextmanager
def threads_for(work: int) -> Iterator[None]:
    """Run the enclosed kernel launch on one thread when ``work`` is below :data:`SERIAL_WORK`
    (numba's thread count is per calling thread and put back afterwards)."""
    if work >= SERIAL_WORK:
        yield
        return
    threads = numba.get_num_threads()
    if threads == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)
