"""Triton kernels of the triton backend (see `triton_backend.py` for the design).

Every kernel walks *chunks*: a chunk is a run of at most `ROW_SPLIT` consecutive rows of one
segment (the incoming edges of a destination, the outgoing edges of a source, the rows of a
bag). A segment longer than that is cut into several chunks that run in parallel; each
writes a partial result to a slot of a scratch buffer, and a merge kernel combines the slots
of a segment in order (deterministic). A chunk of an unsplit segment (slot < 0) writes its
final result directly. The plan sorts chunks longest first, and a program takes a block of
consecutive chunks (rows of similar length) on grid axis 0, stepping through a few rows of
each at a time: tiles are [chunks, rows of each, features]. Edge kernels add one program per
head on grid axis 1.

Indices (chunk bounds, `col`, CSC arrays) are int64, so every offset computed from them is
64-bit; inputs are addressed as `((row * H) + h) * D + d`, except K, V and their gradients:
`row * row_stride + h * D + d`, so that K and V can be the two halves of one packed K|V
projection (and dK, dV of one gradient buffer) without a copy. Accumulation is
in `ACC` (float32, or float64 for float64 inputs); loads are cast, stores cast back.
"""

from __future__ import annotations

import triton
import triton.language as tl

# --------------------------------------------------------------------------------------
# edge attention
# --------------------------------------------------------------------------------------


@triton.jit
def _fmix32(x):
    """MurmurHash3's 32-bit finaliser on uint32 (wrapping multiplies); see `_dropout.py`."""
    x ^= x >> 16
    x *= 0x85EBCA6B
    x ^= x >> 13
    x *= 0xC2B2AE35
    x ^= x >> 16
    return x


@triton.jit
def _drop_factor(pe, h, H, seed_lo, seed_hi, thresh, inv_keep):
    """1/(1-p) where the dropout mask keeps (caller edge pe, head h), else 0."""
    counter = pe * H + h
    x = _fmix32((counter & 0xFFFFFFFF).to(tl.uint32) ^ seed_lo)
    x = _fmix32(x ^ ((counter >> 32) & 0xFFFFFFFF).to(tl.uint32) ^ seed_hi)
    return tl.where(x >= thresh, inv_keep, 0.0)


