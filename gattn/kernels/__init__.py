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
import warnings
from typing import Any

import torch
from torch import Tensor

from . import reference
from ._dropout import keep_mask
from ._edge import fused_edge_attention, kv_halves, kv_views
from ._validate import check_edge_index_shape, check_floating, check_per_edge, check_probability, resolve_segments
from .csr import CSR, get_csr, index_from_ptr, ptr_from_index
from .reorder import (
    AUTO,
    REORDERINGS,
    auto_csr,
    check_reorder,
    node_reordering,
    reordered_inputs,
    restore_output,
    scheduled_csr,
)

#: The score forms of :func:`edge_attention`.
SCORES = ("dot", "additive")

__all__ = [
    "CSR",
    "REORDERINGS",
    "SCORES",
    "available_backends",
    "clear_caches",
    "dropout_keep_mask",
    "edge_attention",
    "get_csr",
    "index_from_ptr",
    "ptr_from_index",
    "resolve_backend",
    "segment_attention_pool",
    "segment_softmax",
    "set_workspace_limit",
    "split_kv",
]


def clear_caches() -> None:
    """Drop what gattn keeps between calls: the structures cached per index tensor (CSR and
    by-source views, chunk plans, self-loop graphs, node orderings), which otherwise live as
    long as their tensor, and the CPU kernels' reused buffers (dQ, dK|dV, the backward's
    per-edge temporary; at most 1 GiB, kept so that each training step does not pay page
    faults on fresh memory). Memory still referenced by your tensors stays with them; the
    next call rebuilds what it needs."""
    from . import _cache, _workspace

    _cache.clear()
    _workspace.clear()


def set_workspace_limit(max_bytes: int) -> int:
    """Set how many bytes of the CPU kernels' reused buffers gattn keeps between calls (dQ,
    dK|dV, the backward's per-edge temporary and the fused K|V projection's output; default 1
    GiB), and return the previous limit.

    Reuse spares every training step the page faults of fresh memory. Where the process gets
    transparent huge pages (Linux, THP mode ``always`` or ``madvise``), the memory of kept
    buffers nobody uses is given back at each attention forward and faulted in again, 2 MB at
    a time, by the backward, so idle buffers do not raise the step's peak; measured on a random
    graph of ogbn-arxiv's size (N = 169k, E = 1.17M, H = 4, D = 32, one thread): a step of
    1.00 s at 883 MB above the process's start, against 1.00 s at 1,129 MB with the buffers
    kept resident (``GATTN_WORKSPACE_HUGE_PAGES=0``). Without huge pages the buffers stay
    mapped while the rest of the step runs: 0.99-1.04 s at 1,129 MB with the default limit,
    1.17-1.20 s at 880 MB with a 64 MB limit. A buffer larger than the limit is allocated fresh
    on each call; lowering the limit drops the kept buffers (memory your tensors still use
    stays with them).

    Args:
        max_bytes (int): the new limit in bytes, ``>= 0`` (0: no reuse).

    Returns:
        int: the previous limit.

    Raises:
        ValueError: ``max_bytes`` is negative or not an integer.
    """
    from . import _workspace

    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"`max_bytes` must be an integer >= 0, got {max_bytes!r}")
    previous = _workspace.MAX_BYTES
    _workspace.MAX_BYTES = max_bytes
    if max_bytes < previous:
        _workspace.clear()
    return previous


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
    """Backends importable in this environment (triton still needs CUDA or TRITON_INTERPRET=1).

    Returns:
        list[str]: backend names, a subset of ``["reference", "cpu", "triton"]`` in that order.
    """
    return [name for name in _BACKEND_MODULES if _load(name) is not None]


