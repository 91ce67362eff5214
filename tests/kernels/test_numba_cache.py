"""Issue 9, defect 8: numba's compiled kernels are cached across processes (with a
writable fallback folder when the package and the home directory are read-only), and the
first compile says once what is happening."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile

import pytest
from numba.core import caching, event

from gattn.kernels import _numba_setup, cpu


def test_gattn_kernels_are_cached_on_disk():
    for kernel in (cpu._edge_attention_fwd, cpu._edge_attention_bwd_rows, cpu._pool_fwd):
        assert kernel._cache is not None and kernel._cache.cache_path  # cache=True, with a folder


def test_read_only_install_falls_back_to_a_temp_folder(monkeypatch):
    """With no writable NUMBA_CACHE_DIR, package folder or user cache, numba has no locator
    left (it would refuse to cache, or fail); gattn's kernels then go to the temp folder."""
    for locator in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator):
        monkeypatch.setattr(locator, "from_function", classmethod(lambda cls, py_func, py_file: None))
    impl = caching.CompileResultCacheImpl(cpu._segment_softmax_fwd.py_func)
    assert isinstance(impl.locator, _numba_setup.TempDirCacheLocator)
    path = impl.locator.get_cache_path()
    assert path.startswith(tempfile.gettempdir()) and os.access(path, os.W_OK)
    # everybody else's functions keep numba's choice
    assert _numba_setup.TempDirCacheLocator.from_function(test_gattn_kernels_are_cached_on_disk, __file__) is None
    assert caching.CacheImpl._locator_classes[-1] is _numba_setup.TempDirCacheLocator


def test_first_compile_is_announced_once(caplog):
    notice = _numba_setup.CompileNotice()

    def compile_event(dispatcher):
        return event.Event("numba:compile", event.EventStatus.START, data={"dispatcher": dispatcher})

    with caplog.at_level(logging.WARNING, logger="gattn"):
        notice.on_start(compile_event(object()))  # not a gattn kernel: silent
        assert not caplog.records
        notice.on_start(compile_event(cpu._pool_fwd))
        notice.on_start(compile_event(cpu._edge_attention_fwd))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "compiling the numba CPU kernels" in message and "cached in" in message
    assert _numba_setup.notice in event._registered["numba:compile"]


@pytest.mark.slow
def test_second_process_loads_the_cache_silently(tmp_path):
    """Two fresh processes on an empty cache folder: the first compiles (and says so),
    the second loads every kernel from the cache without a word."""
    script = (
        "import torch, gattn.kernels as K\n"
        "q = torch.randn(6, 2, 3, requires_grad=True)\n"
        "K.edge_attention(q, q, q, torch.tensor([[0, 1, 2], [1, 2, 0]]), backend='cpu').sum().backward()\n"
        "print('hits', sum(sum(k.stats.cache_hits.values()) for k in (K.cpu._edge_attention_fwd,"
        " K.cpu._edge_attention_bwd_rows)))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-2000:]
    assert "compiling the numba CPU kernels" in runs[0].stderr
    assert "compiling" not in runs[1].stderr
    assert runs[1].stdout.strip() == "hits 2"
