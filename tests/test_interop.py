"""gattn.interop: DGL <-> PyG. The round trips need DGL, which lives in its own environment
(bash benchmarks/peers/make_dgl_env.sh; then benchmarks/peers/.venv-dgl/bin/python -m pytest
tests/test_interop.py): here they skip. The errors without DGL run everywhere."""

import sys

import pytest
import torch
from torch_geometric.data import Data, HeteroData

from gattn.interop import from_dgl, to_dgl


def _data():
    edge_index = torch.tensor([[0, 2, 2, 1], [1, 0, 3, 1]])
    return Data(x=torch.randn(6, 3), y=torch.arange(6), edge_index=edge_index, edge_attr=torch.randn(4, 2),
                num_nodes=6)  # nodes 4 and 5 are isolated


def _hetero():
    data = HeteroData()
    data["author"].x = torch.randn(4, 3)
    data["paper"].x = torch.randn(5, 2)  # papers 3 and 4 have no edge
    data["paper"].year = torch.arange(5)
    data["author", "writes", "paper"].edge_index = torch.tensor([[0, 1, 1, 3], [0, 0, 2, 1]])
    data["author", "writes", "paper"].weight = torch.rand(4)
    data["paper", "cites", "paper"].edge_index = torch.tensor([[1, 2], [0, 0]])
    return data


def test_errors_without_dgl(monkeypatch):
    with pytest.raises(TypeError, match="from_dgl expects a dgl.DGLGraph, got Data"):
        from_dgl(_data())
    with pytest.raises(TypeError, match="to_dgl expects torch_geometric Data or HeteroData"):
        to_dgl({"edge_index": torch.zeros(2, 0)})
    monkeypatch.setitem(sys.modules, "dgl", None)
    with pytest.raises(ImportError, match="make_dgl_env.sh"):
        to_dgl(_data())


def test_homogeneous_round_trip_keeps_features_order_and_isolated_nodes():
    dgl = pytest.importorskip("dgl", reason="DGL lives in its own environment: benchmarks/peers/make_dgl_env.sh")
    data = _data()
    graph = to_dgl(data)
    assert graph.num_nodes() == 6 and graph.num_edges() == 4
    source, target = graph.edges(order="eid")
    assert torch.equal(torch.stack([source, target]).long(), data.edge_index)
    assert torch.equal(graph.ndata["x"], data.x) and torch.equal(graph.edata["edge_attr"], data.edge_attr)
    back = from_dgl(graph)
    assert back.num_nodes == 6 and torch.equal(back.edge_index, data.edge_index)
    for key in ("x", "y", "edge_attr"):
        assert torch.equal(back[key], data[key])
    native = dgl.graph((torch.tensor([0, 1]), torch.tensor([1, 2])), num_nodes=5)
    native.ndata["feat"] = torch.ones(5, 2)
    assert from_dgl(native).num_nodes == 5 and from_dgl(native).feat.shape == (5, 2)


def test_hetero_round_trip_keeps_edge_features_and_node_counts():
    pytest.importorskip("dgl", reason="DGL lives in its own environment: benchmarks/peers/make_dgl_env.sh")
    data = _hetero()
    graph = to_dgl(data)
    assert graph.num_nodes("paper") == 5 and graph.num_nodes("author") == 4
    assert set(graph.canonical_etypes) == {("author", "writes", "paper"), ("paper", "cites", "paper")}
    back = from_dgl(graph)
    assert isinstance(back, HeteroData)
    assert back["paper"].num_nodes == 5 and torch.equal(back["paper"].year, data["paper"].year)
    for edge_type in data.edge_types:
        assert torch.equal(back[edge_type].edge_index, data[edge_type].edge_index)
    assert torch.equal(back["author", "writes", "paper"].weight, data["author", "writes", "paper"].weight)


def test_bad_ids_are_named():  # checked before DGL is imported
    data = _data()
    data.edge_index = torch.tensor([[0, 7], [1, 1]])
    with pytest.raises(ValueError, match=r"data.edge_index has source ids in \[0, 7\], expected \[0, 6\)"):
        to_dgl(data)
    hetero = _hetero()
    hetero["author", "writes", "paper"].edge_index = torch.tensor([[0], [5]])
    with pytest.raises(ValueError, match=r"destination ids in \[5, 5\], expected \[0, 5\)"):
        to_dgl(hetero)
    data = _data()
    data.mystery = torch.zeros(3)
    with pytest.raises(ValueError, match="data.mystery has 3 rows: neither the 6 nodes nor the 4 edges"):
        to_dgl(data)