@triton.jit
def edge_rows_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, es_ptr, ekey_ptr, eval_ptr, att_ptr, col_ptr, perm_ptr,
    c_seg_ptr, c_start_ptr, c_end_ptr, c_slot_ptr, num_chunks,
    out_ptr, lse_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    dout_ptr, probs_ptr, dscores_ptr, descale_ptr, dekey_ptr, deval_ptr, datt_ptr, dattn_ptr, delta_ptr,
    dq_ptr, part_dq_ptr, dk_ptr, dv_ptr,
    H, D, DV, k_row, v_row, dk_row, dv_row, scale_ptr, slope_ptr, drop_ptr, inv_keep_ptr,
    PASS: tl.constexpr, HAS_BIAS: tl.constexpr, SCALE_MODE: tl.constexpr, HAS_EKEY: tl.constexpr,
    HAS_EVAL: tl.constexpr, ADDITIVE: tl.constexpr, DROPOUT: tl.constexpr, HAS_DATTN: tl.constexpr,
    STORE_PROBS: tl.constexpr, STORE_DS: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, ACC: tl.constexpr,
):
    """A block of BLOCK_R destination chunks (rows of similar length: the plan sorts them),
    one head; each step takes the next BLOCK_E edges of every row, so a tile is
    [BLOCK_R, BLOCK_E, BLOCK_D]. Three passes share the walk and the score computation:

    * PASS 0, forward: online softmax (running max, sum, rescaled accumulator of the
      dropout-masked weights times the values) -> out and lse, or the chunk's partial
      (max, sum, acc) when its row is split;
    * PASS 1, probabilities: P = exp(S - lse) -> probs (return_attention);
    * PASS 2, backward: P, dS = P (dP - <dO, O>) -> P * mask and dS per edge, dQ (partial
      when split), the per-edge input gradients, d att per chunk and, with ATOMIC, dK and dV.

    Scores: dot form ``scale <q, k + ekey> (* es) + bias`` or additive form
    ``sum_d att_d LeakyReLU(q_d + k_d + ekey_d) + bias``. Per-edge tensors are addressed by
    the caller's edge id ``perm[e]``. Masked-out edges score -inf, so they weigh exactly
    zero. Helpers are inlined where the interpreter would pay milliseconds per call.
    """
    h = tl.program_id(1)
    scale = tl.load(scale_ptr).to(ACC)  # a tensor, so float64 runs keep a float64 scale
    slope = tl.load(slope_ptr).to(ACC)
    chunk = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c_mask = chunk < num_chunks
    row = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    slot = tl.load(c_slot_ptr + chunk, mask=c_mask, other=-1)
    direct = c_mask & (slot < 0)
    split = c_mask & (slot >= 0)
    part = tl.maximum(slot, 0)
    longest = tl.max(length, axis=0).to(tl.int32)
    d_offs = tl.arange(0, BLOCK_D)
    d_mask = d_offs < D
    dv_offs = tl.arange(0, BLOCK_DV)
    dv_mask = dv_offs < DV
    e_steps = tl.arange(0, BLOCK_E)
    row_q = (row * H + h) * D  # [R] offsets of the row's query (and dQ)
    row_o = (row * H + h) * DV  # [R] offsets of the row's output (and dO)
    q = tl.load(q_ptr + row_q[:, None] + d_offs[None, :], mask=c_mask[:, None] & d_mask[None, :],
                other=0.0).to(ACC)  # [R, D]
    if ADDITIVE:
        att = tl.load(att_ptr + h * D + d_offs, mask=d_mask, other=0.0).to(ACC)  # [D]
    if DROPOUT:
        seed_lo = tl.load(drop_ptr).to(tl.uint32)
        seed_hi = tl.load(drop_ptr + 1).to(tl.uint32)
        thresh = tl.load(drop_ptr + 2).to(tl.uint32)
        inv_keep = tl.load(inv_keep_ptr).to(ACC)
    run_max = tl.full([BLOCK_R], float("-inf"), ACC)
    run_sum = tl.zeros([BLOCK_R], ACC)
    acc = tl.zeros([BLOCK_R, BLOCK_DV], ACC)
    dq = tl.zeros([BLOCK_R, BLOCK_D], ACC)
    datt = tl.zeros([BLOCK_R, BLOCK_D], ACC)
    if PASS != 0:
        lse = tl.load(lse_ptr + row * H + h, mask=c_mask, other=0.0)
        # a row whose scores are all -inf has lse = -inf: shift by 0 so P = exp(-inf) = 0
        lse = tl.where(lse == float("-inf"), 0.0, lse)
    if PASS == 2:
        o_mask = c_mask[:, None] & dv_mask[None, :]
        do = tl.load(dout_ptr + row_o[:, None] + dv_offs[None, :], mask=o_mask, other=0.0).to(ACC)
        o = tl.load(out_ptr + row_o[:, None] + dv_offs[None, :], mask=o_mask, other=0.0).to(ACC)
        delta = tl.sum(do * o, axis=1)  # [R]
        if HAS_DATTN:
            delta += tl.load(delta_ptr + row * H + h, mask=c_mask, other=0.0).to(ACC)
    for t0 in range(0, longest, BLOCK_E):
        t = t0 + e_steps
        e_mask = t[None, :] < length[:, None]  # [R, E]
        e = start[:, None] + t[None, :]  # [R, E] destination-sorted edge ids (int64)
        j = tl.load(col_ptr + e, mask=e_mask, other=0)
        pe = tl.load(perm_ptr + e, mask=e_mask, other=0)  # the caller's edge ids
        k_mask = e_mask[:, :, None] & d_mask[None, None, :]
        v_mask = e_mask[:, :, None] & dv_mask[None, None, :]
        edge_d = ((pe * H + h) * D)[:, :, None] + d_offs[None, None, :]  # [R, E, D] per-edge offsets
        u = tl.load(k_ptr + (j * k_row + h * D)[:, :, None] + d_offs[None, None, :], mask=k_mask,
                    other=0.0).to(ACC)  # [R, E, D]
        if HAS_EKEY:
            u += tl.load(ekey_ptr + edge_d, mask=k_mask, other=0.0).to(ACC)
        if ADDITIVE:
            z = q[:, None, :] + u
            y = tl.where(z > 0, z, z * slope)
            s = tl.sum(att[None, None, :] * y, axis=2)
        else:
            if SCALE_MODE == 2:
                es = tl.load(es_ptr + edge_d, mask=k_mask, other=0.0).to(ACC)
                s = tl.sum(q[:, None, :] * u * es, axis=2)
            elif SCALE_MODE == 1:
                es = tl.load(es_ptr + pe * H + h, mask=e_mask, other=0.0).to(ACC)
                s = tl.sum(q[:, None, :] * u, axis=2) * es
            else:
                s = tl.sum(q[:, None, :] * u, axis=2)
            s = s * scale
        if HAS_BIAS:
            s += tl.load(bias_ptr + pe * H + h, mask=e_mask, other=0.0).to(ACC)
        s = tl.where(e_mask, s, float("-inf"))  # [R, E]
        if PASS != 1:
            v = tl.load(v_ptr + (j * v_row + h * DV)[:, :, None] + dv_offs[None, None, :],
                        mask=v_mask, other=0.0).to(ACC)  # [R, E, DV]
            if HAS_EVAL:
                v += tl.load(eval_ptr + ((pe * H + h) * DV)[:, :, None] + dv_offs[None, None, :],
                             mask=v_mask, other=0.0).to(ACC)
            if DROPOUT:
                factor = _drop_factor(pe, h, H, seed_lo, seed_hi, thresh, inv_keep).to(ACC)
            else:
                factor = tl.full([BLOCK_R, BLOCK_E], 1.0, ACC)
        if PASS == 0:
            new_max = tl.maximum(run_max, tl.max(s, axis=1))
            # an all -inf prefix keeps the max at -inf: shift by 0 so exp gives 0, not NaN
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            correction = tl.exp(run_max - shift)
            p = tl.exp(s - shift[:, None])
            run_sum = run_sum * correction + tl.sum(p, axis=1)
            acc = acc * correction[:, None] + tl.sum((p * factor)[:, :, None] * v, axis=1)
            run_max = new_max
        else:
            p = tl.exp(s - lse[:, None])
            if PASS == 1:
                tl.store(probs_ptr + pe * H + h, p.to(probs_ptr.dtype.element_ty), mask=e_mask)
        if PASS == 2:
            w = p * factor
            dp = tl.sum(do[:, None, :] * v, axis=2) * factor  # [R, E]
            if HAS_DATTN:
                dp += tl.load(dattn_ptr + pe * H + h, mask=e_mask, other=0.0).to(ACC)
            ds = p * (dp - delta[:, None])  # [R, E]
            if STORE_PROBS:
                tl.store(probs_ptr + pe * H + h, w.to(probs_ptr.dtype.element_ty), mask=e_mask)
            if STORE_DS:
                tl.store(dscores_ptr + pe * H + h, ds.to(dscores_ptr.dtype.element_ty), mask=e_mask)
            if HAS_EVAL:
                tl.store(deval_ptr + ((pe * H + h) * DV)[:, :, None] + dv_offs[None, None, :],
                         (w[:, :, None] * do[:, None, :]).to(deval_ptr.dtype.element_ty), mask=v_mask)
            if ADDITIVE:
                gk = ds[:, :, None] * att[None, None, :] * tl.where(z > 0, 1.0, slope)
                dq += tl.sum(gk, axis=1)
                datt += tl.sum(ds[:, :, None] * y, axis=1)
            else:
                g = ds * scale
                if SCALE_MODE == 2:
                    dq += tl.sum(g[:, :, None] * u * es, axis=1)
                    tl.store(descale_ptr + edge_d, (g[:, :, None] * q[:, None, :] * u).to(
                        descale_ptr.dtype.element_ty), mask=k_mask)
                    gk = g[:, :, None] * q[:, None, :] * es
                elif SCALE_MODE == 1:
                    dq += tl.sum((g * es)[:, :, None] * u, axis=1)
                    qu = tl.sum(q[:, None, :] * u, axis=2)
                    tl.store(descale_ptr + pe * H + h, (g * qu).to(descale_ptr.dtype.element_ty),
                             mask=e_mask)
                    gk = (g * es)[:, :, None] * q[:, None, :]
                else:
                    dq += tl.sum(g[:, :, None] * u, axis=1)
                    gk = g[:, :, None] * q[:, None, :]
            if HAS_EKEY:
                tl.store(dekey_ptr + edge_d, gk.to(dekey_ptr.dtype.element_ty), mask=k_mask)
            if ATOMIC:
                tl.atomic_add(dk_ptr + (j * dk_row + h * D)[:, :, None] + d_offs[None, None, :], gk,
                              mask=k_mask, sem="relaxed")
                tl.atomic_add(dv_ptr + (j * dv_row + h * DV)[:, :, None] + dv_offs[None, None, :],
                              w[:, :, None] * do[:, None, :], mask=v_mask, sem="relaxed")
    if PASS == 0:
        positive = tl.where(run_sum > 0, run_sum, 1.0)
        inv = tl.where(run_sum > 0, 1.0 / positive, 0.0)
        lse_row = tl.where(run_sum > 0, run_max + tl.log(positive), float("-inf"))
        tl.store(out_ptr + row_o[:, None] + dv_offs[None, :],
                 (acc * inv[:, None]).to(out_ptr.dtype.element_ty),
                 mask=direct[:, None] & dv_mask[None, :])
        tl.store(lse_ptr + row * H + h, lse_row, mask=direct)
        tl.store(part_m_ptr + part * H + h, run_max, mask=split)
        tl.store(part_l_ptr + part * H + h, run_sum, mask=split)
        tl.store(part_acc_ptr + ((part * H + h) * DV)[:, None] + dv_offs[None, :], acc,
                 mask=split[:, None] & dv_mask[None, :])
    if PASS == 2:
        tl.store(dq_ptr + row_q[:, None] + d_offs[None, :], dq,
                 mask=direct[:, None] & d_mask[None, :])
        tl.store(part_dq_ptr + ((part * H + h) * D)[:, None] + d_offs[None, :], dq,
                 mask=split[:, None] & d_mask[None, :])
        if ADDITIVE:  # one partial d att per chunk (chunks are disjoint): summed by the caller
            tl.store(datt_ptr + ((chunk * H + h) * D)[:, None] + d_offs[None, :], datt,
                     mask=c_mask[:, None] & d_mask[None, :])