def resolve_backend(backend: str | None, like: Tensor) -> Any:
    """The backend module for `backend` (or the automatic choice for `like`'s device).

    Args:
        backend (str, optional): ``"reference"``, ``"cpu"``, ``"triton"`` or ``"auto"``.
            ``None``: the ``GATTN_BACKEND`` environment variable, else ``"auto"`` (triton on
            CUDA when installed, the CPU kernels on the CPU, else the reference).
            (default: ``None``)
        like (torch.Tensor): an input of the call; its device decides ``"auto"`` and the
            backend checks it can run it.

    Raises:
        ValueError: an unknown name, a backend that is not installed, or one that cannot run
            ``like`` (the message says why).
    """
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
    r"""Softmax of `scores` [R] or [R, H] within segments.

    .. math::
        \mathrm{out}_r = \frac{\exp(s_r - m_{g(r)})}{\sum_{r' : g(r') = g(r)} \exp(s_{r'} - m_{g(r)})},
        \qquad m_g = \max_{r : g(r) = g} s_r

    per head, where :math:`g(r)` is the segment of row :math:`r`. Segments are given by a
    sorted CSR row pointer `ptr` [S+1] or an unsorted segment id per row `index` [R] (exactly
    one of them). A segment whose scores are all -inf gets zeros.

    Args:
        scores (torch.Tensor): floating scores, shape ``[R]`` or ``[R, H]``.
        index (torch.Tensor, optional): segment id of each row, shape ``[R]`` (any order).
            (default: ``None``)
        ptr (torch.Tensor, optional): row pointer of rows sorted by segment, shape ``[S + 1]``.
            (default: ``None``)
        num_segments (int, optional): ``S``; with ``index``, the default is ``index.max() + 1``;
            with ``ptr``, it must equal ``len(ptr) - 1``. (default: ``None``)
        backend (str, optional): see :func:`resolve_backend`. (default: ``None``)

    Returns:
        torch.Tensor: the probabilities, shape and order of ``scores``.

    Raises:
        ValueError: neither or both of ``index`` and ``ptr``, or shapes that disagree.
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


def _check_edge_inputs(
    q: Tensor, k: Tensor, v: Tensor, score: str, scale: float | None, edge_scale: Tensor | None,
    att: Tensor | None, dropout_p: float,
) -> None:
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
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {SCORES}, got {score!r}")
    if score == "additive":
        if scale is not None:
            raise ValueError("`scale` applies to score='dot' only (the additive score has no scale)")
        if edge_scale is not None:
            raise ValueError("`edge_scale` applies to score='dot' only; use `edge_key` or `edge_bias`")
        if att is not None:
            check_floating("att", att, (2,))
            if tuple(att.shape) != (q.size(1), q.size(2)):
                raise ValueError(f"`att` must have shape [H={q.size(1)}, D={q.size(2)}], got {tuple(att.shape)}")
    elif att is not None:
        raise ValueError("`att` applies to score='additive' only")
    check_probability("dropout_p", dropout_p)


def _check_edge_terms(terms: dict[str, Tensor | None], num_edges: int, q: Tensor, v: Tensor) -> None:
    heads, dim = q.size(1), q.size(2)
    check_per_edge("edge_bias", terms["edge_bias"], num_edges, heads, None)
    check_per_edge("edge_scale", terms["edge_scale"], num_edges, heads, dim)
    check_per_edge("edge_key", terms["edge_key"], num_edges, heads, dim, exact=True)
    check_per_edge("edge_value", terms["edge_value"], num_edges, heads, v.size(2), exact=True)
    for name, tensor in terms.items():
        if tensor is not None and tensor.dtype != q.dtype:
            raise TypeError(f"`{name}` must have the dtype of q ({q.dtype}), got {tensor.dtype}")
        if tensor is not None and tensor.device != q.device:
            raise ValueError(f"`{name}` must be on the device of q ({q.device}), got {tensor.device}")


def _draw_seed(dropout_p: float, dropout_seed: int | Tensor | None, generator: torch.Generator | None):
    """The dropout seed: the caller's, or one drawn from torch's RNG (`generator`, else the
    default one), so that ``torch.manual_seed`` reproduces the masks."""
    if dropout_p <= 0.0:
        return 0
    if dropout_seed is not None:
        return dropout_seed
    device = None if generator is None else generator.device
    return torch.randint(0, 2**62, (), generator=generator, device=device)


def split_kv(kv: Tensor, heads: int, dim: int, dim_value: int | None = None) -> tuple[Tensor, Tensor]:
    """Keys [N, H, D] and values [N, H, Dv] as two views of one fused projection `kv`.

    A layer that projects keys and values with one matmul (weights stacked, output
    [N, H*D + H*Dv]) and passes these views to :func:`edge_attention` gives the CPU kernel
    each source's key and value as one contiguous row: every edge then costs one random
    memory fetch instead of two, with no copy (separate k and v are packed per call).

    Args:
        kv (torch.Tensor): the fused projection, shape ``[N, H * D + H * Dv]``, keys first.
        heads (int): ``H``.
        dim (int): ``D``, the key width per head.
        dim_value (int, optional): ``Dv``, the value width per head; ``None``: ``D``.
            (default: ``None``)

    Returns:
        tuple[torch.Tensor, torch.Tensor]: views ``k`` ``[N, H, D]`` and ``v`` ``[N, H, Dv]`` of
        ``kv`` (no copy).

    Raises:
        ValueError: ``kv`` is not ``[N, H * (D + Dv)]``.
    """
    dim_value = dim if dim_value is None else dim_value
    width = heads * (dim + dim_value)
    if kv.dim() != 2 or kv.size(1) != width:
        raise ValueError(f"`kv` must be [N, {width}] (heads * (dim + dim_value)), got {list(kv.shape)}")
    return _SplitKV.apply(kv, heads, dim, dim_value)


class _SplitKV(torch.autograd.Function):
    """The two views of :func:`split_kv`, with a backward that hands on the gradient of ``kv``
    without a copy when dK and dV arrive as the two halves of one such buffer (as the CPU
    kernels write them), else with one concatenation. Autograd's own backward of two slices
    would fill two zero buffers of ``kv``'s size, copy each gradient into one and add them
    (about 2.5x slower, 10 % of a small graph's training step)."""

    @staticmethod
    def forward(ctx, kv: Tensor, heads: int, dim: int, dim_value: int) -> tuple[Tensor, Tensor]:
        num = kv.size(0)
        ctx.shapes = (num, heads, dim, dim_value)
        return kv_views(kv, heads, dim, dim_value)

    @staticmethod
    def backward(ctx, grad_k: Tensor, grad_v: Tensor) -> tuple[Tensor, None, None, None]:
        # an unused half arrives as zeros (autograd materialises missing output gradients)
        num, heads, dim, dim_value = ctx.shapes
        if kv_halves(grad_k, grad_v):  # as the CPU kernels write them: that buffer is the gradient
            grad_kv = grad_k.as_strided((num, heads * (dim + dim_value)), (grad_k.stride(0), 1))
        else:
            grad_kv = torch.cat([grad_k.reshape(num, heads * dim), grad_v.reshape(num, heads * dim_value)], dim=1)
        return grad_kv, None, None, None


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edge_index: Tensor | CSR,
    *,
    num_nodes: int | tuple[int, int] | None = None,
    edge_bias: Tensor | None = None,
    edge_scale: Tensor | None = None,
    edge_key: Tensor | None = None,
    edge_value: Tensor | None = None,
    scale: float | None = None,
    score: str = "dot",
    att: Tensor | None = None,
    negative_slope: float = 0.2,
    dropout_p: float = 0.0,
    dropout_seed: int | Tensor | None = None,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
    backend: str | None = None,
    reorder: str | None = None,
    kv_dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Fused attention of each destination over its incoming edges.

    Per head, with :math:`u_{ij} = k_j + \mathrm{edge\_key}_{ij}`:

    .. math::
        s_{ij} = \begin{cases}
            \mathrm{scale}\,\langle q_i, u_{ij} \rangle \,(\odot e^{s}_{ij}) + b_{ij}
                & \texttt{score="dot"} \\
            \textstyle\sum_d a_d\,\mathrm{LeakyReLU}(q_{id} + u_{ijd}) + b_{ij}
                & \texttt{score="additive"}
        \end{cases}, \qquad
        \mathrm{out}_i = \sum_{j \to i} \mathrm{softmax}_j(s_{ij})\,\frac{m_{ij}}{1-p}
            \,(v_j + \mathrm{edge\_value}_{ij})

    ``q`` [N_dst, H, D], ``k`` [N_src, H, D], ``v`` [N_src, H, Dv]; ``edge_index`` [2, E]
    as (source, destination) like PyG, or a prebuilt :class:`CSR`. Optional per-edge terms,
    in the caller's edge order: ``edge_bias`` [E, H]; ``edge_scale`` [E, H] or [E, H, D]
    (dot form: multiplies the products before the sum over D; the Graph Transformer);
    ``edge_key`` [E, H, D] added to the keys (PyG's ``TransformerConv`` edge features, the
    GAT/GATv2 edge term); ``edge_value`` [E, H, Dv] added to the values.

    ``score="dot"`` uses ``scale`` (default ``1/sqrt(D)``). ``score="additive"`` is the GAT
    family: ``att`` [H, D] weighs the LeakyReLU (``negative_slope``) per dimension (GATv2;
    ``None`` means ones, so GAT passes per-node terms ``q`` = :math:`a_{dst}^\top W x_i`,
    ``k`` = :math:`a_{src}^\top W x_j` with D = 1). Neither form builds an E x H x D tensor.

    Attention dropout: ``dropout_p`` > 0 drops each (edge, head) weight with that
    probability and scales the rest by ``1/(1-p)`` (pass ``dropout_p=0`` in evaluation, as
    with ``flash_attn_func``). The mask is a hash of ``(seed, edge, head)`` evaluated inside
    the kernels (nothing drawn or stored per edge), identical in every backend: ``seed`` is
    ``dropout_seed`` or a number drawn from ``generator`` (default: torch's global RNG, so
    ``torch.manual_seed`` reproduces it); :func:`dropout_keep_mask` gives the mask.

    A destination with no incoming edge gets zeros.

    Node reordering (``reorder=``, CPU only): the kernel visits the graph in a cached
    locality ordering (:mod:`gattn.kernels.reorder`: ``"rcm"``, reverse Cuthill-McKee, or
    ``"metis"`` with pymetis), computed once per ``edge_index`` tensor and content. The cpu
    backend permutes nothing (the CSR is stored in that order with the caller's ids in it);
    the reference backend permutes ``q``, ``k``, ``v`` in and ``out`` (and every gradient)
    back. Results are in the caller's node and edge order and equal the plain call's up to
    floating-point summation order. It pays on graphs with structure (communities, kNN
    point clouds, meshes) whose node ids are arbitrary, not on random graphs;
    ``reorder="auto"`` (the layers' default) applies reverse Cuthill-McKee (or METIS, where
    pymetis is installed and it packs more) only where it does, and without permuting
    anything: the CPU kernels visit the graph in that order in place.

    Reduced-precision keys and values (``kv_dtype=torch.bfloat16``, an opt-in; cpu and
    reference backends): K and V are rounded to bfloat16 for storage (the CPU kernel then
    fetches half the bytes per edge) while scores, softmax and sums stay in the input's
    precision (float32 accumulation for float32 inputs). The result is the attention of the
    rounded K and V (about 3e-3 relative error against float32 for unit-scale inputs, see
    ``tests/kernels/test_bf16_kv.py``); gradients flow to ``k`` and ``v`` as if the rounding
    were the identity (straight-through), in the input's dtype.

    Args:
        q (torch.Tensor): queries, shape ``[N_dst, H, D]`` (``score="additive"`` with GAT's
            per-node terms: ``D = 1``).
        k (torch.Tensor): keys, shape ``[N_src, H, D]``, dtype and device of ``q``.
        v (torch.Tensor): values, shape ``[N_src, H, Dv]``.
        edge_index (torch.Tensor or CSR): ``[2, E]`` integer (source, destination) pairs, or a
            prebuilt :class:`CSR` (see :func:`get_csr`).
        num_nodes (int or tuple[int, int], optional): ``N`` or ``(N_src, N_dst)``; ``None``: from
            the rows of ``k`` and ``q``. (default: ``None``)
        edge_bias (torch.Tensor, optional): ``b``, shape ``[E, H]``. (default: ``None``)
        edge_scale (torch.Tensor, optional): :math:`e^{s}`, shape ``[E, H]`` or ``[E, H, D]``;
            ``score="dot"`` only. (default: ``None``)
        edge_key (torch.Tensor, optional): added to the keys, shape ``[E, H, D]``.
            (default: ``None``)
        edge_value (torch.Tensor, optional): added to the values, shape ``[E, H, Dv]``.
            (default: ``None``)
        scale (float, optional): ``score="dot"`` only; ``None``: :math:`1/\sqrt{D}`.
            (default: ``None``)
        score (str, optional): ``"dot"`` or ``"additive"`` (:data:`SCORES`).
            (default: ``"dot"``)
        att (torch.Tensor, optional): :math:`a`, shape ``[H, D]``; ``score="additive"`` only;
            ``None``: ones. (default: ``None``)
        negative_slope (float, optional): of the LeakyReLU (``score="additive"``).
            (default: ``0.2``)
        dropout_p (float, optional): attention dropout probability :math:`p` in ``[0, 1)``.
            (default: ``0.0``)
        dropout_seed (int or torch.Tensor, optional): the seed of the dropout mask ``m``;
            ``None``: drawn from ``generator``. (default: ``None``)
        generator (torch.Generator, optional): draws the seed when ``dropout_seed`` is
            ``None``; ``None``: torch's global RNG. (default: ``None``)
        return_attention (bool, optional): also return the attention weights.
            (default: ``False``)
        backend (str, optional): see :func:`resolve_backend`. (default: ``None``)
        reorder (str, optional): ``None`` (the caller's node order), a node ordering of
            :data:`REORDERINGS` (``"rcm"``, ``"metis"``) the kernel runs in (needs a ``[2, E]``
            ``edge_index`` on the CPU), or ``"auto"``: reverse Cuthill-McKee for a graph that
            comes back and gains locality by it, else the caller's order (any device and
            form; see :func:`gattn.kernels.reorder.auto_csr`). (default: ``None``)
        kv_dtype (torch.dtype, optional): ``None`` (keys and values in the inputs' dtype) or
            ``torch.bfloat16`` (stored rounded to bf16, arithmetic in the inputs' precision;
            backends ``"cpu"`` and ``"reference"``). (default: ``None``)

    Returns:
        torch.Tensor or tuple[torch.Tensor, torch.Tensor]: ``out`` ``[N_dst, H, Dv]`` and, with
        ``return_attention=True``, the attention ``[E, H]`` (softmax before dropout, caller's
        edge order), differentiable: a loss on it back-propagates through the fused backward.

    Raises:
        TypeError: ``q``, ``k``, ``v`` of different dtypes, or a non-integer ``edge_index``.
        ValueError: shapes that disagree, indices out of range, an option of the other
            ``score`` (``scale``/``edge_scale`` with ``"additive"``, ``att`` with ``"dot"``),
            ``dropout_p`` outside ``[0, 1)``, or an unknown ``reorder`` (``"metis"`` without
            pymetis, a :class:`CSR` or a CUDA graph with ``reorder``).
        NotImplementedError: ``reorder`` or ``kv_dtype`` under ``torch.compile``.
    """
    _check_edge_inputs(q, k, v, score, scale, edge_scale, att, dropout_p)
    check_reorder(reorder)
    kv_bf16 = _check_kv_dtype(kv_dtype)
    num_src, num_dst = _node_counts(num_nodes, q, k)
    additive = score == "additive"
    scale = (1.0 / math.sqrt(q.size(2)) if scale is None else float(scale)) if not additive else 1.0
    dropout_p = float(dropout_p)
    terms = {"edge_bias": edge_bias, "edge_scale": edge_scale, "edge_key": edge_key, "edge_value": edge_value}
    seed = _draw_seed(dropout_p, dropout_seed, generator)
    if torch.compiler.is_compiling():
        if reorder not in (None, AUTO) or kv_bf16:  # "auto": the caller's order
            raise NotImplementedError("`reorder` and `kv_dtype` are not supported under torch.compile")
        return _compiled_edge_attention(
            q, k, v, edge_index, num_dst, terms, att, scale, additive, float(negative_slope), dropout_p,
            seed, return_attention, backend,
        )
    module = _fusing_backend(resolve_backend(backend, q), additive, dropout_p, terms)
    reordering = None
    if reorder == AUTO:  # the CPU kernels' locality order where it pays, else the plain CSR
        scheduled = None
        if module.NAME == "cpu" and isinstance(edge_index, Tensor):
            check_edge_index_shape(edge_index)
            row_bytes = k.size(1) * k.size(2) * k.element_size() + v.size(1) * v.size(2) * v.element_size()
            scheduled = auto_csr(edge_index, num_src, num_dst, row_bytes)
        csr = get_csr(edge_index, num_src, num_dst) if scheduled is None else scheduled
    elif reorder is None:
        csr = get_csr(edge_index, num_src, num_dst)
    else:
        if isinstance(edge_index, CSR):
            raise ValueError("`reorder` needs `edge_index` as a [2, E] tensor, not a prebuilt CSR")
        check_edge_index_shape(edge_index)
        if module.NAME == "cpu":  # visited in that order in place: nothing permuted
            csr = scheduled_csr(edge_index, num_src, num_dst, reorder)
        else:
            reordering = node_reordering(edge_index, num_src, num_dst, reorder)
            csr = reordering.csr
    _check_edge_terms(terms, csr.num_edges, q, v)
    seed = int(seed)
    if kv_bf16 and module.NAME not in ("cpu", "reference"):
        raise ValueError(f"`kv_dtype`=torch.bfloat16 is implemented by the cpu and reference backends, "
                         f"not by {module.NAME!r}")
    if reordering is not None:
        q, k, v = reordered_inputs(reordering, q, k, v)
    if module.NAME == "reference":
        ei = edge_index if isinstance(edge_index, Tensor) else _csr_edge_index(csr)
        ei = ei if reordering is None else reordering.edge_index
        if kv_bf16:
            k, v = _bf16_rounded(k), _bf16_rounded(v)
        out, attention = reference.edge_attention(
            q, k, v, ei, num_dst, edge_bias, edge_scale, scale, edge_key=edge_key, edge_value=edge_value,
            additive=additive, att=att, negative_slope=negative_slope, dropout_p=dropout_p, seed=seed,
        )
    else:
        config = (scale, additive, float(negative_slope), dropout_p, seed, kv_bf16)
        out, attention = fused_edge_attention(
            module, config, csr, return_attention, q, k, v, edge_bias, edge_scale, edge_key, edge_value, att
        )
    if reordering is not None:
        out = restore_output(reordering, out)
    return (out, attention) if return_attention else out


def _check_kv_dtype(kv_dtype: torch.dtype | None) -> bool:
    """Whether keys and values are stored in bf16 (``kv_dtype`` validated)."""
    if kv_dtype is None:
        return False
    if kv_dtype != torch.bfloat16:
        raise ValueError(f"`kv_dtype` must be None or torch.bfloat16, got {kv_dtype!r}")
    return True


def _bf16_rounded(tensor: Tensor) -> Tensor:
    """`tensor` rounded to bf16 in its own dtype, with the identity as gradient (straight-through)."""
    return tensor + (tensor.detach().to(torch.bfloat16).to(tensor.dtype) - tensor.detach())


#: What a fused backend may declare in its ``EDGE_FEATURES``; a backend without the attribute
#: supports them all.
EDGE_FEATURES = frozenset({"additive", "dropout", "edge_bias", "edge_scale", "edge_key", "edge_value"})
_fallback_told: set[tuple[str, frozenset]] = set()


def _fusing_backend(module: Any, additive: bool, dropout_p: float, terms: dict[str, Tensor | None]) -> Any:
    """The backend, or the reference when the backend cannot fuse something the call asks
    for (the one fallback of the kernel API, announced once per backend and feature set).

    Every shipped backend (cpu, triton) fuses every feature; the fallback serves backends
    that declare less in ``EDGE_FEATURES``.
    """
    wanted = {name for name, tensor in terms.items() if tensor is not None}
    if additive:
        wanted.add("additive")
    if dropout_p > 0:
        wanted.add("dropout")
    missing = frozenset(wanted - getattr(module, "EDGE_FEATURES", EDGE_FEATURES))
    if not missing:
        return module
    if (module.NAME, missing) not in _fallback_told:
        _fallback_told.add((module.NAME, missing))
        warnings.warn(
            f"gattn: backend {module.NAME!r} cannot fuse {sorted(missing)}; these calls run on the "
            "plain-torch reference backend (per-edge E x H x D tensors)",
            stacklevel=3,
        )
    return _load("reference")


def _compiled_edge_attention(
    q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor | CSR, num_dst: int, terms: dict[str, Tensor | None],
    att: Tensor | None, scale: float, additive: bool, negative_slope: float, dropout_p: float,
    seed: int | Tensor, return_attention: bool, backend: str | None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Inside torch.compile: the fused op is a registered custom op, opaque to the tracer;
    index validation, the CSR cache and the backend choice happen in its eager body."""
    if isinstance(edge_index, CSR):
        raise TypeError("under torch.compile pass `edge_index` as a [2, E] tensor, not a CSR")
    if backend == "reference":
        out, attention = reference.edge_attention(
            q, k, v, edge_index, num_dst, terms["edge_bias"], terms["edge_scale"], scale,
            edge_key=terms["edge_key"], edge_value=terms["edge_value"], additive=additive, att=att,
            negative_slope=negative_slope, dropout_p=dropout_p, seed=seed,
        )
        return (out, attention) if return_attention else out
    from ._ops import edge_attention_op

    seed_tensor = seed if isinstance(seed, Tensor) else torch.tensor(seed, dtype=torch.int64)
    out, _, attention = edge_attention_op(
        q, k, v, edge_index, terms["edge_bias"], terms["edge_scale"], terms["edge_key"], terms["edge_value"],
        att, seed_tensor, scale, additive, negative_slope, dropout_p, return_attention, backend or "auto",
    )
    return (out, attention) if return_attention else out


def dropout_keep_mask(
    seed: int | Tensor, num_edges: int, heads: int, dropout_p: float, device: torch.device | str = "cpu"
) -> Tensor:
    """The keep mask [E, H] (caller's edge order, True = kept) that :func:`edge_attention`
    applies for ``dropout_p`` and ``dropout_seed=seed``; kept weights are scaled by 1/(1-p).

    Args:
        seed (int or torch.Tensor): the ``dropout_seed`` of the call.
        num_edges (int): ``E``.
        heads (int): ``H``.
        dropout_p (float): the drop probability, in ``[0, 1)``.
        device (torch.device or str, optional): where the mask is made. (default: ``"cpu"``)

    Returns:
        torch.Tensor: ``bool``, shape ``[E, H]``.

    Raises:
        ValueError: ``dropout_p`` outside ``[0, 1)``.
    """
    check_probability("dropout_p", dropout_p)
    return keep_mask(int(seed), num_edges, heads, dropout_p, device)


def _csr_edge_index(csr: CSR) -> Tensor:
    """Edge index in the caller's order, rebuilt from a CSR (for the reference backend)."""
    return csr.to_caller_order(torch.stack([csr.col, csr.sorted_destinations()]).t()).t()


def _one_segment_pool(
    x: Tensor, value: Tensor, query: Tensor | None, scores: Tensor | None, normalize: bool, scale: float
) -> tuple[Tensor, Tensor]:
    """:func:`segment_attention_pool` of one non-empty segment as dense tensor ops: a softmax
    over the rows and one matmul. One bag per step (Ilse et al.'s MIL setting) would otherwise
    pay the segment machinery's fixed cost, several times the arithmetic, on every step. Same
    rule as the kernels: a query whose scores are all -inf gets zero weights. Taken only under
    the automatic backend choice (a backend named by the caller runs its kernels)."""
    if scores is None:
        scores = (x @ (query if query.dim() == 2 else query[0]).t()) * scale
    weights = scores
    if normalize:
        top = scores.detach().amax(0, keepdim=True)
        exp = torch.exp(scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
        weights = exp / exp.sum(0, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    return (weights.t() @ value).unsqueeze(0), weights


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

    .. math::
        \mathrm{out}_{g,q} = \sum_{r : g(r) = g} w_{r,q}\, \mathrm{value}_r, \qquad
        w_{r,q} = \begin{cases} \mathrm{softmax}_{r \in g}(s_{r,q}) & \texttt{normalize=True} \\
            s_{r,q} & \texttt{normalize=False} \end{cases}, \qquad
        s_{r,q} = \mathrm{scale}\, \langle x_r, \mathrm{query}_q \rangle

    ``x`` [R, D] are the rows (keys, and values unless ``value`` [R, Dv] is given);
    segments by ``ptr`` [S+1] (sorted) or ``index`` [R]. Scores come either from
    ``query`` ([Q, D] shared, or [S, Q, D] one per segment) or precomputed ``scores`` [R, Q]
    (exactly one of them). ``normalize=False`` uses the raw scores as weights (DIN). An
    empty segment gives zeros.

    Args:
        x (torch.Tensor): the rows, shape ``[R, D]``.
        query (torch.Tensor, optional): ``[Q, D]`` (shared) or ``[S, Q, D]`` (one per
            segment), dtype of ``x``. (default: ``None``)
        ptr (torch.Tensor, optional): row pointer of rows sorted by segment, shape ``[S + 1]``.
            (default: ``None``)
        index (torch.Tensor, optional): segment id of each row, shape ``[R]``.
            (default: ``None``)
        scores (torch.Tensor, optional): precomputed scores, shape ``[R, Q]``.
            (default: ``None``)
        value (torch.Tensor, optional): the pooled rows, shape ``[R, Dv]``; ``None``: ``x``.
            (default: ``None``)
        normalize (bool, optional): segment softmax of the scores. (default: ``True``)
        scale (float, optional): ``None``: :math:`1/\sqrt{D}`. (default: ``None``)
        num_segments (int, optional): ``S`` (see :func:`segment_softmax`). (default: ``None``)
        backend (str, optional): see :func:`resolve_backend`. (default: ``None``)

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``out`` ``[S, Q, Dv]`` and ``weights`` ``[R, Q]``
        (caller's row order).

    Raises:
        ValueError: neither or both of ``query`` and ``scores`` (or of ``index`` and ``ptr``),
            or shapes that disagree.
        TypeError: ``value``, ``query`` or ``scores`` of another dtype than ``x``.
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
    automatic = (backend or os.environ.get("GATTN_BACKEND") or "auto") == "auto"
    if automatic and num_segments == 1 and x.size(0) > 0 and x.dtype in (torch.float32, torch.float64):
        return _one_segment_pool(x, value, query, scores, normalize, scale)
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
