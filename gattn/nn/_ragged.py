"""Ragged input: the rows of many segments (bags, sets, user histories, documents)
concatenated, described by a CSR ``ptr``, a ``batch`` vector or a padded layout.

:func:`to_segments` is the one entry point of every ragged layer
(:class:`~gattn.nn.HopfieldPooling`, :class:`~gattn.nn.Hopfield`,
:class:`~gattn.nn.AttentionMILPooling`, :class:`~gattn.nn.ABMIL`, :class:`~gattn.nn.ACMIL`,
:class:`~gattn.nn.HopfieldMIL`, and new ragged layers): it accepts the same three
descriptions of the segments, validates them once and returns the rows grouped by segment
with a CSR pointer, plus what is needed to map per-row results back to the caller's layout:

* ``x`` [R, D] with ``ptr`` [S+1], a CSR row pointer over rows already grouped by segment;
* ``x`` [R, D] with ``batch`` [R], the segment id of every row, in any order (rows are
  stably sorted by segment; results per row come back in the caller's order);
* ``x`` [B, N, D] padded, with an optional ``mask`` [B, N] in PyTorch's convention
  (``True`` = padding, ignore this position); padding is dropped before any compute.

``batch`` and ``ptr`` must be integer tensors; a segment without rows is allowed everywhere
(its result is zeros), and zero rows or zero segments give correctly shaped empty results.

The sequence helpers below serve the clinical text layers (:mod:`gattn.nn.transicd`,
:mod:`gattn.nn.label_attention`) and their models: token-id checks, the position of every
row inside its sequence, packing to and from the padded ``[B, L, D]`` layout that torch's
own sequence modules need, and a convolution along each sequence that never mixes two
sequences.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gattn.kernels import ptr_from_index
from gattn.kernels._validate import check_index, check_integer, check_ptr

from ._checks import check_bool_mask

__all__ = [
    "Segments", "check_segments", "check_token_ids", "pad_segments", "position_in_segment", "segment_conv1d",
    "segment_ids", "segment_lengths", "to_segments",
]


class Segments(NamedTuple):
    """Rows grouped by segment, and the way back to the caller's layout.

    Attributes:
        x (Tensor): [R, ...] the rows, grouped by segment (segment 0's rows first).
        ptr (Tensor): [S+1] int64 CSR row pointer over ``x``.
        order (Tensor, optional): [R] the caller's row of every grouped row (``x = caller_rows[order]``), or
            None when the caller's rows were already grouped (``ptr`` or a sorted ``batch``).
        keep (Tensor, optional): [B, N] bool, for padded input: True where a real row sits.
    """

    x: Tensor
    ptr: Tensor
    order: Tensor | None
    keep: Tensor | None

    @property
    def num_segments(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_rows(self) -> int:
        return self.x.size(0)

    def segment_of_rows(self) -> Tensor:
        """[R] the segment of every grouped row."""
        return segment_ids(self.ptr)

    def group(self, rows: Tensor) -> Tensor:
        """Another per-row tensor in the caller's layout ([R, ...] or padded [B, N, ...]),
        grouped like ``x``."""
        if self.keep is not None:
            return rows[self.keep]
        return rows if self.order is None else rows[self.order]

    def ungroup(self, values: Tensor) -> Tensor:
        """Per-row results [R, ...] (grouped order) back to the caller's layout: the caller's
        row order, or padded [B, N, ...] with zeros at the padding."""
        if self.keep is not None:
            out = values.new_zeros(*self.keep.shape, *values.shape[1:])
            out[self.keep] = values
            return out
        if self.order is None:
            return values
        out = torch.empty_like(values)
        out[self.order] = values
        return out


def to_segments(
    x: Tensor,
    ptr: Tensor | None = None,
    batch: Tensor | None = None,
    mask: Tensor | None = None,
    num_segments: int | None = None,
    *,
    name: str = "x",
    ptr_name: str = "ptr",
    batch_name: str = "batch",
) -> Segments:
    """Validate a ragged (``ptr`` / ``batch``) or padded (``mask``) input and group its rows.

    Args:
        x (Tensor): ``[R, D]`` rows (with exactly one of ``ptr`` and ``batch``) or ``[B, N, D]``
            padded segments (with an optional ``mask``).
        ptr (Tensor, optional): ``[S+1]`` integer CSR row pointer (rows already grouped by segment).
            (default: ``None``)
        batch (Tensor, optional): ``[R]`` integer segment id of every row (any order). (default: ``None``)
        mask (Tensor, optional): ``[B, N]`` bool, True = padding (padded input only). (default: ``None``)
        num_segments (int, optional): the number of segments S, when ``batch`` does not reach the last
            (empty) segments; checked against ``ptr`` / ``B`` otherwise. (default: ``None``)
        name (str, optional): the name of ``x`` in error messages. (default: ``"x"``)
        ptr_name (str, optional): the name of ``ptr`` in error messages. (default: ``"ptr"``)
        batch_name (str, optional): the name of ``batch`` in error messages. (default: ``"batch"``)

    Returns:
        :class:`Segments` (grouped rows, CSR ``ptr``, the way back).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if num_segments is not None and (isinstance(num_segments, bool) or not isinstance(num_segments, int)
                                     or num_segments < 0):
        raise ValueError(f"`num_segments` must be an int >= 0, got {num_segments!r}")
    if x.dim() == 3:
        if ptr is not None or batch is not None:
            raise ValueError(
                f"padded [B, N, D] `{name}` takes `mask` (True = padding), not `{ptr_name}`/`{batch_name}`"
            )
        bsz, length = x.size(0), x.size(1)
        if num_segments is not None and num_segments != bsz:
            raise ValueError(f"`num_segments`={num_segments} disagrees with the padded batch size B={bsz}")
        if mask is None:
            keep = torch.ones(bsz, length, dtype=torch.bool, device=x.device)
        else:
            check_bool_mask("mask", mask, (bsz, length))
            keep = ~mask
        rows_ptr = torch.zeros(bsz + 1, dtype=torch.long, device=x.device)
        torch.cumsum(keep.sum(1), 0, out=rows_ptr[1:])
        return Segments(x[keep], rows_ptr, None, keep)
    if x.dim() != 2:
        raise ValueError(f"`{name}` must be ragged [R, D] or padded [B, N, D], got shape {tuple(x.shape)}")
    if mask is not None:
        raise ValueError(f"`mask` is for padded [B, N, D] input; ragged `{name}` takes `{ptr_name}` or `{batch_name}`")
    if (ptr is None) == (batch is None):
        raise ValueError(
            f"ragged `{name}` [R, D] needs exactly one of `{ptr_name}` (CSR row pointer [S+1]) or "
            f"`{batch_name}` (segment id per row); padded [B, N, D] input takes `mask` instead"
        )
    rows = x.size(0)
    if ptr is not None:
        _renamed(check_ptr, "ptr", ptr_name, ptr, rows)
        segments = ptr.numel() - 1
        if num_segments is not None and num_segments != segments:
            raise ValueError(f"`num_segments`={num_segments} disagrees with len({ptr_name})-1={segments}")
        return Segments(x, ptr.to(device=x.device, dtype=torch.long), None, None)
    _renamed(check_index, "index", batch_name, batch, rows, num_segments)
    batch = batch.to(device=x.device, dtype=torch.long)
    if num_segments is None:
        num_segments = int(batch.max()) + 1 if rows else 0
    if rows < 2 or bool((batch[1:] >= batch[:-1]).all()):
        return Segments(x, ptr_from_index(batch, num_segments), None, None)
    order = torch.argsort(batch, stable=True)
    return Segments(x[order], ptr_from_index(batch[order], num_segments), order, None)


def _renamed(check, kernel_name: str, name: str, *args) -> None:
    """Run a kernel-level check, reporting the layer's argument name."""
    try:
        check(*args)
    except (TypeError, ValueError) as error:
        message = str(error).replace(f"`{kernel_name}`", f"`{name}`")
        raise type(error)(message) from None


def check_token_ids(name: str, ids: Tensor, num_embeddings: int | None) -> None:
    """`ids` must be a 1-D integer tensor of rows in ``[0, num_embeddings)``."""
    check_integer(name, ids)
    if ids.dim() != 1:
        raise ValueError(
            f"`{name}` must be 1-D [R] (the tokens of all documents concatenated), got shape {tuple(ids.shape)}"
        )
    if num_embeddings is not None and ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num_embeddings:
            raise ValueError(
                f"`{name}` holds token id {lo if lo < 0 else hi}, out of range for a vocabulary of "
                f"{num_embeddings} entries"
            )


def check_segments(name: str, ptr: Tensor, num_rows: int) -> None:
    """`ptr` must be a CSR row pointer [S+1] over `num_rows` rows (message names `name`)."""
    _renamed(check_ptr, "ptr", name, ptr, num_rows)


def segment_lengths(ptr: Tensor) -> Tensor:
    return ptr[1:] - ptr[:-1]


def segment_ids(ptr: Tensor) -> Tensor:
    """The segment of every row: [R]."""
    lengths = segment_lengths(ptr)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=ptr.device), lengths)