@triton.jit
def edge_cols_kernel(
    q_ptr, k_ptr, es_ptr, ekey_ptr, att_ptr, dout_ptr, probs_ptr, dscores_ptr, csc_row_ptr, csc_edge_ptr,
    c_seg_ptr, c_start_ptr, c_end_ptr, c_slot_ptr, num_chunks,
    dk_ptr, dv_ptr, part_dk_ptr, part_dv_ptr,
    H, D, DV, k_row, dk_row, dv_row, scale_ptr, slope_ptr,
    SCALE_MODE: tl.constexpr, HAS_EKEY: tl.constexpr, ADDITIVE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, ACC: tl.constexpr,
):
    """A block of source chunks, one head: dK (dot form: sum scale dS q (* edge_scale);
    additive: sum dS att LeakyReLU'(z)) and dV = sum P mask dO over each source's outgoing
    edges (the CSC walk: no atomics). `probs` holds P * mask, `dscores` dS (caller order)."""
    h = tl.program_id(1)
    scale = tl.load(scale_ptr).to(ACC)
    slope = tl.load(slope_ptr).to(ACC)
    chunk = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c_mask = chunk < num_chunks
    src = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    slot = tl.load(c_slot_ptr + chunk, mask=c_mask, other=-1)
    direct = c_mask & (slot < 0)
    split = c_mask & (slot >= 0)
    part = tl.maximum(slot, 0)
    longest = tl.max(length, axis=0).to(tl.int32)
    d_offs = tl.arange(0, BLOCK_D)
    d_mask = d_offs < D
    dv_offs = tl.arange(0, BLOCK_DV)
    dv_mask = dv_offs < DV
    e_steps = tl.arange(0, BLOCK_E)
    if ADDITIVE:
        att = tl.load(att_ptr + h * D + d_offs, mask=d_mask, other=0.0).to(ACC)
        kj = tl.load(k_ptr + (src * k_row + h * D)[:, None] + d_offs[None, :],
                     mask=c_mask[:, None] & d_mask[None, :], other=0.0).to(ACC)  # [R, D]
    dk = tl.zeros([BLOCK_R, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_R, BLOCK_DV], ACC)
    for t0 in range(0, longest, BLOCK_E):
        t = t0 + e_steps
        t_mask = t[None, :] < length[:, None]  # [R, E]
        pos = start[:, None] + t[None, :]
        pe = tl.load(csc_edge_ptr + pos, mask=t_mask, other=0)
        i = tl.load(csc_row_ptr + pos, mask=t_mask, other=0)
        w = tl.load(probs_ptr + pe * H + h, mask=t_mask, other=0.0)
        ds = tl.load(dscores_ptr + pe * H + h, mask=t_mask, other=0.0)
        q_mask = t_mask[:, :, None] & d_mask[None, None, :]
        edge_d = ((pe * H + h) * D)[:, :, None] + d_offs[None, None, :]
        qi = tl.load(q_ptr + ((i * H + h) * D)[:, :, None] + d_offs[None, None, :], mask=q_mask,
                     other=0.0).to(ACC)
        if ADDITIVE:
            z = qi + kj[:, None, :]
            if HAS_EKEY:
                z += tl.load(ekey_ptr + edge_d, mask=q_mask, other=0.0).to(ACC)
            dk += tl.sum(ds[:, :, None] * att[None, None, :] * tl.where(z > 0, 1.0, slope), axis=1)
        elif SCALE_MODE == 2:
            es = tl.load(es_ptr + edge_d, mask=q_mask, other=0.0).to(ACC)
            dk += tl.sum((ds * scale)[:, :, None] * qi * es, axis=1)
        elif SCALE_MODE == 1:
            es = tl.load(es_ptr + pe * H + h, mask=t_mask, other=0.0).to(ACC)
            dk += tl.sum((ds * scale * es)[:, :, None] * qi, axis=1)
        else:
            dk += tl.sum((ds * scale)[:, :, None] * qi, axis=1)
        doi = tl.load(dout_ptr + ((i * H + h) * DV)[:, :, None] + dv_offs[None, None, :],
                      mask=t_mask[:, :, None] & dv_mask[None, None, :], other=0.0).to(ACC)
        dv += tl.sum(w[:, :, None] * doi, axis=1)
    tl.store(dk_ptr + (src * dk_row + h * D)[:, None] + d_offs[None, :], dk,
             mask=direct[:, None] & d_mask[None, :])
    tl.store(dv_ptr + (src * dv_row + h * DV)[:, None] + dv_offs[None, :], dv,
             mask=direct[:, None] & dv_mask[None, :])
    tl.store(part_dk_ptr + ((part * H + h) * D)[:, None] + d_offs[None, :], dk,
             mask=split[:, None] & d_mask[None, :])
    tl.store(part_dv_ptr + ((part * H + h) * DV)[:, None] + dv_offs[None, :], dv,
             mask=split[:, None] & dv_mask[None, :])



