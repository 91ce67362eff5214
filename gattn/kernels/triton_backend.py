"""Triton backend: fused CSR kernels for CUDA (or CPU tensors under ``TRITON_INTERPRET=1``).

Design (kernels in `_triton_kernels.py`):

* **Chunks.** Every kernel walks segments (a destination's incoming edges, a source's
  outgoing edges, a bag's rows) as *chunks* of at most :data:`ROW_SPLIT` rows. A longer
  segment (a hub of a power-law graph) is cut into chunks that run in parallel, each
  writing a partial result (running max, sum, accumulator) to a scratch slot; a merge
  kernel then combines the slots of each split segment in order. Short segments are one
  chunk and write their result directly. Chunks are sorted by length (longest first), so
  the block of chunks one program takes holds rows of similar degree (degree bucketing
  without buckets). The plan is built once per CSR / ptr and cached on it.
* **Edge attention forward.** One program per (block of destination chunks, head); tiles
  are [rows, ``BLOCK_E`` edges of each, D], with ``BLOCK_E`` from the mean degree and the
  row count filling :data:`TILE_ELEMENTS`. It gathers the key and value rows of the edges
  by their source index and keeps a FlashAttention-style online softmax per row (running
  max, running sum, rescaled accumulator), with the optional per-edge bias and per-head or
  per-dim scale. It writes ``out`` and the per-row log-sum-exp [N, H]; a row without
  edges (or whose scores are all -inf) gets zeros and lse = -inf.
* **Backward.** Scores are recomputed from the saved lse; ``D_i = <dO_i, O_i>``,
  ``dS = P (dP - D_i)``; a pass over destination chunks gives dQ, the edge-bias gradient
  (dS) and the edge-scale gradient. dK and dV come either from a second pass over the
  transposed structure (CSC; deterministic, the default) or from atomic adds in the first
  pass (``ATOMIC = True`` or env ``GATTN_TRITON_ATOMIC=1``; no CSC, no per-edge P/dS
  buffers, but the summation order varies from run to run).
* Segment softmax and pooling use the same chunks and blocks, with all heads / queries /
  features of a row in the tile. Inputs in fp16/bf16 are read as such and accumulated in float32 (float64 stays
  float64).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import NamedTuple

import torch
import triton.language as tl
from torch import Tensor

from . import _triton_kernels as kern
from ._cache import cached
from ._compose import attention_pool
from ._dropout import split_seed
from ._dropout import threshold as dropout_threshold
from ._edge import EdgeGrads, EdgeTerms, guard_double_backward, kv_views
from .csr import CSR

NAME = "triton"
EDGE_FEATURES = frozenset({"additive", "dropout", "edge_bias", "edge_scale", "edge_key", "edge_value"})
__all__ = [
    "ATOMIC", "MAX_BLOCK_E", "NAME", "ROW_SPLIT", "TILE_ELEMENTS",
    "edge_backward", "edge_forward", "edge_probabilities", "segment_attention_pool", "segment_softmax",
    "unsupported",
]

#: Segments longer than this many rows (edges) are split into chunks computed in parallel.
ROW_SPLIT: int = 512
#: Elements of one tile: [rows, edges of each, head dim] in the edge kernels, [segments,
#: rows of each, width] in the segment kernels; sets how many rows a program takes.
TILE_ELEMENTS: int = 4096
#: The most edges of a row that the edge kernels take per step (a power of two). 16 beat 32
#: on an H200 in every pass (random N=50k/E=1M, fp32: forward + backward 1.67 against 1.88 ms
#: at H=4/D=32, 5.97 against 7.69 ms at H=8/D=64; ``benchmarks/triton_passes.py``).
MAX_BLOCK_E: int = 16
#: dK/dV by atomic adds instead of the deterministic CSC pass; None reads GATTN_TRITON_ATOMIC.
ATOMIC: bool | None = None

# triton.jit reads TRITON_INTERPRET when it decorates the kernels, i.e. at import time.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def unsupported(like: Tensor) -> str | None:
    """Why this backend cannot take tensors like ``like`` (``None``: it can); the dispatcher
    (:func:`gattn.kernels.resolve_backend`) reports the reason.

    Args:
        like (Tensor): a tensor of the call (its device decides).
    """
    if like.is_cuda:
        return None
    if like.device.type == "cpu":
        if _INTERPRETED:
            return None
        return (
            "CPU tensors need TRITON_INTERPRET=1 in the environment before "
            "gattn.kernels.triton_backend is imported (or use backend='cpu')"
        )
    return f"the triton backend takes CUDA tensors, got device {like.device}"


def _use_atomic() -> bool:
    if ATOMIC is not None:
        return bool(ATOMIC)
    return os.environ.get("GATTN_TRITON_ATOMIC", "0") == "1"


# --------------------------------------------------------------------------------------
# chunk plans
# --------------------------------------------------------------------------------------

class _Plan(NamedTuple):
    seg: Tensor        # [C] segment of each chunk
    start: Tensor      # [C] first row of the chunk
    end: Tensor        # [C] one past its last row
    slot: Tensor       # [C] scratch slot of a chunk of a split segment, -1 otherwise
    split_seg: Tensor  # [S'] the split segments
    split_ptr: Tensor  # [S'+1] their slots: split_ptr[r] .. split_ptr[r+1]
    num_segments: int
    num_chunks: int
    num_slots: int


def _build_plan(ptr: Tensor, split: int) -> _Plan:
    ptr = ptr.long()
    device = ptr.device
    segments = ptr.numel() - 1
    counts = ptr[1:] - ptr[:-1]
    # an empty segment still gets one (empty) chunk, which writes its zeros / -inf
    chunks_per_seg = torch.clamp_min((counts + split - 1) // split, 1)
    is_split = chunks_per_seg > 1
    num_chunks, num_slots = (
        int(x) for x in torch.stack([chunks_per_seg.sum(), chunks_per_seg[is_split].sum()]).tolist()
    )
    seg = torch.repeat_interleave(
        torch.arange(segments, device=device), chunks_per_seg, output_size=num_chunks
    )
    first_chunk = torch.cumsum(chunks_per_seg, 0) - chunks_per_seg
    within = torch.arange(num_chunks, device=device) - first_chunk[seg]
    start = ptr[seg] + within * split
    end = torch.minimum(start + split, ptr[seg + 1])
    chunk_is_split = is_split[seg]
    slot = torch.where(chunk_is_split, torch.cumsum(chunk_is_split.long(), 0) - 1, -1)
    split_seg = torch.nonzero(is_split).flatten()
    split_ptr = torch.zeros(split_seg.numel() + 1, dtype=torch.long, device=device)
    torch.cumsum(chunks_per_seg[split_seg], 0, out=split_ptr[1:])
    # longest chunks first, so a block of chunks (one program) holds rows of similar length
    # and the hub chunks start early; slots travel with their chunks
    order = torch.argsort(end - start, descending=True, stable=True)
    seg, start, end, slot = seg[order], start[order], end[order], slot[order]
    return _Plan(seg, start, end, slot, split_seg, split_ptr, segments, num_chunks, num_slots)


def _plan_cached(owner: CSR | None, key: str, ptr: Tensor) -> _Plan:
    """The chunk plan of `ptr`, rebuilt when `ROW_SPLIT` changes: kept on the CSR it belongs
    to, or (for a caller's segment ptr) in gattn's module-level cache, never on a caller's
    tensor."""
    if owner is None:
        return cached(ptr, ("triton-plan", ROW_SPLIT), lambda: _build_plan(ptr, ROW_SPLIT))
    plans = owner.plans
    if (key, ROW_SPLIT) not in plans:
        plans[(key, ROW_SPLIT)] = _build_plan(ptr, ROW_SPLIT)
    return plans[(key, ROW_SPLIT)]


def _row_plan(csr: CSR) -> _Plan:
    return _plan_cached(csr, "rows", csr.rowptr)


def _col_plan(csr: CSR, colptr: Tensor) -> _Plan:
    return _plan_cached(csr, "cols", colptr)


def _segment_plan(ptr: Tensor) -> _Plan:
    return _plan_cached(None, "segments", ptr)


# --------------------------------------------------------------------------------------
# launch helpers
# --------------------------------------------------------------------------------------

def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _nonempty(tensor: Tensor) -> Tensor:
    """Triton needs a valid pointer even for a buffer no program touches."""
    return tensor if tensor.numel() else torch.zeros(1, dtype=tensor.dtype, device=tensor.device)


def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A scalar argument as a [1] tensor: triton passes Python floats as float32."""
    return torch.full((1,), value, dtype=dtype, device=device)


def _scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return _nonempty(torch.empty(shape, dtype=dtype, device=device))


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _edge_blocks(dim: int, dim_v: int, num_edges: int, num_rows: int) -> dict[str, int]:
    """Tile [BLOCK_R rows, BLOCK_E edges of each, BLOCK_D]: BLOCK_E follows the mean degree
    (rows in a block have similar lengths: the plan sorts chunks by length), BLOCK_R fills
    the tile up to TILE_ELEMENTS."""
    block_d, block_dv = _pow2(dim), _pow2(dim_v)
    widest = max(block_d, block_dv)
    mean_degree = num_edges / max(num_rows, 1)
    block_e = min(MAX_BLOCK_E, max(4, _pow2(math.ceil(mean_degree))), max(1, TILE_ELEMENTS // widest))
    block_r = max(1, min(64, TILE_ELEMENTS // (block_e * widest)))
    tile = block_r * block_e * widest
    warps = 1 if tile <= 512 else 2 if tile <= 1024 else 4 if tile <= 4096 else 8
    return dict(BLOCK_R=block_r, BLOCK_E=block_e, BLOCK_D=block_d, BLOCK_DV=block_dv,
                num_warps=warps)


def _segment_blocks(width: int, plan: _Plan, num_rows: int) -> tuple[int, dict[str, int]]:
    """Grid size and tile [BLOCK_S segments, BLOCK_R rows of each, width] of the segment
    kernels: BLOCK_R follows the mean segment length, BLOCK_S fills TILE_ELEMENTS."""
    block_w = _pow2(width)
    mean_length = num_rows / max(plan.num_segments, 1)
    block_r = min(64, max(4, _pow2(math.ceil(mean_length))), max(1, TILE_ELEMENTS // block_w))
    block_s = max(1, min(64, TILE_ELEMENTS // (block_r * block_w)))
    tile = block_s * block_r * block_w
    warps = 1 if tile <= 512 else 2 if tile <= 1024 else 4 if tile <= 4096 else 8
    return _cdiv(plan.num_chunks, block_s), dict(BLOCK_S=block_s, BLOCK_R=block_r, num_warps=warps)


def _sum_merge(part: Tensor, plan: _Plan, out: Tensor, width: int, out_row: int | None = None) -> None:
    """out[split segment] = sum of its partial rows [slots, width]; rows of `out` are
    `out_row` elements apart (default `width`: contiguous)."""
    if plan.num_slots == 0:
        return
    block_f = min(1024, _pow2(width))
    grid = (plan.split_seg.numel(), _cdiv(width, block_f))
    kern.sum_merge_kernel[grid](
        part, plan.split_seg, plan.split_ptr, out, width, width if out_row is None else out_row,
        BLOCK_F=block_f, ACC=_tl_acc(part.dtype), num_warps=4 if block_f >= 512 else 1,
    )


# --------------------------------------------------------------------------------------
# edge attention
# --------------------------------------------------------------------------------------

_CONSTANTS: OrderedDict[tuple, Tensor] = OrderedDict()


def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small read-only tensor of kernel arguments on `device`, without a device
    synchronisation: reused while the values recur (the last 64 kept), else copied from
    pinned memory asynchronously (`torch.tensor(..., device="cuda")` would block the host
    until the GPU has caught up, once per call)."""
    key = (values, dtype, device)
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        tensor = torch.tensor(values, dtype=dtype)
        if device.type == "cuda":
            tensor = tensor.pin_memory().to(device, non_blocking=True)
        else:
            tensor = tensor.to(device)
        _CONSTANTS[key] = tensor
        while len(_CONSTANTS) > 64:
            _CONSTANTS.popitem(last=False)
    _CONSTANTS.move_to_end(key)
    return tensor


class _EdgeInputs(NamedTuple):
    """What every pass over destination rows reads (placeholders stand for absent terms)."""
    q: Tensor
    k: Tensor
    v: Tensor
    bias: Tensor
    escale: Tensor
    ekey: Tensor
    evalue: Tensor
    att: Tensor
    csr: CSR
    scalars: Tensor  # [scale, negative slope, 1 / (1 - p)] in the accumulation dtype
    drop: Tensor  # int64 [seed low word, seed high word, threshold]
    flags: dict  # the kernels' constexpr switches


def _rows(x: Tensor) -> Tensor:
    """K or V as the kernels read it: rows `stride(0)` apart, each row's [H, D] contiguous (the
    halves of a packed K|V projection qualify as they are), else a contiguous copy."""
    num, heads, dim = x.shape
    inner = x.stride(2) == 1 and (heads <= 1 or x.stride(1) == dim)
    return x if inner and (num <= 1 or x.stride(0) >= heads * dim) else x.contiguous()


def _kv_buffer(k: Tensor, v: Tensor, dtype: torch.dtype, zero: bool) -> tuple[Tensor, Tensor]:
    """dK and dV as the two halves of one [N, H*D + H*Dv] buffer (row j: dk_j then dv_j), so
    that `split_kv`'s backward hands it on as the gradient of a packed K|V without a copy."""
    num, heads, dim = k.shape
    width = heads * (dim + v.shape[2])
    buffer = (torch.zeros if zero else torch.empty)(num, width, dtype=dtype, device=k.device)
    return kv_views(buffer, heads, dim, v.shape[2])


def _edge_inputs(t: EdgeTerms) -> _EdgeInputs:
    """Contiguous operands (K and V: see `_rows`); a one-element placeholder stands for an
    absent term."""
    q, k, v = t.q.contiguous(), _rows(t.k), _rows(t.v)
    if t.csr.col.device != q.device:
        raise ValueError(f"`edge_index` is on {t.csr.col.device} but q is on {q.device}")
    placeholder = torch.zeros(1, dtype=q.dtype, device=q.device)

    def operand(x: Tensor | None) -> Tensor:
        return placeholder if x is None else x.contiguous()

    att = t.att
    if t.additive and att is None:
        att = torch.ones(q.shape[1], q.shape[2], dtype=q.dtype, device=q.device)
    acc = _acc_dtype(q.dtype)
    inv_keep = 1.0 / (1.0 - t.dropout_p)
    scalars = _constant((t.scale, t.negative_slope, inv_keep), acc, q.device)
    seed_lo, seed_hi = split_seed(t.seed)
    thresh = min(dropout_threshold(t.dropout_p), 2**32 - 1)
    drop = _constant((seed_lo, seed_hi, thresh), torch.int64, q.device)
    flags = dict(
        HAS_BIAS=t.edge_bias is not None,
        SCALE_MODE=0 if t.edge_scale is None else t.edge_scale.dim() - 1,
        HAS_EKEY=t.edge_key is not None, HAS_EVAL=t.edge_value is not None, ADDITIVE=bool(t.additive),
        DROPOUT=t.dropout_p > 0,
    )
    return _EdgeInputs(q, k, v, operand(t.edge_bias), operand(t.edge_scale), operand(t.edge_key),
                       operand(t.edge_value), operand(att), t.csr, scalars, drop, flags)


_ROW_BUFFERS = ("out", "lse", "part_m", "part_l", "part_acc", "dout", "probs", "dscores", "descale", "dekey",
                "devalue", "datt", "dattn", "delta", "dq", "part_dq", "dk", "dv")


def _launch_rows(pass_: int, inp: _EdgeInputs, plan: _Plan, **buffers: Tensor | bool | None) -> None:
    """Launch `edge_rows_kernel` (PASS 0 forward, 1 probabilities, 2 backward) over `plan`;
    buffers the pass does not use get a placeholder pointer."""
    q, v = inp.q, inp.v
    num_dst, heads, dim = q.shape
    acc = _acc_dtype(q.dtype)
    placeholder = _scratch((0,), acc, q.device)
    ptrs = [_nonempty(buffers.get(name)) if buffers.get(name) is not None else placeholder
            for name in _ROW_BUFFERS]
    blocks = _edge_blocks(dim, v.shape[2], inp.csr.num_edges, num_dst)
    dk, dv = buffers.get("dk"), buffers.get("dv")
    rows = (inp.k.stride(0), v.stride(0), dim * heads if dk is None else dk.stride(0),
            v.shape[2] * heads if dv is None else dv.stride(0))
    kern.edge_rows_kernel[(_cdiv(plan.num_chunks, blocks["BLOCK_R"]), heads)](
        q, inp.k, v, inp.bias, inp.escale, inp.ekey, inp.evalue, inp.att, _nonempty(inp.csr.col),
        _nonempty(inp.csr.perm),
        plan.seg, plan.start, plan.end, plan.slot, plan.num_chunks,
        *ptrs,
        heads, dim, v.shape[2], *rows, inp.scalars[0:], inp.scalars[1:], inp.drop, inp.scalars[2:],
        PASS=pass_, **inp.flags,
        HAS_DATTN=buffers.get("dattn") is not None,
        STORE_PROBS=buffers.get("probs") is not None,
        STORE_DS=buffers.get("dscores") is not None,
        ATOMIC=bool(buffers.get("atomic", False)), ACC=_tl_acc(acc), **blocks,
    )


def _edge_forward(inp: _EdgeInputs) -> tuple[Tensor, Tensor]:
    """out [N, H, Dv] (input dtype) and the per-row log-sum-exp [N, H] (accumulation dtype)."""
    q, v = inp.q, inp.v
    num_dst, heads = q.shape[:2]
    dim_v = v.shape[2]
    acc = _acc_dtype(q.dtype)
    out = torch.empty(num_dst, heads, dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(num_dst, heads, dtype=acc, device=q.device)
    plan = _row_plan(inp.csr)
    if plan.num_chunks == 0 or heads == 0:
        return out, lse
    part_m = _scratch((plan.num_slots, heads), acc, q.device)
    part_l = _scratch((plan.num_slots, heads), acc, q.device)
    part_acc = _scratch((plan.num_slots, heads, dim_v), acc, q.device)
    _launch_rows(0, inp, plan, out=out, lse=lse, part_m=part_m, part_l=part_l, part_acc=part_acc)
    if plan.num_slots:
        block_dv = _pow2(dim_v)
        kern.softmax_merge_kernel[(plan.split_seg.numel(), heads)](
            part_m, part_l, part_acc, plan.split_seg, plan.split_ptr, out, lse, heads, dim_v,
            HAS_ACC=True, BLOCK_P=16, BLOCK_DV=block_dv, ACC=_tl_acc(acc),
            num_warps=4 if block_dv >= 128 else 1,
        )
    return out, lse


def _backward(inp: _EdgeInputs, out: Tensor, lse: Tensor, dout: Tensor, dattn: Tensor | None,
              delta: Tensor | None, need_kv: bool):
    """(dq, dk, dv, d bias, d edge_scale, d edge_key, d edge_value, d att), accumulation dtype."""
    q, k, v = inp.q, inp.k, inp.v
    device, acc = q.device, _acc_dtype(q.dtype)
    num_edges, heads = inp.csr.num_edges, q.shape[1]
    flags = inp.flags
    atomic = need_kv and _use_atomic()
    csc_pass = need_kv and not atomic
    per_edge = lambda: torch.zeros(num_edges, heads, dtype=acc, device=device)
    # P * mask and dS are kept per edge only for the CSC pass (and dS as the edge-bias gradient)
    probs = per_edge() if csc_pass else None
    dscores = per_edge() if csc_pass or flags["HAS_BIAS"] else None
    like = lambda present, tensor: torch.zeros(tensor.shape, dtype=acc, device=device) if present else None
    descale = like(flags["SCALE_MODE"] > 0, inp.escale)
    dekey = like(flags["HAS_EKEY"], inp.ekey)
    devalue = like(flags["HAS_EVAL"], inp.evalue)
    dk = dv = None
    if atomic:
        dk, dv = _kv_buffer(k, v, acc, zero=True)
    dq = torch.empty(q.shape, dtype=acc, device=device)
    plan = _row_plan(inp.csr)
    datt = None
    if flags["ADDITIVE"]:
        datt = torch.zeros(max(plan.num_chunks, 1), *q.shape[1:], dtype=acc, device=device)
    if plan.num_chunks and heads:
        part_dq = _scratch((plan.num_slots, *q.shape[1:]), acc, device)
        _launch_rows(
            2, inp, plan, out=out, lse=lse, dout=dout, probs=probs,
            dscores=dscores, descale=descale, dekey=dekey, devalue=devalue, datt=datt,
            dattn=None if dattn is None else dattn.contiguous(),
            delta=None if delta is None else delta.contiguous(),
            dq=dq, part_dq=part_dq, dk=dk, dv=dv, atomic=atomic,
        )
        _sum_merge(part_dq, plan, dq, q.shape[1] * q.shape[2])
    else:
        dq.zero_()
    if csc_pass:
        dk, dv = _edge_cols_pass(inp, dout, probs, dscores)
    return (dq, dk, dv, dscores if flags["HAS_BIAS"] else None, descale, dekey, devalue,
            None if datt is None else datt.sum(0))


def _edge_cols_pass(inp: _EdgeInputs, dout: Tensor, probs: Tensor, dscores: Tensor):
    """dK, dV by walking each source's outgoing edges (CSC): no atomics, deterministic."""
    q, k, v = inp.q, inp.k, inp.v
    num_src, heads, dim = k.shape
    dim_v = v.shape[2]
    acc = _acc_dtype(q.dtype)
    dk, dv = _kv_buffer(k, v, acc, zero=False)
    colptr, csc_row, csc_edge = inp.csr.csc()
    plan = _col_plan(inp.csr, colptr)
    if plan.num_chunks == 0 or heads == 0:
        return dk.zero_(), dv.zero_()
    part_dk = _scratch((plan.num_slots, heads, dim), acc, q.device)
    part_dv = _scratch((plan.num_slots, heads, dim_v), acc, q.device)
    blocks = _edge_blocks(dim, dim_v, inp.csr.num_edges, num_src)
    kern.edge_cols_kernel[(_cdiv(plan.num_chunks, blocks["BLOCK_R"]), heads)](
        q, k, inp.escale, inp.ekey, inp.att, dout, _nonempty(probs), _nonempty(dscores), _nonempty(csc_row),
        _nonempty(csc_edge),
        plan.seg, plan.start, plan.end, plan.slot, plan.num_chunks,
        dk, dv, part_dk, part_dv,
        heads, dim, dim_v, k.stride(0), dk.stride(0), dv.stride(0), inp.scalars[0:], inp.scalars[1:],
        SCALE_MODE=inp.flags["SCALE_MODE"], HAS_EKEY=inp.flags["HAS_EKEY"], ADDITIVE=inp.flags["ADDITIVE"],
        ACC=_tl_acc(acc), **blocks,
    )
    _sum_merge(part_dk, plan, dk, heads * dim, dk.stride(0))
    _sum_merge(part_dv, plan, dv, heads * dim_v, dv.stride(0))
    return dk, dv


def edge_forward(t: EdgeTerms) -> tuple[Tensor, Tensor]:
    """out [N_dst, H, Dv] and the per-row log-sum-exp [N_dst, H] (no autograd).

    Args:
        t (gattn.kernels._edge.EdgeTerms): the validated inputs of one :func:`gattn.kernels.edge_attention` call.
    """
    return _edge_forward(_edge_inputs(t))


def edge_probabilities(t: EdgeTerms, lse: Tensor) -> Tensor:
    """Attention [E, H] in the caller's edge order (before dropout), from the log-sum-exp.

    Args:
        t (gattn.kernels._edge.EdgeTerms): the inputs of the forward call.
        lse (Tensor): the per-row log-sum-exp :func:`edge_forward` returned :math:`(N_{dst}, H)`.
    """
    inp = _edge_inputs(t)
    probs = torch.zeros(inp.csr.num_edges, inp.q.shape[1], dtype=inp.q.dtype, device=inp.q.device)
    plan = _row_plan(inp.csr)
    if plan.num_chunks and inp.q.shape[1]:
        _launch_rows(1, inp, plan, lse=lse, probs=probs)
    return probs


def edge_backward(
    t: EdgeTerms, out: Tensor, lse: Tensor, dout: Tensor, dattention: Tensor | None,
    attention_delta: Tensor | None, need_kv: bool = True,
) -> EdgeGrads:
    r"""Gradients of every input, in the inputs' dtypes (see ``gattn/kernels/_edge.py``).

    Args:
        t (gattn.kernels._edge.EdgeTerms): the inputs of the forward call.
        out (Tensor): the forward output :math:`(N_{dst}, H, D_v)`.
        lse (Tensor): the forward's per-row log-sum-exp :math:`(N_{dst}, H)`.
        dout (Tensor): the gradient of ``out``.
        dattention (Tensor, optional): the gradient of the returned attention :math:`(E, H)`
            (``None``: the attention was not returned or not used).
        attention_delta (Tensor, optional): :math:`\sum_e \alpha_e\, d\alpha_e` per row and
            head, the softmax correction of ``dattention``.
        need_kv (bool, optional): compute the key and value gradients (the CSC pass).
            (default: ``True``)
    """
    inp = _edge_inputs(t)
    grads = _backward(inp, out, lse, dout.contiguous(), dattention, attention_delta, need_kv)
    likes = (t.q, t.k, t.v, t.edge_bias, t.edge_scale, t.edge_key, t.edge_value, t.att)
    return EdgeGrads(*(None if g is None or like is None else g.to(like.dtype) for g, like in zip(grads, likes)))


# --------------------------------------------------------------------------------------
# segment softmax
# --------------------------------------------------------------------------------------

def _softmax_forward(scores: Tensor, plan: _Plan) -> Tensor:
    rows, width = scores.shape
    acc = _acc_dtype(scores.dtype)
    out = torch.empty_like(scores)
    if plan.num_chunks == 0 or width == 0:
        return out
    num_segments = plan.num_segments
    lse = torch.empty(num_segments, width, dtype=acc, device=scores.device)
    part_m = _scratch((plan.num_slots, width), acc, scores.device)
    part_l = _scratch((plan.num_slots, width), acc, scores.device)
    programs, blocks = _segment_blocks(width, plan, rows)
    kern.seg_softmax_stats_kernel[(programs,)](
        scores, plan.seg, plan.start, plan.end, plan.slot, plan.num_chunks,
        lse, part_m, part_l, width, BLOCK_F=_pow2(width), ACC=_tl_acc(acc), **blocks,
    )
    if plan.num_slots:
        kern.softmax_merge_kernel[(plan.split_seg.numel(), width)](
            part_m, part_l, part_m, plan.split_seg, plan.split_ptr, lse, lse, width, 1,
            HAS_ACC=False, BLOCK_P=16, BLOCK_DV=1, ACC=_tl_acc(acc), num_warps=1,
        )
    if rows:
        kern.seg_rows_kernel[(programs,)](
            scores, scores, lse, out, plan.seg, plan.start, plan.end, plan.num_chunks, width,
            MODE=0, BLOCK_F=_pow2(width), ACC=_tl_acc(acc), **blocks,
        )
    return out


def _softmax_backward(probs: Tensor, grad: Tensor, plan: _Plan) -> Tensor:
    rows, width = probs.shape
    acc = _acc_dtype(probs.dtype)
    dscores = torch.empty_like(probs)
    if plan.num_chunks == 0 or width == 0 or rows == 0:
        return dscores
    num_segments = plan.num_segments
    dot = torch.empty(num_segments, width, dtype=acc, device=probs.device)
    part = _scratch((plan.num_slots, width), acc, probs.device)
    programs, blocks = _segment_blocks(width, plan, rows)
    kern.seg_dot_kernel[(programs,)](
        probs, grad, plan.seg, plan.start, plan.end, plan.slot, plan.num_chunks, dot, part, width,
        BLOCK_F=_pow2(width), ACC=_tl_acc(acc), **blocks,
    )
    _sum_merge(part, plan, dot, width)
    kern.seg_rows_kernel[(programs,)](
        probs, grad, dot, dscores, plan.seg, plan.start, plan.end, plan.num_chunks, width,
        MODE=1, BLOCK_F=_pow2(width), ACC=_tl_acc(acc), **blocks,
    )
    return dscores


class _SegmentSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, plan):
        out = _softmax_forward(scores, plan)
        ctx.save_for_backward(out)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        dscores = _softmax_backward(probs, grad.contiguous(), ctx.plan)
        name = "gattn.kernels.segment_softmax (triton backend)"
        return *guard_double_backward(name, (dscores,), (probs,)), None


def _work(tensor: Tensor) -> Tensor:
    """Segment ops compute in float32 (float64 stays float64)."""
    return tensor.to(_acc_dtype(tensor.dtype)).contiguous()


def segment_softmax(scores: Tensor, ptr: Tensor) -> Tensor:
    """The backend of :func:`gattn.kernels.segment_softmax` on validated input.

    Args:
        scores (Tensor): scores of the rows of all segments :math:`(R, *)`.
        ptr (Tensor): the segments over the rows :math:`(S + 1)`.

    Returns:
        the softmax within each segment, shaped and typed as ``scores``.
    """
    plan = _segment_plan(ptr)
    return _SegmentSoftmax.apply(_work(scores), plan).to(scores.dtype)


# --------------------------------------------------------------------------------------
# segment attention pooling
# --------------------------------------------------------------------------------------

def _weighted_sum(weights: Tensor, value: Tensor, plan: _Plan, num_segments: int, mult: float = 1.0):
    """out[s, q] = mult * sum_{r in s} weights[r, q] value[r]  ->  [S, Q, Dv]."""
    nq, dim_v = weights.shape[1], value.shape[1]
    out = torch.empty(num_segments, nq, dim_v, dtype=value.dtype, device=value.device)
    if plan.num_chunks == 0 or nq == 0 or dim_v == 0:
        return out.zero_()
    part = _scratch((plan.num_slots, nq, dim_v), value.dtype, value.device)
    programs, blocks = _segment_blocks(dim_v, plan, weights.shape[0])
    kern.seg_weighted_sum_kernel[(programs, nq)](
        _nonempty(weights), _nonempty(value), plan.seg, plan.start, plan.end, plan.slot,
        plan.num_chunks, out, part, nq, dim_v, _scalar(mult, value.dtype, value.device),
        BLOCK_DV=_pow2(dim_v), ACC=_tl_acc(value.dtype), **blocks,
    )
    _sum_merge(part, plan, out, nq * dim_v)
    return out


def _row_products(weights: Tensor | None, value: Tensor, grad: Tensor, plan: _Plan,
                  want_dw: bool, want_dval: bool, mult: float = 1.0):
    """dw[r, q] = mult <grad[s, q], value[r]>, dval[r] = mult sum_q weights[r, q] grad[s, q]."""
    rows, dim_v = value.shape
    nq = grad.shape[1]
    dw = torch.empty(rows, nq, dtype=value.dtype, device=value.device) if want_dw else None
    dval = torch.empty(rows, dim_v, dtype=value.dtype, device=value.device) if want_dval else None
    if plan.num_chunks == 0 or rows == 0:
        return dw, dval
    if nq == 0 and dval is not None:
        dval.zero_()
        return dw, dval
    programs, blocks = _segment_blocks(dim_v, plan, rows)
    kern.seg_row_products_kernel[(programs,)](
        _nonempty(value if weights is None else weights), value, grad,
        plan.seg, plan.start, plan.end, plan.num_chunks,
        value if dw is None else _nonempty(dw), value if dval is None else dval,
        nq, dim_v, _scalar(mult, value.dtype, value.device),
        WANT_DW=want_dw, WANT_DVAL=want_dval,
        BLOCK_DV=_pow2(dim_v), ACC=_tl_acc(value.dtype), **blocks,
    )
    return dw, dval


_POOL_NAME = "gattn.kernels.segment_attention_pool (triton backend)"


class _WeightedSegmentSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, value, plan, num_segments):
        ctx.save_for_backward(weights, value)
        ctx.plan = plan
        return _weighted_sum(weights, value, plan, num_segments)

    @staticmethod
    def backward(ctx, dout):
        weights, value = ctx.saved_tensors
        grads = _row_products(
            weights, value, dout.contiguous(), ctx.plan,
            ctx.needs_input_grad[0], ctx.needs_input_grad[1],
        )
        return *guard_double_backward(_POOL_NAME, grads, (weights, value)), None, None


class _SegmentQueryScores(torch.autograd.Function):
    """scores[r, q] = scale <x_r, query[segment(r), q]> without gathering the queries."""

    @staticmethod
    def forward(ctx, x, query, plan, scale):
        ctx.save_for_backward(x, query)
        ctx.plan, ctx.scale = plan, scale
        scores, _ = _row_products(None, x, query, plan, True, False, scale)
        return scores

    @staticmethod
    def backward(ctx, dscores):
        x, query = ctx.saved_tensors
        dscores = dscores.contiguous()
        dx = dquery = None
        if ctx.needs_input_grad[0]:
            _, dx = _row_products(dscores, x, query, ctx.plan, False, True, ctx.scale)
        if ctx.needs_input_grad[1]:
            dquery = _weighted_sum(dscores, x, ctx.plan, query.shape[0], ctx.scale)
        return *guard_double_backward(_POOL_NAME, (dx, dquery), (x, query)), None, None


def segment_attention_pool(
    x: Tensor, value: Tensor, ptr: Tensor, query: Tensor | None, scores: Tensor | None,
    normalize: bool, scale: float,
) -> tuple[Tensor, Tensor]:
    """The backend of :func:`gattn.kernels.segment_attention_pool` on validated input.

    Args:
        x (Tensor): the rows the scores are computed from :math:`(R, D)`.
        value (Tensor): the rows that are pooled :math:`(R, D_v)`.
        ptr (Tensor): the segments over the rows :math:`(S + 1)`.
        query (Tensor, optional): ``[Q, D]`` shared or ``[S, Q, D]`` per segment (or ``None``
            with ``scores``).
        scores (Tensor, optional): precomputed scores :math:`(R, Q)` (or ``None`` with ``query``).
        normalize (bool): segment softmax of the scores (else the raw scores are the weights).
        scale (float): factor of the query-row dot products.

    Returns:
        the pooled segments :math:`(S, Q, D_v)` and the weights :math:`(R, Q)`.
    """
    plan = _segment_plan(ptr)
    num_segments = ptr.numel() - 1
    return attention_pool(
        x, value, query, scores, normalize, scale,
        work=_work,
        query_scores=lambda x, query, scale: _SegmentQueryScores.apply(x, query, plan, scale),
        softmax=lambda scores: _SegmentSoftmax.apply(scores, plan),
        weighted_sum=lambda weights, value: _WeightedSegmentSum.apply(weights, value, plan, num_segments),
    )
