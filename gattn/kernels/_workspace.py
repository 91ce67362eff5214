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

Huge pages. Kept buffers raise the peak of a training step: between one backward and the
next, the backward's buffers (dQ, dK|dV, the per-edge temporary) sit idle while the rest of
the step (the forward, the loss and its backward) allocates memory of its own. On Linux
with transparent huge pages available to the process (mode ``always`` or ``madvise``), a
kept buffer of at least 2 MB is therefore aligned to 2 MB and asked for huge pages
(``madvise(MADV_HUGEPAGE)``), and each CPU attention forward gives back the memory of the
kept buffers nobody uses (:func:`release_idle`, ``MADV_DONTNEED``) when they hold at least
:data:`RELEASE_MIN_BYTES` (256 MB) together: below that the peak barely moves and the
re-faults cost more (on the 50k-node graph a two-thread step took 0.31 s instead of 0.16 s
with its 120 MB of idle buffers given back each step). The buffer keeps its
address; its next use faults its memory back in 2 MB pages, which costs little (writing 165
MB that way took 10 ms here against 3 ms for resident memory), so the idle buffers no longer
count in the step's peak. In 4 KB pages the same would not pay: fresh backward buffers made
a training step on the ogbn-arxiv-sized graph 0.12 s slower (1.17 against 1.05 s), so
without huge pages nothing is given back. On that graph (N = 169k, E = 1.17M, H = 4, D = 32,
one thread) the step stays at 1.00 s while its peak falls from 1,129 to 883 MB above the
process's start. ``GATTN_WORKSPACE_HUGE_PAGES=0`` in the environment turns this off (buffers
then stay resident, as without huge pages). A kernel whose THP ``defrag`` setting compacts
memory on a fault may make a huge-page fault wait on a fragmented machine, and in a VM whose
balloon device reports free pages to the hypervisor (Firecracker here) a re-fault sometimes
waits for the host: there about a third of the backwards took 0.3 s longer (mean step 1.04
against 1.00 s resident, median 0.94 against 1.00 s, same graph).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import threading

import torch
from torch import Tensor

#: The most bytes the pool keeps alive between calls.
MAX_BYTES: int = 1 << 30
#: Buffers smaller than this are allocated fresh each time (the allocator keeps those hot).
MIN_BYTES: int = 1 << 20

_lock = threading.Lock()
_buffers: list[Tensor] = []  # least recently used first
_released: set[int] = set()  # addresses of kept buffers whose memory was given back
_count = getattr(torch._C, "_storage_Use_Count", None)

#: Transparent huge page size (x86-64 and most arm64 kernels).
HUGE_PAGE = 2 << 20
_PAGE = 4096
_MADV_DONTNEED, _MADV_HUGEPAGE = 4, 14


def _thp_mode(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> str:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``; ``""``
    where it cannot be read)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else ""


