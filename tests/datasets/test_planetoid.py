"""Planetoid reader on raw files the tests write in Planetoid's format (pickled scipy / numpy
matrices, a pickled adjacency dict, a text test index)."""

from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gattn.datasets.planetoid import available, load_planetoid


def write_planetoid(raw: Path, name: str = "cora", num_nodes: int = 600, num_train: int = 14, num_test: int = 60,
                    classes: int = 7, features: int = 8, seed: int = 0) -> dict:
    """Planetoid's raw layout: ``x``/``y`` the labelled training nodes, ``allx``/``ally`` every node
    before the test nodes, ``tx``/``ty`` the test nodes (listed, shuffled, in ``test.index``);
    labels one-hot, features scipy sparse; the graph a dict of neighbour lists. The split then
    is the first ``num_train`` nodes, the next 500, and the test index."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, classes, num_nodes)
    feats = (rng.random((num_nodes, features)) < 0.3).astype(np.float32)
    feats[np.arange(num_nodes), labels % features] = 1.0  # learnable from the features
    onehot = np.eye(classes, dtype=np.int64)[labels]
    num_all = num_nodes - num_test
    test_index = rng.permutation(np.arange(num_all, num_nodes))
    graph = defaultdict(list)
    for a, b in rng.integers(0, num_nodes, (3 * num_nodes, 2)):
        graph[int(a)].append(int(b))
        graph[int(b)].append(int(a))
    parts = {"x": sp.csr_matrix(feats[:num_train]), "y": onehot[:num_train], "allx": sp.csr_matrix(feats[:num_all]),
             "ally": onehot[:num_all], "tx": sp.csr_matrix(feats[test_index]), "ty": onehot[test_index],
             "graph": graph}
    for part, value in parts.items():
        with open(raw / f"ind.{name}.{part}", "wb") as handle:
            pickle.dump(value, handle)
    (raw / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return dict(labels=labels, features=feats, test_index=test_index)


def test_reads_the_raw_layout(tmp_path: Path) -> None:
    truth = write_planetoid(tmp_path / "Cora" / "raw")
    data = load_planetoid("Cora", tmp_path / "Cora" / "raw")
    assert data.num_nodes == 600 and data.x.shape == (600, 8)
    assert torch.equal(data.y, torch.from_numpy(truth["labels"]))
    torch.testing.assert_close(data.x, torch.from_numpy(truth["features"]))
    assert data.train_mask.sum() == 14 and data.val_mask.sum() == 500 and data.test_mask.sum() == 60
    assert data.test_mask[torch.from_numpy(truth["test_index"])].all()
    assert not (tmp_path / "Cora" / "processed").exists()  # processed in a temporary folder


def test_missing_files_and_names(tmp_path: Path) -> None:
    (tmp_path / "ind.cora.x").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.y.*not found in folder"):
        load_planetoid("Cora", tmp_path)
    with pytest.raises(ValueError, match="`name` must be one of Cora, CiteSeer, PubMed"):
        load_planetoid("cora", tmp_path)


def test_available_lists_each_set(tmp_path: Path) -> None:
    write_planetoid(tmp_path / "Cora" / "raw")
    rows = {name: (present, detail) for name, present, detail in available(tmp_path)}
    assert rows["Cora"][0] and not rows["PubMed"][0]
    assert "looked for ind.pubmed.*" in rows["PubMed"][1]
    (tmp_path / "Cora" / "raw" / "ind.cora.graph").unlink()
    rows = {name: (present, detail) for name, present, detail in available(tmp_path)}
    assert not rows["Cora"][0] and rows["Cora"][1].endswith("ind.cora.graph")


def test_gattn_datasets_lists_planetoid_and_hetero(tmp_path: Path, capsys) -> None:
    from gattn import cli
    from tests.datasets.test_hetero import acm_like

    write_planetoid(tmp_path / "planetoid" / "Cora" / "raw")
    acm_like(tmp_path / "hetero" / "acm")
    assert cli.main(["datasets", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "[planetoid]" in lines and "[hetero]" in lines
    present = {line.split()[0] for line in lines if len(line.split()) > 1 and line.split()[1] == "yes"}
    assert {"Cora", "heco-acm"} <= present and "heco-dblp" not in present
