"""PATTERN / CLUSTER generator: determinism, published settings and statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import is_undirected

from gattn.datasets.sbm import (
    CLUSTER_SETTINGS,
    PATTERN_SETTINGS,
    SBMDataset,
    available,
    generate_sbm,
    split_sizes,
)


def same_graphs(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.x, y.x) and torch.equal(x.edge_index, y.edge_index) and torch.equal(x.y, y.y)
        for x, y in zip(a, b)
    )


def test_published_settings() -> None:
    assert (CLUSTER_SETTINGS.num_communities, CLUSTER_SETTINGS.p, CLUSTER_SETTINGS.q) == (6, 0.55, 0.25)
    assert (PATTERN_SETTINGS.num_communities, PATTERN_SETTINGS.p, PATTERN_SETTINGS.q) == (5, 0.5, 0.35)
    assert (PATTERN_SETTINGS.p_pattern, PATTERN_SETTINGS.q_pattern, PATTERN_SETTINGS.vocab_size) == (
        0.5, 0.5, 3)
    assert (CLUSTER_SETTINGS.size_min, CLUSTER_SETTINGS.size_max) == (5, 34)
    assert split_sizes("PATTERN") == {"train": 10000, "val": 2000, "test": 2000}
    assert split_sizes("cluster") == {"train": 10000, "val": 1000, "test": 1000}
    assert split_sizes("PATTERN", 140) == {"train": 100, "val": 20, "test": 20}
    assert split_sizes("CLUSTER", 120) == {"train": 100, "val": 10, "test": 10}


@pytest.mark.parametrize("task", ["PATTERN", "CLUSTER"])
def test_deterministic_by_seed_and_prefix_stable(task: str) -> None:
    a = generate_sbm(task, 6, seed=3)
    assert same_graphs(a, generate_sbm(task, 6, seed=3))
    assert same_graphs(a[:4], generate_sbm(task, 4, seed=3))
    assert same_graphs(a[2:], generate_sbm(task, 4, seed=3, start=2))
    assert not same_graphs(a, generate_sbm(task, 6, seed=4))
    assert not same_graphs(a, generate_sbm(task, 6, seed=3, split="val"))
    for data in a:
        assert is_undirected(data.edge_index, num_nodes=data.num_nodes)
        assert not bool((data.edge_index[0] == data.edge_index[1]).any())
        assert data.x.dtype == torch.long and data.y.dtype == torch.long
        assert data.x.shape == data.y.shape == (data.num_nodes,)


def pair_density(graphs: list, group_of) -> dict[str, float]:
    """Edge probability among pairs in the same group and in different groups."""
    same_edges = same_pairs = diff_edges = diff_pairs = 0
    for data in graphs:
        group = group_of(data).numpy()
        n = group.size
        src, dst = data.edge_index.numpy()
        upper = src < dst
        same = group[src[upper]] == group[dst[upper]]
        counts = np.bincount(group)
        within = int((counts * (counts - 1) // 2).sum())
        same_edges += int(same.sum())
        diff_edges += int((~same).sum())
        same_pairs += within
        diff_pairs += n * (n - 1) // 2 - within
    return {"same": same_edges / same_pairs, "different": diff_edges / diff_pairs}


def test_cluster_statistics() -> None:
    graphs = generate_sbm("CLUSTER", 150, seed=0)
    sizes = np.array([g.num_nodes for g in graphs])
    assert abs(sizes.mean() - 117) < 6  # 6 communities of 5..34 nodes; sd of mean ~1.7
    for data in graphs:
        counts = torch.bincount(data.y, minlength=6)
        assert counts.numel() == 6 and bool((counts >= 5).all()) and bool((counts <= 34).all())
        labelled = torch.nonzero(data.x).flatten()
        # Exactly one labelled node per community, whose feature is its community + 1.
        assert sorted(data.y[labelled].tolist()) == list(range(6))
        assert torch.equal(data.x[labelled], data.y[labelled] + 1)
    density = pair_density(graphs, lambda d: d.y)
    assert density["same"] == pytest.approx(0.55, abs=0.01)
    assert density["different"] == pytest.approx(0.25, abs=0.01)
    edges = np.mean([g.edge_index.size(1) for g in graphs])
    assert abs(edges - 4290) < 250  # published data: ~4,304 directed edges per graph


def test_pattern_statistics() -> None:
    graphs = generate_sbm("PATTERN", 200, seed=0)
    y = torch.cat([g.y for g in graphs])
    x = torch.cat([g.x for g in graphs])
    assert set(y.unique().tolist()) == {0, 1} and set(x.unique().tolist()) == {0, 1, 2}
    assert float(y.float().mean()) == pytest.approx(19.5 / 117, abs=0.025)  # ~1/6 positive
    sizes = np.array([g.num_nodes for g in graphs])
    assert abs(sizes.mean() - 117) < 6
    density = pair_density(graphs, lambda d: d.y)
    # "same": pattern-pattern pairs (p_pattern = 0.5) pooled with background pairs
    # (p = 0.5 inside, q = 0.35 between communities); "different": q_pattern = 0.5.
    assert density["different"] == pytest.approx(0.5, abs=0.01)
    pattern_only = pair_density(graphs, lambda d: torch.where(d.y == 1, 0, torch.arange(d.num_nodes) + 1))
    assert pattern_only["same"] == pytest.approx(0.5, abs=0.03)
    # Graphs i and i + num_patterns plant the same pattern: same features, same edge count.
    a, b = graphs[3], graphs[3 + PATTERN_SETTINGS.num_patterns]
    assert sorted(a.x[a.y == 1].tolist()) == sorted(b.x[b.y == 1].tolist())

    def internal_edges(data) -> int:
        src, dst = data.edge_index
        return int(((data.y[src] == 1) & (data.y[dst] == 1)).sum())

    assert internal_edges(a) == internal_edges(b)
    edges = np.mean([g.edge_index.size(1) for g in graphs])
    assert abs(edges - 5870) < 400


def test_dataset_splits_and_one_hot() -> None:
    val = SBMDataset("PATTERN", "val", num_graphs=140, seed=1)
    train = SBMDataset("PATTERN", "train", num_graphs=140, seed=1)
    assert len(val) == 20 and len(train) == 100 and val.num_classes == 2
    assert not torch.equal(val[0].edge_index, train[0].edge_index) or val[0].num_nodes != train[0].num_nodes
    hot = SBMDataset("CLUSTER", "test", num_graphs=120, seed=1, one_hot=True)
    plain = SBMDataset("CLUSTER", "test", num_graphs=120, seed=1)
    assert len(hot) == 10 and hot.num_classes == 6
    assert hot[0].x.shape == (hot[0].num_nodes, 7) and hot[0].x.dtype == torch.float32
    assert torch.equal(hot[0].x.argmax(1), plain[0].x)
    assert available() == [("PATTERN", True, "generated locally (gattn.datasets.sbm)"),
                           ("CLUSTER", True, "generated locally (gattn.datasets.sbm)")]


def test_overrides_and_validation() -> None:
    graphs = generate_sbm("CLUSTER", 3, seed=0, num_communities=3, size_min=4, size_max=4)
    assert all(g.num_nodes == 12 and int(g.y.max()) == 2 for g in graphs)
    with pytest.raises(TypeError, match="unknown SBM setting"):
        generate_sbm("CLUSTER", 1, seed=0, clusters=3)
    with pytest.raises(ValueError, match="p must be a probability"):
        generate_sbm("CLUSTER", 1, seed=0, p=1.5)
    with pytest.raises(ValueError, match="task"):
        generate_sbm("ZINC", 1)
    with pytest.raises(ValueError, match="num_graphs"):
        generate_sbm("PATTERN", -1)
    with pytest.raises(ValueError, match="split"):
        SBMDataset("PATTERN", "validation")