# --------------------------------------------------------------------------------------
# merging the partial results of split segments
# --------------------------------------------------------------------------------------


@triton.jit
def softmax_merge_kernel(
    part_m_ptr, part_l_ptr, part_acc_ptr, split_seg_ptr, split_ptr,
    out_ptr, lse_ptr, F, DV,
    HAS_ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr,
):
    """Combine the partial (max, sum[, acc]) of the chunks of one split segment, column f."""
    r = tl.program_id(0)
    f = tl.program_id(1)
    seg = tl.load(split_seg_ptr + r)
    first = tl.load(split_ptr + r)
    last = tl.load(split_ptr + r + 1)
    dv_offs = tl.arange(0, BLOCK_DV)
    dv_mask = dv_offs < DV
    run_max = tl.max(tl.full([BLOCK_P], float("-inf"), ACC), axis=0)
    run_sum = tl.sum(tl.zeros([BLOCK_P], ACC), axis=0)
    acc = tl.zeros([BLOCK_DV], ACC)
    for s0 in range(first, last, BLOCK_P):
        offs = s0 + tl.arange(0, BLOCK_P)
        mask = offs < last
        part_max = tl.load(part_m_ptr + offs * F + f, mask=mask, other=float("-inf"))
        part_sum = tl.load(part_l_ptr + offs * F + f, mask=mask, other=0.0)
        new_max = tl.maximum(run_max, tl.max(part_max, axis=0))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        weight = tl.exp(part_max - shift)
        correction = tl.exp(run_max - shift)
        run_sum = run_sum * correction + tl.sum(weight * part_sum, axis=0)
        if HAS_ACC:
            part_acc = tl.load(part_acc_ptr + (offs * F + f)[:, None] * DV + dv_offs[None, :],
                               mask=mask[:, None] & dv_mask[None, :], other=0.0)
            acc = acc * correction + tl.sum(weight[:, None] * part_acc, axis=0)
        run_max = new_max
    lse = tl.where(run_sum > 0, run_max + tl.log(tl.where(run_sum > 0, run_sum, 1.0)), float("-inf"))
    tl.store(lse_ptr + seg * F + f, lse)
    if HAS_ACC:
        inv = tl.where(run_sum > 0, 1.0 / tl.where(run_sum > 0, run_sum, 1.0), 0.0)
        tl.store(out_ptr + (seg * F + f) * DV + dv_offs, (acc * inv).to(out_ptr.dtype.element_ty),
                 mask=dv_mask)


