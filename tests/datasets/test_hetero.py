"""HeCo-layout and PyG-raw heterogeneous readers, on files the tests write in those formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gattn.datasets import load_heco, load_pyg_hetero, read_relation_file
from gattn.datasets.hetero import available

SHARED_ACM = Path(__file__).resolve().parents[3] / "shared" / "data" / "hetero" / "acm"


def write_relation(path: Path, rows: np.ndarray) -> None:
    path.write_text("".join(f"{a}\t{b}\n" for a, b in rows))


def write_splits(folder: Path, num_labels: int, split: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(num_labels)
    parts = dict(train=order[:6], val=order[6:10], test=order[10:])
    for name, index in parts.items():
        np.save(folder / f"{name}_{split}.npy", index)
    return parts


def acm_like(folder: Path, seed: int = 0) -> dict:
    """Papers (target, sparse features), authors (dense .npz features), subjects (none)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    num_p, num_a, num_s = 14, 9, 3
    pa = np.stack([rng.integers(0, num_p, 30), rng.integers(0, num_a, 30)], 1)
    pa[0] = (num_p - 1, num_a - 1)
    ps = np.stack([np.arange(num_p), rng.integers(0, num_s, num_p)], 1)
    write_relation(folder / "pa.txt", pa)
    write_relation(folder / "ps.txt", ps)
    p_feat = sp.random(num_p, 5, density=0.4, format="csr", random_state=seed, dtype=np.float32)
    sp.save_npz(folder / "p_feat.npz", p_feat)
    a_feat = rng.normal(size=(num_a, 4)).astype(np.float32)
    np.savez(folder / "a_feat.npz", a_feat)
    labels = rng.integers(0, 3, num_p).astype(np.float64)  # HeCo's ACM stores float classes
    np.save(folder / "labels.npy", labels)
    splits = write_splits(folder, num_p)
    sp.save_npz(folder / "pap.npz", sp.eye(num_p, format="csr"))
    return dict(pa=pa, ps=ps, p_feat=p_feat.toarray(), a_feat=a_feat, labels=labels, splits=splits,
                counts=dict(p=num_p, a=num_a, s=num_s))


def test_heco_reader_acm_layout(tmp_path: Path) -> None:
    truth = acm_like(tmp_path / "acm")
    data = load_heco(tmp_path / "acm")
    assert data.target_type == "p" and data.num_classes == int(truth["labels"].max()) + 1
    assert set(data.node_types) == {"p", "a", "s"}
    torch.testing.assert_close(data["p"].x, torch.from_numpy(truth["p_feat"]))
    torch.testing.assert_close(data["a"].x, torch.from_numpy(truth["a_feat"]))
    assert "x" not in data["s"] and data["s"].num_nodes == truth["counts"]["s"]
    assert torch.equal(data["p", "pa", "a"].edge_index, torch.from_numpy(truth["pa"].T))
    assert torch.equal(data["a", "ap", "p"].edge_index, torch.from_numpy(truth["pa"].T[::-1].copy()))
    assert torch.equal(data["s", "sp", "p"].edge_index, torch.from_numpy(truth["ps"].T[::-1].copy()))
    assert torch.equal(data["p"].y, torch.from_numpy(truth["labels"].astype(np.int64)))
    for part, index in truth["splits"].items():
        mask = data["p"][f"{part}_mask"]
        assert mask.sum() == len(index) and mask[torch.from_numpy(index)].all()
    assert ("p", "pap", "p") not in data.edge_types


def test_heco_reader_options(tmp_path: Path) -> None:
    truth = acm_like(tmp_path / "acm")
    data = load_heco(tmp_path / "acm", featureless="onehot", add_reverse=False, metapaths=True,
                     node_type_names={"p": "paper", "a": "author", "s": "subject"})
    assert data.target_type == "paper"
    assert torch.equal(data["subject"].x, torch.eye(truth["counts"]["s"]))
    assert ("author", "ap", "paper") not in data.edge_types
    assert data["paper", "pap", "paper"].edge_index.size(1) == truth["counts"]["p"]
    with pytest.raises(ValueError, match="featureless"):
        load_heco(tmp_path / "acm", featureless="zeros")


