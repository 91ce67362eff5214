"""OGB raw-layout loader: small files written in the real format, and the shared real copy."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gattn.datasets.ogb import OGBGraphPropDataset, available, canonical_name, evaluator

SHARED_OGB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ogb"

# Three small "molecules": (node features [n, 9], bonds [(a, b)], bond features [m, 3]).
GRAPHS = [
    (np.arange(27).reshape(3, 9) % 7, [(0, 1), (1, 2)], [[0, 0, 1], [1, 0, 0]]),
    (np.ones((2, 9), dtype=int), [(0, 1)], [[2, 1, 0]]),
    (np.arange(36).reshape(4, 9) % 5, [(0, 1), (1, 2), (2, 3), (3, 0)],
     [[0, 0, 0], [1, 1, 1], [0, 1, 0], [3, 0, 1]]),
]


def write_csv(path: Path, rows: list[list[object]] | list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else ",".join(str(v) for v in row) for row in rows]
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def write_dataset(root: Path, folder: str = "ogbg_molbace",
                  labels: list[list[object]] | None = None) -> Path:
    base = root / folder
    write_csv(base / "raw" / "num-node-list.csv.gz", [[len(g[0])] for g in GRAPHS])
    write_csv(base / "raw" / "num-edge-list.csv.gz", [[len(g[1])] for g in GRAPHS])
    write_csv(base / "raw" / "node-feat.csv.gz", [list(r) for g in GRAPHS for r in g[0]])
    write_csv(base / "raw" / "edge.csv.gz", [list(e) for g in GRAPHS for e in g[1]])
    write_csv(base / "raw" / "edge-feat.csv.gz", [list(f) for g in GRAPHS for f in g[2]])
    write_csv(base / "raw" / "graph-label.csv.gz", labels or [[1], [0], [1]])
    for name, index in (("train", [0, 1]), ("valid", [2]), ("test", [2])):
        write_csv(base / "split" / "scaffold" / f"{name}.csv.gz", [[i] for i in index])
    write_csv(base / "mapping" / "mol.csv.gz", ["smiles,mol_id", "C,a", "CC,b", "CCC,c"])
    return base


def test_reads_graphs_in_ogb_order(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    for name in ("ogbg-molbace", "ogbg_molbace"):
        dataset = OGBGraphPropDataset(name, tmp_path)
        assert dataset.name == "ogbg-molbace" and len(dataset) == 3
        assert dataset.num_tasks == 1
        assert dataset.task_type == "binary classification"
        assert dataset.eval_metric == "rocauc"
    for (feat, bonds, bond_feat), data in zip(GRAPHS, dataset):
        assert data.x.dtype == torch.long and torch.equal(data.x, torch.tensor(feat))
        assert data.num_nodes == len(feat)
        # Each bond becomes two directed edges, one after the other, with equal features.
        expected = [list(e) for b in bonds for e in (b, b[::-1])]
        assert data.edge_index.t().tolist() == expected
        assert data.edge_attr.tolist() == [f for f in bond_feat for _ in range(2)]
        assert data.y.dtype == torch.float32 and data.y.shape == (1, 1)
    assert [float(d.y) for d in dataset] == [1.0, 0.0, 1.0]
    split = dataset.get_idx_split()
    assert {k: v.tolist() for k, v in split.items()} == {
        "train": [0, 1], "valid": [2], "test": [2]}
    assert all(v.dtype == torch.long for v in split.values())


def test_same_graphs_as_ogbs_own_raw_reader(tmp_path: Path) -> None:
    from ogb.io.read_graph_raw import read_csv_graph_raw

    base = write_dataset(tmp_path)
    reference = read_csv_graph_raw(str(base / "raw"), add_inverse_edge=True)
    for graph, data in zip(reference, OGBGraphPropDataset("ogbg-molbace", tmp_path)):
        assert np.array_equal(graph["edge_index"], data.edge_index.numpy())
        assert np.array_equal(graph["edge_feat"], data.edge_attr.numpy())
        assert np.array_equal(graph["node_feat"], data.x.numpy())
        assert graph["num_nodes"] == data.num_nodes


def test_missing_labels_stay_nan_and_regression_metadata(tmp_path: Path) -> None:
    labels = [",".join(["1", ""] + ["0"] * 10), ",".join(["nan"] * 12), ",".join(["1"] * 12)]
    write_dataset(tmp_path, "ogbg_moltox21", labels=labels)
    dataset = OGBGraphPropDataset("ogbg-moltox21", tmp_path)
    assert dataset.num_tasks == 12 and dataset.eval_metric == "rocauc"
    assert math.isnan(dataset[0].y[0, 1]) and dataset[0].y[0, 0] == 1
    assert torch.isnan(dataset[1].y).all()
    write_dataset(tmp_path, "ogbg_molesol", labels=[[-0.77], [-3.3], [1.5]])
    esol = OGBGraphPropDataset("ogbg_molesol", tmp_path)
    assert esol.task_type == "regression" and esol.eval_metric == "rmse"
    torch.testing.assert_close(torch.cat([d.y for d in esol]).flatten(),
                               torch.tensor([-0.77, -3.3, 1.5]))


def test_missing_files_are_named_with_the_folder(tmp_path: Path) -> None:
    base = write_dataset(tmp_path)
    (base / "raw" / "edge-feat.csv.gz").unlink()
    (base / "split" / "scaffold" / "valid.csv.gz").unlink()
    with pytest.raises(FileNotFoundError) as error:
        OGBGraphPropDataset("ogbg-molbace", tmp_path)
    message = str(error.value)
    assert "raw/edge-feat.csv.gz" in message and "split/scaffold/valid.csv.gz" in message
    assert str(base) in message
    with pytest.raises(FileNotFoundError, match="ogbg_molhiv"):
        OGBGraphPropDataset("ogbg-molhiv", tmp_path)


def test_malformed_rows_are_counted_and_reported(tmp_path: Path) -> None:
    base = write_dataset(tmp_path)
    rows = [",".join(map(str, r)) for g in GRAPHS for r in g[0]]
    rows[1] = rows[1] + ",4"  # ten fields
    rows[4] = "1,2,x,4,5,6,7,8,9"  # not a number
    rows[6] = "1,2,3"  # three fields
    write_csv(base / "raw" / "node-feat.csv.gz", rows)
    write_csv(base / "raw" / "edge.csv.gz", ["0,1", "1,2", "0,one", "0,1", "1,2", "2,3", "3,0"])
    with pytest.raises(ValueError) as error:
        OGBGraphPropDataset("ogbg-molbace", tmp_path)
    message = str(error.value)
    assert "raw/node-feat.csv.gz: 3 malformed row(s)" in message
    assert "line 2" in message and "line 5" in message and "'x'" in message
    assert "raw/edge.csv.gz: 1 malformed row(s)" in message and "'one'" in message


def test_inconsistent_counts_are_errors(tmp_path: Path) -> None:
    base = write_dataset(tmp_path)
    write_csv(base / "raw" / "num-node-list.csv.gz", [[3], [2], [5]])
    with pytest.raises(ValueError, match="node-feat has 9 rows"):
        OGBGraphPropDataset("ogbg-molbace", tmp_path)
    base = write_dataset(tmp_path)
    write_csv(base / "raw" / "edge.csv.gz", ["0,1", "1,3", "0,1", "0,1", "1,2", "2,3", "3,0"])
    with pytest.raises(ValueError, match="outside their graph"):
        OGBGraphPropDataset("ogbg-molbace", tmp_path)
    base = write_dataset(tmp_path)
    write_csv(base / "split" / "scaffold" / "test.csv.gz", [[7]])
    with pytest.raises(ValueError, match="split/scaffold/test"):
        OGBGraphPropDataset("ogbg-molbace", tmp_path)


def test_available_lists_present_and_missing(tmp_path: Path) -> None:
    write_dataset(tmp_path, "ogbg_molbace")
    broken = write_dataset(tmp_path, "ogbg_molesol")
    (broken / "raw" / "edge.csv.gz").unlink()
    status = {name: (present, detail) for name, present, detail in available(tmp_path)}
    assert status["ogbg-molbace"] == (True, str(tmp_path / "ogbg_molbace"))
    assert status["ogbg-molesol"][0] is False and "raw/edge.csv.gz" in status["ogbg-molesol"][1]
    assert status["ogbg-molhiv"][0] is False and "missing folder" in status["ogbg-molhiv"][1]


def test_names_and_evaluator_offline() -> None:
    assert canonical_name("OGBG_MOLBACE") == "ogbg-molbace"
    with pytest.raises(ValueError, match="name"):
        canonical_name("bace")
    from sklearn.metrics import roc_auc_score

    y_true = np.array([[0], [1], [1], [0], [1]], dtype=float)
    y_pred = np.array([[0.1], [0.8], [0.3], [0.4], [0.9]])
    result = evaluator("ogbg_molbace").eval({"y_true": y_true, "y_pred": y_pred})
    assert result["rocauc"] == pytest.approx(roc_auc_score(y_true[:, 0], y_pred[:, 0]))
    rmse = evaluator("ogbg-molesol").eval({"y_true": y_true, "y_pred": y_pred})["rmse"]
    assert rmse == pytest.approx(float(np.sqrt(((y_true - y_pred) ** 2).mean())))


@pytest.mark.skipif(not (SHARED_OGB / "ogbg_molbace").is_dir(), reason="shared OGB data absent")
def test_real_shared_copies() -> None:
    bace = OGBGraphPropDataset("ogbg-molbace", SHARED_OGB)
    assert len(bace) == 1513
    assert {k: len(v) for k, v in bace.get_idx_split().items()} == {
        "train": 1210, "valid": 151, "test": 152}
    assert bace._data.x.shape == (51577, 9) and bace._data.edge_index.shape == (2, 2 * 55768)
    assert bace.num_tasks == 1 and bace.task_type == "binary classification"
    labels = torch.cat([d.y for d in bace])
    assert set(labels.flatten().tolist()) == {0.0, 1.0}
    from ogb.io.read_graph_raw import read_csv_graph_raw

    reference = read_csv_graph_raw(str(bace.folder / "raw"), add_inverse_edge=True)
    for index in (0, 700, 1512):
        assert np.array_equal(reference[index]["edge_index"], bace[index].edge_index.numpy())
        assert np.array_equal(reference[index]["node_feat"], bace[index].x.numpy())
    if (SHARED_OGB / "ogbg_molesol").is_dir():
        esol = OGBGraphPropDataset("ogbg_molesol", SHARED_OGB)
        assert len(esol) == 1128 and esol.eval_metric == "rmse"
