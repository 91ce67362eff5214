"""Large CPU buffers of the kernels (and the layers' fused K|V projection, :func:`linear`),
reused from call to call instead of freshly mapped.

A fresh tensor of tens of megabytes is new memory to the operating system: the kernel that
first writes it pays a page fault per 4 KB page (about 1.5 us each: 19 ms for a 51 MB dK|dV
buffer, on every training step). glibc maps allocations above 32 MB afresh each time, and
smaller ones too once its heap has been trimmed, so a training step paid 12-50 thousand
faults inside the backward kernels.

:func:`take` hands out a view of a buffer kept from an earlier call when nothing references
that buffer's memory any more (its storage is held by the pool alone), else a new buffer,
which the pool keeps for later. A buffer is reused for any request of the same dtype whose
size is between 3/4 of its capacity and its capacity, so mini-batches whose sizes vary a
little reuse it too. The pool keeps at most :data:`MAX_BYTES` (least recently used dropped
first) and only buffers of at least :data:`MIN_BYTES`; :func:`clear` empties it.

Reuse is decided by the storage's reference count (``torch._C._storage_Use_Count``): a
tensor handed out is a view (its own reference), so a buffer is free again only once every
view of it, and every tensor made from them, is gone. Where that count cannot be read the
pool is bypassed and every call gets a fresh buffer.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

#: The most bytes the pool keeps alive between calls.
MAX_BYTES: int = 1 << 30
#: Buffers smaller than this are allocated fresh each time (the allocator keeps those hot).
MIN_BYTES: int = 1 << 20

_lock = threading.Lock()
_buffers: list[Tensor] = []  # least recently used first
_count = getattr(torch._C, "_storage_Use_Count", None)


def _nbytes(buffer: Tensor) -> int:
    return buffer.numel() * buffer.element_size()


def _free(buffer: Tensor) -> bool:
    """Nothing but the pool references the buffer's memory (the count includes the pool's
    own tensor and the temporary storage object of this query)."""
    storage = buffer.untyped_storage()
    return _count(storage._cdata) <= 2


def take(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised contiguous CPU tensor of `shape` and `dtype`, possibly the memory of
    an earlier call's buffer that is no longer referenced.

    Args:
        shape (tuple of int): the tensor's shape.
        dtype (torch.dtype): its dtype.
    """
    numel = math.prod(shape)
    size = numel * dtype.itemsize
    if _count is None or size < MIN_BYTES or size > MAX_BYTES:
        return torch.empty(shape, dtype=dtype)
    with _lock:
        for position, buffer in enumerate(_buffers):
            if buffer.dtype == dtype and 3 * buffer.numel() <= 4 * numel <= 4 * buffer.numel() and _free(buffer):
                del _buffers[position]
                _buffers.append(buffer)  # most recently used
                return buffer[:numel].view(shape)
        # room for a request up to 1/8 larger (pages never written cost no memory)
        buffer = torch.empty(numel + numel // 8, dtype=dtype)
        _buffers.append(buffer)
        total = sum(_nbytes(b) for b in _buffers)
        position = 0
        while total > MAX_BYTES and position < len(_buffers) - 1:
            if _free(_buffers[position]):  # a buffer in use stays until its views are gone
                total -= _nbytes(_buffers[position])
                del _buffers[position]
            else:
                position += 1
        return buffer[:numel].view(shape)


def pooled_bytes() -> int:
    """Bytes the pool holds (in use or free)."""
    with _lock:
        return sum(_nbytes(b) for b in _buffers)


def clear() -> None:
    """Forget every kept buffer (memory still in use stays with its users)."""
    with _lock:
        _buffers.clear()


class _Linear(torch.autograd.Function):
    """``x @ weight.T + bias`` written into a pooled buffer; the backward is F.linear's."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = take((x.size(0), weight.size(0)), x.dtype)
        if bias is None:
            torch.mm(x, weight.t(), out=out)
        else:
            torch.addmm(bias, x, weight.t(), out=out)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ x if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear`` for a 2-D CPU ``x``, its output in pooled memory when
    that output is large (see :func:`take`): a layer's fused K|V projection is the largest
    tensor of its forward (51 MB at N = 50k, H = 4, D = 32), above glibc's 32 MB limit for
    reusing freed memory, so a plain matmul maps it afresh and faults in every page of it on
    every call. Anything else (another device or dtype, more dimensions, a small output,
    ``torch.compile``) is ``F.linear`` itself.

    Args:
        x (torch.Tensor): the input, ``[N, C_in]``.
        weight (torch.Tensor): ``[C_out, C_in]``.
        bias (torch.Tensor, optional): ``[C_out]``. (default: ``None``)
    """
    pooled = (
        x.dim() == 2 and x.device.type == "cpu" and weight.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype
        and (bias is None or bias.dtype == x.dtype) and not torch.compiler.is_compiling()
        and MIN_BYTES <= x.size(0) * weight.size(0) * x.element_size() <= MAX_BYTES and _count is not None
    )
    if not pooled:
        return torch.nn.functional.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)
