"""Behaviour histories as segments: the one boundary check of the target-attention layers.

A batch of B user histories arrives either **ragged** (the behaviours of all users
concatenated, rows ``[R, ...]``, with a CSR ``ptr`` [B+1] or per-user ``lengths`` [B]) or
**padded** (``[B, L, ...]`` with a ``padding_mask`` [B, L], True = padding, or ``lengths``
[B] meaning the first ``lengths[b]`` positions are real). Both become the same segments:
row-major packing of the real positions of a padded batch keeps each user's behaviours
contiguous and in order, so padding is never attended, never enters a batch statistic and
costs no compute, and the real length of every history is used.

:func:`resolve_history` validates once; the layers then work on rows and ``ptr`` only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gattn.kernels._validate import check_integer, check_ptr

__all__ = ["History", "resolve_history"]


class History(NamedTuple):
    """Validated segments of a batch of histories.

    Attributes:
        ptr: [B+1] CSR row pointer over the packed rows.
        positions: for padded input, the flat index in ``B * L`` of each packed row [R];
            None for ragged input.
        padded_shape: ``(B, L)`` for padded input, None for ragged input.
    """

    ptr: Tensor
    positions: Tensor | None
    padded_shape: tuple[int, int] | None

    @property
    def num_rows(self) -> int:
        return int(self.ptr[-1])

    @property
    def batch_size(self) -> int:
        return self.ptr.numel() - 1

    def lengths(self) -> Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def segment_index(self) -> Tensor:
        """Segment (user) of each packed row [R]."""
        return torch.repeat_interleave(torch.arange(self.batch_size, device=self.ptr.device), self.lengths())

    def pack(self, name: str, tensor: Tensor) -> Tensor:
        """Rows [R, ...] of a history tensor given in the caller's layout ([R, ...] or [B, L, ...])."""
        if not isinstance(tensor, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
        if self.padded_shape is None:
            if tensor.dim() < 1 or tensor.size(0) != self.num_rows:
                raise ValueError(
                    f"`{name}` must have one row per behaviour ({self.num_rows} = ptr[-1]), "
                    f"got shape {tuple(tensor.shape)}"
                )
            return tensor
        if tensor.dim() < 2 or tuple(tensor.shape[:2]) != self.padded_shape:
            raise ValueError(
                f"`{name}` must be padded like the other history inputs, [B, L, ...] = "
                f"{list(self.padded_shape)}, got shape {tuple(tensor.shape)}"
            )
        return tensor.reshape(-1, *tensor.shape[2:])[self.positions]

    def unpack(self, rows: Tensor) -> Tensor:
        """Per-row values [R, ...] back in the caller's layout (zeros at padded positions)."""
        if self.padded_shape is None:
            return rows
        batch, length = self.padded_shape
        out = rows.new_zeros(batch * length, *rows.shape[1:])
        out[self.positions] = rows
        return out.view(batch, length, *rows.shape[1:])


def resolve_history(
    keys: Tensor,
    ptr: Tensor | None = None,
    lengths: Tensor | None = None,
    padding_mask: Tensor | None = None,
    *,
    batch_size: int | None = None,
    name: str = "keys",
) -> History:
    """Validate how a batch of histories is given and return its segments.

    Args:
        keys: a history tensor in the caller's layout: ``[R, ...]`` (ragged) when 2-D or
            when ``ptr`` is given, else ``[B, L, ...]`` (padded, 3-D).
        ptr: [B+1] CSR row pointer (ragged input only).
        lengths: [B] real history lengths (ragged: the segment sizes; padded: the first
            ``lengths[b]`` positions of row b are real).
        padding_mask: [B, L] bool, True = padding (padded input only).
        batch_size: B, when known from other inputs (checked against the segments).
        name: the argument name used in error messages for ``keys``.
    """
    if not isinstance(keys, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(keys).__name__}")
    given = [n for n, t in (("ptr", ptr), ("lengths", lengths), ("padding_mask", padding_mask)) if t is not None]
    if len(given) != 1:
        raise ValueError(
            "describe the histories with exactly one of `ptr` [B+1] or `lengths` [B] (ragged rows "
            "[R, D]) or `padding_mask` [B, L] / `lengths` [B] (padded [B, L, D]); "
            f"got {', '.join(f'`{n}`' for n in given) or 'none'}"
        )
    padded = keys.dim() == 3
    if keys.dim() not in (2, 3):
        raise ValueError(
            f"`{name}` must be [R, D] (ragged rows) or [B, L, D] (padded), got shape {tuple(keys.shape)}"
        )
    if ptr is not None:
        if padded:
            raise ValueError(f"`ptr` describes ragged rows, but `{name}` is padded {tuple(keys.shape)}")
        check_ptr(ptr, keys.size(0))
        history = History(ptr.long(), None, None)
    elif padding_mask is not None:
        if not padded:
            raise ValueError(f"`padding_mask` needs padded `{name}` [B, L, D], got shape {tuple(keys.shape)}")
        if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
            raise TypeError(
                "`padding_mask` must be a bool tensor [B, L] (True = padding), got "
                f"{getattr(padding_mask, 'dtype', type(padding_mask).__name__)}"
            )
        if tuple(padding_mask.shape) != tuple(keys.shape[:2]):
            raise ValueError(
                f"`padding_mask` must have shape [B, L] = {list(keys.shape[:2])}, got {tuple(padding_mask.shape)}"
            )
        real = ~padding_mask
        history = _padded(real.sum(1), real.reshape(-1), tuple(keys.shape[:2]))
    else:
        check_integer("lengths", lengths)
        if lengths.dim() != 1:
            raise ValueError(f"`lengths` must be 1-D [B], got shape {tuple(lengths.shape)}")
        if lengths.numel() and int(lengths.min()) < 0:
            raise ValueError(f"`lengths` must be non-negative, got {int(lengths.min())}")
        lengths = lengths.long().to(keys.device)
        if padded:
            batch, length = keys.shape[:2]
            if lengths.numel() != batch:
                raise ValueError(f"`lengths` must have one entry per user (B={batch}), got {lengths.numel()}")
            if lengths.numel() and int(lengths.max()) > length:
                raise ValueError(f"`lengths` has {int(lengths.max())}, more than the padded length L={length}")
            real = torch.arange(length, device=keys.device) < lengths.unsqueeze(1)
            history = _padded(lengths, real.reshape(-1), (batch, length))
        else:
            if int(lengths.sum()) != keys.size(0):
                raise ValueError(
                    f"`lengths` must sum to the number of rows of `{name}` ({keys.size(0)}), "
                    f"got {int(lengths.sum())}"
                )
            history = History(_ptr(lengths), None, None)
    if batch_size is not None and history.batch_size != batch_size:
        raise ValueError(
            f"the histories describe {history.batch_size} users, but the query has {batch_size} rows"
        )
    return history


def _ptr(lengths: Tensor) -> Tensor:
    ptr = lengths.new_zeros(lengths.numel() + 1)
    torch.cumsum(lengths, 0, out=ptr[1:])
    return ptr


def _padded(lengths: Tensor, real_flat: Tensor, shape: tuple[int, int]) -> History:
    return History(_ptr(lengths.long()), real_flat.nonzero().squeeze(1), shape)
