"""CSR (by destination) and CSC (by source) views of an edge list, built once and cached.

Kernels walk the incoming edges of each destination as one contiguous run (CSR), and the
backward pass for keys and values walks the outgoing edges of each source (CSC). Both views
keep the permutation back to the caller's edge order, so per-edge inputs and outputs
(`edge_bias`, attention weights) stay in the order the caller gave.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._cache import cached, discard
from ._sort import stable_sort_by_key
from ._validate import check_edge_index, check_edge_index_shape

__all__ = ["CSR", "ScheduledCSR", "discard_csr", "get_csr", "index_from_ptr", "inverse_permutation", "ptr_from_index"]


def ptr_from_index(index: Tensor, num_segments: int) -> Tensor:
    """Row pointer of a *sorted* segment-id vector: segment ``s`` holds rows
    ``ptr[s]:ptr[s + 1]``.

    Args:
        index (torch.Tensor): segment id of each row, sorted ascending, shape ``[R]``, integer
            ids in ``[0, num_segments)``.
        num_segments (int): number of segments ``S`` (trailing empty segments included).

    Returns:
        torch.Tensor: ``ptr``, shape ``[S + 1]``, ``int64``, on ``index``'s device; ``ptr[0] = 0``
        and ``ptr[S] = R``.
    """
    counts = torch.bincount(index, minlength=num_segments)
    ptr = torch.zeros(num_segments + 1, dtype=torch.long, device=index.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def index_from_ptr(ptr: Tensor) -> Tensor:
    """Segment id of each row, from a row pointer (the inverse of :func:`ptr_from_index`).

    Args:
        ptr (torch.Tensor): row pointer, shape ``[S + 1]``, non-decreasing, ``ptr[0] = 0``.

    Returns:
        torch.Tensor: ``index``, shape ``[ptr[-1]]``, ``int64``: the sorted segment id of each row.
    """
    counts = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)


def _stable_sort(keys: Tensor, num_keys: int, carry: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(ptr [num_keys + 1], positions [E] of a stable sort, ``carry`` [C, E] in that order) of
    node ids in [0, num_keys)."""
    if keys.device.type == "cpu":
        return stable_sort_by_key(keys, num_keys, carry)
    order = torch.argsort(keys, stable=True)
    return ptr_from_index(keys[order], num_keys), order, carry[:, order]


def _alias(tensor: Tensor) -> Tensor:
    """A tensor on `tensor`'s memory that is not a view of it (no reference to its base)."""
    alias = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    return alias.set_(tensor.untyped_storage(), tensor.storage_offset(), tensor.size(), tensor.stride())


