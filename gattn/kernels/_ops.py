"""The fused edge attention as torch custom ops, so `torch.compile(fullgraph=True)` keeps a
layer that calls it in one graph.

Compiled code cannot trace into numba or Triton launches, nor read tensor values for
validation or the CSR cache; the custom op is an opaque node whose real implementation
(run eagerly on real tensors) does both. Its backward is a second op that calls the
backend's explicit backward from the saved output and log-sum-exp.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .csr import get_csr

_EMPTY = 0  # placeholder shape for an absent optional gradient


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _module(backend: str, like: Tensor):
    from . import resolve_backend

    return resolve_backend(backend, like)


@torch.library.custom_op("gattn::edge_attention", mutates_args=())
def edge_attention_op(
    q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, edge_bias: Tensor | None,
    edge_scale: Tensor | None, scale: float, backend: str,
) -> list[Tensor]:
    """[out [N_dst, H, Dv], lse [N_dst, H]]; per-edge inputs in the caller's edge order."""
    csr = get_csr(edge_index, k.shape[0], q.shape[0])
    module = _module(backend, q)
    out, lse = module.edge_attention_forward(
        q, k, v, csr,
        None if edge_bias is None else csr.to_sorted_order(edge_bias),
        None if edge_scale is None else csr.to_sorted_order(edge_scale),
        scale,
    )
    return [out, lse.to(_lse_dtype(q.dtype))]


@edge_attention_op.register_fake
def _(q, k, v, edge_index, edge_bias, edge_scale, scale, backend):
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
    lse = q.new_empty(q.shape[0], q.shape[1], dtype=_lse_dtype(q.dtype))
    return [out, lse]


@torch.library.custom_op("gattn::edge_attention_backward", mutates_args=())
def edge_attention_backward_op(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, edge_bias: Tensor | None,
    edge_scale: Tensor | None, out: Tensor, lse: Tensor, scale: float, backend: str,
) -> list[Tensor]:
    """[dq, dk, dv, d edge_bias, d edge_scale]; an absent edge term gives an empty tensor."""
    csr = get_csr(edge_index, k.shape[0], q.shape[0])
    module = _module(backend, q)
    dq, dk, dv, dbias, dscale = module.edge_attention_backward(
        q, k, v, csr,
        None if edge_bias is None else csr.to_sorted_order(edge_bias),
        None if edge_scale is None else csr.to_sorted_order(edge_scale),
        scale, out, lse, dout.contiguous(),
    )
    # a fresh empty tensor per absent slot: outputs of a custom op may not alias each other
    return [
        dq, dk, dv,
        q.new_empty(_EMPTY) if dbias is None else csr.to_caller_order(dbias),
        q.new_empty(_EMPTY) if dscale is None else csr.to_caller_order(dscale),
    ]


@edge_attention_backward_op.register_fake
def _(dout, q, k, v, edge_index, edge_bias, edge_scale, out, lse, scale, backend):
    return [
        torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
        q.new_empty(_EMPTY) if edge_bias is None else torch.empty_like(edge_bias),
        q.new_empty(_EMPTY) if edge_scale is None else torch.empty_like(edge_scale),
    ]


def _setup_context(ctx, inputs, output):
    q, k, v, edge_index, edge_bias, edge_scale, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, edge_index, edge_bias, edge_scale, out, lse)
    ctx.scale, ctx.backend = scale, backend
    ctx.has_bias, ctx.has_scale = edge_bias is not None, edge_scale is not None


def _backward(ctx, grads):
    dout = grads[0]
    q, k, v, edge_index, edge_bias, edge_scale, out, lse = ctx.saved_tensors
    dq, dk, dv, dbias, dscale = edge_attention_backward_op(
        dout, q, k, v, edge_index, edge_bias, edge_scale, out, lse, ctx.scale, ctx.backend
    )
    return (
        dq, dk, dv, None,
        dbias if ctx.has_bias else None,
        dscale if ctx.has_scale else None,
        None, None,
    )


edge_attention_op.register_autograd(_backward, setup_context=_setup_context)
