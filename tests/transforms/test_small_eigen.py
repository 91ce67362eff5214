"""The numba small-matrix eigensolver against LAPACK (numpy.linalg.eigh).

Eigenvalues must match to near working accuracy, vectors must be orthonormal with tiny
residuals, and for every cluster of equal eigenvalues inside the requested range the
projectors onto the computed and the reference eigenspaces must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import gattn.transforms.laplacian_pe as lap
from gattn.transforms import _small_eigen
from gattn.transforms.laplacian_pe import LaplacianPE


def laplacian(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    adjacency = np.zeros((n, n))
    for a, b in edges:
        if a != b:
            adjacency[a, b] = adjacency[b, a] = 1.0
    inv_sqrt = 1.0 / np.sqrt(np.maximum(adjacency.sum(1), 1.0))
    return np.eye(n) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]


def check(matrices: np.ndarray, count: int) -> None:
    values, vectors = _small_eigen.eigenpairs_of_matrices(matrices, count)
    for matrix, value, vector in zip(matrices, values, vectors):
        n = matrix.shape[0]
        scale = max(1.0, np.abs(matrix).sum(1).max())
        ref_values, ref_vectors = np.linalg.eigh(matrix)
        np.testing.assert_allclose(value, ref_values[:count], atol=1e-12 * scale)
        assert np.abs(matrix @ vector.T - vector.T * value).max() < 1e-12 * scale
        np.testing.assert_allclose(vector @ vector.T, np.eye(count), atol=1e-12)
        start = 0
        while start < count:
            stop = start + 1
            while stop < n and ref_values[stop] - ref_values[start] < 1e-9 * scale:
                stop += 1
            if stop <= count:  # a complete cluster: the eigenspaces must agree
                ours = vector[start:stop].T @ vector[start:stop]
                theirs = ref_vectors[:, start:stop] @ ref_vectors[:, start:stop].T
                np.testing.assert_allclose(ours, theirs, atol=1e-9)
            start = stop


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33, 64])
def test_random_symmetric_matrices(n: int) -> None:
    rng = np.random.default_rng(n)
    matrices = rng.standard_normal((6, n, n)) * rng.uniform(0.1, 10, (6, 1, 1))
    matrices = matrices + matrices.transpose(0, 2, 1)
    check(matrices, n)  # every eigenpair
    check(matrices, min(n, 3))


@pytest.mark.parametrize("n", [2, 5, 12, 40, 97])
def test_laplacians_with_repeated_and_zero_eigenvalues(n: int) -> None:
    rng = np.random.default_rng(n)
    matrices = np.stack([
        laplacian(n, [(i, i + 1) for i in range(n - 1)]),  # path: tiny spectral gap
        laplacian(n, [(0, i) for i in range(1, n)]),  # star: eigenvalue 1, n - 2 times
        laplacian(n, [(i, j) for i in range(n) for j in range(i)]),  # complete graph
        laplacian(n, [(i, i + 1) for i in range(0, n - 1, 2)]),  # disjoint edges: many zeros
        laplacian(n, []),  # identity
        laplacian(n, [(i, int(rng.integers(0, i))) for i in range(1, n)]),  # random tree
    ])
    check(matrices, min(n, 9))


def test_already_tridiagonal_and_diagonal_matrices() -> None:
    """Columns that need no reflection (tau = 0) and exact splits of the tridiagonal."""
    diagonal = np.diag([3.0, -1.0, 2.0, 2.0, 0.5, -1.0])
    tridiagonal = np.diag(np.arange(6.0)) + np.diag(np.ones(5), 1) + np.diag(np.ones(5), -1)
    tridiagonal[2, 3] = tridiagonal[3, 2] = 0.0
    check(np.stack([diagonal, tridiagonal]), 6)
    check(np.stack([diagonal, tridiagonal]), 4)


def test_laplacian_pe_solvers_agree_on_molecule_like_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The numba path and batched LAPACK give the same encodings (up to sign)."""
    rng = np.random.default_rng(0)
    graphs = []
    for _ in range(40):
        n = int(rng.integers(2, 60))
        edges = [(i, int(rng.integers(0, i))) for i in range(1, n)]
        edges += [tuple(int(x) for x in rng.integers(0, n, 2)) for _ in range(3)]
        index = torch.tensor(edges, dtype=torch.long).t()
        graphs.append(Data(edge_index=torch.cat([index, index.flip(0)], 1), num_nodes=n))
    transform = LaplacianPE(6, dtype=torch.float64, eigenvalue_attr="eig")
    fast = transform.apply(graphs)
    monkeypatch.setattr(lap, "_SMALL_LIMIT", 0)
    slow = transform.apply(graphs)
    for data, a, b in zip(graphs, fast, slow):
        torch.testing.assert_close(a.eig, b.eig, atol=1e-10, rtol=0)
        spectrum = np.linalg.eigvalsh(laplacian(data.num_nodes, data.edge_index.t().tolist()))
        for column, value in enumerate(a.eig[0].tolist()):
            if (np.abs(spectrum - value) < 1e-6).sum() == 1:  # simple: unique up to sign
                x, y = a.pe[:, column], b.pe[:, column]
                assert min((x - y).abs().max(), (x + y).abs().max()) < 1e-8


