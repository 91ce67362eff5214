"""Laplacian positional encoding: gattn's batched LaplacianPE against PyG's per-graph transform.

Data: the 1,513 graphs of ogbg-molbace read with gattn's OGB loader from
``../shared/data/ogb`` (or ``--root``); without them, random molecule-like graphs (a random
tree plus a few ring closures, node counts drawn like BACE's) of the same number.

Timed, median of ``--repeats`` runs each:

* PyG ``AddLaplacianEigenvectorPE(k, is_undirected=True)`` applied graph by graph (its fast
  path for undirected graphs: dense ``numpy.linalg.eigh`` below 100 nodes);
* PyG with its default ``is_undirected=False`` (dense ``numpy.linalg.eig``);
* ``LaplacianPE(k).apply(graphs)``: every graph encoded in one call (graphs up to 256
  nodes by gattn's numba solver, which computes only the k + 1 wanted eigenpairs), new
  ``Data`` objects returned, as PyG returns; with ``--threads N > 1`` also with N threads
  (PyG's numpy gets N BLAS threads);
* ``LaplacianPE(k)`` called graph by graph, as a ``transform`` / ``pre_transform`` is;
* the batched call with the numba solver switched off (one batched LAPACK ``torch.linalg.eigh`` per
  node count), to show what the solver contributes.

PyG's dense path returns fewer than k columns for a graph with fewer than k + 1 nodes (and
its sparse path fails), so graphs with fewer than k + 2 nodes are left out of every timing
and their number is printed. Before timing, the encodings of both are checked to span the
same eigenspaces on every graph (projector difference).

    python benchmarks/laplacian_pe.py [--k 8] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import AddLaplacianEigenvectorPE

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gattn.transforms.laplacian_pe as laplacian_pe_module
from benchmarks._common import background_load, load_average, write_ratio_chart
from gattn.transforms.laplacian_pe import LaplacianPE

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ogb"


def load_graphs(root: Path, count: int, seed: int) -> tuple[list[Data], str]:
    try:
        from gattn.datasets.ogb import OGBGraphPropDataset

        dataset = OGBGraphPropDataset("ogbg-molbace", root)
        graphs = [
            Data(edge_index=g.edge_index, num_nodes=g.num_nodes) for g in dataset
        ]
        return graphs[:count], f"ogbg-molbace from {dataset.folder}"
    except FileNotFoundError as error:
        print(f"[data] {error}\n[data] falling back to random molecule-like graphs")
    return random_molecules(count, seed), "random molecule-like graphs"


def random_molecules(count: int, seed: int) -> list[Data]:
    """Trees with a few ring closures; sizes like BACE (mean ~34, 10..97 nodes)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(count):
        n = int(np.clip(rng.normal(34, 10), 10, 97))
        parent = np.array([rng.integers(0, i) for i in range(1, n)])
        src, dst = list(range(1, n)), list(parent)
        for _ in range(rng.integers(1, 5)):  # rings
            a, b = rng.choice(n, 2, replace=False)
            src.append(int(a))
            dst.append(int(b))
        edges = torch.tensor([src + dst, dst + src])
        edges = torch.unique(edges, dim=1)
        graphs.append(Data(edge_index=edges, num_nodes=n))
    return graphs


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def projector_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest entry of |P_a - P_b| for the spans of the columns of a and b."""
    return float(np.abs(a @ a.T - b @ b.T).max())


def check_agreement(graphs: list[Data], k: int) -> float:
    """Largest projector gap, eigenspace by eigenspace, between PyG's and our encodings."""
    ours = LaplacianPE(k, dtype=torch.float64, eigenvalue_attr="eigval").apply(graphs)
    pyg = AddLaplacianEigenvectorPE(k, attr_name="pe", is_undirected=True)
    worst = 0.0
    for graph, mine in zip(graphs, ours):
        theirs = pyg(copy.copy(graph)).pe.numpy()
        values = mine.eigval[0].numpy()
        vectors = mine.pe.numpy()
        # Compare complete clusters of (numerically) equal eigenvalues only; the cluster cut
        # by the k-th column is compared by containment.
        start = 0
        while start < k:
            stop = start + 1
            while stop < k and abs(values[stop] - values[start]) < 1e-6:
                stop += 1
            if stop < k:
                worst = max(worst, projector_gap(vectors[:, start:stop], theirs[:, start:stop]))
            start = stop
    return worst


