"""The lowest eigenpairs of many small symmetric matrices, in numba, without LAPACK.

LAPACK spends most of its time on call overhead and scalar code for matrices of a few
dozen rows: ``torch.linalg.eigh`` (MKL) takes 110-150 us on one 34 x 34 matrix, and it
computes every eigenvector. Laplacian encodings need only the ``k + 1`` smallest. Here up
to ``LANES`` matrices of the same size are solved together (``a[lane, row, col]``): each is
tridiagonalised on its own, with row loops that LLVM vectorises, and the bisection and
inverse iteration then run over all (eigenvalue, lane) slots at once, so one vectorised
loop advances every slot and slot-dependent choices (pivoting) are selects, not branches.
For each matrix:

1. Householder reduction to tridiagonal form, ``T = Q^T A Q`` (reflectors kept in place);
2. bisection with Sturm counts for exactly the wanted eigenvalues (the count is exact, so
   the i-th eigenvalue is found by its index: nothing is missed or found twice);
3. inverse iteration on ``T`` for each eigenvalue (tridiagonal LU with partial pivoting, as
   LAPACK's ``dgttrf``); each vector is orthogonalised against the previous ones, which
   also gives an orthonormal basis of a repeated eigenvalue's eigenspace;
4. the back-transformation ``z = Q y`` of only those vectors.

This is LAPACK's ``dsytrd`` + ``dstebz`` + ``dstein`` + ``dormtr`` path: eigenvalues to a
few ulps of ``||A||``, residuals ``||A z - lambda z||`` and loss of orthogonality of order
``eps ||A||`` (``tests/transforms/test_small_eigen.py`` checks both against LAPACK).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from gattn.kernels import _numba_setup
from gattn.kernels._sort import _counting_sort

_numba_setup.launch_pool()  # keeps torch's thread count (see _numba_setup)

LANES = 4  # matrices per SIMD group (one AVX2 register of float64)
_EPS = float(np.finfo(np.float64).eps)
_SAFE_MIN = float(np.finfo(np.float64).tiny)
_FAST = {"nsz", "contract", "reassoc", "arcp"}
_jit = dict(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")


@njit(**_jit)
def _reflector(a, j, v):
    """Householder vector of row j of ``a`` into ``v[j+1:]``; returns (tau, beta).

    ``tau == 0`` when the row is already reduced (``H_j = I``, beta = a[j, j+1]).
    """
    n = a.shape[0]
    end = np.uint64(n)
    row = np.uint64(j)
    first = np.uint64(j + 1)
    alpha = a[row, first]
    sigma = 0.0
    for c in range(first + np.uint64(1), end):
        sigma += a[row, c] * a[row, c]
    if sigma == 0.0:
        return 0.0, alpha
    norm = np.sqrt(alpha * alpha + sigma)
    beta = -norm if alpha >= 0.0 else norm
    scale = 1.0 / (alpha - beta)
    v[first] = 1.0
    for c in range(first + np.uint64(1), end):
        v[c] = a[row, c] * scale
    return (beta - alpha) / beta, beta


@njit(**_jit)
def _tridiagonalize(a, diag, off, tau, v, p):
    """Reduce symmetric ``a`` [n, n] in place to tridiagonal (diag, off).

    Reflector j is ``H_j = I - tau_j v v^T`` with ``v = (1, a[j, j+2:])`` on indices
    ``j+1 .. n-1``, and ``Q = H_0 H_1 ... H_{n-3}``. The whole trailing block is updated
    (both triangles) so the inner loops are contiguous row operations, and the product
    ``B v`` that the next step needs is accumulated while each row is updated (one pass
    over the matrix per step, not two). Indices in the hot loops are unsigned: numba then
    emits no negative-index wraparound and LLVM vectorises them.
    """
    n = a.shape[0]
    end = np.uint64(n)
    v_next = np.empty(n)
    p_next = np.empty(n)
    ready = False  # p holds B v for the current step (accumulated by the previous one)
    for j in range(n - 2):
        row = np.uint64(j)
        first = np.uint64(j + 1)
        if not ready:
            t, beta = _reflector(a, j, v)
        off[j] = beta
        tau[j] = t
        if t == 0.0:
            ready = False
            continue
        for c in range(first + np.uint64(1), end):
            a[row, c] = v[c]  # kept for the back-transformation
        if not ready:
            for r in range(first, end):
                total = 0.0
                for c in range(first, end):
                    total += a[r, c] * v[c]
                p[r] = total
        # w = tau B v - (tau^2 / 2)(v . B v) v
        dot = 0.0
        for r in range(first, end):
            p[r] *= t
            dot += v[r] * p[r]
        half = 0.5 * t * dot
        for r in range(first, end):
            p[r] -= half * v[r]
        # B -= v w^T + w v^T; row j+1 first, since it defines the next reflector.
        v_r = v[first]
        p_r = p[first]
        for c in range(first, end):
            a[first, c] -= v_r * p[c] + p_r * v[c]
        ready = False
        second = first + np.uint64(1)
        if j + 1 < n - 2:
            t_next, beta_next = _reflector(a, j + 1, v_next)
            ready = t_next != 0.0
        if ready:
            # Update the remaining rows and accumulate (B' v_next)[r] on the way.
            for r in range(second, end):
                v_r = v[r]
                p_r = p[r]
                updated = a[r, first] - (v_r * p[first] + p_r * v[first])
                a[r, first] = updated
                total = 0.0
                for c in range(second, end):
                    updated = a[r, c] - (v_r * p[c] + p_r * v[c])
                    a[r, c] = updated
                    total += updated * v_next[c]
                p_next[r] = total
            for c in range(second, end):
                v[c] = v_next[c]
                p[c] = p_next[c]
            t = t_next
            beta = beta_next
        else:
            for r in range(second, end):
                v_r = v[r]
                p_r = p[r]
                for c in range(first, end):
                    a[r, c] -= v_r * p[c] + p_r * v[c]
    for i in range(n):
        diag[i] = a[i, i]
    if n >= 2:
        off[n - 2] = a[n - 2, n - 1]
        tau[n - 2] = 0.0


@njit(**_jit)
def _bisect_lowest(diag, off, count, values, norm, known_zero):
    """The ``count`` smallest eigenvalues of each lane's tridiagonal, ascending.

    Every (eigenvalue, lane) pair is one slot ``(s - first) * lanes + lane`` of flat
    arrays, so one Sturm-count step over all slots is a single contiguous, vectorisable
    loop. With ``known_zero`` the smallest eigenvalue of every lane is known to be exactly
    0 (a connected Laplacian) and is not searched. Eigenvalues are found to an absolute
    accuracy of ``1e-12 ||T||``: the inverse iteration that follows converges from there,
    and eigenvalues closer together than that form one eigenspace to working accuracy.
    """
    lanes, n = diag.shape
    first = 1 if known_zero and count > 0 else 0
    slots = (count - first) * lanes
    diag_t = np.empty((n, slots))  # diag_t[i, slot] = diag[i, lane of slot]
    off2_t = np.zeros((n, slots))
    lo = np.empty(slots)
    hi = np.empty(slots)
    tol = np.empty(slots)
    pivmin = np.empty(slots)
    for b in range(lanes):
        low_bound = diag[b, 0]
        high_bound = diag[b, 0]
        largest = 0.0
        for i in range(n):
            radius = 0.0
            if i > 0:
                radius += abs(off[b, i - 1])
            if i < n - 1:
                radius += abs(off[b, i])
            low_bound = min(low_bound, diag[b, i] - radius)
            high_bound = max(high_bound, diag[b, i] + radius)
            largest = max(largest, abs(diag[b, i]) + radius)
        largest = max(largest, _SAFE_MIN)
        norm[b] = largest
        lane_pivmin = _EPS * largest  # relative pivot floor (no underflow in products)
        lane_tol = max(2.0 * _EPS, 1e-12) * largest
        for s in range(first, count):
            slot = (s - first) * lanes + b
            pivmin[slot] = lane_pivmin
            tol[slot] = lane_tol
            lo[slot] = low_bound - 2.0 * lane_tol - lane_pivmin
            hi[slot] = high_bound + 2.0 * lane_tol + lane_pivmin
            for i in range(n):
                diag_t[i, slot] = diag[b, i]
                if i < n - 1:
                    off2_t[i, slot] = off[b, i] * off[b, i]
    mid = np.empty(slots)
    prev = np.empty(slots)
    cur = np.empty(slots)
    below = np.empty(slots)
    rank = np.empty(slots)  # the eigenvalue index of each slot
    for slot in range(slots):
        rank[slot] = first + slot // lanes
    for _ in range(128):
        active = 0
        for slot in range(slots):
            mid[slot] = 0.5 * (lo[slot] + hi[slot])
            width = hi[slot] - lo[slot]
            limit = tol[slot] + 2.0 * _EPS * max(abs(lo[slot]), abs(hi[slot]))
            active += 1 if width > limit else 0
        if active == 0:
            break
        # Sturm counts: the number of negative pivots q_i of T - mid I is the number of
        # eigenvalues below mid. The pivots are carried as ratios of the leading minors
        # p_i = (d_i - mid) p_{i-1} - e_{i-1}^2 p_{i-2} (q_i = p_i / p_{i-1}), which needs
        # no division; a pivot smaller than eps*||T|| is replaced by -eps*||T|| (LAPACK
        # does the same with its pivmin), and the pair is rescaled every 16 rows.
        for slot in range(slots):
            value = diag_t[0, slot] - mid[slot]
            value = -pivmin[slot] if abs(value) < pivmin[slot] else value
            prev[slot] = 1.0
            cur[slot] = value
            below[slot] = 1.0 if value < 0.0 else 0.0
        one = np.uint64(1)
        for i in range(one, np.uint64(n)):
            for slot in range(np.uint64(slots)):
                c = cur[slot]
                value = (diag_t[i, slot] - mid[slot]) * c - off2_t[i - one, slot] * prev[slot]
                value = -pivmin[slot] * c if abs(value) < pivmin[slot] * abs(c) else value
                below[slot] += 1.0 if value * c < 0.0 else 0.0
                prev[slot] = c
                cur[slot] = value
            if i % 16 == 0:
                for slot in range(slots):
                    scale = 1.0 / abs(cur[slot])
                    prev[slot] *= scale
                    cur[slot] *= scale
        for slot in range(slots):
            # more than `rank` eigenvalues below mid: eigenvalue number `rank` is below it
            take_low = below[slot] > rank[slot]
            hi[slot] = mid[slot] if take_low else hi[slot]
            lo[slot] = lo[slot] if take_low else mid[slot]
    for b in range(lanes):
        if first:
            values[b, 0] = 0.0
        for s in range(first, count):
            slot = (s - first) * lanes + b
            values[b, s] = 0.5 * (lo[slot] + hi[slot])


@njit(**_jit)
def _inverse_iteration(diag, off, values, count, norm, vectors):
    """Eigenvectors of each lane's tridiagonal for ``values`` into ``vectors[lane, :count]``.

    All (eigenvalue, lane) slots are iterated together, so the dependent divisions of the
    LU factorisations and solves of different slots overlap; the pivoting choice of each
    slot is a select. Vectors of close eigenvalues (closer than 1e-3 ||T||, as in LAPACK's
    dstein; farther ones come out orthogonal) are orthogonalised in order after each sweep.
    """
    lanes, n = diag.shape
    slots = count * lanes
    low = np.empty((n, slots))  # L multipliers
    dg = np.empty((n, slots))  # U diagonal (inverted after the factorisation)
    up1 = np.empty((n, slots))  # U first superdiagonal
    up2 = np.zeros((n, slots))  # U second superdiagonal
    swap = np.zeros((n, slots))  # 1.0 where rows i and i+1 were interchanged
    x = np.empty((n, slots))
    pivmin = np.empty(slots)
    for s in range(count):
        for b in range(lanes):
            slot = s * lanes + b
            pivmin[slot] = max(_EPS * norm[b], _SAFE_MIN)
            for i in range(n):
                dg[i, slot] = diag[b, i] - values[b, s]
                up1[i, slot] = off[b, i] if i < n - 1 else 0.0
                low[i, slot] = up1[i, slot]
    # LU with partial pivoting of T - lambda I (as LAPACK's dgttrf), every slot at once.
    for i in range(n - 1):
        for slot in range(np.uint64(slots)):
            d_i = dg[i, slot]
            l_i = low[i, slot]
            u_i = up1[i, slot]
            d_next = dg[i + 1, slot]
            u_next = up1[i + 1, slot]
            keep = abs(d_i) >= abs(l_i)
            if abs(d_i) < pivmin[slot]:
                d_i = pivmin[slot] if d_i >= 0.0 else -pivmin[slot]
            factor = (l_i if keep else d_i) / (d_i if keep else l_i)
            dg[i, slot] = d_i if keep else l_i
            up1[i, slot] = u_i if keep else d_next
            dg[i + 1, slot] = d_next - factor * u_i if keep else u_i - factor * d_next
            up2[i, slot] = 0.0 if keep else u_next
            up1[i + 1, slot] = u_next if keep else -factor * u_next
            low[i, slot] = factor
            swap[i, slot] = 0.0 if keep else 1.0
    for i in range(n):
        for slot in range(slots):
            value = dg[i, slot]
            if abs(value) < pivmin[slot]:
                value = pivmin[slot] if value >= 0.0 else -pivmin[slot]
            dg[i, slot] = 1.0 / value
    # Deterministic pseudo-random start (xorshift64), the same for every lane.
    state = np.uint64(0x9E3779B97F4A7C15)
    for s in range(count):
        for i in range(n):
            state ^= state << np.uint64(13)
            state ^= state >> np.uint64(7)
            state ^= state << np.uint64(17)
            start = np.float64(state >> np.uint64(11)) / 9007199254740992.0 - 0.5
            for b in range(lanes):
                x[i, s * lanes + b] = start
    scale = np.empty(slots)
    for sweep in range(2):
        # Solve L U x = b: forward with the recorded interchanges, then backward.
        for i in range(n - 1):
            for slot in range(np.uint64(slots)):
                x_i = x[i, slot]
                x_next = x[i + 1, slot]
                swapped = swap[i, slot] != 0.0
                x[i, slot] = x_next if swapped else x_i
                x[i + 1, slot] = (x_i - low[i, slot] * x_next) if swapped else (
                    x_next - low[i, slot] * x_i
                )
        for slot in range(slots):
            x[n - 1, slot] *= dg[n - 1, slot]
            if n >= 2:
                x[n - 2, slot] = (x[n - 2, slot] - up1[n - 2, slot] * x[n - 1, slot]) * dg[
                    n - 2, slot
                ]
        for i in range(n - 3, -1, -1):
            for slot in range(np.uint64(slots)):
                x[i, slot] = (
                    x[i, slot] - up1[i, slot] * x[i + 1, slot] - up2[i, slot] * x[i + 2, slot]
                ) * dg[i, slot]
        # Scale by the largest entry (no overflow), then orthogonalise and normalise.
        for slot in range(slots):
            scale[slot] = 0.0
        for i in range(n):
            for slot in range(slots):
                scale[slot] = max(scale[slot], abs(x[i, slot]))
        for i in range(n):
            for slot in range(slots):
                x[i, slot] /= scale[slot]
        for b in range(lanes):
            cluster = 0
            for s in range(count):
                slot = s * lanes + b
                if s > 0 and values[b, s] - values[b, s - 1] > 1e-3 * norm[b]:
                    cluster = s
                for _ in range(2 if sweep == 1 else 1):
                    for r in range(cluster, s):
                        other = r * lanes + b
                        dot = 0.0
                        for i in range(n):
                            dot += x[i, slot] * x[i, other]
                        for i in range(n):
                            x[i, slot] -= dot * x[i, other]
                total = 0.0
                for i in range(n):
                    total += x[i, slot] * x[i, slot]
                inv = 1.0 / np.sqrt(total)
                for i in range(n):
                    x[i, slot] *= inv
    # The Rayleigh quotients x^T T x refine the eigenvalues from the bisection tolerance
    # to working accuracy (their error is of the order of the squared residual).
    for b in range(lanes):
        for s in range(count):
            slot = s * lanes + b
            quotient = 0.0
            for i in range(n):
                quotient += diag[b, i] * x[i, slot] * x[i, slot]
                vectors[b, s, i] = x[i, slot]
            for i in range(n - 1):
                quotient += 2.0 * off[b, i] * x[i, slot] * x[i + 1, slot]
            if values[b, s] != 0.0 or s > 0:  # an exact zero (known_zero) stays exact
                values[b, s] = quotient


@njit(**_jit)
def _back_transform(a, tau, vectors, count):
    """``vectors[s] <- Q vectors[s]`` with the reflectors left by _tridiagonalize."""
    n = a.shape[0]
    end = np.uint64(n)
    for j in range(n - 3, -1, -1):
        t = tau[j]
        if t == 0.0:
            continue
        row = np.uint64(j)
        first = np.uint64(j + 1)
        for s in range(count):
            dot = vectors[s, first]
            for i in range(first + np.uint64(1), end):
                dot += a[row, i] * vectors[s, i]
            dot *= t
            vectors[s, first] -= dot
            for i in range(first + np.uint64(1), end):
                vectors[s, i] -= dot * a[row, i]


@njit(**_jit)
def lowest_eigenpairs(a, count, values, vectors, known_zero=False):
    """The ``count`` smallest eigenpairs of each symmetric ``a[lane]`` [n, n].

    ``known_zero``: every matrix is the Laplacian of a connected graph, so its smallest
    eigenvalue is exactly 0 (it is then not searched, only its vector computed).

    ``a`` [lanes, n, n] is overwritten (any number of lanes). ``values[lane, :count]`` ascending;
    ``vectors[lane, :count]`` orthonormal rows.
    """
    lanes, n = a.shape[0], a.shape[1]
    diag = np.empty((lanes, n))
    off = np.zeros((lanes, n))
    tau = np.zeros((lanes, n))
    v = np.empty(n)
    p = np.empty(n)
    norm = np.empty(lanes)
    for b in range(lanes):
        _tridiagonalize(a[b], diag[b], off[b], tau[b], v, p)
    _bisect_lowest(diag, off, count, values, norm, known_zero)
    _inverse_iteration(diag, off, values, count, norm, vectors)
    for b in range(lanes):
        _back_transform(a[b], tau[b], vectors[b], count)


@njit(**_jit)
def _normalise_laplacian(lap):
    """Turn a 0/1 adjacency [n, n] into ``I - D^-1/2 A D^-1/2`` in place.

    An isolated node has its degree clipped to 1, so ``L_ii = 1``.
    """
    n = lap.shape[0]
    inv_sqrt = np.empty(n)
    for i in range(n):
        degree = 0.0
        for j in range(n):
            degree += lap[i, j]
        inv_sqrt[i] = 1.0 / np.sqrt(max(degree, 1.0))
    for i in range(n):
        for j in range(n):
            lap[i, j] = -lap[i, j] * inv_sqrt[i] * inv_sqrt[j]
        lap[i, i] += 1.0


@njit(**_jit)
def _sign_of_largest(vector):
    """+1 or -1: the sign that makes the entry of largest magnitude positive."""
    best = 0
    for i in range(1, vector.size):
        if abs(vector[i]) > abs(vector[best]):
            best = i
    return -1.0 if vector[best] < 0.0 else 1.0


@njit(cache=True, nogil=True, error_model="numpy")
def eigenpairs_of_matrices(matrices, count):
    """Test and benchmark entry: the lowest eigenpairs of G symmetric [n, n] matrices."""
    total, n = matrices.shape[0], matrices.shape[1]
    values_out = np.zeros((total, count))
    vectors_out = np.zeros((total, count, n))
    for group in range(0, total, LANES):
        lanes = min(LANES, total - group)
        a = matrices[group:group + lanes].copy()
        values = np.empty((lanes, count))
        vectors = np.empty((lanes, count, n))
        lowest_eigenpairs(a, count, values, vectors)
        values_out[group:group + lanes] = values
        vectors_out[group:group + lanes] = vectors
    return values_out, vectors_out


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def laplacian_units(
    groups, group_size, unit_ptr, unit_nodes, edge_ptr, edge_u, edge_v, skip, k,
    values_out, vectors_out, connected,
):
    """Normalised-Laplacian encodings of independent node sets ("units"), LANES at a time.

    ``groups`` [num_groups, LANES]: units of equal size ``group_size[group]`` solved
    together (a group's units come first in its row, -1 fills the rest). Unit ``g`` has nodes ``unit_nodes[unit_ptr[g]:
    unit_ptr[g+1]]`` and edges ``edge_ptr[g]:edge_ptr[g+1]`` of (edge_u, edge_v), given as
    positions inside the unit (either direction, duplicates allowed, no self-loops). The
    eigenpairs ``skip[g] .. skip[g]+k-1`` are written to ``values_out[g]`` and to the rows of
    ``vectors_out`` of the unit's nodes, each vector with its largest entry positive.
    ``connected``: every unit is connected (its smallest eigenvalue is exactly 0).
    """
    for group in prange(groups.shape[0]):
        n = group_size[group]
        lanes = 0  # the units of a group fill a prefix of its row
        first = 0
        while lanes < LANES and groups[group, lanes] >= 0:
            first = max(first, skip[groups[group, lanes]])
            lanes += 1
        count = min(first + k, n)
        if count == 0:
            continue
        a = np.zeros((lanes, n, n))
        for b in range(lanes):
            g = groups[group, b]
            for e in range(edge_ptr[g], edge_ptr[g + 1]):
                a[b, edge_u[e], edge_v[e]] = 1.0
                a[b, edge_v[e], edge_u[e]] = 1.0
            _normalise_laplacian(a[b])
        values = np.empty((lanes, count))
        vectors = np.empty((lanes, count, n))
        lowest_eigenpairs(a, count, values, vectors, connected and n >= 2)
        for b in range(lanes):
            g = groups[group, b]
            start = unit_ptr[g]
            for s in range(skip[g], min(skip[g] + k, n)):
                sign = _sign_of_largest(vectors[b, s])
                column = s - skip[g]
                values_out[g, column] = values[b, s]
                for i in range(n):
                    vectors_out[unit_nodes[start + i], column] = sign * vectors[b, s, i]


@njit(cache=True, nogil=True)
def group_units(sizes, limit, lanes):
    """Units with 1..limit nodes, sorted by size and cut into groups of ``lanes`` units.

    Returns ``groups`` [num_groups, lanes] (-1 pads the last group of a size) and the size
    of each group.
    """
    counts = np.zeros(limit + 1, np.int64)
    for size in sizes:
        if 0 < size <= limit:
            counts[size] += 1
    num_groups = 0
    for size in range(limit + 1):
        num_groups += (counts[size] + lanes - 1) // lanes
    groups = np.full((num_groups, lanes), -1, np.int64)
    group_size = np.zeros(num_groups, np.int64)
    first_group = np.zeros(limit + 1, np.int64)
    position = 0
    for size in range(limit + 1):
        first_group[size] = position
        for g in range((counts[size] + lanes - 1) // lanes):
            group_size[position + g] = size
        position += (counts[size] + lanes - 1) // lanes
    filled = np.zeros(limit + 1, np.int64)
    for unit in range(sizes.size):
        size = sizes[unit]
        if 0 < size <= limit:
            slot = filled[size]
            groups[first_group[size] + slot // lanes, slot % lanes] = unit
            filled[size] += 1
    return groups, group_size


@njit(cache=True, nogil=True)
def _root(parent, node):
    """Union-find root of ``node``, halving the path on the way."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


