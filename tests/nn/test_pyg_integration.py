"""gattn's graph layers in ordinary PyG code (issue 9, defects 1-4): inference mode,
saving data after a forward pass, in-place edits of the graph, MessagePassing features
(to_hetero, HeteroConv, lazy sizes, `size`, tuples, EdgeIndex, sparse adjacency)."""

from __future__ import annotations

import io

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.data import Data, HeteroData
from torch_geometric.loader import DataLoader

import gattn.nn as gattn_nn
from gattn.models import GraphTransformer
from gattn.nn import GraphTransformerConv, GraphTransformerLayer, HopfieldPooling


def _graph(num_nodes=10, num_edges=30, seed=0, channels=6):
    gen = torch.Generator().manual_seed(seed)
    return Data(x=torch.randn(num_nodes, channels, generator=gen),
                edge_index=torch.randint(0, num_nodes, (2, num_edges), generator=gen))


def _layers():
    return {
        "GraphTransformerConv": lambda data: GraphTransformerConv(6, 4, heads=2)(data.x, data.edge_index),
        "GraphTransformerLayer": lambda data: GraphTransformerLayer(8, heads=2)(
            torch.nn.functional.pad(data.x, (0, 2)), data.edge_index),
        "GraphTransformer": lambda data: GraphTransformer(6, 8, 2, num_layers=2, heads=2)(data),
        "HopfieldPooling": lambda data: HopfieldPooling(6, num_heads=2)(data.x, batch=data.batch),
        "TransformerConv": lambda data: gattn_nn.TransformerConv(6, 4, heads=2)(data.x, data.edge_index),
        "GATConv": lambda data: gattn_nn.GATConv(6, 4, heads=2)(data.x, data.edge_index),
        "GATv2Conv": lambda data: gattn_nn.GATv2Conv(6, 4, heads=2)(data.x, data.edge_index),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_layers_run_under_inference_mode(name):
    """Defect 1: batches collated inside inference mode (as Lightning evaluates) have
    inference tensors, which have no version counter."""
    loader = DataLoader([_graph(seed=s) for s in range(3)], batch_size=3)
    torch.manual_seed(0)
    run = _layers()[name]
    with torch.inference_mode():
        batch = next(iter(loader))
        assert batch.edge_index.is_inference()
        out = run(batch)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["GraphTransformerConv", "TransformerConv", "GATConv", "GATv2Conv"])
