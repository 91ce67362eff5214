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
def _counting_sort(keys, num_keys, carry, ptr, order, carried):
    """ptr [num_keys + 1]: start of each key's run; order [E]: input position of each sorted
    slot; carried [C, E]: the rows of ``carry`` [C, E] in sorted order (a gather done in the
    same pass, where a separate ``x[order]`` would walk ``order`` again at random)."""
    ptr[:] = 0
    for e in range(keys.shape[0]):
        ptr[keys[e] + 1] += 1
    for key in range(num_keys):
        ptr[key + 1] += ptr[key]
    fill = ptr[:-1].copy()
    rows = carry.shape[0]
    for e in range(keys.shape[0]):
        key = keys[e]
        slot = fill[key]
        order[slot] = e
        for c in range(rows):
            carried[c, slot] = carry[c, e]
        fill[key] = slot + 1


def stable_sort_by_key(keys: Tensor, num_keys: int, carry: Tensor | None = None):
    """(ptr [num_keys + 1], order [E]) of CPU int64 `keys` in [0, num_keys): `order` equals
    ``torch.argsort(keys, stable=True)`` and `ptr` the start of each key's run in it. With
    ``carry`` ([C, E] int64), also ``carry[:, order]``, gathered in the same pass: returns
    (ptr, order, carried)."""
    keys_np = np.ascontiguousarray(keys.numpy())
    ptr = torch.empty(num_keys + 1, dtype=torch.long)
    order = torch.empty(keys.numel(), dtype=torch.long)
    rows = torch.zeros(0, keys.numel(), dtype=torch.long) if carry is None else carry.long().contiguous()
    carried = torch.empty_like(rows)
    _counting_sort(keys_np, num_keys, rows.numpy(), ptr.numpy(), order.numpy(), carried.numpy())
    return (ptr, order) if carry is None else (ptr, order, carried)
