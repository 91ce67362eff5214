"""LaplacianPE against an independent dense numpy eigendecomposition and PyG's transform.

Eigenvectors are compared as eigenspaces: for every cluster of equal eigenvalues that lies
completely inside the k kept columns, the projectors onto the spans must agree; the cluster
cut by the k-th column must contain our columns. This is invariant to signs and to the
arbitrary rotation inside repeated eigenvalues.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import AddLaplacianEigenvectorPE

import gattn.transforms.laplacian_pe as lap
from gattn.transforms.laplacian_pe import LaplacianPE, RandomSignFlip, laplacian_pe, random_sign_flip

TOL = 1e-7


def random_graph(n: int, p: float, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    rows, cols = np.triu_indices(n, k=1)
    hit = rng.random(rows.size) < p
    src, dst = rows[hit], cols[hit]
    edge_index = torch.tensor(np.stack([np.r_[src, dst], np.r_[dst, src]]), dtype=torch.long)
    return Data(edge_index=edge_index.reshape(2, -1), num_nodes=n)


def dense_laplacian(edge_index: torch.Tensor, n: int) -> np.ndarray:
    """I - D^-1/2 A D^-1/2 of the unweighted, symmetrised graph; isolated nodes get L_ii = 1."""
    adjacency = np.zeros((n, n))
    for a, b in edge_index.t().tolist():
        if a != b:
            adjacency[a, b] = adjacency[b, a] = 1.0
    inv_sqrt = 1.0 / np.sqrt(np.maximum(adjacency.sum(1), 1.0))
    return np.eye(n) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]


def clusters(values: np.ndarray, tol: float = 1e-8) -> list[tuple[int, int]]:
    """[start, stop) ranges of (numerically) equal sorted eigenvalues."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] - values[i - 1] > tol:
            out.append((start, i))
            start = i
    return out


def check_against_dense(pe: torch.Tensor, values: torch.Tensor, data: Data, k: int,
                        trivial: str) -> None:
    n = data.num_nodes
    laplacian = dense_laplacian(data.edge_index, n)
    ref_values, ref_vectors = np.linalg.eigh(laplacian)
    zeros = int((ref_values < 1e-9).sum())
    first = (zeros if trivial == "all" else 1) if n else 0
    available = max(0, min(k, n - first))
    pe, values = pe.double().numpy(), values.double().numpy().reshape(-1)
    assert pe.shape == (n, k)
    # Missing columns are zero, present ones are unit eigenvectors with the right eigenvalue.
    assert np.all(pe[:, available:] == 0)
    assert np.all(values[available:] == 0)
    np.testing.assert_allclose(values[:available], ref_values[first:first + available], atol=TOL)
    for j in range(available):
        vector = pe[:, j]
        assert abs(np.linalg.norm(vector) - 1) < TOL
        assert np.abs(laplacian @ vector - values[j] * vector).max() < TOL
    kept = pe[:, :available]
    np.testing.assert_allclose(kept.T @ kept, np.eye(available), atol=TOL)
    # Eigenspaces, cluster by cluster (clusters of the reference spectrum).
    for start, stop in clusters(ref_values):
        lo, hi = max(start, first), min(stop, first + available)
        if lo >= hi:
            continue
        ours = pe[:, lo - first:hi - first]
        basis = ref_vectors[:, start:stop]
        projector = basis @ basis.T
        if lo == start and hi == stop:
            np.testing.assert_allclose(ours @ ours.T, projector, atol=1e-6)
        else:  # cluster cut by the kept range: our columns lie inside it
            np.testing.assert_allclose(projector @ ours, ours, atol=1e-6)


