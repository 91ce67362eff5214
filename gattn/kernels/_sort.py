"""Stable counting sort of small non-negative integer keys (node ids), in numba.

Building a CSR (edges grouped by destination) or its CSC (grouped by source) is a stable
sort of E keys that all lie in [0, N): a counting sort does it in O(E + N) with two passes
over the keys, against O(E log E) for ``torch.argsort(stable=True)``, and gives the same
permutation (equal keys keep their input order in both). It is serial on purpose: at
E = 1M it takes tens of milliseconds on one core, and it starts no thread pool.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from . import _numba_setup

_numba_setup.install()  # before the kernel below is decorated with cache=True


@njit(cache=True, nogil=True)
def _counting_sort(keys, num_keys, ptr, order):
    """ptr [num_keys + 1]: start of each key's run; order [E]: input position of each sorted slot."""
    ptr[:] = 0
    for e in range(keys.shape[0]):
        ptr[keys[e] + 1] += 1
    for key in range(num_keys):
        ptr[key + 1] += ptr[key]
    fill = ptr[:-1].copy()
    for e in range(keys.shape[0]):
        key = keys[e]
        order[fill[key]] = e
        fill[key] += 1


def stable_sort_by_key(keys: Tensor, num_keys: int) -> tuple[Tensor, Tensor]:
    """(ptr [num_keys + 1], order [E]) of CPU int64 `keys` in [0, num_keys): `order` equals
    ``torch.argsort(keys, stable=True)`` and `ptr` the start of each key's run in it."""
    keys_np = np.ascontiguousarray(keys.numpy())
    ptr = torch.empty(num_keys + 1, dtype=torch.long)
    order = torch.empty(keys.numel(), dtype=torch.long)
    _counting_sort(keys_np, num_keys, ptr.numpy(), order.numpy())
    return ptr, order
