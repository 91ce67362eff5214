"""The fused edge attention's operands and its autograd, shared by the fused backends.

A fused backend (``cpu``, ``triton``) supplies three functions over :class:`EdgeTerms`:

* ``edge_forward(terms) -> (out [N_dst, H, Dv], lse [N_dst, H])``;
* ``edge_probabilities(terms, lse) -> attention [E, H]`` (before dropout, caller's order);
* ``edge_backward(terms, out, lse, dout, dattention, attention_delta, need_kv)`` -> an
  :class:`EdgeGrads`.

Per-edge tensors stay in the caller's edge order: the kernels walk the destination-sorted
CSR and read (and write) edge ``e`` of the sorted walk at the caller's position
``csr.perm[e]``, so no per-edge input is copied into sorted order and no per-edge output
needs to be scattered back.

Score forms, per head (``u_e = k_j + edge_key_e``):

* ``dot``: ``s_e = scale * sum_d q_id u_ed (* edge_scale_e[d])  + edge_bias_e``;
* ``additive``: ``s_e = sum_d att_d LeakyReLU(q_id + u_ed) + edge_bias_e`` (GAT: D = 1,
  ``att`` = None; GATv2: ``att`` [H, D]).

Output ``out_i = sum_e softmax_e(s) * m_e / (1 - p) * (v_j + edge_value_e)`` with the
dropout keep mask ``m`` of :mod:`gattn.kernels._dropout` (``m = 1`` without dropout).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .csr import CSR


class EdgeTerms(NamedTuple):
    """Everything one fused edge-attention call reads (validated; per-edge in caller order)."""

    q: Tensor
    k: Tensor
    v: Tensor
    csr: CSR
    edge_bias: Tensor | None  # [E, H]
    edge_scale: Tensor | None  # [E, H] or [E, H, D] (dot form)
    edge_key: Tensor | None  # [E, H, D], added to the key
    edge_value: Tensor | None  # [E, H, Dv], added to the value
    att: Tensor | None  # [H, D] (additive form; None = ones)
    scale: float
    additive: bool
    negative_slope: float
    dropout_p: float
    seed: int
    kv_bf16: bool = False  # keys and values stored in bf16 by the kernel (float32 arithmetic)


class EdgeGrads(NamedTuple):
    q: Tensor
    k: Tensor | None
    v: Tensor | None
    edge_bias: Tensor | None
    edge_scale: Tensor | None
    edge_key: Tensor | None
    edge_value: Tensor | None
    att: Tensor | None


class _NoDoubleBackward(torch.autograd.Function):
    """Identity on the gradients of a fused backward; differentiating them again raises.

    The forward inputs (``anchors``) join the graph so that the returned gradients are
    graph nodes (a gradient computed by a kernel has no history of its own)."""

    @staticmethod
    def forward(ctx: Any, name: str, count: int, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.name = name
        return tuple(g.clone() for g in tensors[:count])

    @staticmethod
    def backward(ctx: Any, *_: Tensor) -> None:
        raise NotImplementedError(
            f"double backward (a gradient of a gradient) through {ctx.name} is not "
            "implemented by gattn's fused kernels; use backend='reference' (plain torch) "
            "for second derivatives"
        )


def guard_double_backward(
    name: str, grads: tuple[Tensor | None, ...], anchors: tuple[Tensor | None, ...] = ()
) -> tuple[Tensor | None, ...]:
    """With ``create_graph=True`` the returned gradients must themselves be differentiable
    graph nodes: route them through :class:`_NoDoubleBackward` (attached to the op's
    ``anchors``, its saved inputs) so that a second derivative raises a clear
    ``NotImplementedError`` instead of PyTorch's "does not require grad"."""
    if not torch.is_grad_enabled():
        return grads
    present = [g for g in grads if g is not None]
    linked = [a for a in anchors if isinstance(a, Tensor) and a.requires_grad]
    if not present or not linked:
        return grads
    guarded = iter(_NoDoubleBackward.apply(name, len(present), *present, *linked))
    return tuple(None if g is None else next(guarded) for g in grads)