def test_heco_reader_infers_a_target_that_is_not_the_first_letter(tmp_path: Path) -> None:
    """DBLP's layout: pa.txt, pc.txt, target authors (the second column of pa.txt)."""
    folder = tmp_path / "dblp"
    folder.mkdir()
    rng = np.random.default_rng(1)
    write_relation(folder / "pa.txt", np.stack([rng.integers(0, 20, 40), rng.integers(0, 12, 40)], 1))
    write_relation(folder / "pc.txt", np.stack([np.arange(20), rng.integers(0, 4, 20)], 1))
    np.save(folder / "labels.npy", rng.integers(0, 4, 12))
    write_splits(folder, 12)
    data = load_heco(folder)  # no meta-path file: the one type with 12 nodes is the target
    assert data.target_type == "a" and data["a"].y.numel() == 12
    assert {("p", "pc", "c"), ("c", "cp", "p"), ("a", "ap", "p")} <= set(data.edge_types)
    np.save(folder / "labels.npy", rng.integers(0, 4, 20))  # as many labels as papers
    assert load_heco(folder).target_type == "p"
    sp.save_npz(folder / "apa.npz", sp.eye(20, format="csr"))  # the meta-path file decides
    data = load_heco(folder)
    assert data.target_type == "a" and data["a"].num_nodes == 20
    assert load_heco(folder, target="p").target_type == "p"
    with pytest.raises(ValueError, match="`target`='x'"):
        load_heco(folder, target="x")
    os.remove(folder / "apa.npz")
    np.save(folder / "labels.npy", rng.integers(0, 4, 5))
    with pytest.raises(ValueError, match="cannot tell which node type"):
        load_heco(folder)


def test_heco_reader_freebase_layout_without_any_features(tmp_path: Path) -> None:
    folder = tmp_path / "freebase"
    folder.mkdir()
    write_relation(folder / "ma.txt", np.array([[0, 0], [1, 2], [2, 1]]))
    write_relation(folder / "md.txt", np.array([[0, 0], [2, 0]]))
    np.save(folder / "labels.npy", np.array([0, 1, 2]))
    np.save(folder / "train_20.npy", np.array([0]))
    np.save(folder / "val_20.npy", np.array([1]))
    np.save(folder / "test_20.npy", np.array([2]))
    sp.save_npz(folder / "mam.npz", sp.eye(3, format="csr"))
    data = load_heco(folder)
    assert data.target_type == "m"
    assert {t: data[t].num_nodes for t in data.node_types} == {"a": 3, "d": 1, "m": 3}
    assert all("x" not in data[t] for t in data.node_types)


def test_malformed_rows_are_counted_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "pa.txt"
    path.write_text("0\t1\n1\t2\t3\n\n2\tx\n-1\t4\n5\t6\n")
    with pytest.raises(ValueError, match=r"3 malformed row\(s\).*line 2.*line 4.*line 5"):
        read_relation_file(path)
    path.write_text("0\t1\n\n2 3\n")
    assert read_relation_file(path).tolist() == [[0, 1], [2, 3]]