@pytest.fixture(params=["numba", "lapack"])
def solver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the small-graph numba solver and with batched LAPACK eigh."""
    if request.param == "lapack":
        monkeypatch.setattr(lap, "_SMALL_LIMIT", 0)
    return request.param


GRAPHS = [
    (12, 0.35, 0),  # connected
    (20, 0.12, 1),  # disconnected, some isolated nodes
    (30, 0.05, 2),  # many components
    (8, 0.0, 3),  # no edges at all
    (40, 0.15, 4),
    (6, 1.0, 5),  # complete graph: one eigenvalue repeated n - 1 times
]


@pytest.mark.parametrize("trivial", ["all", "first"])
@pytest.mark.parametrize("n, p, seed", GRAPHS)
def test_single_graph_matches_dense_eigh(
    n: int, p: float, seed: int, trivial: str, solver: str
) -> None:
    data = random_graph(n, p, seed)
    pe, values = laplacian_pe(data.edge_index, n, k=5, trivial=trivial, dtype=torch.float64,
                              return_eigenvalues=True)
    check_against_dense(pe, values, data, 5, trivial)


def test_repeated_eigenvalues_star_and_cycle(solver: str) -> None:
    # A star has eigenvalue 1 with multiplicity n - 2; a cycle has pairs of equal ones.
    star = torch.tensor([[0] * 7 + list(range(1, 8)), list(range(1, 8)) + [0] * 7])
    ring = torch.arange(10)
    cycle = torch.stack([torch.cat([ring, (ring + 1) % 10]), torch.cat([(ring + 1) % 10, ring])])
    for edge_index, n in ((star, 8), (cycle, 10)):
        data = Data(edge_index=edge_index, num_nodes=n)
        pe, values = laplacian_pe(edge_index, n, k=6, dtype=torch.float64,
                                  return_eigenvalues=True)
        check_against_dense(pe, values, data, 6, "all")


def test_batch_of_graphs_matches_dense_eigh_per_graph(solver: str) -> None:
    graphs = [random_graph(n, p, seed) for n, p, seed in GRAPHS] + [
        random_graph(n, 0.3, 10 + n) for n in (1, 2, 3, 12, 12, 12)
    ]
    for trivial in ("all", "first"):
        transform = LaplacianPE(4, trivial=trivial, dtype=torch.float64, eigenvalue_attr="eig")
        out = transform.apply(graphs)
        for data, encoded in zip(graphs, out):
            assert "pe" not in data  # inputs untouched
            check_against_dense(encoded.pe, encoded.eig, data, 4, trivial)
        # A collated Batch gives the same encodings as the list.
        batch = transform(Batch.from_data_list(graphs))
        expected = torch.cat([encoded.pe for encoded in out])
        for (start, stop), values in zip(zip(batch.ptr[:-1], batch.ptr[1:]), batch.eig):
            block, reference = batch.pe[start:stop], expected[start:stop]
            for lo, hi in clusters(values.numpy()):
                torch.testing.assert_close(block[:, lo:hi] @ block[:, lo:hi].T,
                                           reference[:, lo:hi] @ reference[:, lo:hi].T)


def test_matches_pyg_transform() -> None:
    """Same eigenspaces as PyG's AddLaplacianEigenvectorPE (is_undirected=True)."""
    k = 4
    pyg = AddLaplacianEigenvectorPE(k, attr_name="ref", is_undirected=True)
    ours = LaplacianPE(k, trivial="first", dtype=torch.float64, eigenvalue_attr="eig")
    graphs = [random_graph(n, 0.3, seed) for seed, n in enumerate((10, 15, 25, 40, 60))]
    graphs.append(random_graph(30, 0.06, 7))  # disconnected
    for data in graphs:
        reference = pyg(copy.copy(data)).ref.double().numpy()
        encoded = ours(copy.copy(data))
        mine, values = encoded.pe.numpy(), encoded.eig[0].numpy()
        laplacian = dense_laplacian(data.edge_index, data.num_nodes)
        ref_values = np.linalg.eigvalsh(laplacian)
        for start, stop in clusters(ref_values[1:k + 1]):
            full = np.abs(ref_values - ref_values[1 + start]) < 1e-8
            if full.sum() == stop - start:  # complete cluster: projectors must agree
                np.testing.assert_allclose(mine[:, start:stop] @ mine[:, start:stop].T,
                                           reference[:, start:stop] @ reference[:, start:stop].T,
                                           atol=1e-6)
        np.testing.assert_allclose(values, ref_values[1:k + 1], atol=TOL)


def test_tiny_graphs_are_zero_padded() -> None:
    path = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    pe, values = laplacian_pe(path, 3, k=4, dtype=torch.float64, return_eigenvalues=True)
    # The path on 3 nodes has normalised-Laplacian eigenvalues 0, 1, 2.
    np.testing.assert_allclose(values[0].numpy(), [1.0, 2.0, 0.0, 0.0], atol=TOL)
    assert torch.all(pe[:, 2:] == 0)
    single = LaplacianPE(3, trivial="first")(Data(edge_index=torch.zeros(2, 0, dtype=torch.long),
                                                   num_nodes=1))
    assert single.pe.shape == (1, 3) and torch.all(single.pe == 0)
    empty = LaplacianPE(3)(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=0))
    assert empty.pe.shape == (0, 3)