@triton.jit
def sum_merge_kernel(part_ptr, split_seg_ptr, split_ptr, out_ptr, F, out_row,
                     BLOCK_F: tl.constexpr, ACC: tl.constexpr):
    """out[seg] = sum of the partial rows of a split segment, in slot order (deterministic);
    rows of `out` are `out_row` elements apart."""
    r = tl.program_id(0)
    f_offs = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_mask = f_offs < F
    seg = tl.load(split_seg_ptr + r)
    first = tl.load(split_ptr + r)
    last = tl.load(split_ptr + r + 1)
    acc = tl.zeros([BLOCK_F], ACC)
    for slot in range(first, last):
        acc += tl.load(part_ptr + slot * F + f_offs, mask=f_mask, other=0.0)
    tl.store(out_ptr + seg * out_row + f_offs, acc.to(out_ptr.dtype.element_ty), mask=f_mask)


# --------------------------------------------------------------------------------------
# segment softmax and pooling
#
# A program takes BLOCK_S chunks (segments of similar length: the plan sorts them) and
# steps through BLOCK_R rows of each at a time, with all F columns (heads, queries) or all
# DV features of a row in the tile: [BLOCK_S, BLOCK_R, BLOCK_F].
# --------------------------------------------------------------------------------------


@triton.jit
def seg_softmax_stats_kernel(
    scores_ptr, c_seg_ptr, c_start_ptr, c_end_ptr, c_slot_ptr, num_chunks,
    lse_ptr, part_m_ptr, part_l_ptr, F,
    BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr, ACC: tl.constexpr,
):
    """Per chunk: running max and sum of exp over its rows -> lse [S, F], or the chunk's
    partial (max, sum) when its segment is split."""
    chunk = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c_mask = chunk < num_chunks
    seg = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    slot = tl.load(c_slot_ptr + chunk, mask=c_mask, other=-1)
    longest = tl.max(length, axis=0).to(tl.int32)
    f_offs = tl.arange(0, BLOCK_F)
    f_mask = f_offs < F
    r_steps = tl.arange(0, BLOCK_R)
    run_max = tl.full([BLOCK_S, BLOCK_F], float("-inf"), ACC)
    run_sum = tl.zeros([BLOCK_S, BLOCK_F], ACC)
    for t0 in range(0, longest, BLOCK_R):
        t = t0 + r_steps
        r = start[:, None] + t[None, :]  # [S, R]
        mask = (t[None, :] < length[:, None])[:, :, None] & f_mask[None, None, :]
        x = tl.load(scores_ptr + (r * F)[:, :, None] + f_offs[None, None, :], mask=mask,
                    other=float("-inf")).to(ACC)
        new_max = tl.maximum(run_max, tl.max(x, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(x - shift[:, None, :]), axis=1)
        run_max = new_max
    positive = tl.where(run_sum > 0, run_sum, 1.0)
    lse = tl.where(run_sum > 0, run_max + tl.log(positive), float("-inf"))
    direct = (c_mask & (slot < 0))[:, None] & f_mask[None, :]
    split = (c_mask & (slot >= 0))[:, None] & f_mask[None, :]
    part_offs = (tl.maximum(slot, 0) * F)[:, None] + f_offs[None, :]
    tl.store(lse_ptr + (seg * F)[:, None] + f_offs[None, :], lse, mask=direct)
    tl.store(part_m_ptr + part_offs, run_max, mask=split)
    tl.store(part_l_ptr + part_offs, run_sum, mask=split)


@triton.jit
def seg_rows_kernel(
    a_ptr, b_ptr, stat_ptr, out_ptr, c_seg_ptr, c_start_ptr, c_end_ptr, num_chunks, F,
    MODE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
    ACC: tl.constexpr,
):
    """Row-wise with a per-segment statistic: MODE 0: exp(a - lse_seg) (softmax);
    MODE 1: a * (b - dot_seg) (softmax backward, a = P, b = dP)."""
    chunk = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c_mask = chunk < num_chunks
    seg = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    longest = tl.max(length, axis=0).to(tl.int32)
    f_offs = tl.arange(0, BLOCK_F)
    f_mask = f_offs < F
    r_steps = tl.arange(0, BLOCK_R)
    stat = tl.load(stat_ptr + (seg * F)[:, None] + f_offs[None, :],
                   mask=c_mask[:, None] & f_mask[None, :], other=0.0)
    if MODE == 0:
        stat = tl.where(stat == float("-inf"), 0.0, stat)  # all -inf segment: exp(-inf) = 0
    for t0 in range(0, longest, BLOCK_R):
        t = t0 + r_steps
        r = start[:, None] + t[None, :]
        mask = (t[None, :] < length[:, None])[:, :, None] & f_mask[None, None, :]
        offs = (r * F)[:, :, None] + f_offs[None, None, :]
        a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
        if MODE == 0:
            y = tl.exp(a - stat[:, None, :])
        else:
            b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC)
            y = a * (b - stat[:, None, :])
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def seg_dot_kernel(
    a_ptr, b_ptr, c_seg_ptr, c_start_ptr, c_end_ptr, c_slot_ptr, num_chunks,
    out_ptr, part_ptr, F,
    BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr, ACC: tl.constexpr,
):
    """Per chunk: sum over its rows of a * b [F] (a partial when the segment is split)."""
    chunk = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c_mask = chunk < num_chunks
    seg = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    slot = tl.load(c_slot_ptr + chunk, mask=c_mask, other=-1)
    longest = tl.max(length, axis=0).to(tl.int32)
    f_offs = tl.arange(0, BLOCK_F)
    f_mask = f_offs < F
    r_steps = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_S, BLOCK_F], ACC)
    for t0 in range(0, longest, BLOCK_R):
        t = t0 + r_steps
        r = start[:, None] + t[None, :]
        mask = (t[None, :] < length[:, None])[:, :, None] & f_mask[None, None, :]
        offs = (r * F)[:, :, None] + f_offs[None, None, :]
        a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
        b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC)
        acc += tl.sum(a * b, axis=1)
    direct = (c_mask & (slot < 0))[:, None] & f_mask[None, :]
    split = (c_mask & (slot >= 0))[:, None] & f_mask[None, :]
    tl.store(out_ptr + (seg * F)[:, None] + f_offs[None, :], acc, mask=direct)
    tl.store(part_ptr + (tl.maximum(slot, 0) * F)[:, None] + f_offs[None, :], acc, mask=split)


