"""The fused edge attention as torch custom ops, so `torch.compile(fullgraph=True)` keeps a
layer that calls it in one graph.

Compiled code cannot trace into numba or Triton launches, nor read tensor values for
validation or the CSR cache; the custom op is an opaque node whose real implementation
(run eagerly on real tensors) does both, resolves the backend and reads the dropout seed.
Its backward is a second op that calls the backend's explicit backward from the saved
output and log-sum-exp (and the attention weights, when they were returned and a loss
reaches them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._edge import EdgeTerms, attention_delta, kv_halves
from .csr import get_csr

_EMPTY = 0  # placeholder shape for an absent output


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _module(backend: str, like: Tensor):
    from . import resolve_backend

    return resolve_backend(None if backend == "auto" else backend, like)


def _terms(q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, scale, additive,
           negative_slope, dropout_p) -> EdgeTerms:
    csr = get_csr(edge_index, k.shape[0], q.shape[0])
    return EdgeTerms(q, k, v, csr, edge_bias, edge_scale, edge_key, edge_value, att, scale, additive,
                     negative_slope, dropout_p, int(seed) if seed is not None else 0)


@torch.library.custom_op("gattn::edge_attention", mutates_args=())
def edge_attention_op(
    q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, edge_bias: Tensor | None,
    edge_scale: Tensor | None, edge_key: Tensor | None, edge_value: Tensor | None, att: Tensor | None,
    seed: Tensor | None, scale: float, additive: bool, negative_slope: float, dropout_p: float,
    want_attention: bool, backend: str,
) -> list[Tensor]:
    """[out [N_dst, H, Dv], lse [N_dst, H], attention [E, H] (empty unless wanted)]."""
    terms = _terms(q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, scale,
                   additive, negative_slope, dropout_p)
    module = _module(backend, q)
    out, lse = module.edge_forward(terms)
    attention = module.edge_probabilities(terms, lse) if want_attention else q.new_empty(_EMPTY)
    return [out, lse.to(_lse_dtype(q.dtype)), attention]


@edge_attention_op.register_fake
def _(q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, scale, additive,
      negative_slope, dropout_p, want_attention, backend):
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
    lse = q.new_empty(q.shape[0], q.shape[1], dtype=_lse_dtype(q.dtype))
    attention = q.new_empty(edge_index.shape[1], q.shape[1]) if want_attention else q.new_empty(_EMPTY)
    return [out, lse, attention]


@torch.library.custom_op("gattn::edge_attention_backward", mutates_args=())
def edge_attention_backward_op(
    dout: Tensor, dattention: Tensor | None, q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor,
    edge_bias: Tensor | None, edge_scale: Tensor | None, edge_key: Tensor | None, edge_value: Tensor | None,
    att: Tensor | None, seed: Tensor | None, out: Tensor, lse: Tensor, attention: Tensor, scale: float,
    additive: bool, negative_slope: float, dropout_p: float, backend: str,
) -> list[Tensor]:
    """[dq, dk, dv, d edge_bias, d edge_scale, d edge_key, d edge_value, d att]; an absent
    input gets an empty tensor."""
    terms = _terms(q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, scale,
                   additive, negative_slope, dropout_p)
    module = _module(backend, q)
    delta = None
    if dattention is not None:
        delta = attention_delta(attention, dattention, terms.csr)
    grads = list(module.edge_backward(terms, out, lse, dout.contiguous(), dattention, delta, True))
    # outputs of a custom op may not alias each other: a fresh empty tensor per absent slot, and
    # dV copied out of the buffer that the CPU kernels write dK and dV into side by side
    if grads[1] is not None and grads[2] is not None and kv_halves(grads[1], grads[2]):
        grads[2] = grads[2].clone()
    return [q.new_empty(_EMPTY) if g is None else g for g in grads]


@edge_attention_backward_op.register_fake
def _(dout, dattention, q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, out,
      lse, attention, scale, additive, negative_slope, dropout_p, backend):
    likes = (q, k, v, edge_bias, edge_scale, edge_key, edge_value, att)
    return [q.new_empty(_EMPTY) if like is None else torch.empty_like(like) for like in likes]




def _setup_context(ctx, inputs, output):
    (q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, scale, additive,
     negative_slope, dropout_p, want_attention, backend) = inputs
    out, lse, attention = output
    ctx.save_for_backward(q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, out,
                          lse, attention)
    ctx.config = (scale, additive, negative_slope, dropout_p, backend)
    ctx.want_attention = want_attention


def _backward(ctx, grads):
    dout, _, dattention = grads
    (q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, out, lse,
     attention) = ctx.saved_tensors
    scale, additive, negative_slope, dropout_p, backend = ctx.config
    if not ctx.want_attention:
        dattention = None
    results = edge_attention_backward_op(
        dout, dattention, q, k, v, edge_index, edge_bias, edge_scale, edge_key, edge_value, att, seed, out,
        lse, attention, scale, additive, negative_slope, dropout_p, backend,
    )
    present = (True, True, True, edge_bias is not None, edge_scale is not None, edge_key is not None,
               edge_value is not None, att is not None)
    dq, dk, dv, dbias, dscale, dkey, dvalue, datt = (g if keep else None for g, keep in zip(results, present))
    return (dq, dk, dv, None, dbias, dscale, dkey, dvalue, datt, None, None, None, None, None, None, None)


edge_attention_op.register_autograd(_backward, setup_context=_setup_context)
