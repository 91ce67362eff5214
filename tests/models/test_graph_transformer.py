"""GraphTransformer and its baselines (GINE, PyGTransformer): shapes, options, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from gattn.models.baselines import GINE, PyGTransformer
from gattn.models.graph_transformer import GraphTransformer, MLPReadout
from gattn.nn.graph_transformer import GraphTransformerLayer

IN, EDGE, PE = 5, 3, 4


def toy_batch(seed: int = 0, sizes=(5, 7, 4, 6), classes: int = 0) -> Batch:
    """Small random graphs with float node/edge features, a PE, graph and node targets."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        num_edges = 2 * n
        edge_index = torch.randint(0, n, (2, num_edges), generator=gen)
        x = torch.randn(n, IN, generator=gen)
        graphs.append(Data(
            x=x, edge_index=edge_index, edge_attr=torch.randn(num_edges, EDGE, generator=gen),
            pe=torch.randn(n, PE, generator=gen),
            y=x.sum().view(1, 1) / n,  # learnable graph target
            node_y=(x[:, 0] > 0).long(),
        ))
    return Batch.from_data_list(graphs)


def build(cls, **kwargs):
    kwargs.setdefault("num_layers", 2)
    if cls is not GINE:
        kwargs.setdefault("heads", 2)
    return cls(IN, 8, kwargs.pop("out", 1), **kwargs)


MODELS = [GraphTransformer, PyGTransformer, GINE]


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("norm", ["batch", "layer"])
@pytest.mark.parametrize("edges", [False, True])
@pytest.mark.parametrize("pe", [False, True])
def test_graph_task_shapes(cls, norm, edges, pe):
    torch.manual_seed(0)
    batch = toy_batch()
    model = build(cls, norm=norm, edge_dim=EDGE if edges else None, pe_dim=PE if pe else 0)
    out = model(batch)
    assert out.shape == (batch.num_graphs, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("cls", MODELS)
def test_node_task_shapes(cls):
    batch = toy_batch()
    model = build(cls, task="node", out=3, edge_dim=EDGE)
    assert model(batch).shape == (batch.num_nodes, 3)


@pytest.mark.parametrize(
    "cls, edges",
    [(GraphTransformer, False), (GraphTransformer, True), (PyGTransformer, True), (GINE, True)],
)
def test_models_train_and_loss_decreases(cls, edges):
    torch.manual_seed(1)
    batch = toy_batch(seed=1)
    model = build(cls, edge_dim=EDGE if edges else None, pe_dim=PE, dropout=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(15):
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch), batch.y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_node_classification_trains():
    torch.manual_seed(2)
    batch = toy_batch(seed=2)
    model = GraphTransformer(IN, 16, 2, num_layers=2, heads=2, task="node", edge_dim=EDGE,
                             norm="layer")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), batch.node_y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_graph_transformer_is_configured_like_the_paper():
    model = GraphTransformer(IN, 16, 2, num_layers=3, heads=4, edge_dim=EDGE, pe_dim=PE,
                             norm="layer")
    layers = list(model.layers)
    assert len(layers) == 3 and all(isinstance(layer, GraphTransformerLayer) for layer in layers)
    assert all(layer.heads == 4 and layer.attention.edge_dim == 16 for layer in layers)
    # the edge stream runs in every block but the last, whose edge output nothing reads
    assert [layer.updates_edges for layer in layers] == [True, True, False]
    assert isinstance(layers[0].norm1, nn.LayerNorm)
    assert isinstance(model.pe_encoder, nn.Linear) and model.pe_encoder.in_features == PE
    widths = [m.out_features for m in model.head if isinstance(m, nn.Linear)]
    assert widths == [8, 4, 2]  # L=2 halving MLP readout
    no_edges = GraphTransformer(IN, 16, 2, heads=4)
    assert not any(layer.updates_edges for layer in no_edges.layers)
    assert isinstance(no_edges.layers[0].norm1, nn.BatchNorm1d)
    # the baseline keeps the block and swaps only the attention
    baseline = PyGTransformer(IN, 16, 2, num_layers=3, heads=4, edge_dim=EDGE, pe_dim=PE,
                              norm="layer")
    assert type(baseline.layers[0].attention).__name__ == "TransformerConv"
    assert not baseline.layers[0].updates_edges
    ours = {n for n, _ in model.named_parameters() if ".attention." not in n}
    assert all(layer.edge_dim == 16 for layer in baseline.layers)
    theirs = {n for n, _ in baseline.named_parameters() if ".attention." not in n}
    assert theirs == ours - {n for n in ours if "edge_" in n and "encoder" not in n}


def test_mlp_readout_widths():
    assert [m.out_features for m in MLPReadout(32, 3, 2) if isinstance(m, nn.Linear)] == [16, 8, 3]
    assert len(MLPReadout(32, 3, 0)) == 1
    with pytest.raises(ValueError, match="num_layers"):
        MLPReadout(32, 3, -1)


