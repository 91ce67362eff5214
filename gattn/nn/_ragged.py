"""Ragged sequences (all tokens of a batch concatenated, documents given by a CSR ``ptr``).

Shared by the clinical text layers (:mod:`gattn.nn.transicd`, :mod:`gattn.nn.label_attention`)
and their models: validation of the ragged input at the public boundary, the position of
every row inside its sequence, packing to and from the padded ``[B, L, D]`` layout that
torch's own sequence modules need, and a convolution along each sequence that never mixes
two sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gattn.kernels._validate import check_integer, check_ptr


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
    try:
        check_ptr(ptr, num_rows)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("`ptr`", f"`{name}`", 1)) from None


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