@triton.jit
def seg_weighted_sum_kernel(
    w_ptr, val_ptr, c_seg_ptr, c_start_ptr, c_end_ptr, c_slot_ptr, num_chunks,
    out_ptr, part_ptr, Q, DV, mult_ptr,
    BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr,
):
    """out[seg, q] = mult * sum_{r in seg} w[r, q] val[r]; grid (chunk blocks, Q)."""
    qi = tl.program_id(1)
    mult = tl.load(mult_ptr).to(ACC)
    chunk = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c_mask = chunk < num_chunks
    seg = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    slot = tl.load(c_slot_ptr + chunk, mask=c_mask, other=-1)
    longest = tl.max(length, axis=0).to(tl.int32)
    dv_offs = tl.arange(0, BLOCK_DV)
    dv_mask = dv_offs < DV
    r_steps = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_S, BLOCK_DV], ACC)
    for t0 in range(0, longest, BLOCK_R):
        t = t0 + r_steps
        r = start[:, None] + t[None, :]
        r_mask = t[None, :] < length[:, None]
        w = tl.load(w_ptr + r * Q + qi, mask=r_mask, other=0.0).to(ACC)
        val = tl.load(val_ptr + (r * DV)[:, :, None] + dv_offs[None, None, :],
                      mask=r_mask[:, :, None] & dv_mask[None, None, :], other=0.0).to(ACC)
        acc += tl.sum(w[:, :, None] * val, axis=1)
    acc = acc * mult
    direct = (c_mask & (slot < 0))[:, None] & dv_mask[None, :]
    split = (c_mask & (slot >= 0))[:, None] & dv_mask[None, :]
    tl.store(out_ptr + ((seg * Q + qi) * DV)[:, None] + dv_offs[None, :], acc, mask=direct)
    tl.store(part_ptr + ((tl.maximum(slot, 0) * Q + qi) * DV)[:, None] + dv_offs[None, :], acc,
             mask=split)


