"""Fused sparse attention on CSR segments: one API, several backends.

Public operations (the contract every layer builds on):

* :func:`segment_softmax` - softmax of scores within segments;
* :func:`edge_attention` - per-destination attention over incoming edges, fused;
* :func:`segment_attention_pool` - queries attending over the rows of each segment.

Backends: ``"reference"`` (plain torch, the test oracle), ``"cpu"`` (numba CSR kernels
with an online softmax, parallel over rows) and ``"triton"`` (CUDA; on CPU tensors only
under ``TRITON_INTERPRET=1``). ``backend=None`` picks by device (``GATTN_BACKEND``
overrides): CUDA -> triton, CPU -> cpu.
"""

from __future__ import annotations

import importlib
import math
import os
from typing import Any

import torch
from torch import Tensor

from ._validate import check_floating, check_per_edge, resolve_segments
from .csr import CSR, get_csr, index_from_ptr, ptr_from_index

__all__ = [
    "CSR",
    "available_backends",
    "edge_attention",
    "get_csr",
    "index_from_ptr",
    "ptr_from_index",
    "resolve_backend",
    "segment_attention_pool",
    "segment_softmax",
]

_BACKEND_MODULES = {
    "reference": "gattn.kernels._reference_backend",
    "cpu": "gattn.kernels.cpu",
    "triton": "gattn.kernels.triton_backend",
}
_loaded: dict[str, Any] = {}


def _load(name: str) -> Any | None:
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_BACKEND_MODULES[name])
        except ImportError:
            _loaded[name] = None
    return _loaded[name]


def available_backends() -> list[str]:
    """Backends importable in this environment (triton still needs CUDA or TRITON_INTERPRET=1)."""
    return [name for name in _BACKEND_MODULES if _load(name) is not None]


def resolve_backend(backend: str | None, like: Tensor) -> Any:
    """The backend module for `backend` (or the automatic choice for `like`'s device)."""
    name = backend or os.environ.get("GATTN_BACKEND") or "auto"
    if name == "auto":
        if like.is_cuda:
            name = "triton" if _load("triton") is not None else "reference"
        else:
            name = "cpu" if _load("cpu") is not None else "reference"
    if name not in _BACKEND_MODULES:
        raise ValueError(f"`backend` must be one of {['auto', *_BACKEND_MODULES]}, got {name!r}")
    module = _load(name)
    if module is None:
        raise ValueError(f"backend {name!r} is not available here (is its package installed?)")
    problem = module.unsupported(like)
    if problem:
        raise ValueError(f"backend {name!r} cannot run this input: {problem}")
    return module


def segment_softmax(
    scores: Tensor,
    index: Tensor | None = None,
    ptr: Tensor | None = None,
    num_segments: int | None = None,
    *,
    backend: str | None = None,
) -> Tensor:
    """Softmax of `scores` [R] or [R, H] within segments.

    Segments are given by a sorted CSR row pointer `ptr` [S+1] or an unsorted segment id
    per row `index` [R]. Scores are max-subtracted; a segment whose scores are all -inf
    gets zeros.
    """
    check_floating("scores", scores, (1, 2))
    num_segments = resolve_segments(scores.size(0), index, ptr, num_segments)
    module = resolve_backend(backend, scores)
    if module.NAME == "reference":
        if index is None:
            index = index_from_ptr(ptr)
        return module.segment_softmax(scores, index, num_segments)
    flat = scores if scores.dim() == 2 else scores.unsqueeze(1)
    if ptr is not None:
        return module.segment_softmax(flat, ptr).view_as(scores)
    order = torch.argsort(index, stable=True)
    sorted_ptr = ptr_from_index(index[order], num_segments)
    out_sorted = module.segment_softmax(flat[order], sorted_ptr)
    out = torch.empty_like(out_sorted)
    out[order] = out_sorted
    return out.view_as(scores)


