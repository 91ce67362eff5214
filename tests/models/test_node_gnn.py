"""NodeGNN: neighbour-sampled bipartite blocks and layer-wise inference give the full-graph
forward's logits when every neighbour is sampled."""

import pytest
import torch
from torch_geometric.data import Data

from gattn.models.node_gnn import CONVS, NodeGNN
from gattn.sampling import NeighborBatches
from gattn.sampling import neighbor_loader as NeighborLoader  # PyG's when its backend is installed

# the per-hop blocks need per-hop counts: gattn's sampler always gives them (PyG's loader does with pyg-lib,
# not with torch-sparse), so the block tests sample with it; inference runs through either loader


def _graph(nodes=60, edges=300, features=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, nodes, (2, edges), generator=generator)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    return Data(x=torch.randn(nodes, features, generator=generator), edge_index=edge_index,
                y=torch.randint(0, 3, (nodes,), generator=generator))


@pytest.mark.parametrize("conv", CONVS)
def test_sampled_blocks_and_layerwise_inference_match_the_full_graph(conv):
    torch.manual_seed(0)
    data = _graph()
    model = NodeGNN(5, 8, 3, num_layers=2, conv=conv, heads=2).eval()
    full = model(data.x, data.edge_index)
    seeds = torch.tensor([3, 17, 42, 59])
    loader = NeighborBatches(data, [-1, -1], input_nodes=seeds, batch_size=4)
    (batch,) = list(loader)
    sampled = model(batch.x, batch.edge_index, batch.num_sampled_nodes, batch.num_sampled_edges)
    assert sampled.shape == (4, 3)
    torch.testing.assert_close(sampled, full[batch.n_id[:4]], rtol=1e-4, atol=1e-5)
    layerwise = model.inference(data.x, NeighborLoader(data, num_neighbors=[-1], batch_size=16))
    torch.testing.assert_close(layerwise, full, rtol=1e-4, atol=1e-5)


def test_gradients_flow_through_the_blocks():
    data = _graph()
    model = NodeGNN(5, 8, 3, num_layers=2, conv="transformer", heads=2)
    batch = next(iter(NeighborBatches(data, [3, 3], batch_size=8, shuffle=True,
                                      generator=torch.Generator().manual_seed(0))))
    out = model(batch.x, batch.edge_index, batch.num_sampled_nodes, batch.num_sampled_edges)
    torch.nn.functional.cross_entropy(out, batch.y[:8]).backward()
    assert all(p.grad is not None for p in model.convs[0].parameters() if p.requires_grad)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="divisible by heads"):
        NodeGNN(5, 9, 3, conv="gat", heads=2)
    with pytest.raises(ValueError, match="conv must be one of"):
        NodeGNN(5, 8, 3, conv="sage")
    data = _graph()
    model = NodeGNN(5, 8, 3, num_layers=2, conv="gat", heads=2)
    batch = next(iter(NeighborBatches(data, [2], batch_size=4)))
    with pytest.raises(ValueError, match="2-layer model needs a 2-hop sample"):
        model(batch.x, batch.edge_index, batch.num_sampled_nodes, batch.num_sampled_edges)
    with pytest.raises(ValueError, match="cover"):
        model.eval().inference(data.x, NeighborLoader(data, num_neighbors=[-1], input_nodes=torch.arange(10),
                                                      batch_size=4))


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass while `fn` runs."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize("conv", CONVS)
def test_checkpointing_gives_the_plain_gradients_and_saves_less(conv):
    data = _graph(nodes=200, edges=1500)
    plain = NodeGNN(5, 16, 3, num_layers=2, conv=conv, heads=2, dropout=0.3)
    checkpointed = NodeGNN(5, 16, 3, num_layers=2, conv=conv, heads=2, dropout=0.3, checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(7)  # the same dropout masks: the recomputed forward must draw them again
        out, saved = _saved_bytes(lambda model=model: model(data.x, data.edge_index))
        torch.nn.functional.cross_entropy(out, data.y).backward()
        results.append((out.detach(), saved, {name: p.grad for name, p in model.named_parameters()}))
    (out_a, saved_a, grads_a), (out_b, saved_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)
    # only each layer's input (and lin_in's, lin_out's) is kept: well under half of the plain model's
    assert saved_b < saved_a / 2, (saved_b, saved_a)
    # inference and no-grad calls run the plain forward
    with torch.no_grad():
        torch.testing.assert_close(checkpointed.eval()(data.x, data.edge_index), plain.eval()(data.x, data.edge_index))
