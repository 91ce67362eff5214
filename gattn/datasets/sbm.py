"""PATTERN and CLUSTER: the SBM node classification tasks of "Benchmarking Graph Neural
Networks" (Dwivedi, Joshi, Laurent, Bengio & Bresson, 2020), generated locally.

The generator follows the authors' notebooks, read from the benchmarking-gnns repository
(graphdeeplearning/benchmarking-gnns, ``data/SBMs/generate_SBM_PATTERN.ipynb`` at commit
c57794a, configuration marked "v4", and ``data/SBMs/generate_SBM_CLUSTER.ipynb``). The code
here is written anew with numpy; the settings are theirs:

CLUSTER (semi-supervised clustering, 6 classes)
    6 communities, each of a size drawn uniformly from {5, ..., 34} (the notebook calls
    ``np.random.randint(5, 35)``, whose upper bound is exclusive); an edge joins two nodes
    with probability p = 0.55 inside a community and q = 0.25 between communities. Nodes
    are shuffled. Input feature: 0 for every node except one node per community, drawn at
    random, whose feature is ``community + 1`` (values 0..6). Label: the community (0..5).
    Published splits 10,000 / 1,000 / 1,000 graphs. Expected size 117 nodes (30..204
    possible, DGL reports 40..190 seen); expected 4,290 directed edges (the published data
    averages ~117.2 nodes and ~4,304 directed edges).

PATTERN (pattern recognition, 2 classes)
    A background SBM of 5 communities, sizes uniform in {5, ..., 34}, p = 0.5, q = 0.35,
    node features uniform in {0, 1, 2}. 100 patterns are drawn once: a pattern has a size
    uniform in {5, ..., 34}, internal edges with probability p_pattern = 0.5 (the notebook
    draws them with ``p``, also 0.5) and fixed features uniform in {0, 1, 2}. Every graph
    plants one pattern: each (pattern node, background node) pair is joined with
    probability q_pattern = 0.5. Nodes are shuffled. Label 1 for pattern nodes, 0 for the
    rest: about 1/6 of the nodes are positive (expected 19.5 of 117), the class imbalance
    behind the benchmark's weighted accuracy; expected ~5,870 directed edges. Published
    splits 10,000 / 2,000 / 2,000: per pattern 100 training, 20 validation and 20 test
    graphs. (The published data averages ~118.9 nodes and ~6,099 directed edges; with only
    100 pattern sizes drawn, the mean pattern size of one draw varies by about +-1 node.)

(The paper's text and DGL's documentation give q = 0.35 and 20-node patterns for PATTERN;
the final notebook draws pattern sizes in {5, ..., 34}; we follow the notebook.)

Graphs are undirected without self-loops: ``edge_index`` holds both directions, sorted.
``x`` is the integer input feature as benchmarking-gnns gives it (long [N], for an
embedding layer); ``one_hot=True`` gives the float one-hot form [N, 3] / [N, 7] that PyG's
``GNNBenchmarkDataset`` stores. ``y`` is long [N]. Every graph is drawn from its own random
stream derived from (seed, task, split, index), so graph i is the same whatever the number
of graphs asked for, and the same on every machine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from .root import register_source

__all__ = [
    "CLUSTER_SETTINGS",
    "PATTERN_SETTINGS",
    "PUBLISHED_SPLITS",
    "SBMDataset",
    "SBMSettings",
    "available",
    "generate_sbm",
]

TASKS = ("PATTERN", "CLUSTER")
SPLITS = ("train", "val", "test")
PUBLISHED_SPLITS = {
    "PATTERN": {"train": 10_000, "val": 2_000, "test": 2_000},
    "CLUSTER": {"train": 10_000, "val": 1_000, "test": 1_000},
}


@dataclass(frozen=True)
class SBMSettings:
    """Generator settings (sizes are inclusive ranges). See the module docstring.

    Attributes:
        num_communities (int): the number of communities.
        size_min (int): the smallest community size.
        size_max (int): the largest community size.
        p (float): the edge probability inside a community.
        q (float): the edge probability between communities.
        vocab_size (int, optional): node feature values (PATTERN background and patterns).
            (default: ``3``)
        num_patterns (int, optional): the number of patterns (PATTERN only). (default: ``100``)
        pattern_size_min (int, optional): the smallest pattern. (default: ``5``)
        pattern_size_max (int, optional): the largest pattern. (default: ``34``)
        p_pattern (float, optional): the edge probability inside a pattern. (default: ``0.5``)
        q_pattern (float, optional): the edge probability between a pattern and the rest.
            (default: ``0.5``)
    """

    num_communities: int
    size_min: int
    size_max: int
    p: float
    q: float
    vocab_size: int = 3  # PATTERN background / pattern features
    num_patterns: int = 100  # PATTERN only
    pattern_size_min: int = 5
    pattern_size_max: int = 34
    p_pattern: float = 0.5
    q_pattern: float = 0.5


PATTERN_SETTINGS = SBMSettings(num_communities=5, size_min=5, size_max=34, p=0.5, q=0.35)
CLUSTER_SETTINGS = SBMSettings(num_communities=6, size_min=5, size_max=34, p=0.55, q=0.25)
_TASK_ID = {"PATTERN": 1, "CLUSTER": 2}
_SPLIT_ID = {"train": 0, "val": 1, "test": 2, None: 3}


def _check_task(task: str) -> str:
    if not isinstance(task, str) or task.upper() not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task.upper()


def _check_count(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _settings(task: str, overrides: dict[str, object]) -> SBMSettings:
    base = PATTERN_SETTINGS if task == "PATTERN" else CLUSTER_SETTINGS
    known = {f.name for f in fields(SBMSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown SBM setting(s) {unknown}; known: {sorted(known)}")
    settings = replace(base, **overrides)
    for name in ("num_communities", "size_min", "size_max", "vocab_size", "num_patterns",
                 "pattern_size_min", "pattern_size_max"):
        _check_count(getattr(settings, name), name, minimum=1)
    for name in ("p", "q", "p_pattern", "q_pattern"):
        value = getattr(settings, name)
        if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    if settings.size_min > settings.size_max:
        raise ValueError(f"size_min ({settings.size_min}) > size_max ({settings.size_max})")
    if settings.pattern_size_min > settings.pattern_size_max:
        raise ValueError("pattern_size_min > pattern_size_max")
    return settings


def _rng(seed: int, task: str, split: str | None, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _TASK_ID[task], _SPLIT_ID[split],
                                                         index]))


@functools.lru_cache(maxsize=512)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def _upper_edges(rng: np.random.Generator, prob: np.ndarray) -> np.ndarray:
    """Edges (i < j) of a random symmetric graph with pair probabilities ``prob`` [n, n]."""
    rows, cols = _pairs(prob.shape[0])
    hit = rng.random(rows.shape[0]) < prob[rows, cols]
    return np.stack([rows[hit], cols[hit]])


def _to_data(
    upper: np.ndarray, n: int, permutation: np.ndarray, x: np.ndarray, y: np.ndarray,
    num_features: int, one_hot: bool,
) -> Data:
    """Relabel node i as permutation-position, symmetrise, sort, build the Data."""
    new_id = np.empty(n, dtype=np.int64)
    new_id[permutation] = np.arange(n)
    src, dst = new_id[upper[0]], new_id[upper[1]]
    both = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1)
    order = np.lexsort((both[1], both[0]))
    edge_index = torch.from_numpy(both[:, order].copy())
    x_new = torch.from_numpy(x[permutation].astype(np.int64))
    if one_hot:
        x_new = torch.nn.functional.one_hot(x_new, num_features).float()
    return Data(x=x_new, edge_index=edge_index, y=torch.from_numpy(y[permutation].astype(np.int64)),
                num_nodes=n)


def _cluster_graph(rng: np.random.Generator, s: SBMSettings, one_hot: bool) -> Data:
    sizes = rng.integers(s.size_min, s.size_max + 1, size=s.num_communities)
    community = np.repeat(np.arange(s.num_communities), sizes)
    n = community.shape[0]
    prob = np.where(community[:, None] == community[None, :], s.p, s.q)
    upper = _upper_edges(rng, prob)
    permutation = rng.permutation(n)  # new node j is old node permutation[j]
    features = np.zeros(n, dtype=np.int64)
    # One labelled node per community, chosen at random among its nodes.
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    labelled = starts + (rng.random(s.num_communities) * sizes).astype(np.int64)
    features[labelled] = np.arange(s.num_communities) + 1
    return _to_data(upper, n, permutation, features, community, s.num_communities + 1, one_hot)


@dataclass(frozen=True)
class _Pattern:
    upper: np.ndarray  # [2, E] edges i < j among the pattern's nodes
    features: np.ndarray  # [m]


def _make_patterns(seed: int, s: SBMSettings) -> list[_Pattern]:
    patterns = []
    for index in range(s.num_patterns):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TASK_ID["PATTERN"], 99, index]))
        m = int(rng.integers(s.pattern_size_min, s.pattern_size_max + 1))
        upper = _upper_edges(rng, np.full((m, m), s.p_pattern))
        patterns.append(_Pattern(upper, rng.integers(0, s.vocab_size, size=m)))
    return patterns


def _pattern_graph(
    rng: np.random.Generator, s: SBMSettings, pattern: _Pattern, one_hot: bool
) -> Data:
    sizes = rng.integers(s.size_min, s.size_max + 1, size=s.num_communities)
    community = np.repeat(np.arange(s.num_communities), sizes)
    n_background = community.shape[0]
    prob = np.where(community[:, None] == community[None, :], s.p, s.q)
    background = _upper_edges(rng, prob)
    features = rng.integers(0, s.vocab_size, size=n_background)
    m = pattern.features.shape[0]
    # Pattern nodes are n_background .. n_background + m - 1; each joins each background
    # node with probability q_pattern.
    link = rng.random((m, n_background)) < s.q_pattern
    pattern_node, background_node = np.nonzero(link)
    links = np.stack([background_node, pattern_node + n_background])
    upper = np.concatenate([background, links, pattern.upper + n_background], axis=1)
    n = n_background + m
    x = np.concatenate([features, pattern.features])
    y = np.concatenate([np.zeros(n_background, np.int64), np.ones(m, np.int64)])
    permutation = rng.permutation(n)
    return _to_data(upper, n, permutation, x, y, s.vocab_size, one_hot)


def generate_sbm(
    task: str,
    num_graphs: int,
    seed: int = 0,
    *,
    split: str | None = None,
    start: int = 0,
    one_hot: bool = False,
    **overrides: object,
) -> list[Data]:
    """Generate ``num_graphs`` PATTERN or CLUSTER graphs, deterministically from ``seed``.

    PATTERN graph i uses pattern ``i % num_patterns``.

    Args:
        task (str): ``"PATTERN"`` or ``"CLUSTER"``.
        num_graphs (int): how many graphs.
        seed (int, optional): the random seed; graph i depends only on (seed, task, split,
            start + i). (default: :obj:`0`)
        split (str, optional): ``"train"``, ``"val"``, ``"test"`` or :obj:`None`: separate
            random streams, so splits made with the same seed never share a graph. PATTERN's
            patterns depend on the seed only and are shared by all splits, as in the
            benchmark. (default: :obj:`None`)
        start (int, optional): index of the first graph (to generate a long sequence in
            pieces). (default: :obj:`0`)
        one_hot (bool, optional): float one-hot ``x`` (PyG's layout) instead of the long
            feature index. (default: :obj:`False`)
        **overrides: any field of :class:`SBMSettings` (e.g. ``p=0.6``, ``num_patterns=10``).

    Returns:
        list[Data]: graphs with ``x`` :math:`[N]` (or :math:`[N, F]` one-hot),
        ``edge_index`` :math:`[2, E]` and node labels ``y`` :math:`[N]`.
    """
    task = _check_task(task)
    num_graphs = _check_count(num_graphs, "num_graphs")
    seed = _check_count(seed, "seed")
    start = _check_count(start, "start")
    if split not in _SPLIT_ID:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    settings = _settings(task, overrides)
    graphs = []
    if task == "CLUSTER":
        for index in range(start, start + num_graphs):
            graphs.append(_cluster_graph(_rng(seed, task, split, index), settings, one_hot))
        return graphs
    patterns = _make_patterns(seed, settings)
    for index in range(start, start + num_graphs):
        pattern = patterns[index % settings.num_patterns]
        graphs.append(_pattern_graph(_rng(seed, task, split, index), settings, pattern, one_hot))
    return graphs


def split_sizes(task: str, num_graphs: int | None = None) -> dict[str, int]:
    """The published split sizes, scaled so that they add up to ``num_graphs``."""
    task = _check_task(task)
    published = PUBLISHED_SPLITS[task]
    total = sum(published.values())
    if num_graphs is None:
        return dict(published)
    num_graphs = _check_count(num_graphs, "num_graphs", minimum=1)
    val = round(num_graphs * published["val"] / total)
    test = round(num_graphs * published["test"] / total)
    return {"train": num_graphs - val - test, "val": val, "test": test}


class SBMDataset(InMemoryDataset):
    """One split of PATTERN or CLUSTER, generated in memory.

    Args:
        task (str): ``"PATTERN"`` or ``"CLUSTER"``.
        split (str, optional): ``"train"``, ``"val"`` or ``"test"``. (default: ``"train"``)
        num_graphs (int, optional): total over the three splits; each split gets its
            published share (PATTERN 10,000 / 2,000 / 2,000, CLUSTER 10,000 / 1,000 / 1,000);
            :obj:`None` gives the published sizes. (default: :obj:`None`)
        seed (int, optional): random seed (the splits of one seed never share a graph).
            (default: :obj:`0`)
        one_hot (bool, optional): see :func:`generate_sbm`. (default: :obj:`False`)
        transform (callable, optional): PyG's per-access transform. (default: :obj:`None`)
        pre_transform (callable, optional): PyG's transform applied once, before the data is
            kept in memory. (default: :obj:`None`)
        **overrides: any field of :class:`SBMSettings`.
    """

    def __init__(
        self,
        task: str,
        split: str = "train",
        num_graphs: int | None = None,
        seed: int = 0,
        one_hot: bool = False,
        transform=None,
        pre_transform=None,
        **overrides: object,
    ) -> None:
        self.task = _check_task(task)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.seed = seed
        count = split_sizes(self.task, num_graphs)[split]
        super().__init__(None, transform, pre_transform, None, log=False)
        graphs = generate_sbm(self.task, count, seed, split=split, one_hot=one_hot, **overrides)
        if pre_transform is not None:
            graphs = [pre_transform(graph) for graph in graphs]
        self.data, self.slices = self.collate(graphs)

    @property
    def num_classes(self) -> int:
        return 2 if self.task == "PATTERN" else CLUSTER_SETTINGS.num_communities

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.task!r}, split={self.split!r}, graphs={len(self)})"


@register_source("sbm")
def available(root: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """PATTERN and CLUSTER are always available: they are generated, nothing is read.

    Args:
        root (str or Path, optional): unused (nothing is read). (default: ``None``)
    """
    return [(task, True, "generated locally (gattn.datasets.sbm)") for task in TASKS]
