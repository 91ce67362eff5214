"""The node classification pipeline: sampled training and layer-wise evaluation on a small
random graph, the full-batch option, the command, and ogbn-arxiv's raw files written here."""

import gzip

import numpy as np
import pytest
import torch

from gattn import cli
from gattn.datasets.ogbn import load_ogbn_arxiv, random_graph
from gattn.pipelines import ConfigError, get_pipeline, make_config, run

SMALL = dict(dataset="random", nodes=300, edges=2400, features=8, classes=3, hidden=16, heads=2,
             fanout=(4, 3), batch_size=64, inference_batch_size=100, epochs=2, lr=0.01, threads=1, progress=False)


@pytest.fixture
def pipeline():
    return get_pipeline("node_classification")


@pytest.mark.parametrize("options", [dict(conv="gattn"), dict(conv="gat", full_batch=True)])
def test_quick_run(options, pipeline, tmp_path):
    config = make_config(pipeline, {**SMALL, **options})
    result = run(pipeline, config, tmp_path / "run")
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0 and result.metrics["epochs"] == 2
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_options_are_checked(pipeline):
    with pytest.raises(ConfigError, match="--fanout needs one count per layer"):
        make_config(pipeline, {**SMALL, "layers": 3})
    with pytest.raises(ConfigError, match="divisible by --heads"):
        make_config(pipeline, {**SMALL, "hidden": 15})


def test_command(tmp_path, capsys):
    argv = ["train", "node_classification", "--dataset", "random", "--nodes", "200", "--edges", "1200",
            "--features", "6", "--classes", "3", "--hidden", "8", "--heads", "2", "--fanout", "3,2",
            "--batch-size", "50", "--epochs", "1", "--conv", "transformer", "--no-progress", "--threads", "1",
            "--runs-dir", str(tmp_path), "--run-name", "r"]
    assert cli.main(argv) == 0
    assert "test_accuracy" in capsys.readouterr().out


def test_random_graph_has_no_self_loops_and_disjoint_masks():
    data = random_graph(100, 500, 4, 3, seed=1)
    assert not bool((data.edge_index[0] == data.edge_index[1]).any())
    assert int(data.train_mask.sum() + data.val_mask.sum() + data.test_mask.sum()) == 100
    assert not bool((data.train_mask & data.test_mask).any())
    assert torch.equal(random_graph(100, 500, 4, 3, seed=1).y, data.y)


def test_random_graph_labels_follow_the_neighbourhood_mean(monkeypatch):
    """Labels: arg-max of a projection of x_i + the mean of the in-neighbours' x, summed in
    chunks of edges (small chunks here: several per graph) as one sum over all of them."""
    from gattn.datasets import ogbn

    monkeypatch.setattr(ogbn, "_CHUNK_EDGES", 64)
    data = random_graph(50, 500, 6, 4, seed=3)
    source, target = data.edge_index
    mean = torch.zeros(50, 6)
    for node in range(50):
        incoming = source[target == node]
        if incoming.numel():
            mean[node] = data.x[incoming].mean(0)
    generator = torch.Generator().manual_seed(3)
    for shape in ((500,), (500,), (50, 6)):  # replay the draws before the projection
        torch.randint(0, 2, shape, generator=generator) if len(shape) == 1 else torch.randn(*shape, generator=generator)
    projection = torch.randn(6, 4, generator=generator)
    assert torch.equal(((data.x + mean) @ projection).argmax(1), data.y)


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        for row in rows:
            handle.write(",".join(str(v) for v in np.atleast_1d(row)) + "\n")


def test_ogbn_arxiv_raw_files(tmp_path):
    folder = tmp_path / "ogb" / "ogbn_arxiv"
    rng = np.random.default_rng(0)
    _write(folder / "raw" / "edge.csv.gz", [(0, 1), (1, 2), (3, 0)])
    _write(folder / "raw" / "node-feat.csv.gz", rng.normal(size=(4, 3)).round(3))
    _write(folder / "raw" / "node-label.csv.gz", [1, 0, 2, 1])
    for part, ids in (("train", [0, 1]), ("valid", [2]), ("test", [3])):
        _write(folder / "split" / "time" / f"{part}.csv.gz", ids)
    data = load_ogbn_arxiv(tmp_path)
    assert data.num_nodes == 4 and data.edge_index.size(1) == 6  # made undirected
    assert data.train_mask.tolist() == [True, True, False, False] and data.y.tolist() == [1, 0, 2, 1]
    _write(folder / "raw" / "edge.csv.gz", [(0, 1), (1, "x"), (3, 9)])
    with pytest.raises(ValueError, match=r"raw/edge.csv.gz: 1 malformed row\(s\), e.g. line 2"):
        load_ogbn_arxiv(tmp_path)
    with pytest.raises(FileNotFoundError, match="ogbn-arxiv not found: looked for raw/edge.csv.gz"):
        load_ogbn_arxiv(tmp_path / "elsewhere")


def test_checkpointing_trains_the_same_model(pipeline, tmp_path):
    """--checkpoint (activation checkpointing, full batch, with dropout) trains to the plain run's metrics."""
    base = {**SMALL, "conv": "gattn", "full_batch": True, "dropout": 0.3, "epochs": 3}
    config = make_config(pipeline, {**base, "checkpoint": True})
    assert config.checkpoint and "checkpointed" in pipeline.describe(config)
    graph = pipeline.prepare(config)
    assert pipeline.build_model(config, graph, None).checkpoint
    plain = run(pipeline, make_config(pipeline, base), tmp_path / "plain").metrics
    checkpointed = run(pipeline, config, tmp_path / "checkpointed").metrics
    assert plain.keys() == checkpointed.keys()
    for name, value in plain.items():
        if name.endswith("time_s") or not isinstance(value, float):
            continue
        assert checkpointed[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
