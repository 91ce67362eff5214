"""Attention dropout masks from a counter-based hash, identical in every backend.

The keep/drop decision of edge ``e`` (the caller's edge id) and head ``h`` is a pure function
of ``(seed, e * H + h)``: two rounds of MurmurHash3's 32-bit finaliser, compared with an
integer threshold. The numba and Triton kernels evaluate the same integer formula while
they walk the edges, so nothing of size E x H is drawn or stored, and the plain-torch
reference (:func:`keep_mask`) reproduces the fused backends' mask bit for bit. Products are
split into 16-bit halves so that every intermediate fits in a signed 64-bit integer (torch
and Triton have no unsigned 64-bit multiply to rely on).
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
FMIX_C1 = 0x85EBCA6B
FMIX_C2 = 0xC2B2AE35


def split_seed(seed: int) -> tuple[int, int]:
    """(low, high) 32-bit words of a 64-bit seed."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    return seed & MASK32, (seed >> 32) & MASK32


def threshold(p: float) -> int:
    """Integer threshold: a hash value below it drops the entry (probability ``p``)."""
    return min(1 << 32, max(0, round(float(p) * 2.0**32)))


def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x * constant) mod 2^32 for 0 <= x < 2^32, without leaving int64."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def _fmix32(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, FMIX_C1)
    x = x ^ (x >> 13)
    x = _mul32(x, FMIX_C2)
    return x ^ (x >> 16)


def hash_counter(counter: Tensor, seed: int) -> Tensor:
    """32-bit hash (as int64) of each int64 counter for `seed`."""
    lo, hi = split_seed(seed)
    x = _fmix32((counter & MASK32) ^ lo)
    return _fmix32(x ^ ((counter >> 32) & MASK32) ^ hi)


def keep_mask(seed: int, num_edges: int, heads: int, p: float, device: torch.device | str = "cpu") -> Tensor:
    """The keep mask [E, H] (True = kept) the fused kernels apply for ``dropout_p = p``.

    Edge ids are the caller's edge order; a kept weight is scaled by ``1 / (1 - p)``.
    """
    counter = torch.arange(num_edges * heads, dtype=torch.int64, device=device)
    return (hash_counter(counter, seed) >= threshold(p)).view(num_edges, heads)
