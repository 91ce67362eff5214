"""gattn never changes the caller's torch or numba thread settings.

numba's OpenMP layer sets OpenMP's thread count when it starts its pool, and torch's CPU
build shares that OpenMP runtime; the pool starts once per process, so the check runs in a
fresh interpreter where no numba kernel has run yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    import numba
    from gattn import kernels as K
    from gattn.kernels import din, topk
    from gattn.transforms.laplacian_pe import laplacian_pe

    seen = {}
    round = 0

    def check(name):
        seen[f"{name} (round {round})"] = torch.get_num_threads()

    def kernels():
        gen = torch.Generator().manual_seed(0)
        edge_index = torch.randint(0, 30, (2, 120), generator=gen)
        q, k, v = (torch.randn(30, 2, 4, generator=gen, requires_grad=True) for _ in range(3))
        K.edge_attention(q, k, v, edge_index, backend="cpu").sum().backward()
        check("edge_attention")
        ptr = torch.tensor([0, 3, 3, 10])
        scores = torch.randn(10, 2, requires_grad=True)
        K.segment_softmax(scores, ptr=ptr, backend="cpu").sum().backward()
        check("segment_softmax")
        x = torch.randn(10, 4, requires_grad=True)
        K.segment_attention_pool(x, torch.randn(3, 4), ptr=ptr, backend="cpu")[0].sum().backward()
        check("segment_attention_pool")
        din.target_pair(torch.randn(3, 4, requires_grad=True), x, ptr, backend="cpu").sum().backward()
        check("din.target_pair")
        topk.segment_topk(torch.randn(10), ptr, 2, backend="cpu")
        check("segment_topk")
        rings = torch.stack([torch.arange(12), (torch.arange(12) + 1) % 12])
        batch = torch.cat([rings, rings + 12], dim=1)
        laplacian_pe(batch, 24, k=2, ptr=torch.tensor([0, 12, 24]), num_workers=2)
        check("laplacian_pe")

    kernels()
    default_numba = numba.config.NUMBA_NUM_THREADS
    after_default = numba.get_num_threads()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    round = 1
    kernels()
    print(json.dumps(dict(torch=seen, numba_default=default_numba, numba_after_default=after_default,
                          numba_after_one=numba.get_num_threads())))
    """
)


def test_kernels_keep_the_callers_thread_settings():
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch"] == dict.fromkeys(result["torch"], 1), result["torch"]
    assert len(result["torch"]) == 12
    assert result["numba_after_default"] == result["numba_default"] == 2
    assert result["numba_after_one"] == 1


def test_small_kernel_launches_run_on_the_calling_thread():
    """Below SERIAL_WORK a launch runs with one numba thread; the caller's count comes back,
    also when the kernel raises."""
    import numba
    import pytest

    from gattn.kernels import _numba_setup

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to switch")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        with _numba_setup.threads_for(_numba_setup.SERIAL_WORK - 1):
            assert numba.get_num_threads() == 1
        assert numba.get_num_threads() == 2
        with _numba_setup.threads_for(_numba_setup.SERIAL_WORK):
            assert numba.get_num_threads() == 2
        with pytest.raises(RuntimeError), _numba_setup.threads_for(1):
            raise RuntimeError("kernel failed")
        assert numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(before)