def test_saved_data_is_unchanged_by_a_forward_pass(name, tmp_path):
    """Defect 2: torch.save of a Data (or of its edge_index) after a forward pass writes
    the same bytes as before and loads with weights_only=True, without gattn."""
    data = _graph()

    def saved(obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    before_data, before_index = saved(data), saved(data.edge_index)
    _layers()[name](data).sum().backward()
    assert saved(data) == before_data and saved(data.edge_index) == before_index
    torch.save(data.edge_index, tmp_path / "edge_index.pt")
    assert torch.equal(torch.load(tmp_path / "edge_index.pt", weights_only=True), data.edge_index)


@pytest.mark.parametrize("name", ["GraphTransformerConv", "TransformerConv", "GATConv", "GATv2Conv"])
def test_in_place_edit_of_the_graph_is_seen(name):
    """Defect 3: an edit through .numpy() or .data (no version bump) changes the result
    exactly as a fresh graph would."""
    data = _graph()
    torch.manual_seed(1)
    conv = getattr(gattn_nn, name)(6, 4, heads=2)
    first = conv(data.x, data.edge_index)
    data.edge_index.numpy()[0, :10] = 0
    fresh = data.edge_index.clone()
    torch.testing.assert_close(conv(data.x, data.edge_index), conv(data.x, fresh))
    assert not torch.allclose(conv(data.x, data.edge_index), first)
    data.edge_index.data[1, :10] = 1
    torch.testing.assert_close(conv(data.x, data.edge_index), conv(data.x, data.edge_index.clone()))


def _hetero_data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["paper"].x = torch.randn(20, 7, generator=gen)
    data["author"].x = torch.randn(15, 5, generator=gen)
    data["paper"].y = torch.randint(0, 3, (20,), generator=gen)
    data["author", "writes", "paper"].edge_index = torch.stack(
        [torch.randint(0, 15, (50,), generator=gen), torch.randint(0, 20, (50,), generator=gen)])
    data["paper", "rev_writes", "author"].edge_index = data["author", "writes", "paper"].edge_index.flip(0)
    data["paper", "cites", "paper"].edge_index = torch.randint(0, 20, (2, 40), generator=gen)
    return data


class _Net(torch.nn.Module):
    def __init__(self, conv_cls, **kwargs):
        super().__init__()
        self.conv1 = conv_cls((-1, -1), 8, **kwargs)
        self.conv2 = conv_cls((-1, -1), 3, **kwargs)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


@pytest.mark.parametrize("name, kwargs", [
    ("TransformerConv", {}), ("GATConv", {"add_self_loops": False}), ("GATv2Conv", {"add_self_loops": False}),
    ("GraphTransformerConv", {}),
])
def test_to_hetero_wires_gattn_layers_like_pygs(name, kwargs):
    """Defect 4: under to_hetero a gattn layer is a MessagePassing leaf: one copy per edge
    type, summed per destination node type; with the same weights it equals the model
    built from PyG's own layer (GraphTransformerConv: from the per-edge-type sums)."""
    data = _hetero_data()
    torch.manual_seed(2)
    ours = pyg_nn.to_hetero(_Net(getattr(gattn_nn, name), **kwargs), data.metadata(), aggr="sum")
    ours(data.x_dict, data.edge_index_dict)  # lazy sizes
    out = ours(data.x_dict, data.edge_index_dict)
    assert set(out) == {"paper", "author"} and out["paper"].shape == (20, 3) and out["author"].shape == (15, 3)
    if hasattr(pyg_nn, name):
        theirs = pyg_nn.to_hetero(_Net(getattr(pyg_nn, name), **kwargs), data.metadata(), aggr="sum")
        theirs(data.x_dict, data.edge_index_dict)
        theirs.load_state_dict(ours.state_dict())
        want = theirs(data.x_dict, data.edge_index_dict)
        for node_type in out:
            torch.testing.assert_close(out[node_type], want[node_type], atol=1e-5, rtol=1e-5)
    else:  # the conv of one layer, applied per edge type and summed, by hand
        conv = ours.conv1
        manual = {}
        for edge_type, edge_index in data.edge_index_dict.items():
            src, _, dst = edge_type
            key = "__".join(edge_type)
            part = conv[key]((data.x_dict[src], data.x_dict[dst]), edge_index)
            manual[dst] = manual.get(dst, 0) + part
        first = {k: v for k, v in manual.items()}
        hidden = {k: v.relu() for k, v in first.items()}
        second = {}
        for edge_type, edge_index in data.edge_index_dict.items():
            src, _, dst = edge_type
            part = ours.conv2["__".join(edge_type)]((hidden[src], hidden[dst]), edge_index)
            second[dst] = second.get(dst, 0) + part
        for node_type in out:
            torch.testing.assert_close(out[node_type], second[node_type])


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GraphTransformerConv"])
def test_to_hetero_model_trains(name):
    """A PyG model written for PyG, with a gattn layer swapped in, trains under to_hetero."""
    data = _hetero_data(seed=3)
    torch.manual_seed(3)
    kwargs = {"add_self_loops": False} if name == "GATConv" else {}
    model = pyg_nn.to_hetero(_Net(getattr(gattn_nn, name), **kwargs), data.metadata(), aggr="sum")
    model(data.x_dict, data.edge_index_dict)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.x_dict, data.edge_index_dict)["paper"], data["paper"].y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_hetero_conv_with_gattn_layers_equals_pyg():
    data = _hetero_data(seed=4)
    torch.manual_seed(4)

    def build(module):
        return pyg_nn.HeteroConv({
            ("author", "writes", "paper"): module.GATConv((-1, -1), 4, heads=2, add_self_loops=False),
            ("paper", "rev_writes", "author"): module.TransformerConv((-1, -1), 8),
            ("paper", "cites", "paper"): module.GATv2Conv(-1, 4, heads=2),
        }, aggr="sum")

    ours, theirs = build(gattn_nn), build(pyg_nn)
    ours(data.x_dict, data.edge_index_dict), theirs(data.x_dict, data.edge_index_dict)
    theirs.load_state_dict(ours.state_dict())
    got, want = ours(data.x_dict, data.edge_index_dict), theirs(data.x_dict, data.edge_index_dict)
    for node_type in want:
        torch.testing.assert_close(got[node_type], want[node_type], atol=1e-5, rtol=1e-5)


def test_graph_transformer_conv_graph_formats_and_size():
    """Lazy sizes, `size=`, EdgeIndex and torch.sparse adjacency give the [2, E] result;
    a sparse tensor no longer gets a misleading 'must be an integer tensor' error."""
    from torch_geometric.edge_index import EdgeIndex

    data = _graph()
    edge_index = torch.unique(data.edge_index, dim=1).contiguous()
    torch.manual_seed(5)
    conv = GraphTransformerConv(-1, 4, heads=2)
    want, (_, alpha) = conv(data.x, edge_index, return_attention_weights=True)
    assert conv.lin_query.weight.shape == (8, 6)
    torch.testing.assert_close(conv(data.x, EdgeIndex(edge_index, sparse_size=(10, 10))), want)
    adj = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.size(1)), (10, 10)).coalesce()
    got, (returned, sparse_alpha) = conv(data.x, adj, return_attention_weights=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(conv(data.x, adj.to_sparse_csr()), want)
    # bipartite with an explicit size: 10 sources, 12 destinations (the last two isolated)
    x_dst = torch.randn(12, 6)
    out = conv((data.x, x_dst), edge_index, size=(10, 12))
    assert out.shape == (12, 8) and torch.all(out[10:] == 0)
    with pytest.raises(ValueError, match="size"):
        conv((data.x, x_dst), edge_index, size=(10, 11))
