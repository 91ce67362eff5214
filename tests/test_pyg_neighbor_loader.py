"""gattn beside PyG's own ``NeighborLoader``: the loader `neighbor_loader` returns, gattn's
graph layers and LATTE on its bipartite (and heterogeneous) batches, and gattn's own sampler
against it. These need PyG's sampling backend (pyg-lib, or torch-sparse with torch-scatter):
neither has a wheel for this torch on PyPI; ``make pyg-sampling`` builds torch-scatter and
torch-sparse from source into the venv (about 15 minutes on 2 cores). Without it they skip."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from gattn.sampling import NeighborBatches, has_pyg_sampler, hop_counts, neighbor_loader

from .test_sampling import _hetero

pytestmark = pytest.mark.skipif(
    not has_pyg_sampler(),
    reason="PyG's sampling backend (pyg-lib or torch-sparse) is not installed: `make pyg-sampling` builds it",
)


def _graph(nodes=60, edges=500, channels=6, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return Data(x=torch.randn(nodes, channels, generator=gen),
                edge_index=torch.randint(0, nodes, (2, edges), generator=gen), num_nodes=nodes)


def _edges_by_hop(batch) -> list[set[tuple[int, int]]]:
    """Each hop's edges as (global source, global destination) pairs."""
    n_id, hops, start = batch.n_id, [], 0
    for count in hop_counts(batch, 2)[1]:
        local = batch.edge_index[:, start:start + count]
        hops.append({(int(s), int(d)) for s, d in zip(n_id[local[0]], n_id[local[1]])})
        start += count
    return hops


def _nodes_by_hop(batch) -> list[set[int]]:
    bounds = [0, *torch.cumsum(torch.tensor(hop_counts(batch, 2)[0]), 0).tolist()]
    return [set(batch.n_id[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


def _edges(batch) -> set[tuple[int, int]]:
    """The batch's edges as (global source, global destination) pairs."""
    n_id, (src, dst) = batch.n_id, batch.edge_index
    return {(int(s), int(d)) for s, d in zip(n_id[src], n_id[dst])}


def test_neighbor_loader_is_pygs_and_gattns_sampler_lays_batches_out_alike():
    """With every neighbour (-1), PyG's loader and gattn's sampler give the same seeds in the
    same order, the same nodes and the same edges, and the same per hop: PyG's own counts with
    pyg-lib, read back from the batch's hop-by-hop layout with torch-sparse (which reports none)."""
    from torch_geometric.loader import NeighborLoader

    data = _graph()
    pyg = neighbor_loader(data, [-1, -1], batch_size=9)
    assert isinstance(pyg, NeighborLoader)
    ours = NeighborBatches(data, [-1, -1], batch_size=9)
    batches = 0
    for theirs, mine in zip(pyg, ours, strict=True):
        assert theirs.batch_size == mine.batch_size
        assert torch.equal(theirs.n_id[:theirs.batch_size], mine.n_id[:mine.batch_size])
        assert set(theirs.n_id.tolist()) == set(mine.n_id.tolist()) and theirs.n_id.numel() == mine.n_id.numel()
        assert _edges(theirs) == _edges(mine)
        assert hop_counts(theirs, 2) == hop_counts(mine, 2) != (None, None)
        assert _nodes_by_hop(theirs) == _nodes_by_hop(mine)
        assert _edges_by_hop(theirs) == _edges_by_hop(mine)
        batches += 1
    assert batches == -(-data.num_nodes // 9)


@pytest.mark.parametrize("layer", ["TransformerConv", "GATConv", "GATv2Conv", "GraphTransformerConv"])
def test_gattn_layers_on_pyg_batches_equal_the_full_graph(layer):
    """Two gattn layers on PyG's bipartite mini-batches (every neighbour over two hops): the
    seeds' outputs are the full-graph forward's."""
    import gattn.nn

    data = _graph()
    torch.manual_seed(0)
    cls = getattr(gattn.nn, layer)
    first, second = cls(6, 4, heads=2), cls(8, 3, heads=2)  # concatenated heads: 2 x 4 = 8

    def forward(x, edge_index):
        return second(torch.relu(first(x, edge_index)), edge_index)

    with torch.no_grad():
        full = forward(data.x, data.edge_index)
        seen = 0
        for batch in neighbor_loader(data, [-1, -1], batch_size=16, shuffle=True, seed=3):
            out = forward(batch.x, batch.edge_index)
            size = batch.batch_size
            torch.testing.assert_close(out[:size], full[batch.n_id[:size]], atol=1e-5, rtol=1e-4)
            seen += size
    assert seen == data.num_nodes


def test_latte_on_pyg_hetero_batches_equals_full_batch():
    """LATTE on PyG's heterogeneous NeighborLoader (every neighbour over the 3 hops two
    layers read): the seed papers' logits are the full-graph forward's."""
    from torch_geometric.loader import NeighborLoader

    from gattn.models import LATTE

    data = _hetero(seed=1)
    torch.manual_seed(0)
    model = LATTE((data.node_types, data.edge_types), {"paper": 5, "author": 4}, 3, "paper", hidden_channels=8,
                  num_layers=2, heads=2, num_nodes_dict={"subject": 6}).eval()
    loader = neighbor_loader(data, [-1, -1, -1], ("paper", None), batch_size=7)
    assert isinstance(loader, NeighborLoader)
    with torch.no_grad():
        full = model({t: data[t].x for t in ("paper", "author")}, data.edge_index_dict)
        seen = 0
        for batch in loader:
            size = batch["paper"].batch_size
            out = model({t: batch[t].x for t in ("paper", "author")}, batch.edge_index_dict,
                        {t: batch[t].n_id for t in batch.node_types})
            torch.testing.assert_close(out[:size], full[batch["paper"].n_id[:size]], atol=1e-5, rtol=1e-4)
            seen += size
    assert seen == data["paper"].num_nodes


def test_node_gnn_blocks_and_layerwise_inference_on_pyg_batches():
    """NodeGNN's shrinking bipartite blocks (the per-hop counts PyG's loader reports, or that
    hop_counts reads from its layout) and its layer-wise inference over PyG's batches give the
    full-graph logits."""
    from gattn.models.node_gnn import NodeGNN

    data = _graph(nodes=80, edges=600, channels=5)
    torch.manual_seed(0)
    model = NodeGNN(in_channels=5, hidden_channels=8, out_channels=3, num_layers=2, conv="gattn", heads=2).eval()
    with torch.no_grad():
        full = model(data.x, data.edge_index)
        for batch in neighbor_loader(data, [-1, -1], batch_size=20, shuffle=True, seed=1):
            counts = hop_counts(batch, model.num_layers)
            assert counts != (None, None)
            out = model(batch.x, batch.edge_index, *counts)[:batch.batch_size]
            torch.testing.assert_close(out, full[batch.n_id[:batch.batch_size]], atol=1e-5, rtol=1e-4)
        layerwise = model.inference(data.x, neighbor_loader(data, [-1], batch_size=25))
    torch.testing.assert_close(layerwise, full, atol=1e-5, rtol=1e-4)