def without_small_solver(function):
    limit = laplacian_pe_module._SMALL_LIMIT
    laplacian_pe_module._SMALL_LIMIT = 0
    try:
        return function()
    finally:
        laplacian_pe_module._SMALL_LIMIT = limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--graphs", type=int, default=1513)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for both sides (default 1)")
    parser.add_argument("--quick", action="store_true", help="200 graphs, 2 repeats")
    parser.add_argument("--chart", default="runs/benchmarks/laplacian_pe.png",
                        help="PNG of the speed ratios against PyG ('' = none)")
    parser.add_argument("--load-procs", type=int, default=0,
                        help="busy-loop processes started for the time of the timings (a machine with other work)")
    args = parser.parse_args()
    if args.quick:
        args.graphs, args.repeats = 200, 2
    torch.set_num_threads(args.threads)
    try:  # numpy's BLAS/LAPACK (used by PyG's transform) gets the same thread budget
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass

    graphs, source = load_graphs(args.root, args.graphs, args.seed)
    usable = [g for g in graphs if g.num_nodes >= args.k + 2]
    skipped = len(graphs) - len(usable)
    sizes = np.array([g.num_nodes for g in usable])
    print(f"data: {source}; {len(usable)} graphs used, {skipped} with < k+2 = {args.k + 2} "
          f"nodes skipped; nodes min/mean/max {sizes.min()}/{sizes.mean():.1f}/{sizes.max()}")
    print(f"k = {args.k}, torch threads = {torch.get_num_threads()}, repeats = {args.repeats}")
    print(f"agreement with PyG (max projector gap over complete eigenspaces): "
          f"{check_agreement(usable, args.k):.2e}")

    per_graph = LaplacianPE(args.k, num_workers=1)
    pyg_fast = AddLaplacianEigenvectorPE(args.k, attr_name="pe", is_undirected=True)
    pyg_default = AddLaplacianEigenvectorPE(args.k, attr_name="pe")
    candidates = [
        ("PyG AddLaplacianEigenvectorPE(is_undirected=True), per graph",
         lambda: [pyg_fast(copy.copy(g)) for g in usable]),
        ("PyG AddLaplacianEigenvectorPE() default (eig), per graph",
         lambda: [pyg_default(copy.copy(g)) for g in usable]),
        ("gattn LaplacianPE.apply(graphs), batched, 1 thread",
         lambda: LaplacianPE(args.k, num_workers=1).apply(usable)),
        ("gattn LaplacianPE(k)(graph), graph by graph, 1 thread",
         lambda: [per_graph(copy.copy(g)) for g in usable]),
        ("gattn, numba solver off (batched LAPACK eigh), 1 thread",
         lambda: without_small_solver(lambda: LaplacianPE(args.k, num_workers=1).apply(usable))),
    ]
    if args.threads > 1:
        candidates.append((
            f"gattn LaplacianPE.apply(graphs), batched, {args.threads} threads",
            lambda: LaplacianPE(args.k, num_workers=args.threads).apply(usable),
        ))
    rows = []
    with background_load(args.load_procs):
        for name, function in candidates:
            function()  # warm-up
            rows.append((name, median_time(function, args.repeats)))
        load = load_average()
    print(f"\nbusy-loop processes of ours: {args.load_procs}; machine load average at the end: {load:.1f}")
    reference = rows[0][1]
    default = rows[1][1]
    print()
    print(f"{'method':<64} {'total s':>9} {'ms/graph':>9} {'vs PyG':>8} {'vs default':>10}")
    for name, seconds in rows:
        print(f"{name:<64} {seconds:>9.3f} {1e3 * seconds / len(usable):>9.3f} "
              f"{reference / seconds:>7.1f}x {default / seconds:>9.1f}x")
    if args.chart:
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        ours = rows[2:]
        print("chart:", write_ratio_chart(
            args.chart, f"Laplacian PE of {len(usable)} graphs (k={args.k}) vs PyG AddLaplacianEigenvectorPE",
            ["batched (apply)", "graph by graph", "LAPACK eigh, no numba",
             f"batched, {args.threads} threads"][:len(ours)],
            {"speed vs PyG (is_undirected)": [reference / t for _, t in ours],
             "speed vs PyG default (eig)": [default / t for _, t in ours]}))


if __name__ == "__main__":
    main()