@triton.jit
def seg_row_products_kernel(
    w_ptr, val_ptr, g_ptr, c_seg_ptr, c_start_ptr, c_end_ptr, num_chunks,
    dw_ptr, dval_ptr, Q, DV, mult_ptr,
    WANT_DW: tl.constexpr, WANT_DVAL: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr,
):
    """Per row r of segment s: dw[r, q] = mult <g[s, q], val[r]> (WANT_DW) and
    dval[r] = mult sum_q w[r, q] g[s, q] (WANT_DVAL). No reduction across rows."""
    mult = tl.load(mult_ptr).to(ACC)
    chunk = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c_mask = chunk < num_chunks
    seg = tl.load(c_seg_ptr + chunk, mask=c_mask, other=0)
    start = tl.load(c_start_ptr + chunk, mask=c_mask, other=0)
    length = tl.load(c_end_ptr + chunk, mask=c_mask, other=0) - start
    longest = tl.max(length, axis=0).to(tl.int32)
    dv_offs = tl.arange(0, BLOCK_DV)
    dv_mask = dv_offs < DV
    g_mask = c_mask[:, None] & dv_mask[None, :]
    r_steps = tl.arange(0, BLOCK_R)
    for t0 in range(0, longest, BLOCK_R):
        t = t0 + r_steps
        r = start[:, None] + t[None, :]
        r_mask = t[None, :] < length[:, None]
        tile_mask = r_mask[:, :, None] & dv_mask[None, None, :]
        offs = (r * DV)[:, :, None] + dv_offs[None, None, :]
        if WANT_DW:
            val = tl.load(val_ptr + offs, mask=tile_mask, other=0.0).to(ACC)
        acc = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_DV], ACC)
        for qi in range(Q):
            g = tl.load(g_ptr + ((seg * Q + qi) * DV)[:, None] + dv_offs[None, :], mask=g_mask,
                        other=0.0).to(ACC)
            if WANT_DW:
                dw = tl.sum(val * g[:, None, :], axis=2) * mult
                tl.store(dw_ptr + r * Q + qi, dw.to(dw_ptr.dtype.element_ty), mask=r_mask)
            if WANT_DVAL:
                w = tl.load(w_ptr + r * Q + qi, mask=r_mask, other=0.0).to(ACC)
                acc += w[:, :, None] * g[:, None, :]
        if WANT_DVAL:
            tl.store(dval_ptr + offs, (acc * mult).to(dval_ptr.dtype.element_ty), mask=tile_mask)