@njit(cache=True, nogil=True)
def connected_units(total, u, v):
    """Connected components of an undirected graph on ``total`` nodes (edges ``u``-``v``),
    laid out as units: (labels [total], unit_ptr [units + 1], unit_nodes [total],
    local [total]).

    Components are numbered in the order of their smallest node (as
    ``scipy.sparse.csgraph.connected_components`` numbers them); ``unit_nodes`` holds each
    component's nodes in ascending order, components one after the other (``unit_ptr``
    delimits them), and ``local[i]`` is node i's position inside its component. One
    union-find pass and the CSR build's counting sort (:mod:`gattn.kernels._sort`),
    O(total + edges).
    """
    parent = np.arange(total)
    for e in range(u.size):
        a = _root(parent, u[e])
        b = _root(parent, v[e])
        if a != b:  # the smaller root stays the root: roots are components' smallest nodes
            if a < b:
                parent[b] = a
            else:
                parent[a] = b
    labels = np.empty(total, np.int64)
    label_of_root = np.full(total, -1, np.int64)
    units = 0
    for node in range(total):
        root = _root(parent, node)
        if label_of_root[root] < 0:
            label_of_root[root] = units
            units += 1
        labels[node] = label_of_root[root]
    unit_ptr = np.empty(units + 1, np.int64)
    unit_nodes = np.empty(total, np.int64)
    nothing = np.empty((0, total), np.int64)
    _counting_sort(labels, units, nothing, unit_ptr, unit_nodes, nothing)  # stable: nodes ascend
    local = np.empty(total, np.int64)
    for slot in range(total):
        node = unit_nodes[slot]
        local[node] = slot - unit_ptr[labels[node]]
    return labels, unit_ptr, unit_nodes, local