def attention_delta(attention: Tensor, dattention: Tensor, csr: CSR) -> Tensor:
    """sum over each destination's edges of attention * d attention: [N_dst, H].

    The softmax's backward for a gradient arriving at the attention weights themselves
    (a user's loss on them) is ``P (dA - sum_row P dA)``; the kernels add ``dA`` per edge
    and this row sum to their ``dS = P (dP - <dO, O>)``.
    """
    dst = csr.dst_caller_order()
    out = torch.zeros(csr.num_dst, attention.size(1), dtype=attention.dtype, device=attention.device)
    return out.index_add_(0, dst, attention * dattention)


class FusedEdgeAttention(torch.autograd.Function):
    """(out, lse, attention-or-None) from a fused backend, with its explicit backward."""

    @staticmethod
    def forward(ctx: Any, module: Any, config: tuple, csr: CSR, want_attention: bool,
                q: Tensor, k: Tensor, v: Tensor, edge_bias: Tensor | None, edge_scale: Tensor | None,
                edge_key: Tensor | None, edge_value: Tensor | None, att: Tensor | None):
        terms = EdgeTerms(q, k, v, csr, edge_bias, edge_scale, edge_key, edge_value, att, *config)
        out, lse = module.edge_forward(terms)
        attention = module.edge_probabilities(terms, lse) if want_attention else None
        ctx.save_for_backward(q, k, v, edge_bias, edge_scale, edge_key, edge_value, att, out, lse, attention)
        ctx.module, ctx.config, ctx.csr = module, config, csr
        ctx.mark_non_differentiable(lse)
        return out, lse, attention

    @staticmethod
    def backward(ctx: Any, dout: Tensor, _dlse: Tensor, dattention: Tensor | None):
        q, k, v, edge_bias, edge_scale, edge_key, edge_value, att, out, lse, attention = ctx.saved_tensors
        terms = EdgeTerms(q, k, v, ctx.csr, edge_bias, edge_scale, edge_key, edge_value, att, *ctx.config)
        delta = None
        if dattention is not None and attention is not None:
            delta = attention_delta(attention, dattention, ctx.csr)
        else:
            dattention = None
        need_kv = ctx.needs_input_grad[5] or ctx.needs_input_grad[6]
        grads = ctx.module.edge_backward(
            terms, out, lse, dout.contiguous(), dattention, delta, need_kv
        )
        grads = guard_double_backward(f"gattn.kernels.edge_attention ({ctx.module.NAME} backend)", tuple(grads),
                                      (q, k, v, edge_bias, edge_scale, edge_key, edge_value, att))
        return (None, None, None, None, *grads)


def fused_edge_attention(
    module: Any, terms_config: tuple, csr: CSR, want_attention: bool, q: Tensor, k: Tensor, v: Tensor,
    edge_bias: Tensor | None, edge_scale: Tensor | None, edge_key: Tensor | None,
    edge_value: Tensor | None, att: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    if csr.dst_nodes is not None and module.NAME != "cpu":
        raise ValueError(f"a CSR stored in a locality order runs on the cpu backend only, not {module.NAME!r}")
    out, _, attention = FusedEdgeAttention.apply(
        module, terms_config, csr, want_attention, q, k, v, edge_bias, edge_scale, edge_key, edge_value, att
    )
    return out, attention


def kv_views(kv: Tensor, heads: int, dim: int, dim_value: int) -> tuple[Tensor, Tensor]:
    """k [N, H, D] and v [N, H, Dv] as views of the two halves of ``kv`` [N, H*D + H*Dv]
    (row j: k_j then v_j), the layout :func:`kv_halves` recognises."""
    num = kv.size(0)
    return kv[:, : heads * dim].view(num, heads, dim), kv[:, heads * dim :].view(num, heads, dim_value)


def kv_halves(k: Tensor, v: Tensor) -> bool:
    """Whether k [N, H, D] and v [N, H, Dv] are the two halves of one [N, H*D + H*Dv] buffer
    (row j: k_j then v_j)."""
    num, heads, dim = k.shape
    dim_value = v.shape[2]
    width = heads * (dim + dim_value)
    return (
        num > 0 and k.dtype == v.dtype and k.device == v.device and v.shape[:2] == k.shape[:2]
        and k.stride() == (width, dim, 1) and v.stride() == (width, dim_value, 1)
        and k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
        and v.data_ptr() == k.data_ptr() + heads * dim * k.element_size()
    )
