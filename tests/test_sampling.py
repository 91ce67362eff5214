"""The plain-torch neighbour sampler: NeighborLoader's batch layout, real edges, at most k
neighbours per node and hop, every in-edge with -1."""

import pytest
import torch
from torch_geometric.data import Data

from gattn.sampling import NeighborBatches


def _graph(nodes=50, edges=400):
    generator = torch.Generator().manual_seed(1)
    edge_index = torch.randint(0, nodes, (2, edges), generator=generator)
    return Data(x=torch.arange(nodes).float()[:, None], edge_index=edge_index, y=torch.arange(nodes))


@pytest.mark.parametrize("k", [3, -1])
def test_batches_have_neighborloader_layout_and_real_edges(k):
    data = _graph()
    loader = NeighborBatches(data, [k, k], batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(0))
    real = {tuple(e) for e in data.edge_index.t().tolist()}
    seeds_seen = []
    for batch in loader:
        n_id = batch.n_id
        assert len(set(n_id.tolist())) == n_id.numel() == sum(batch.num_sampled_nodes)
        assert batch.num_sampled_nodes[0] == batch.batch_size and torch.equal(batch.y, n_id)
        seeds_seen += n_id[:batch.batch_size].tolist()
        src, dst = n_id[batch.edge_index[0]], n_id[batch.edge_index[1]]
        assert all((s, d) in real for s, d in zip(src.tolist(), dst.tolist()))
        hop_start = 0
        node_bounds = torch.cumsum(torch.tensor(batch.num_sampled_nodes), 0)
        for hop, edges in enumerate(batch.num_sampled_edges):
            local_dst = batch.edge_index[1, hop_start:hop_start + edges]
            low = 0 if hop == 0 else int(node_bounds[hop - 1])
            assert bool(((local_dst >= low) & (local_dst < node_bounds[hop])).all())  # this hop's nodes
            assert bool((batch.edge_index[0, hop_start:hop_start + edges] < node_bounds[hop + 1]).all())
            per_node = torch.bincount(local_dst)
            in_degree = torch.bincount(data.edge_index[1], minlength=data.num_nodes)
            for node in local_dst.unique().tolist():
                expected = int(in_degree[n_id[node]]) if k == -1 else min(k, int(in_degree[n_id[node]]))
                assert int(per_node[node]) == expected
            hop_start += edges
    assert sorted(seeds_seen) == list(range(data.num_nodes))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_neighbors"):
        NeighborBatches(_graph(), [0])
    with pytest.raises(ValueError, match="batch_size"):
        NeighborBatches(_graph(), [2], batch_size=0)
