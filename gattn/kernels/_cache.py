"""A cache of structures derived from index tensors (CSR views, chunk plans, self-loop graphs).

Nothing is stored on the user's tensor: the cache is a module-level table, so pickling or
``torch.save`` of a tensor (or of a PyG ``Data`` holding it) writes exactly what it would
without gattn, and inference-mode tensors (which have no version counter) work too.

When an entry is reused: a lookup hits only if the tensor has the same memory address,
shape, strides, dtype and device as when the entry was made, the caller's extra key (node
counts, ...) is equal, **and** a content checksum of the whole tensor is unchanged. The
checksum is a dot product of the indices with fixed pseudo-random weights in float64, so
any in-place edit is caught, including edits that bypass the version counter
(``t.numpy()[...] = ...``, ``t.data[...] = ...``). It costs 1.5 ms for E = 1M on one core,
against 47 ms for the counting-sort CSR build (``benchmarks/edge_attention.py`` prints both).
It walks the tensor in chunks of :data:`CHECKSUM_CHUNK` elements, each converted to float64
on its own, against one table of that many weights times a per-chunk factor: a few MB at any
size (a float64 copy of ogbn-products' 124M indices, and weights as many, would be 2 GB).
An entry lives as long as the tensor it was made from (a weak reference drops it) and at
most :data:`MAX_ENTRIES` entries are kept (least recently used first out).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

#: The most cached structures kept at once.
MAX_ENTRIES = 64

#: Elements of an index tensor converted to float64 at a time by :func:`checksum`.
CHECKSUM_CHUNK = 1 << 18  # 2 MB of float64: stays in cache (faster than one whole-tensor pass)

_entries: OrderedDict[tuple, tuple[Any, float, Any]] = OrderedDict()
_weights: dict[torch.device, Tensor] = {}

# per-chunk factors 1 + frac(c * golden ratio): all distinct and in [1, 2), so every weight lies in
# [0.5, 3) and the sum stays where float64 resolves a change of one id by one (ogbn-products' 124M
# ids, each below 2.5M, sum to less than 2^50, where float64's spacing is 1/8)
_GOLDEN = (5 ** 0.5 - 1) / 2


def _plain(tensor: Tensor) -> Tensor:
    """The tensor without a subclass (PyG's EdgeIndex routes every op through Python)."""
    return tensor.as_subclass(Tensor) if type(tensor) is not Tensor else tensor


def _checksum_weights(device: torch.device) -> Tensor:
    """Fixed weights in [0.5, 1.5), one per position of a chunk."""
    weights = _weights.get(device)
    if weights is None:
        gen = torch.Generator().manual_seed(0x6A7A)
        with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
            weights = (torch.rand(CHECKSUM_CHUNK, generator=gen, dtype=torch.float64) + 0.5).to(device)
        _weights[device] = weights
    return weights


def checksum(tensor: Tensor) -> float:
    """A content checksum: sum of element * fixed weight (position dependent), in float64.

    Element ``i`` is weighted by ``w[i % CHUNK] * (1 + frac((i // CHUNK) * golden ratio))``:
    every weight is distinct with probability one, so any edit, a swap of two elements
    included, changes the sum."""
    flat = _plain(tensor).reshape(-1)
    if flat.numel() == 0:
        return 0.0
    weights = _checksum_weights(flat.device)
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for chunk, start in enumerate(range(0, flat.numel(), CHECKSUM_CHUNK)):
        part = flat[start:start + CHECKSUM_CHUNK]
        factor = 1.0 + (chunk * _GOLDEN) % 1.0
        total += torch.dot(part.to(torch.float64), weights[:part.numel()]) * factor
    return float(total)  # one synchronisation on an accelerator, after every chunk


def _address(tensor: Tensor) -> tuple:
    return (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)


def cached(tensor: Tensor, key: tuple, build: Callable[[], Any]) -> Any:
    """The structure `build()` made from `tensor` for `key`, rebuilt when the tensor changed."""
    full_key = (*_address(tensor), key)
    total = checksum(tensor)
    entry = _entries.get(full_key)
    if entry is not None:
        ref, stored_sum, value = entry
        if ref() is not None and stored_sum == total:
            _entries.move_to_end(full_key)
            return value
    value = build()
    try:
        ref = weakref.ref(tensor, lambda dead, k=full_key: _forget(k, dead))
    except TypeError:  # objects that take no weak reference: cache nothing
        return value
    _entries[full_key] = (ref, total, value)
    _entries.move_to_end(full_key)
    while len(_entries) > MAX_ENTRIES:
        _entries.popitem(last=False)
    return value


def discard(tensor: Tensor, key: tuple) -> None:
    """Drop the structure cached for `tensor` and `key`, if there is one (nothing is built)."""
    _entries.pop((*_address(tensor), key), None)


def _forget(key: tuple, dead: weakref.ref) -> None:
    """Drop the entry of a tensor that was garbage collected (unless a newer one took its key)."""
    entry = _entries.get(key)
    if entry is not None and entry[0] is dead:
        del _entries[key]


def clear() -> None:
    """Drop every cached structure."""
    _entries.clear()