def _libc_madvise():
    """libc's ``madvise`` through ctypes, or None (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _libc_madvise()
#: Kept buffers of at least HUGE_PAGE bytes get huge pages and give their memory back while
#: idle (see the module's docstring).
HUGE_PAGES: bool = (
    _madvise is not None and _thp_mode() in ("always", "madvise")
    and os.environ.get("GATTN_WORKSPACE_HUGE_PAGES", "1").strip() != "0"
)


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
                _released.discard(buffer.data_ptr())  # written again from now on
                return buffer[:numel].view(shape)
        # room for a request up to 1/8 larger (pages never written cost no memory); a normal
        # tensor even under torch.inference_mode (Lightning validates in it), since an inference
        # tensor could not be written by a later training step
        with torch.inference_mode(False):
            buffer = _new_buffer(numel + numel // 8, dtype)
        _buffers.append(buffer)
        total = sum(_nbytes(b) for b in _buffers)
        position = 0
        while total > MAX_BYTES and position < len(_buffers) - 1:
            if _free(_buffers[position]):  # a buffer in use stays until its views are gone
                total -= _nbytes(_buffers[position])
                _released.discard(_buffers[position].data_ptr())
                del _buffers[position]
            else:
                position += 1
        return buffer[:numel].view(shape)


def _new_buffer(numel: int, dtype: torch.dtype) -> Tensor:
    """A 1-D buffer for the pool: with :data:`HUGE_PAGES` and at least a huge page's size, its
    first element on a 2 MB boundary and its pages marked for huge pages."""
    size = numel * dtype.itemsize
    if not HUGE_PAGES or size < HUGE_PAGE:
        return torch.empty(numel, dtype=dtype)
    raw = torch.empty(numel + (HUGE_PAGE + _PAGE) // dtype.itemsize, dtype=dtype)
    start = -raw.data_ptr() % HUGE_PAGE
    if start % dtype.itemsize:  # cannot happen for torch's aligned allocations
        return torch.empty(numel, dtype=dtype)
    # a tensor of its own over the storage (not a view: a view's base would count as a user)
    buffer = torch.empty(0, dtype=dtype).set_(raw.untyped_storage(), start // dtype.itemsize, (numel,))
    del raw
    _madvise(buffer.data_ptr(), -(-size // _PAGE) * _PAGE, _MADV_HUGEPAGE)  # advice: a failure is harmless
    return buffer


#: Fresh (unpooled) outputs at least this large get huge pages in :func:`empty`: glibc maps
#: an allocation of 32 MB or more afresh (unless its heap has that much free at the top), so
#: each of them faults in all of its pages.
FRESH_HUGE_BYTES: int = 32 << 20


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, for a large output handed to the caller
    (so not pooled): with :data:`HUGE_PAGES`, a tensor of at least :data:`FRESH_HUGE_BYTES`
    has its memory asked for huge pages (the 2 MB-aligned part of it) before anything writes
    it, so its first writer faults it in 2 MB at a time instead of 4 KB.

    An attention output of the ogbn-arxiv-sized graph (87 MB) otherwise costs 22 thousand
    page faults on every call, about 30 ms of a one-thread training step of 1 s. The tensor
    is an ordinary one (its own storage, offset 0); only the pages behind it differ. (Where
    glibc serves the request from memory its heap already holds, that memory is resident
    already and the advice only marks it.)

    Args:
        shape (tuple of int): the tensor's shape.
        dtype (torch.dtype): its dtype.
    """
    out = torch.empty(shape, dtype=dtype)
    size = _nbytes(out)
    if HUGE_PAGES and size >= FRESH_HUGE_BYTES:
        start = -(-out.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        end = (out.data_ptr() + size) // HUGE_PAGE * HUGE_PAGE
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)  # advice: a failure is harmless
    return out


#: :func:`release_idle` gives nothing back while the idle kept buffers total less than this.
#: Measured on the 50k-node, 1M-edge graph (H=4, D=32; about 120 MB idle between backwards):
#: giving them back saved 20-50 MB of peak memory and made a two-thread training step 0.31
#: instead of 0.16 s (re-faulting them); on the ogbn-arxiv-sized graph (about 330 MB idle) it
#: saves 240 MB of the peak (1,085 -> 846 MB above the inputs) at no measured cost in time.
RELEASE_MIN_BYTES: int = 256 << 20


def release_idle() -> int:
    """Give the memory of kept buffers that nobody uses back to the operating system, keeping
    the buffers (their next use faults the memory back in, as huge pages). Only buffers with
    huge pages are released (:data:`HUGE_PAGES`; in 4 KB pages the faults would cost more than
    the pool saves), and only when together they hold at least :data:`RELEASE_MIN_BYTES`
    (below that, re-faulting them costs more time than the memory is worth). The CPU attention
    forward calls this.

    Returns:
        int: the bytes released by this call.
    """
    if not HUGE_PAGES:
        return 0
    released = 0
    with _lock:
        idle = [
            buffer for buffer in _buffers
            if _nbytes(buffer) >= HUGE_PAGE and buffer.data_ptr() % HUGE_PAGE == 0
            and buffer.data_ptr() not in _released and _free(buffer)
        ]
        if sum(_nbytes(buffer) for buffer in idle) < RELEASE_MIN_BYTES:
            return 0
        for buffer in idle:
            address, length = buffer.data_ptr(), _nbytes(buffer) // _PAGE * _PAGE
            if _madvise(address, length, _MADV_DONTNEED) == 0:
                _released.add(address)
                released += length
    return released


def pooled_bytes() -> int:
    """Bytes the pool holds (in use or free)."""
    with _lock:
        return sum(_nbytes(b) for b in _buffers)


def clear() -> None:
    """Forget every kept buffer (memory still in use stays with its users)."""
    with _lock:
        _buffers.clear()
        _released.clear()


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
        grad_x = None
        if ctx.needs_input_grad[0] and torch.is_grad_enabled():  # create_graph: out= has no autograd
            grad_x = grad @ weight
        elif ctx.needs_input_grad[0]:  # as large as x: fresh, so asked for huge pages
            grad_x = torch.mm(grad, weight, out=empty((grad.size(0), weight.size(1)), grad.dtype))
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