def _node_counts(num_nodes: int | tuple[int, int] | None, q: Tensor, k: Tensor) -> tuple[int, int]:
    shapes = (k.size(0), q.size(0))
    if num_nodes is None:
        return shapes
    counts = (num_nodes, num_nodes) if isinstance(num_nodes, int) else tuple(num_nodes)
    if len(counts) != 2 or tuple(counts) != shapes:
        raise ValueError(
            f"`num_nodes`={num_nodes!r} disagrees with the inputs: k/v have {shapes[0]} rows "
            f"(sources) and q has {shapes[1]} rows (destinations)"
        )
    return shapes


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edge_index: Tensor | CSR,
    *,
    num_nodes: int | tuple[int, int] | None = None,
    edge_bias: Tensor | None = None,
    edge_scale: Tensor | None = None,
    scale: float | None = None,
    return_attention: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Fused attention of each destination over its incoming edges.

    .. math::
        s_{ij} = \mathrm{scale}\,\langle q_i, k_j \rangle \,(\odot e^{s}_{ij}) + b_{ij},\qquad
        \mathrm{out}_i = \sum_{j \to i} \mathrm{softmax}_j(s_{ij})\, v_j

    per head. ``q`` [N_dst, H, D], ``k`` [N_src, H, D], ``v`` [N_src, H, Dv];
    ``edge_index`` [2, E] as (source, destination) like PyG, or a prebuilt :class:`CSR`;
    ``edge_bias`` [E, H]; ``edge_scale`` [E, H] or [E, H, D] (multiplies the products
    elementwise before the sum over D). ``scale`` defaults to ``1/sqrt(D)``. A destination
    with no incoming edge gets zeros. Returns ``out`` [N_dst, H, Dv] and, with
    ``return_attention=True``, the attention [E, H] in the caller's edge order (detached
    from autograd in the fused backends).
    """
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        check_floating(name, tensor, (3,))
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"`q`, `k`, `v` must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"`q`, `k`, `v` must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.size(1) == k.size(1) == v.size(1)):
        raise ValueError(
            f"`q`, `k`, `v` must have the same number of heads (dim 1), "
            f"got {q.size(1)}, {k.size(1)}, {v.size(1)}"
        )
    if q.size(2) != k.size(2):
        raise ValueError(f"`q` and `k` must have the same head dim D, got {q.size(2)} and {k.size(2)}")
    if k.size(0) != v.size(0):
        raise ValueError(f"`k` and `v` must have the same number of rows, got {k.size(0)} and {v.size(0)}")
    num_src, num_dst = _node_counts(num_nodes, q, k)
    heads, dim = q.size(1), q.size(2)
    if torch.compiler.is_compiling():
        return _compiled_edge_attention(
            q, k, v, edge_index, num_dst, edge_bias, edge_scale, scale, return_attention, backend
        )
    csr = get_csr(edge_index, num_src, num_dst)
    check_per_edge("edge_bias", edge_bias, csr.num_edges, heads, None)
    check_per_edge("edge_scale", edge_scale, csr.num_edges, heads, dim)
    for name, tensor in (("edge_bias", edge_bias), ("edge_scale", edge_scale)):
        if tensor is not None and tensor.dtype != q.dtype:
            raise TypeError(f"`{name}` must have the dtype of q ({q.dtype}), got {tensor.dtype}")
    scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    module = resolve_backend(backend, q)
    if module.NAME == "reference":
        ei = edge_index if isinstance(edge_index, Tensor) else _csr_edge_index(csr)
        out, attention = module.edge_attention(q, k, v, ei, num_dst, edge_bias, edge_scale, scale)
        return (out, attention) if return_attention else out
    out, attention_sorted = module.edge_attention(
        q, k, v, csr,
        None if edge_bias is None else csr.to_sorted_order(edge_bias),
        None if edge_scale is None else csr.to_sorted_order(edge_scale),
        scale, return_attention,
    )
    if return_attention:
        return out, csr.to_caller_order(attention_sorted)
    return out


def _compiled_edge_attention(
    q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, num_dst: int, edge_bias: Tensor | None,
    edge_scale: Tensor | None, scale: float | None, return_attention: bool, backend: str | None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Inside torch.compile: value checks and the CSR cache happen in the op's eager body.

    With ``return_attention=True`` (an inspection path) the plain-torch reference is traced
    instead of the fused op.
    """
    if isinstance(edge_index, CSR):
        raise TypeError("under torch.compile pass `edge_index` as a [2, E] tensor, not a CSR")
    scale = 1.0 / math.sqrt(q.size(2)) if scale is None else float(scale)
    module = resolve_backend(backend, q)
    if module.NAME == "reference" or return_attention:
        out, attention = _load("reference").edge_attention(q, k, v, edge_index, num_dst, edge_bias, edge_scale, scale)
        return (out, attention) if return_attention else out
    from ._ops import edge_attention_op

    return edge_attention_op(q, k, v, edge_index, edge_bias, edge_scale, scale, module.NAME)[0]


