"""The CPU kernels' vectorised exponential (`cpu._exp_into`) against float64 numpy."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from gattn.kernels import cpu


@numba.njit
def _exp(x, out, bits):
    cpu._exp_into(x, out, x.shape[0], bits)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_into_matches_numpy(dtype):
    x = np.concatenate([np.linspace(-87.0, 0.5, 200_001), np.random.default_rng(0).uniform(-30, 0, 1000)]).astype(dtype)
    out = np.empty_like(x)
    _exp(x, out, np.empty(x.shape, np.int32))
    exact = np.exp(x.astype(np.float64))
    relative = np.abs(out - exact) / exact
    # float32: within one float32 rounding (eps 1.19e-7) of the true value; float64: libm's exp
    assert relative.max() < (1.2e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_into_gives_zero_far_below_and_at_minus_infinity(dtype):
    x = np.array([-np.inf, -1e4, -200.0, -88.0, 0.0], dtype=dtype)
    out = np.full_like(x, np.nan)
    _exp(x, out, np.empty(x.shape, np.int32))
    assert out[0] == 0.0 and out[1] == 0.0 and out[-1] == 1.0
    # float32 gives 0 under its floor (exp(-87) is near the smallest normal float32); float64
    # keeps the tiny true values
    assert 0.0 <= float(out[2]) < 1e-86 and 0.0 <= float(out[3]) < 1e-37
    assert not np.isnan(out).any()


def test_exp_into_writes_only_the_first_n():
    x = np.zeros(8, np.float32)
    out = np.full(8, -1.0, np.float32)

    @numba.njit
    def first(x, out, n):
        cpu._exp_into(x, out, n, np.empty(x.shape, np.int32))

    first(x, out, 3)
    np.testing.assert_array_equal(out, [1, 1, 1, -1, -1, -1, -1, -1])
