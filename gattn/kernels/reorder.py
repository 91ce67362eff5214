"""Node reordering for cache locality: run the fused kernel over a graph's nodes in an order
where neighbours come close together, and hand the caller back their own node order.

The fused kernels fetch one key/value row per edge (1 KB at H = 4, D = 32, packed K|V). On
a graph with structure (communities, a kNN point cloud, a mesh) but arbitrary node ids,
those fetches are random; visited in a bandwidth-reducing or partition-based order, the
destinations that follow each other share most of their sources, whose rows are still in
cache. A random graph has no such structure and gains nothing.

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
gives a fresh one. The CSR in that order is built once, with it.

``reorder="auto"`` (the layers' default) chooses per graph, so that a user gets the faster
order without knowing their graph's structure and pays nothing where it would not help:

* it considers only graphs that come back: the first call with an ``edge_index`` runs in
  the caller's order, and the choice is made on the second call with the same tensor and
  content (a full-batch graph, a layer stack's shared graph; a mini-batch loader's fresh
  ``edge_index`` every step is never reordered, so it never pays for an ordering);
* only square graphs (one node set) on the CPU backend, of at most :data:`AUTO_MAX_EDGES`
  edges (the ordering's own memory), whose packed K|V rows do not fit in cache (at least
  :data:`AUTO_MIN_KV_BYTES`; Cora's 2,708 rows of 1 KB do, and gain nothing);
* it computes the reverse Cuthill-McKee order (once; 0.1-0.4 s at E = 1M on one core) and
  counts the edges within a cache-sized window of their destination
  (:data:`AUTO_WINDOW_BYTES` of K|V rows). Where that order brings at least
  :data:`AUTO_MIN_GAIN` times as many as the caller's order (structure) and ``pymetis`` is
  installed, it also computes the METIS order (0.2-0.5 s and about 125 MB while it runs at
  E = 1M; graphs of at most :data:`AUTO_METIS_MAX_EDGES` edges) and takes whichever brings
  more; the order is kept only if at least :data:`AUTO_MIN_NEAR` of the edges are
  near, and :data:`AUTO_MIN_GAIN` times the caller's share. A 3-D kNN graph with shuffled
  ids goes from 4 % to 58 % with RCM and 91 % with METIS (kept: its training step 15-25 %
  faster); 100 communities of 500 nodes from 4 % to 17 % with RCM (not enough, and measured
  no faster) but 89 % with METIS (kept where pymetis is installed); a random or power-law
  graph stays at 4 % with RCM, so no partition is computed for it (METIS would take 4 s
  there) and its order is kept.

How an order is applied. On the CPU backend nothing is permuted: the graph's CSR is stored
with its rows and CSC columns in that order but the caller's node ids in it
(:class:`~gattn.kernels.csr.ScheduledCSR`, :func:`scheduled_csr`), so the kernels visit
destinations (and, in the backward, sources) in locality order while reading and writing q,
k, v, the output and the gradients where the caller has them. It is the same size as the
plain CSR (which ``"auto"`` lets go when it keeps an order), so the layer's memory is
unchanged. The reference backend (:func:`node_reordering`, ``"rcm"``/``"metis"`` only)
gathers ``q`` into the new destination order and ``k``/``v`` into the new source order, runs
on the relabelled edge list and gathers ``out`` back. Either way per-edge inputs and the
attention weights keep the caller's edge order, every gradient comes back in the caller's
node order, and results equal the plain call's up to summation order.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._cache import cached
from ._validate import check_edge_index
from .csr import CSR, ScheduledCSR, discard_csr, inverse_permutation

__all__ = ["AUTO", "AUTO_MAX_EDGES", "AUTO_METIS_MAX_EDGES", "AUTO_MIN_GAIN", "AUTO_MIN_KV_BYTES", "AUTO_MIN_NEAR",
           "AUTO_WINDOW_BYTES", "METIS_PART_SIZE", "REORDERINGS", "NodeReordering", "auto_csr", "auto_ordering",
           "check_reorder", "metis_available", "node_reordering", "scheduled_csr"]

#: The node orderings :func:`node_reordering` knows.
REORDERINGS = ("rcm", "metis")

#: ``reorder=AUTO``: reverse Cuthill-McKee or METIS where it pays, chosen per graph (the module
#: docstring).
AUTO = "auto"

#: ``"auto"`` leaves graphs with more edges in the caller's order: the ordering's scipy
#: adjacency and sort need about 40 bytes per edge (``reorder="rcm"`` still works there).
AUTO_MAX_EDGES = 1 << 24

#: ``"auto"`` tries METIS only on graphs of at most this many edges: while it runs, METIS needs
#: about 125 bytes per edge (measured: 125 MB at E = 1M), once, on top of the layer's memory.
AUTO_METIS_MAX_EDGES = 1 << 22

#: ``"auto"`` leaves graphs whose packed K|V rows take less memory in the caller's order.
AUTO_MIN_KV_BYTES = 8 << 20

#: The window of K|V rows around a destination counted as near: a core's L2 cache.
AUTO_WINDOW_BYTES = 1 << 20

#: ``"auto"`` keeps the ordering only with at least this share of edges near their destination
#: (a community graph brought to 17 % measured no faster, a kNN graph at 58 % 15-25 % faster)...
AUTO_MIN_NEAR = 0.3

#: ...and at least this many times the caller's order's share.
AUTO_MIN_GAIN = 2.0

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
    """``reorder`` validated: ``None``, ``"auto"`` or one of :data:`REORDERINGS` (``"metis"`` only
    with pymetis).

    Args:
        reorder (str, optional): ``None``, ``"auto"``, ``"rcm"`` or ``"metis"``.
        name (str, optional): the argument's name in error messages. (default: ``"reorder"``)

    Returns:
        str, optional: ``reorder`` unchanged.

    Raises:
        ValueError: an unknown ordering, or ``"metis"`` without ``pymetis`` installed.
    """
    if reorder is None or reorder == AUTO:
        return reorder
    if reorder not in REORDERINGS:
        raise ValueError(f"`{name}` must be None, {AUTO!r} or one of {REORDERINGS}, got {reorder!r}")
    if reorder == "metis" and not metis_available():
        raise ValueError(
            f"`{name}`='metis' needs the optional package pymetis (pip install pymetis, or gattn's "
            "'metis' extra); use 'rcm' (scipy, always available) instead"
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


def _metis_order(adjacency: Any, rcm_order: np.ndarray) -> np.ndarray:
    import pymetis

    num_nodes = adjacency.shape[0]
    rcm_rank = np.empty(num_nodes, dtype=np.int64)
    rcm_rank[rcm_order] = np.arange(num_nodes)
    parts = math.ceil(num_nodes / METIS_PART_SIZE)
    if parts < 2 or adjacency.nnz == 0:
        return np.argsort(rcm_rank, kind="stable")
    starts, adjacent = adjacency.indptr.astype(np.int64), adjacency.indices.astype(np.int64)
    if hasattr(pymetis, "CSRAdjacency"):  # pymetis >= 2025.2 (the xadj/adjncy keywords are deprecated there)
        _, membership = pymetis.part_graph(parts, pymetis.CSRAdjacency(starts, adjacent))
    else:
        _, membership = pymetis.part_graph(parts, xadj=starts, adjncy=adjacent)
    # Parts first, reverse Cuthill-McKee within a part (lexsort's last key is the primary one).
    return np.lexsort((rcm_rank, np.asarray(membership, dtype=np.int64))).astype(np.int64)


def _orders(edge_index: Tensor, num_src: int, num_dst: int, method: str,
            memo: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(source order, destination order) of `method`. The graph's symmetric adjacency and its
    reverse Cuthill-McKee order (which METIS also uses, inside its parts) are kept in `memo`,
    so that asking one graph for both orderings builds them once."""
    square = num_src == num_dst
    if "adjacency" not in memo:
        src = edge_index[0].long().numpy()
        dst = edge_index[1].long().numpy()
        num_nodes = num_src if square else num_src + num_dst
        memo["adjacency"] = _symmetric_adjacency(src, dst if square else dst + num_src, num_nodes)
        memo["rcm"] = _rcm_order(memo["adjacency"])
    order = memo["rcm"] if method == "rcm" else _metis_order(memo["adjacency"], memo["rcm"])
    if square:
        return order, order
    return order[order < num_src], order[order >= num_src] - num_src