def test_missing_files_name_the_file_and_folder(tmp_path: Path) -> None:
    acm_like(tmp_path / "acm")
    with pytest.raises(FileNotFoundError, match=r"'train_40\.npy' not found \(looked in .*acm"):
        load_heco(tmp_path / "acm", split=40)
    os.remove(tmp_path / "acm" / "labels.npy")
    with pytest.raises(FileNotFoundError, match=r"'labels\.npy' not found \(looked in .*acm"):
        load_heco(tmp_path / "acm")
    with pytest.raises(FileNotFoundError, match="pa.txt"):
        read_relation_file(tmp_path / "pa.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no relation file"):
        load_heco(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_heco(tmp_path / "nowhere")


def test_ids_out_of_range_are_reported(tmp_path: Path) -> None:
    truth = acm_like(tmp_path / "acm")
    rows = np.concatenate([truth["pa"], [[truth["counts"]["p"], 0]]])  # paper id = #papers
    write_relation(tmp_path / "acm" / "pa.txt", rows)
    with pytest.raises(ValueError, match=rf"out of range for node type 'p'.*row {len(rows)}"):
        load_heco(tmp_path / "acm")


def write_hgb_raw(raw: Path) -> None:
    """A tiny HGB 'ACM' in the HGB benchmark's raw format (info.dat, node.dat, link.dat, ...)."""
    raw.mkdir(parents=True)
    info = {
        "node.dat": {"node type": {"0": "paper", "1": "author"}},
        "link.dat": {"link type": {"0": {"start": 0, "end": 1, "meaning": "paper-author"},
                                   "1": {"start": 1, "end": 0, "meaning": "author-paper"}}},
        "label.dat": {"node type": {"0": {"0": "a", "1": "b"}}},
    }
    (raw / "info.dat").write_text(json.dumps(info))
    nodes = [f"{i}\tp{i}\t0\t{i}.0,1.0" for i in range(4)] + [f"{i}\ta{i}\t1\t0.5,{i}.0" for i in range(4, 7)]
    (raw / "node.dat").write_text("\n".join(nodes) + "\n")
    links = ["0\t4\t0\t1.0", "1\t5\t0\t1.0", "3\t6\t0\t1.0", "4\t0\t1\t1.0", "5\t1\t1\t1.0", "6\t3\t1\t1.0"]
    (raw / "link.dat").write_text("\n".join(links) + "\n")
    (raw / "label.dat").write_text("0\tp0\t0\t0\n1\tp1\t0\t1\n")
    (raw / "label.dat.test").write_text("2\tp2\t0\t1\n")


def test_pyg_hgb_raw_files_are_read(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"info\.dat.*label\.dat\.test not found in folder .*ACM"):
        load_pyg_hetero("hgb-acm", tmp_path)
    write_hgb_raw(tmp_path / "acm" / "raw" / "ACM")
    data = load_pyg_hetero("hgb-acm", tmp_path)
    assert data["paper"].x.shape == (4, 2) and data["author"].x.shape == (3, 2)
    assert data["paper", "to", "author"].edge_index.tolist() == [[0, 1, 3], [0, 1, 2]]
    assert data["paper"].y[:3].tolist() == [0, 1, 1] and data["paper"].test_mask.tolist() == [0, 0, 1, 0]
    names = {name: present for name, present, _ in available(tmp_path.parent / "nothing")}
    assert names["heco-acm"] is False and names["hgb-acm"] is False
    with pytest.raises(ValueError, match="`name`"):
        load_pyg_hetero("hgb-unknown", tmp_path)


def test_pyg_imdb_raw_files_are_read(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    sizes = (3, 2, 2)  # movies, directors, actors
    for i, n in enumerate(sizes):
        sp.save_npz(raw / f"features_{i}.npz", sp.csr_matrix(np.eye(n, 3, dtype=np.float32)))
    adjacency = np.zeros((7, 7), dtype=np.float32)
    adjacency[0, 3] = adjacency[3, 0] = 1  # movie 0 - director 0
    adjacency[2, 6] = adjacency[6, 2] = 1  # movie 2 - actor 1
    sp.save_npz(raw / "adjM.npz", sp.csr_matrix(adjacency))
    np.save(raw / "labels.npy", np.array([0, 1, 2]))
    np.savez(raw / "train_val_test_idx.npz", train_idx=np.array([0]), val_idx=np.array([1]),
             test_idx=np.array([2]))
    data = load_pyg_hetero("imdb", tmp_path)
    assert data["movie", "to", "director"].edge_index.tolist() == [[0], [0]]
    assert data["movie", "to", "actor"].edge_index.tolist() == [[2], [1]]


@pytest.mark.skipif(not SHARED_ACM.is_dir(), reason="needs ../shared/data/hetero/acm")
def test_shared_acm() -> None:
    data = load_heco(SHARED_ACM)
    assert data.target_type == "p" and data.num_classes == 3
    assert data["p"].num_nodes == 4019 and data["a"].num_nodes == 7167 and data["s"].num_nodes == 60
    assert int(data["p"].train_mask.sum()) == 60
    data.validate()