def test_duplicates_self_loops_and_one_direction_are_the_clean_graph() -> None:
    clean = random_graph(15, 0.3, 3)
    src, dst = clean.edge_index
    one_way = clean.edge_index[:, src < dst]
    messy = torch.cat([one_way, one_way[:, :5], torch.tensor([[2, 4], [2, 4]])], dim=1)
    a = laplacian_pe(clean.edge_index, 15, k=4, dtype=torch.float64)
    b = laplacian_pe(messy, 15, k=4, dtype=torch.float64)
    torch.testing.assert_close(a @ a.T, b @ b.T)


@pytest.mark.parametrize("trivial", ["all", "first"])
def test_sparse_solver_path(trivial: str) -> None:
    """Components above sparse_threshold go to scipy's eigsh; same eigenspaces as dense."""
    side = 15
    grid = torch.arange(side * side).view(side, side)
    right = torch.stack([grid[:, :-1].flatten(), grid[:, 1:].flatten()])
    down = torch.stack([grid[:-1].flatten(), grid[1:].flatten()])
    rng = np.random.default_rng(0)
    extra = torch.from_numpy(rng.integers(0, side * side, size=(2, 30)))
    tree = torch.stack([torch.arange(1, 150), torch.from_numpy(rng.integers(0, 149, 149))
                        .minimum(torch.arange(1, 150) - 1)]) + side * side
    edges = torch.cat([right, down, extra, tree], dim=1)
    n = side * side + 150 + 5  # mesh-like component, tree component, 5 isolated nodes
    edges = torch.cat([edges, edges.flip(0)], dim=1)
    data = Data(edge_index=edges, num_nodes=n)
    pe, values = laplacian_pe(edges, n, k=6, trivial=trivial, sparse_threshold=100,
                              dtype=torch.float64, return_eigenvalues=True)
    check_against_dense(pe, values, data, 6, trivial)


def test_long_path_uses_shift_invert_fallback() -> None:
    n = 400  # tiny spectral gaps: plain Lanczos does not converge in its iteration budget
    chain = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    edges = torch.cat([chain, chain.flip(0)], dim=1)
    pe, values = laplacian_pe(edges, n, k=3, sparse_threshold=50, dtype=torch.float64,
                              return_eigenvalues=True)
    check_against_dense(pe, values, Data(edge_index=edges, num_nodes=n), 3, "all")


@pytest.mark.slow
def test_large_sparse_graph_default_threshold() -> None:
    data = random_graph(2300, 0.002, 11)
    pe, values = laplacian_pe(data.edge_index, data.num_nodes, k=4, dtype=torch.float64,
                              return_eigenvalues=True)
    check_against_dense(pe, values, data, 4, "all")


def test_threads_and_chunks_give_the_same_result(
    monkeypatch: pytest.MonkeyPatch, solver: str
) -> None:
    graphs = [random_graph(n, 0.3, seed) for seed, n in enumerate([9, 9, 9, 9, 14, 14, 20])]
    reference = LaplacianPE(3, num_workers=1).apply(graphs)
    monkeypatch.setattr(lap, "_CHUNK_ELEMENTS", 200)  # split every size group into pieces
    for workers in (1, 3):
        out = LaplacianPE(3, num_workers=workers).apply(graphs)
        for a, b in zip(reference, out):
            torch.testing.assert_close(a.pe, b.pe)


def test_deterministic_output_and_attr_none_concatenates() -> None:
    data = random_graph(12, 0.4, 1)
    data.x = torch.ones(12, 2)
    a = LaplacianPE(3)(copy.copy(data))
    b = LaplacianPE(3)(copy.copy(data))
    torch.testing.assert_close(a.pe, b.pe)
    concatenated = LaplacianPE(3, attr_name=None)(copy.copy(data))
    assert concatenated.x.shape == (12, 5)
    torch.testing.assert_close(concatenated.x[:, 2:], a.pe)