def position_in_segment(ptr: Tensor) -> Tensor:
    """The 0-based position of every row inside its own segment: [R]."""
    rows = int(ptr[-1])
    return torch.arange(rows, device=ptr.device) - ptr[:-1].repeat_interleave(segment_lengths(ptr))


def pad_segments(x: Tensor, ptr: Tensor, min_length: int = 0) -> tuple[Tensor, Tensor]:
    """Ragged rows ``x`` [R, ...] -> padded ``[S, L, ...]`` (zeros) and a ``valid`` mask [S, L].

    ``L`` is the longest segment (at least ``min_length``).
    """
    segments = ptr.numel() - 1
    lengths = segment_lengths(ptr)
    longest = max(int(lengths.max()) if segments else 0, min_length)
    padded = x.new_zeros(segments, longest, *x.shape[1:])
    segment, position = segment_ids(ptr), position_in_segment(ptr)
    padded[segment, position] = x
    valid = torch.arange(longest, device=ptr.device).unsqueeze(0) < lengths.unsqueeze(1)
    return padded, valid


def segment_conv1d(x: Tensor, ptr: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""A 'same' 1-D convolution (cross-correlation) along each segment, channel by channel.

    .. math::
        \mathrm{out}_{r,c} = b + \sum_{o=-k}^{k} w_{o+k}\, x_{r+o,c}

    where rows outside the segment of :math:`r` count as zeros (zero padding per segment,
    exactly what :func:`torch.nn.functional.conv1d` with ``padding='same'`` does to each
    segment on its own). ``x`` [R, C], ``weight`` [2k+1] shared by all channels, ``bias``
    a scalar tensor. One pass per kernel tap, each over all rows at once.
    """
    taps = weight.numel()
    half = taps // 2
    rows = x.size(0)
    out = x.new_zeros(x.shape) if bias is None else bias.expand(x.shape).clone()
    if rows == 0:
        return out
    position = position_in_segment(ptr)
    length = segment_lengths(ptr).repeat_interleave(segment_lengths(ptr))
    row = torch.arange(rows, device=x.device)
    for tap in range(taps):
        offset = tap - half
        inside = ((position + offset >= 0) & (position + offset < length)).unsqueeze(1)
        neighbour = x[(row + offset).clamp(0, rows - 1)]
        out = out + weight[tap] * torch.where(inside, neighbour, torch.zeros_like(neighbour))
    return out