def test_apply_leaves_inputs_untouched_and_threads_agree() -> None:
    rng = np.random.default_rng(1)
    graphs = []
    for _ in range(30):
        n = int(rng.integers(5, 40))
        index = torch.tensor([[i, int(rng.integers(0, i))] for i in range(1, n)]).t()
        graphs.append(Data(edge_index=torch.cat([index, index.flip(0)], 1), num_nodes=n))
    one = LaplacianPE(4, num_workers=1).apply(graphs)
    two = LaplacianPE(4, num_workers=2).apply(graphs)
    for data, a, b in zip(graphs, one, two):
        assert "pe" not in data  # the inputs are not modified
        assert a.pe.shape == (data.num_nodes, 4)
        torch.testing.assert_close(a.pe, b.pe)
        assert a.edge_index is data.edge_index  # shallow copies


@pytest.mark.parametrize("trivial", ["all", "first"])
def test_graph_by_graph_equals_batched(trivial: str) -> None:
    """A transform applied graph by graph (one compiled call each) gives what apply() gives."""
    rng = np.random.default_rng(2)
    graphs = []
    for _ in range(25):
        n = int(rng.integers(1, 50))
        edges = [(i, int(rng.integers(0, i))) for i in range(1, n) if rng.random() < 0.9]
        edges += [(int(a), int(a)) for a in rng.integers(0, n, 2)]  # self-loops are ignored
        index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
        graphs.append(Data(edge_index=index, num_nodes=n))  # one direction only
    transform = LaplacianPE(5, trivial=trivial, dtype=torch.float64, eigenvalue_attr="eig")
    batched = transform.apply(graphs)
    for data, together in zip(graphs, batched):
        alone = transform(Data(edge_index=data.edge_index, num_nodes=data.num_nodes))
        torch.testing.assert_close(alone.eig, together.eig, atol=1e-12, rtol=0)
        spectrum = np.linalg.eigvalsh(laplacian(data.num_nodes, data.edge_index.t().tolist()))
        for column, value in enumerate(together.eig[0].tolist()):
            x, y = alone.pe[:, column], together.pe[:, column]
            if value != 0.0 and (np.abs(spectrum - value) < 1e-6).sum() == 1:
                assert min((x - y).abs().max(), (x + y).abs().max()) < 1e-9
            elif value == 0.0 and not together.pe[:, column].any():  # padded column
                assert not x.any()


def test_apply_restores_the_garbage_collector_state() -> None:
    import gc

    graphs = [Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2)] * 3
    assert gc.isenabled()
    LaplacianPE(1).apply(graphs)
    assert gc.isenabled()
    gc.disable()
    try:
        LaplacianPE(1).apply(graphs)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_connected_units_match_scipy_components() -> None:
    """The union-find component layout numbers components as scipy does (by smallest node),
    lists each one's nodes ascending and gives every node its position inside its unit."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(5)
    for _ in range(150):
        n = int(rng.integers(1, 70))
        m = int(rng.integers(0, 90))
        u, v = rng.integers(0, n, m), rng.integers(0, n, m)
        u, v = u[u != v], v[u != v]
        count, expected = connected_components(sp.coo_matrix((np.ones(u.size), (u, v)), shape=(n, n)),
                                               directed=False)
        labels, unit_ptr, unit_nodes, local = _small_eigen.connected_units(n, u, v)
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(unit_nodes, np.argsort(expected, kind="stable"))
        np.testing.assert_array_equal(np.diff(unit_ptr), np.bincount(expected, minlength=count))
        np.testing.assert_array_equal(unit_nodes[unit_ptr[labels] + local], np.arange(n))