def test_pe_sign_flip_only_while_training():
    torch.manual_seed(3)
    batch = toy_batch(seed=3)
    model = build(GraphTransformer, pe_dim=PE).eval()
    torch.testing.assert_close(model(batch), model(batch))
    flip = build(GraphTransformer, pe_dim=PE, norm="layer")
    flip.train()
    outs = [flip(batch) for _ in range(8)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    flip.pe_sign_flip = False
    torch.testing.assert_close(flip(batch), flip(batch))


@pytest.mark.parametrize("cls", MODELS)
def test_ogb_atom_and_bond_encoders(cls):
    pytest.importorskip("ogb")
    gen = torch.Generator().manual_seed(4)
    graphs = []
    for n in (4, 6):
        x = torch.stack([torch.randint(0, d, (n,), generator=gen) for d in (119, 5, 12, 12, 10,
                                                                            6, 6, 2, 2)], 1)
        edge_index = torch.randint(0, n, (2, 2 * n), generator=gen)
        edge_attr = torch.stack(
            [torch.randint(0, d, (2 * n,), generator=gen) for d in (5, 6, 2)], 1
        )
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=edge_attr))
    batch = Batch.from_data_list(graphs)
    model = build(cls, atom_encoder=True, edge_dim=3) if cls is not GINE else GINE(
        None, 8, 1, 2, atom_encoder=True, edge_dim=3)
    assert type(model.node_encoder).__name__ == "AtomEncoder"
    assert type(model.edge_encoder).__name__ == "BondEncoder"
    assert model(batch).shape == (2, 1)


def test_integer_node_and_edge_ids_use_embeddings():
    gen = torch.Generator().manual_seed(5)
    data = Data(x=torch.randint(0, 3, (9, 1), generator=gen),
                edge_index=torch.randint(0, 9, (2, 20), generator=gen),
                edge_attr=torch.randint(0, 4, (20,), generator=gen))
    model = GraphTransformer(None, 8, 2, num_layers=1, heads=2, task="node", num_embeddings=3,
                             edge_dim=1, num_edge_embeddings=4)
    assert isinstance(model.node_encoder, nn.Embedding)
    assert isinstance(model.edge_encoder, nn.Embedding)
    assert model(data).shape == (9, 2)  # a single Data without `batch` works too


def test_encoder_module_as_in_channels():
    encoder = nn.Sequential(nn.Linear(IN, 8), nn.ReLU())
    model = GraphTransformer(encoder, 8, 1, num_layers=1, heads=2)
    assert model.node_encoder is encoder
    assert model(toy_batch()).shape == (4, 1)


def test_model_errors_name_the_argument():
    batch = toy_batch()
    with pytest.raises(ValueError, match="pe"):
        build(GraphTransformer, pe_dim=PE)(Data(x=batch.x, edge_index=batch.edge_index))
    with pytest.raises(ValueError, match="pe"):
        build(GraphTransformer, pe_dim=PE + 1)(batch)
    with pytest.raises(ValueError, match="edge_attr"):
        build(GraphTransformer, edge_dim=EDGE)(Data(x=batch.x, edge_index=batch.edge_index))
    with pytest.raises(ValueError, match="data.x"):
        build(GraphTransformer)(Data(x=batch.x[:, :2], edge_index=batch.edge_index))
    with pytest.raises(ValueError, match="divisible"):
        GraphTransformer(IN, 10, 1, heads=3)
    with pytest.raises(ValueError, match="task"):
        GraphTransformer(IN, 8, 1, heads=2, task="edge")
    with pytest.raises(ValueError, match="readout"):
        GraphTransformer(IN, 8, 1, heads=2, readout="attention")
    with pytest.raises(ValueError, match="num_embeddings"):
        GraphTransformer(IN, 8, 1, heads=2, atom_encoder=True, num_embeddings=3)
    with pytest.raises(TypeError, match="integer ids"):
        GraphTransformer(None, 8, 1, heads=2, num_embeddings=3)(batch)


def test_readouts_and_repr():
    batch = toy_batch()
    outs = {r: build(GraphTransformer, readout=r)(batch) for r in ("mean", "sum", "max")}
    assert all(o.shape == (4, 1) for o in outs.values())
    assert repr(build(GINE)).startswith("GINE(hidden=8, out=1, layers=2, task='graph'")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", MODELS)
def test_models_on_cuda_match_cpu(cls):
    torch.manual_seed(6)
    batch = toy_batch(seed=6)
    model = build(cls, edge_dim=EDGE, pe_dim=PE).eval()
    expected = model(batch)
    model.cuda()
    got = model(batch.to("cuda"))
    torch.testing.assert_close(got.cpu(), expected.detach(), rtol=2e-4, atol=2e-4)
    model.train()
    model(batch).square().sum().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters())