class CSR:
    """Edges of a (possibly bipartite) graph grouped by destination.

    Args:
        edge_index (Tensor): (source, destination) of each edge. Shape :math:`(2, E)`.
        num_src (int): the number of source nodes.
        num_dst (int): the number of destination nodes.

    Attributes:
        rowptr: [N_dst + 1] start of each destination's incoming edges.
        col: [E] source node of each edge, in destination-sorted order.
        perm: [E] caller's edge id of each destination-sorted position.
        num_src, num_dst: node counts.
    The transposed view (`colptr`, `row`, the CSR position of each source-sorted edge and,
    only for layers with per-edge inputs, `csc_edge`: its caller's edge id) is built on first
    use, by backward passes only.
    """

    def __init__(self, edge_index: Tensor, num_src: int, num_dst: int):
        edge_index = edge_index.as_subclass(Tensor) if type(edge_index) is not Tensor else edge_index
        src, dst = edge_index[0].long(), edge_index[1].long()
        self.num_src, self.num_dst = int(num_src), int(num_dst)
        self.num_edges = int(src.numel())
        # A stable sort keeps the caller's order within a row: results do not depend on
        # the sort algorithm, and an already sorted edge list keeps the identity.
        self.is_sorted = bool((dst[1:] >= dst[:-1]).all()) if self.num_edges > 1 else True
        # On CPU a counting sort (O(E), numba) gives the same permutation and the row
        # pointer in one go; a mini-batch loader's fresh edge_index pays it every step.
        if self.is_sorted:
            self.perm = torch.arange(self.num_edges, device=src.device)
            # the caller's rows, shared rather than copied, through aliases that are not views: a
            # view would keep the caller's tensor object alive, and with it this cache entry
            # (whose weak reference to that tensor would never fire)
            self.col = _alias(src.contiguous())
            self.rowptr = ptr_from_index(dst, self.num_dst)
            self._dst_sorted: Tensor | None = _alias(dst)
        else:
            # only the sources travel with the sort (a view of edge_index when it is int64): the
            # sorted destinations follow from rowptr whenever they are needed, rather than being
            # kept (E ids: 0.5 GB at ogbn-products' 62M edges)
            carry = src.unsqueeze(0)
            self.rowptr, self.perm, carried = _stable_sort(dst, self.num_dst, carry)
            self.col = carried[0]
            self._dst_sorted = None
        self._csc: tuple[Tensor, Tensor, Tensor] | None = None  # (colptr, row, csc_pos)
        self._csc_edge: Tensor | None = None
        self._bounds: dict = {}
        self.plans: dict = {}  # work plans of the backends, built on first use
        self._dst_caller: Tensor | None = None
        # the node of each stored row / CSC column: None here (row i is destination i); a
        # ScheduledCSR stores them in a locality order
        self.dst_nodes: Tensor | None = None
        self.src_nodes: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.rowptr.device

    def csc_index(self) -> tuple[Tensor, Tensor, Tensor]:
        """(colptr [N_src+1], row [E] destinations, csc_pos [E] CSR position of each
        source-sorted edge): what a backward pass over the sources reads, with per-edge data
        kept in CSR order. The sort carries only the destinations (2E ids kept, not 3E)."""
        if self._csc is None:
            colptr, csc_pos, carried = _stable_sort(self.col, self.num_src, self.sorted_destinations().unsqueeze(0))
            self._csc = (colptr, carried[0], csc_pos)
        return self._csc

    def csc(self) -> tuple[Tensor, Tensor, Tensor]:
        """(colptr [N_src+1], row [E] destinations, csc_edge [E] the caller's edge ids)."""
        colptr, row, csc_pos = self.csc_index()
        if self._csc_edge is None:
            self._csc_edge = self.perm[csc_pos]
        return colptr, row, self._csc_edge

    def bounds(self, make, transposed: bool = False):
        """Work partition of the rows (or, transposed, the sources), made by `make(ptr)`
        once per backend and cached with the CSR."""
        key = (make, transposed)
        if key not in self._bounds:
            self._bounds[key] = make(self.csc_index()[0] if transposed else self.rowptr)
        return self._bounds[key]

    def sorted_destinations(self) -> Tensor:
        """Destination of every edge, in destination-sorted order [E] (made from ``rowptr``
        on each call unless the caller's edges were already sorted)."""
        return self._dst_sorted if self._dst_sorted is not None else index_from_ptr(self.rowptr)

    def dst_caller_order(self) -> Tensor:
        """Destination of every edge, in the caller's edge order [E]."""
        if self._dst_caller is None:
            self._dst_caller = self.to_caller_order(self.sorted_destinations())
        return self._dst_caller

    def to_caller_order(self, per_edge_sorted: Tensor) -> Tensor:
        """Scatter a destination-sorted per-edge tensor back to the caller's edge order."""
        if self.is_sorted:
            return per_edge_sorted
        out = torch.empty_like(per_edge_sorted)
        out[self.perm] = per_edge_sorted
        return out

    def to_sorted_order(self, per_edge: Tensor) -> Tensor:
        """Gather a per-edge tensor in the caller's order into destination-sorted order."""
        return per_edge if self.is_sorted else per_edge[self.perm]

    def __repr__(self) -> str:
        return f"CSR(num_src={self.num_src}, num_dst={self.num_dst}, num_edges={self.num_edges})"


def inverse_permutation(order: Tensor) -> Tensor:
    """``rank`` with ``rank[order[r]] = r``: the position of each node in an ordering.

    Args:
        order (torch.Tensor): a permutation of ``0 .. n-1``, shape ``[n]``.

    Returns:
        torch.Tensor: its inverse, shape ``[n]``, on ``order``'s device.
    """
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank


class ScheduledCSR(CSR):
    """A CSR whose rows (destinations) and CSC columns (sources) are stored in a locality
    order, while every id in it is the caller's node id: the CPU kernels visit destinations
    and sources in that order and read and write the caller's rows, so nothing is permuted
    (``reorder="auto"``, :mod:`gattn.kernels.reorder`).

    Args:
        relabelled (Tensor): the edges ``[2, E]`` in the caller's edge order, with node ids
            replaced by their rank in the order (``[src_rank[src], dst_rank[dst]]``).
        src_order (Tensor): ``src_order[rank] = node`` for the sources, ``[N_src]``.
        dst_order (Tensor): the same for the destinations, ``[N_dst]``.

    Attributes:
        dst_nodes: [N_dst] the destination of each stored row (``dst_order``).
        src_nodes: [N_src] the source of each stored CSC column (``src_order``).

    Besides those of :class:`CSR`: ``col`` and the CSC's ``row`` hold the caller's node ids;
    ``rowptr``, ``colptr``, ``perm`` and ``csc_pos`` are positions, as in :class:`CSR`. Only
    the CPU backend reads this form.
    """

    def __init__(self, relabelled: Tensor, src_order: Tensor, dst_order: Tensor):
        super().__init__(relabelled, src_order.numel(), dst_order.numel())
        self._dst_sorted = None  # an alias of the relabelled ids, not the caller's
        self.dst_nodes, self.src_nodes = dst_order, src_order
        self._src_rank = inverse_permutation(src_order)
        self.col = src_order[self.col]

    def csc_index(self) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`CSR.csc_index`, columns in the sources' order, ``row`` the caller's ids."""
        if self._csc is None:
            stored_dst = index_from_ptr(self.rowptr)
            colptr, csc_pos, carried = _stable_sort(self._src_rank[self.col], self.num_src, stored_dst.unsqueeze(0))
            self._csc = (colptr, self.dst_nodes[carried[0]], csc_pos)
        return self._csc

    def sorted_destinations(self) -> Tensor:
        """The destination (the caller's id) of every edge, in stored order [E]."""
        return self.dst_nodes[index_from_ptr(self.rowptr)]

    def __repr__(self) -> str:
        return f"ScheduledCSR(num_src={self.num_src}, num_dst={self.num_dst}, num_edges={self.num_edges})"


def get_csr(edge_index: Tensor | CSR, num_src: int, num_dst: int) -> CSR:
    """Return the CSR of `edge_index`, validating and building it only on first use.

    The CSR is kept in gattn's module-level cache (:mod:`gattn.kernels._cache`), never on
    the tensor: it is reused while the same tensor (same memory, shape, strides, dtype,
    device) holds the same content (a checksum of all its indices is compared on every
    call) for the same node counts, and rebuilt otherwise. A PyG ``Data.edge_index`` or an
    ``EdgeIndex`` is therefore sorted once per training run, and an in-place edit of any
    kind (even one that bypasses the version counter) gives a fresh CSR.

    Args:
        edge_index (torch.Tensor or CSR): edges ``[2, E]`` (source row 0, destination row 1,
            integer ids in ``[0, num_src)`` and ``[0, num_dst)``), or a :class:`CSR` already
            built for the same node counts (returned as is).
        num_src (int): number of source nodes ``N_src``.
        num_dst (int): number of destination nodes ``N_dst``.

    Returns:
        CSR: the edges grouped by destination.

    Raises:
        TypeError: ``edge_index`` is not a dense integer tensor (or a :class:`CSR`).
        ValueError: ``edge_index`` is not ``[2, E]``, holds ids outside the node counts, or is a
            :class:`CSR` for other node counts.
    """
    if isinstance(edge_index, CSR):
        if (edge_index.num_src, edge_index.num_dst) != (num_src, num_dst):
            raise ValueError(
                f"`edge_index` CSR is for ({edge_index.num_src}, {edge_index.num_dst}) nodes, "
                f"but the inputs have ({num_src}, {num_dst})"
            )
        return edge_index
    check_edge_index_shape(edge_index)

    def build() -> CSR:
        check_edge_index(edge_index, num_src, num_dst)
        return CSR(edge_index, num_src, num_dst)

    return cached(edge_index, _csr_key(num_src, num_dst), build)


def _csr_key(num_src: int, num_dst: int) -> tuple:
    return ("csr", int(num_src), int(num_dst))


def discard_csr(edge_index: Tensor, num_src: int, num_dst: int) -> None:
    """Let go of the cached CSR of `edge_index` (when the kernels run on another form of it).

    Args:
        edge_index (torch.Tensor): the ``[2, E]`` tensor the CSR was built from.
        num_src (int): ``N_src`` it was built for.
        num_dst (int): ``N_dst`` it was built for.
    """
    discard(edge_index, _csr_key(num_src, num_dst))