def _check_method(edge_index: Tensor, method: str) -> None:
    check_reorder(method, "method")
    if edge_index.device.type != "cpu":
        raise ValueError(f"node reordering runs on CPU graphs only, `edge_index` is on {edge_index.device}")


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
    _check_method(edge_index, method)

    def build() -> NodeReordering:
        _, relabelled, src_order, dst_order = _relabelled(edge_index, num_src, num_dst, method)
        return NodeReordering(src_order, inverse_permutation(src_order), dst_order, inverse_permutation(dst_order),
                              relabelled, CSR(relabelled, num_src, num_dst))

    return cached(edge_index, ("reorder", method, int(num_src), int(num_dst)), build)


class _AutoChoice:
    """What ``reorder="auto"`` knows of one graph: how often it came, and the CSR kept."""

    __slots__ = ("calls", "csr", "method")

    def __init__(self) -> None:
        self.calls = 0
        self.csr: ScheduledCSR | None = None
        self.method: str | None = None  # the ordering kept: "rcm" or "metis"


def _auto_window(row_bytes: int) -> int:
    """:data:`AUTO_WINDOW_BYTES` in K|V rows: how far (in node ids) a source counts as near."""
    return max(1, AUTO_WINDOW_BYTES // max(1, row_bytes))


def _auto_choice(edge_index: Tensor, num_src: int, num_dst: int, row_bytes: int) -> _AutoChoice | None:
    """The graph's cached :class:`_AutoChoice`, or ``None`` for a graph ``"auto"`` never orders."""
    if (num_src != num_dst or edge_index.device.type != "cpu" or edge_index.size(1) > AUTO_MAX_EDGES
            or num_src * row_bytes < AUTO_MIN_KV_BYTES):
        return None
    return cached(edge_index, ("reorder-auto", int(num_src), _auto_window(row_bytes)), _AutoChoice)


def auto_ordering(edge_index: Tensor, num_nodes: int, row_bytes: int) -> str | None:
    """The ordering ``reorder="auto"`` keeps for a square graph: ``"rcm"``, ``"metis"``, or
    ``None`` (the caller's order: not decided yet, or no ordering paid). Asking does not
    count as a call.

    Args:
        edge_index (torch.Tensor): ``[2, E]`` integer (source, destination) pairs.
        num_nodes (int): ``N``.
        row_bytes (int): bytes of one node's keys and values.

    Returns:
        str, optional: the kept ordering's name.
    """
    choice = _auto_choice(edge_index, num_nodes, num_nodes, row_bytes)
    return None if choice is None or choice.csr is None else choice.method


def _near_share(edge_index: Tensor, window: int) -> float:
    """The share of edges whose source id is less than `window` away from their destination's."""
    if edge_index.size(1) == 0:
        return 0.0
    return float(((edge_index[0] - edge_index[1]).abs_() < window).double().mean())


def auto_csr(edge_index: Tensor, num_src: int, num_dst: int, row_bytes: int) -> ScheduledCSR | None:
    """The CSR ``reorder="auto"`` runs `edge_index` with (``None``: the plain one, caller's order).

    Counts the calls per graph (tensor and content, as the CSR cache does) and decides on the
    second one, once; the module docstring gives the rules. A kept ordering comes as a
    :class:`~gattn.kernels.csr.ScheduledCSR`: the CPU kernels visit destinations and sources
    in that order (reverse Cuthill-McKee, or METIS parts with pymetis installed) and read and
    write the caller's rows in place, so nothing is permuted and no memory is added (the
    plain CSR is let go).

    Args:
        edge_index (torch.Tensor): ``[2, E]`` integer (source, destination) pairs.
        num_src (int): ``N_src``.
        num_dst (int): ``N_dst``.
        row_bytes (int): bytes of one node's keys and values (``H*D + H*Dv`` elements).

    Returns:
        ScheduledCSR, optional: the graph in the kept order, or ``None``.
    """
    choice = _auto_choice(edge_index, num_src, num_dst, row_bytes)
    if choice is None:
        return None
    window = _auto_window(row_bytes)
    choice.calls += 1
    if choice.calls == 2:  # the graph came back: decide once
        graph: dict[str, Any] = {}  # the two orderings share one adjacency and one RCM order
        plain, *ordered = _relabelled(edge_index, num_src, num_dst, "rcm", graph)
        before, after = _near_share(plain, window), _near_share(ordered[0], window)
        method = "rcm"
        if after >= AUTO_MIN_GAIN * before and edge_index.size(1) <= AUTO_METIS_MAX_EDGES and metis_available():
            # reverse Cuthill-McKee found structure: a partition may pack more of it (communities)
            partitioned = _relabelled(edge_index, num_src, num_dst, "metis", graph)[1:]
            share = _near_share(partitioned[0], window)
            if share > after:
                ordered, after, method = partitioned, share, "metis"
        if after >= AUTO_MIN_NEAR and after >= AUTO_MIN_GAIN * before:
            choice.csr, choice.method = ScheduledCSR(*ordered), method
            discard_csr(edge_index, num_src, num_dst)
    return choice.csr


def _relabelled(edge_index: Tensor, num_src: int, num_dst: int, method: str,
                memo: dict[str, Any] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(the caller's edges as int64, the same with ids replaced by their rank in `method`'s
    order, the source order, the destination order); ids validated. Calls on one graph that
    share a `memo` dict validate it and build its adjacency once (see `_orders`)."""
    memo = {} if memo is None else memo
    if "plain" not in memo:
        check_edge_index(edge_index, num_src, num_dst)
        plain = edge_index.as_subclass(Tensor) if type(edge_index) is not Tensor else edge_index
        memo["plain"] = plain.long()
    plain = memo["plain"]
    src_order, dst_order = (torch.from_numpy(np.ascontiguousarray(o)) for o in
                            _orders(plain, num_src, num_dst, method, memo))
    relabelled = torch.stack([inverse_permutation(src_order)[plain[0]], inverse_permutation(dst_order)[plain[1]]])
    return plain, relabelled, src_order, dst_order


def scheduled_csr(edge_index: Tensor, num_src: int, num_dst: int, method: str) -> ScheduledCSR:
    """The cached :class:`~gattn.kernels.csr.ScheduledCSR` of `edge_index` in `method`'s order:
    what the CPU backend runs ``reorder="rcm"`` / ``"metis"`` on (nothing permuted).

    Args:
        edge_index (torch.Tensor): ``[2, E]`` integer (source, destination) pairs on the CPU.
        num_src (int): ``N_src``.
        num_dst (int): ``N_dst``.
        method (str): one of :data:`REORDERINGS`.

    Returns:
        ScheduledCSR: destinations and sources stored in that order, the caller's ids in it.

    Raises:
        ValueError: as :func:`node_reordering`.
    """
    _check_method(edge_index, method)

    def build() -> ScheduledCSR:
        _, relabelled, src_order, dst_order = _relabelled(edge_index, num_src, num_dst, method)
        return ScheduledCSR(relabelled, src_order, dst_order)

    return cached(edge_index, ("reorder-csr", method, int(num_src), int(num_dst)), build)


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