def _csr_edge_index(csr: CSR) -> Tensor:
    """Edge index in the caller's order, rebuilt from a CSR (for the reference backend)."""
    dst_sorted = index_from_ptr(csr.rowptr)
    return csr.to_caller_order(torch.stack([csr.col, dst_sorted]).t()).t()


def segment_attention_pool(
    x: Tensor,
    query: Tensor | None = None,
    ptr: Tensor | None = None,
    index: Tensor | None = None,
    *,
    scores: Tensor | None = None,
    value: Tensor | None = None,
    normalize: bool = True,
    scale: float | None = None,
    num_segments: int | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Pool the rows of each segment (a bag, a user history) with attention.

    ``x`` [R, D] are the rows (keys, and values unless ``value`` [R, Dv] is given);
    segments by ``ptr`` [S+1] (sorted) or ``index`` [R]. Scores come either from
    ``query`` ([Q, D] shared, or [S, Q, D] one per segment), as ``scale * <x_r, query>``
    with ``scale`` defaulting to ``1/sqrt(D)``, or precomputed ``scores`` [R, Q].
    ``normalize=True`` applies the segment softmax, ``False`` uses the raw scores as
    weights (DIN). Returns ``out`` [S, Q, Dv] and ``weights`` [R, Q] (caller's row
    order). An empty segment gives zeros.
    """
    check_floating("x", x, (2,))
    value = x if value is None else value
    check_floating("value", value, (2,))
    if value.size(0) != x.size(0):
        raise ValueError(f"`value` must have one row per row of x ({x.size(0)}), got {value.size(0)}")
    if (query is None) == (scores is None):
        raise ValueError("give exactly one of `query` (dot-product scores) or `scores` [R, Q]")
    num_segments = resolve_segments(x.size(0), index, ptr, num_segments)
    if query is not None:
        check_floating("query", query, (2, 3))
        if query.size(-1) != x.size(1):
            raise ValueError(f"`query` must have last dim D={x.size(1)}, got {tuple(query.shape)}")
        if query.dim() == 3 and query.size(0) != num_segments:
            raise ValueError(
                f"`query` [S, Q, D] must have one entry per segment ({num_segments}), "
                f"got {tuple(query.shape)}"
            )
    else:
        check_floating("scores", scores, (2,))
        if scores.size(0) != x.size(0):
            raise ValueError(f"`scores` must be [R={x.size(0)}, Q], got {tuple(scores.shape)}")
    for name, tensor in (("value", value), ("query", query), ("scores", scores)):
        if tensor is not None and tensor.dtype != x.dtype:
            raise TypeError(f"`{name}` must have the dtype of x ({x.dtype}), got {tensor.dtype}")
    scale = 1.0 / math.sqrt(x.size(1)) if scale is None else float(scale)
    module = resolve_backend(backend, x)
    if module.NAME == "reference":
        if index is None:
            index = index_from_ptr(ptr)
        return module.segment_attention_pool(x, value, index, num_segments, query, scores, normalize, scale)
    if ptr is not None:
        return module.segment_attention_pool(x, value, ptr, query, scores, normalize, scale)
    order = torch.argsort(index, stable=True)
    sorted_ptr = ptr_from_index(index[order], num_segments)
    out, weights_sorted = module.segment_attention_pool(
        x[order], value[order], sorted_ptr, query,
        None if scores is None else scores[order], normalize, scale,
    )
    weights = torch.empty_like(weights_sorted)
    weights[order] = weights_sorted
    return out, weights