def test_sign_flip_per_graph_and_eigenvector() -> None:
    graphs = LaplacianPE(4).apply([random_graph(10, 0.4, seed) for seed in range(40)])
    batch = Batch.from_data_list(graphs)
    original = batch.pe.clone()
    flipped = RandomSignFlip(generator=torch.Generator().manual_seed(0))(batch)
    assert torch.equal(original, torch.cat([g.pe for g in graphs]))  # not modified in place
    signs = []
    for g in range(batch.num_graphs):
        rows = batch.batch == g
        sign = torch.sign((flipped.pe[rows] * original[rows]).sum(0))
        assert torch.equal(flipped.pe[rows], original[rows] * sign)  # one sign per column
        signs.append(sign)
    signs = torch.stack(signs)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(row.tolist()) for row in signs}) > 1  # graphs get different signs
    # Reproducible with a generator; a single Data gets one sign per column.
    again = random_sign_flip(original, batch.batch, batch.num_graphs,
                             torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, flipped.pe)
    single = RandomSignFlip()(copy.copy(graphs[0]))
    sign = torch.sign((single.pe * graphs[0].pe).sum(0))
    assert torch.equal(sign.abs(), torch.ones(4)) and torch.equal(single.pe, graphs[0].pe * sign)


def test_validation_errors() -> None:
    edges = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="k"):
        LaplacianPE(0)
    with pytest.raises(ValueError, match="trivial"):
        LaplacianPE(2, trivial="none")
    with pytest.raises(TypeError, match="edge_index"):
        laplacian_pe(edges.float(), 2, k=1)
    with pytest.raises(ValueError, match="edge_index"):
        laplacian_pe(torch.zeros(3, 2, dtype=torch.long), 2, k=1)
    with pytest.raises(ValueError, match="different graphs"):
        laplacian_pe(torch.tensor([[0], [2]]), k=1, ptr=torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="outside"):
        laplacian_pe(torch.tensor([[0], [5]]), 3, k=1)
    with pytest.raises(ValueError, match="num_workers"):
        LaplacianPE(2, num_workers=0)
    with pytest.raises(ValueError, match="pe"):
        random_sign_flip(torch.zeros(3))
    with pytest.raises(ValueError, match="no attribute"):
        RandomSignFlip("missing")(Data(num_nodes=2))


def test_plain_copy_is_what_pyg_copy_makes() -> None:
    """apply()'s direct shallow copy of a plain Data: the same attributes (the same tensors),
    its own storage dict, the storage's parent the copy itself, the original untouched."""
    data = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2, x=torch.ones(2, 3), y=7)
    ours, theirs = lap._plain_copy(data), data.__copy__()
    assert type(ours) is Data and ours.__dict__.keys() == theirs.__dict__.keys()
    assert ours._store.__dict__.keys() == theirs._store.__dict__.keys()
    assert ours._store._parent() is ours and data._store._parent() is data
    assert ours.to_dict().keys() == data.to_dict().keys()
    assert all(ours[key] is data[key] for key in data.keys())
    ours.pe = torch.zeros(2, 1)
    ours.y = 8
    assert "pe" not in data and data.y == 7
    other = lap._plain_copy(data)
    other.pe = torch.ones(2, 1)
    batch = Batch.from_data_list([ours, other])  # collates like any Data
    assert batch.num_graphs == 2 and batch.pe.shape == (4, 1) and "pe" not in data


def test_apply_reads_inferred_node_counts_and_subclasses() -> None:
    """Graphs without a stored num_nodes (PyG infers it from x) and Data subclasses go
    through PyG's own accessors; the result equals that of the same graphs with num_nodes."""
    class Molecule(Data):
        pass

    stored = [random_graph(9, 0.4, seed) for seed in range(6)]
    inferred = [Data(edge_index=g.edge_index, x=torch.zeros(g.num_nodes, 2)) for g in stored[:3]]
    inferred += [Molecule(edge_index=g.edge_index, num_nodes=g.num_nodes) for g in stored[3:]]
    transform = LaplacianPE(3, dtype=torch.float64)
    for ours, reference in zip(transform.apply(inferred), transform.apply(stored)):
        torch.testing.assert_close(ours.pe, reference.pe, atol=0, rtol=0)
    assert type(transform.apply(inferred)[3]) is Molecule