@njit(cache=True, nogil=True)
def edges_by_unit(edge_unit, local_u, local_v, num_units):
    """Counting sort of the edges by unit: (edge_ptr, u, v) with positions inside units."""
    edge_ptr = np.zeros(num_units + 1, np.int64)
    for unit in edge_unit:
        edge_ptr[unit + 1] += 1
    for unit in range(num_units):
        edge_ptr[unit + 1] += edge_ptr[unit]
    fill = edge_ptr[:-1].copy()
    u = np.empty(edge_unit.size, np.int64)
    v = np.empty(edge_unit.size, np.int64)
    for e in range(edge_unit.size):
        slot = fill[edge_unit[e]]
        u[slot] = local_u[e]
        v[slot] = local_v[e]
        fill[edge_unit[e]] = slot + 1
    return edge_ptr, u, v


@njit(cache=True, nogil=True, error_model="numpy")
def encode_small_graph(n, src, dst, k, split_components, values_out, vectors_out):
    """Laplacian encoding of one small graph, everything in one compiled call.

    ``src``/``dst``: the edges (any direction, duplicates and self-loops allowed: the graph
    is symmetrised, unweighted, without loops). With ``split_components`` every connected
    component is solved on its own, its zero eigenvalue dropped, and the k smallest
    eigenvalues over all components kept (ties in component order, components numbered by
    their smallest node); otherwise the whole graph is one unit whose smallest eigenvalue
    is dropped. Writes ``values_out`` [k] (``inf`` where missing) and ``vectors_out`` [n, k]
    (zero where missing); this is what the batched path computes for a one-graph batch.
    """
    adjacency = np.zeros((n, n))
    for e in range(src.size):
        if src[e] != dst[e]:
            adjacency[src[e], dst[e]] = 1.0
            adjacency[dst[e], src[e]] = 1.0
    label = np.full(n, -1, np.int64)
    order = np.empty(n, np.int64)  # nodes grouped by component, each in ascending order
    comp_ptr = np.zeros(n + 1, np.int64)
    components = 0
    if split_components:
        filled = 0
        for root in range(n):
            if label[root] >= 0:
                continue
            start = filled
            label[root] = components
            order[filled] = root
            filled += 1
            head = start
            while head < filled:  # breadth-first search over the dense adjacency
                node = order[head]
                head += 1
                for other in range(n):
                    if adjacency[node, other] != 0.0 and label[other] < 0:
                        label[other] = components
                        order[filled] = other
                        filled += 1
            order[start:filled].sort()
            components += 1
            comp_ptr[components] = filled
    else:
        for i in range(n):
            order[i] = i
        components = 1 if n > 0 else 0
        comp_ptr[1] = n
    # Candidates (value, component, column) from every component.
    capacity = components * k
    cand_value = np.empty(capacity)
    cand_comp = np.empty(capacity, np.int64)
    cand_column = np.empty(capacity, np.int64)
    solved = []
    taken = 0
    for c in range(components):
        start = comp_ptr[c]
        m = comp_ptr[c + 1] - start
        skip = (1 if m > 1 else 0) if split_components else 1
        count = min(skip + k, m)
        lap = np.empty((1, m, m))
        for i in range(m):
            for j in range(m):
                lap[0, i, j] = adjacency[order[start + i], order[start + j]]
        _normalise_laplacian(lap[0])
        values = np.empty((1, max(count, 1)))
        vectors = np.empty((1, max(count, 1), m))
        if count > skip:
            known_zero = split_components and m >= 2  # as the batched path decides
            lowest_eigenpairs(lap, count, values, vectors, known_zero)
            for s in range(skip, count):
                cand_value[taken] = values[0, s]
                cand_comp[taken] = c
                cand_column[taken] = s
                taken += 1
        solved.append(vectors[0])
    if components > 1:  # stable: equal values keep component order
        ranking = np.argsort(cand_value[:taken], kind="mergesort")
    else:  # one unit: the solver's (ascending) order, as the batched path keeps it
        ranking = np.arange(taken)
    for column in range(k):
        values_out[column] = np.inf
    for column in range(min(k, taken)):
        pick = ranking[column]
        c = cand_comp[pick]
        s = cand_column[pick]
        vector = solved[c][s]
        start = comp_ptr[c]
        sign = _sign_of_largest(vector)
        values_out[column] = cand_value[pick]
        for i in range(vector.size):
            vectors_out[order[start + i], column] = sign * vector[i]
