"""The DGL rows of ``benchmarks/edge_attention.py``: DGL's forms compute PyG's layers (same
weights, same graph), and the DGL child measures the graph file the benchmark writes.

DGL's PyPI wheels need torch 2.2, so these tests run only in the DGL environment
(``bash benchmarks/peers/make_dgl_env.sh``)::

    benchmarks/peers/.venv-dgl/bin/python -m pytest tests/test_dgl_peer.py -q
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("dgl", reason="DGL is installed only in benchmarks/peers/.venv-dgl")

import torch_geometric.nn as pyg_nn  # noqa: E402

from benchmarks.peers import dgl_attention  # noqa: E402

HEADS, DIM = 2, 4
CHANNELS = HEADS * DIM


def _graph(num_nodes: int = 30) -> torch.Tensor:
    """A random graph with a self-loop, a duplicate edge and isolated nodes (the last five)."""
    gen = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, num_nodes - 5, (2, 120), generator=gen)
    extra = torch.tensor([[3, 7, 7], [3, 9, 9]])
    return torch.cat([edge_index, extra], 1)


def _dgl_and_pyg(layer: str):
    torch.manual_seed(0)
    model, make, call = dgl_attention.build(layer, CHANNELS, HEADS, DIM)
    if layer == "transformer":
        pyg = pyg_nn.TransformerConv(CHANNELS, DIM, heads=HEADS, root_weight=False)
        missing, unexpected = pyg.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and all(key.startswith("lin_skip") for key in missing)
    elif layer == "gat":
        pyg = pyg_nn.GATConv(CHANNELS, DIM, heads=HEADS)
        with torch.no_grad():
            pyg.lin.weight.copy_(model.fc.weight)
            pyg.att_src.copy_(model.attn_l)
            pyg.att_dst.copy_(model.attn_r)
            pyg.bias.copy_(torch.randn(CHANNELS))
            model.bias.copy_(pyg.bias)
    else:  # DGL's GATv2Conv has no output bias: PyG's is zero
        pyg = pyg_nn.GATv2Conv(CHANNELS, DIM, heads=HEADS)
        with torch.no_grad():
            for ours, theirs in ((pyg.lin_l, model.fc_src), (pyg.lin_r, model.fc_dst)):
                ours.weight.copy_(theirs.weight)
                ours.bias.copy_(theirs.bias.normal_())
            pyg.att.copy_(model.attn)
            pyg.bias.zero_()
    return model, make, call, pyg


@pytest.mark.parametrize("layer", dgl_attention.LAYERS)
def test_dgl_forms_compute_pygs_layers(layer: str) -> None:
    num_nodes = 30
    edge_index = _graph(num_nodes)
    model, make, call, pyg = _dgl_and_pyg(layer)
    x = torch.randn(num_nodes, CHANNELS)
    ours = call(x, make(edge_index, num_nodes))
    theirs = pyg(x, edge_index)
    assert ours.shape == theirs.shape == (num_nodes, CHANNELS)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    if layer == "transformer":  # no incoming edge, no self-loop: zeros
        assert torch.equal(ours[-5:], torch.zeros(5, CHANNELS))


@pytest.mark.parametrize("batch", ["full", "mini"])
def test_dgl_child_measures_the_benchmarks_graph_file(tmp_path, batch: str) -> None:
    edge_index = _graph()
    repeats = 1
    batches = [edge_index[:, torch.randperm(edge_index.size(1))] for _ in range(2 * (repeats + 1))]
    path = str(tmp_path / "graph.pt")
    dgl_attention.save_graph(path, edge_index, 30, batches if batch == "mini" else [])
    result = dgl_attention.child(dict(layer="gat", heads=HEADS, dim=DIM, repeats=repeats, threads=1, batch=batch,
                                      graph_file=path))
    assert result["nodes"] == 30 and result["edges"] == edge_index.size(1)
    assert result["fwd_s"] > 0 and result["step_s"] > 0 and result["peak_mb"] > 0
    if batch == "mini":  # one edge list per call: one more would have to fail
        dgl_attention.save_graph(path, edge_index, 30, batches[:-1])
        with pytest.raises(StopIteration):
            dgl_attention.child(dict(layer="gat", heads=HEADS, dim=DIM, repeats=repeats, threads=1, batch=batch,
                                     graph_file=path))


def test_dgl_child_rejects_a_layer_without_a_dgl_form() -> None:
    with pytest.raises(ValueError, match="no DGL form of layer 'mlp'"):
        dgl_attention.build("mlp", CHANNELS, HEADS, DIM)
