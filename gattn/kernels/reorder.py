"""Node reordering for cache locality: relabel a graph's nodes so that neighbours sit close
in memory, run the fused kernel on the relabelled graph, and hand the caller back their own
node order.

The fused kernels fetch one key/value row per edge (1 KB at H = 4, D = 32, packed K|V). On
a graph with structure (communities, a kNN point cloud, a mesh) but arbitrary node ids,
those fetches are random; after a bandwidth-reducing or partition-based relabelling, the
rows a destination needs are mostly neighbours of each other and stay in cache. A random
graph has no such structure and gains nothing (only the cost of the permutations).

Orderings (:data:`REORDERINGS`):

* ``"rcm"``: reverse Cuthill-McKee of the symmetrised adjacency
  (``scipy.sparse.csgraph.reverse_cuthill_mckee``), always available;
* ``"metis"``: a METIS k-way partition into parts of about :data:`METIS_PART_SIZE` nodes
  (``pymetis``, an optional package: ``pip install pymetis``), nodes grouped by part and
  in reverse Cuthill-McKee order within a part.

A square graph (``N_src == N_dst``) is taken as one node set with one ordering; a
bipartite one is ordered as the union graph of its ``N_src + N_dst`` nodes, each side
keeping its share of that order.

The ordering is computed once per graph and kept in gattn's structure cache
(:mod:`gattn.kernels._cache`) with the same identity and checksum rules as the CSR: the
same ``edge_index`` tensor with the same content reuses it, an in-place edit of any kind
gives a fresh one. The relabelled graph's CSR is built once, with it.

What :func:`gattn.kernels.edge_attention` does with ``reorder=``: gathers ``q`` into the
new destination order and ``k``/``v`` into the new source order (one packed ``[N, H*D +
H*Dv]`` buffer, the layout the CPU kernel reads without a copy), runs the kernel on the
relabelled CSR, and gathers ``out`` back. Per-edge inputs and the attention weights keep
the caller's edge order (the relabelled edge list keeps the edges where they were), and
the gradients of ``q``, ``k``, ``v`` come back in the caller's node order.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._cache import cached
from ._validate import check_edge_index
from .csr import CSR

__all__ = ["METIS_PART_SIZE", "REORDERINGS", "NodeReordering", "check_reorder", "metis_available",
           "node_reordering"]

#: The node orderings :func:`node_reordering` knows.
REORDERINGS = ("rcm", "metis")

#: Nodes per METIS part: at H = 4, D = 32 a part's packed K|V rows (1 KB each) fill about
#: half a megabyte, which stays in a core's L2 cache while its destinations are processed.
METIS_PART_SIZE = 512


def metis_available() -> bool:
    """Whether the optional ``pymetis`` package is importable (``reorder="metis"`` needs it)."""
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return False
    return True


def check_reorder(reorder: str | None, name: str = "reorder") -> str | None:
    """``reorder`` validated: ``None`` or one of :data:`REORDERINGS` (``"metis"`` only with pymetis).

    Args:
        reorder (str, optional): ``None``, ``"rcm"`` or ``"metis"``.
        name (str, optional): the argument's name in error messages. (default: ``"reorder"``)

    Returns:
        str, optional: ``reorder`` unchanged.

    Raises:
        ValueError: an unknown ordering, or ``"metis"`` without ``pymetis`` installed.
    """
    if reorder is None:
        return None
    if reorder not in REORDERINGS:
        raise ValueError(f"`{name}` must be None or one of {REORDERINGS}, got {reorder!r}")
    if reorder == "metis" and not metis_available():
        raise ValueError(
            f"`{name}`='metis' needs the optional package pymetis (pip install pymetis, or gattn's "
            "'benchmarks' extra); use 'rcm' (scipy, always available) instead"
        )
    return reorder


class NodeReordering(NamedTuple):
    """A relabelling of a graph's nodes and the relabelled graph's CSR.

    Attributes:
        src_order (Tensor): ``src_order[new] = old`` for the source nodes, shape ``[N_src]``.
        src_rank (Tensor): ``src_rank[old] = new``, shape ``[N_src]``.
        dst_order (Tensor): the same as ``src_order`` for the destination nodes, shape ``[N_dst]``.
        dst_rank (Tensor): the same as ``src_rank`` for the destination nodes, shape ``[N_dst]``.
        edge_index (Tensor): the relabelled edge list, edges in the caller's order, shape ``[2, E]``.
        csr (CSR): the relabelled graph's CSR.
    """

    src_order: Tensor  # [N_src]
    src_rank: Tensor  # [N_src]
    dst_order: Tensor  # [N_dst]
    dst_rank: Tensor  # [N_dst]
    edge_index: Tensor  # [2, E]
    csr: CSR


def _symmetric_adjacency(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> Any:
    """A + A^T without self-loops or duplicates (the form METIS requires), scipy CSR."""
    import scipy.sparse as sp

    keep = src != dst
    rows = np.concatenate([src[keep], dst[keep]])
    cols = np.concatenate([dst[keep], src[keep]])
    adjacency = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(num_nodes, num_nodes)
    )
    adjacency.sum_duplicates()
    return adjacency


def _rcm_order(adjacency: Any) -> np.ndarray:
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    return np.asarray(reverse_cuthill_mckee(adjacency, symmetric_mode=True), dtype=np.int64)


def _metis_order(adjacency: Any) -> np.ndarray:
    import pymetis

    num_nodes = adjacency.shape[0]
    rcm_rank = np.empty(num_nodes, dtype=np.int64)
    rcm_rank[_rcm_order(adjacency)] = np.arange(num_nodes)
    parts = math.ceil(num_nodes / METIS_PART_SIZE)
    if parts < 2 or adjacency.nnz == 0:
        return np.argsort(rcm_rank, kind="stable")
    _, membership = pymetis.part_graph(
        parts, xadj=adjacency.indptr.astype(np.int64), adjncy=adjacency.indices.astype(np.int64)
    )
    # Parts first, reverse Cuthill-McKee within a part (lexsort's last key is the primary one).
    return np.lexsort((rcm_rank, np.asarray(membership, dtype=np.int64))).astype(np.int64)


def _orders(edge_index: Tensor, num_src: int, num_dst: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    src = edge_index[0].long().numpy()
    dst = edge_index[1].long().numpy()
    square = num_src == num_dst
    num_nodes = num_src if square else num_src + num_dst
    adjacency = _symmetric_adjacency(src, dst if square else dst + num_src, num_nodes)
    order = _rcm_order(adjacency) if method == "rcm" else _metis_order(adjacency)
    if square:
        return order, order
    return order[order < num_src], order[order >= num_src] - num_src


def _rank(order: Tensor) -> Tensor:
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return rank


def node_reordering(edge_index: Tensor, num_src: int, num_dst: int, method: str) -> NodeReordering:
    """The cached node reordering of `edge_index` by `method` (see the module docstring).

    Args:
        edge_index (torch.Tensor): ``[2, E]`` integer (source, destination) pairs on the CPU.
        num_src (int): ``N_src``.
        num_dst (int): ``N_dst``.
        method (str): one of :data:`REORDERINGS`.

    Returns:
        NodeReordering: the orderings, their inverses and the relabelled graph's CSR.

    Raises:
        ValueError: an unknown ``method`` (or ``"metis"`` without pymetis), ids out of range,
            or ``edge_index`` not on the CPU.
    """
    check_reorder(method, "method")
    if edge_index.device.type != "cpu":
        raise ValueError(f"node reordering runs on CPU graphs only, `edge_index` is on {edge_index.device}")

    def build() -> NodeReordering:
        check_edge_index(edge_index, num_src, num_dst)
        plain = edge_index.as_subclass(Tensor) if type(edge_index) is not Tensor else edge_index
        plain = plain.long()
        src_order, dst_order = (torch.from_numpy(np.ascontiguousarray(o)) for o in
                                _orders(plain, num_src, num_dst, method))
        src_rank, dst_rank = _rank(src_order), _rank(dst_order)
        relabelled = torch.stack([src_rank[plain[0]], dst_rank[plain[1]]])
        return NodeReordering(src_order, src_rank, dst_order, dst_rank, relabelled,
                              CSR(relabelled, num_src, num_dst))

    return cached(edge_index, ("reorder", method, int(num_src), int(num_dst)), build)


class _PermuteRows(torch.autograd.Function):
    """``x[order]`` whose backward is the gather ``grad[rank]`` (a permutation's adjoint is
    its inverse: no scatter-add)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, order: Tensor, rank: Tensor) -> Tensor:
        ctx.save_for_backward(order, rank)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        order, rank = ctx.saved_tensors
        return _PermuteRows.apply(grad, rank, order), None, None


def permute_rows(x: Tensor, order: Tensor, rank: Tensor) -> Tensor:
    """``x[order]`` (rows), differentiable; ``rank`` is the inverse of ``order``."""
    return _PermuteRows.apply(x, order, rank)


def reordered_inputs(reordering: NodeReordering, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``q`` in the new destination order; ``k`` and ``v`` in the new source order as two views
    of one packed ``[N_src, H*D + H*Dv]`` buffer (one gather, and no packing copy later)."""
    from . import split_kv

    num, heads, dim = k.shape
    dim_value = v.size(2)
    kv = torch.cat([k.reshape(num, heads * dim), v.reshape(num, heads * dim_value)], dim=1)
    kv = permute_rows(kv, reordering.src_order, reordering.src_rank)
    k_new, v_new = split_kv(kv, heads, dim, dim_value)
    return permute_rows(q, reordering.dst_order, reordering.dst_rank), k_new, v_new


def restore_output(reordering: NodeReordering, out: Tensor) -> Tensor:
    """The kernel's output rows back in the caller's destination order."""
    return permute_rows(out, reordering.dst_rank, reordering.dst_order)
