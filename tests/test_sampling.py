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


# --------------------------------------------------------------------------- heterogeneous

PAPER_CITES = ("paper", "cites", "paper")
WRITES, WRITTEN_BY = ("author", "writes", "paper"), ("paper", "written_by", "author")
ABOUT, HAS_PAPER = ("paper", "about", "subject"), ("subject", "has", "paper")


def _hetero(seed=0):
    """papers (features, labels, masks), authors (features) and featureless subjects, every
    relation with its reverse, some isolated papers and authors."""
    from torch_geometric.data import HeteroData

    gen = torch.Generator().manual_seed(seed)
    num = {"paper": 40, "author": 25, "subject": 6}
    data = HeteroData()
    data["paper"].x = torch.randn(num["paper"], 5, generator=gen)
    data["paper"].y = torch.randint(0, 3, (num["paper"],), generator=gen)
    data["paper"].train_mask = torch.rand(num["paper"], generator=gen) < 0.5
    data["author"].x = torch.randn(num["author"], 4, generator=gen)
    data["subject"].num_nodes = num["subject"]

    def edges(src, dst, count):
        return torch.stack([torch.randint(0, num[src] - 2, (count,), generator=gen),
                            torch.randint(0, num[dst] - 2, (count,), generator=gen)])

    data[PAPER_CITES].edge_index = edges("paper", "paper", 90)
    data[PAPER_CITES].edge_attr = torch.randn(90, 2, generator=gen)
    data[WRITES].edge_index = edges("author", "paper", 70)
    data[WRITTEN_BY].edge_index = data[WRITES].edge_index.flip(0)
    data[ABOUT].edge_index = edges("paper", "subject", 40)
    data[HAS_PAPER].edge_index = data[ABOUT].edge_index.flip(0)
    return data


@pytest.mark.parametrize("k", [2, -1])
def test_hetero_batches_have_neighborloader_layout_and_real_edges(k):
    from gattn.sampling import HeteroNeighborBatches

    data = _hetero()
    loader = HeteroNeighborBatches(data, [k, k, k], ("paper", data["paper"].train_mask), batch_size=6,
                                   shuffle=True, generator=torch.Generator().manual_seed(0))
    seeds_seen = []
    for batch in loader:
        assert batch["paper"].num_sampled_nodes[0] == batch["paper"].batch_size
        seeds = batch["paper"].n_id[:batch["paper"].batch_size]
        assert torch.equal(seeds, batch["paper"].input_id) and bool(data["paper"].train_mask[seeds].all())
        seeds_seen += seeds.tolist()
        bounds = {}
        for t in data.node_types:
            n_id = batch[t].n_id
            assert len(set(n_id.tolist())) == n_id.numel() == sum(batch[t].num_sampled_nodes) == batch[t].num_nodes
            assert len(batch[t].num_sampled_nodes) == 4
            bounds[t] = [0] + torch.cumsum(torch.tensor(batch[t].num_sampled_nodes), 0).tolist()
            if "x" in data[t]:
                assert torch.equal(batch[t].x, data[t].x[n_id])
        assert torch.equal(batch["paper"].y, data["paper"].y[batch["paper"].n_id])
        for e in data.edge_types:
            src_type, _, dst_type = e
            local = batch[e].edge_index
            glob = torch.stack([batch[src_type].n_id[local[0]], batch[dst_type].n_id[local[1]]])
            assert torch.equal(glob, data[e].edge_index[:, batch[e].e_id])  # real edges, their ids
            if e == PAPER_CITES:
                assert torch.equal(batch[e].edge_attr, data[e].edge_attr[batch[e].e_id])
            in_degree = torch.bincount(data[e].edge_index[1], minlength=data[dst_type].num_nodes)
            start = 0
            for hop, count in enumerate(batch[e].num_sampled_edges):
                dst = local[1, start:start + count]
                src = local[0, start:start + count]
                # destinations: nodes of this hop; sources: nodes known after the next one
                assert bool(((dst >= bounds[dst_type][hop]) & (dst < bounds[dst_type][hop + 1])).all())
                assert bool((src < bounds[src_type][hop + 2]).all())
                per_node = torch.bincount(dst, minlength=batch[dst_type].num_nodes)
                for node in range(bounds[dst_type][hop], bounds[dst_type][hop + 1]):
                    degree = int(in_degree[batch[dst_type].n_id[node]])
                    assert int(per_node[node]) == (degree if k == -1 else min(k, degree))
                start += count
            assert start == local.size(1)
    assert sorted(seeds_seen) == data["paper"].train_mask.nonzero().view(-1).tolist()


def test_hetero_fanouts_per_edge_type():
    from gattn.sampling import HeteroNeighborBatches

    data = _hetero()
    fanouts = {PAPER_CITES: [3, 0], WRITES: [-1, 1]}  # the other relations are never sampled
    batch = next(iter(HeteroNeighborBatches(data, fanouts, "paper", batch_size=10)))
    assert batch[PAPER_CITES].num_sampled_edges[1] == 0 and batch[WRITES].num_sampled_edges[0] > 0
    for e in (WRITTEN_BY, ABOUT, HAS_PAPER):
        assert batch[e].edge_index.shape == (2, 0)
    assert batch["subject"].num_nodes == 0 and batch["subject"].num_sampled_nodes == [0, 0, 0]


def test_hetero_bad_arguments_are_named():
    from gattn.sampling import HeteroNeighborBatches

    data = _hetero()
    with pytest.raises(ValueError, match="node type"):
        HeteroNeighborBatches(data, [2], "venue")
    with pytest.raises(ValueError, match="same number of hops"):
        HeteroNeighborBatches(data, {PAPER_CITES: [2], WRITES: [2, 2]}, "paper")
    with pytest.raises(ValueError, match="does not have"):
        HeteroNeighborBatches(data, {("paper", "x", "venue"): [2]}, "paper")
    with pytest.raises(ValueError, match=r"input_nodes.*\[0, 40\)"):
        HeteroNeighborBatches(data, [2], ("paper", torch.tensor([3, 40])))
    with pytest.raises(ValueError, match="-1"):
        HeteroNeighborBatches(data, [2, -3], "paper")


@pytest.mark.parametrize("meta_weights", ["attention", "structure"])
def test_latte_on_full_fanout_batches_equals_full_batch(meta_weights):
    """With every neighbour (-1) over the hops LATTE reads (layer t attends over order-t
    meta-relations: 1 + 2 = 3 hops for two layers), the seeds' logits on each batch are
    the full-graph forward's, featureless subjects included (their embeddings by n_id)."""
    from gattn.models import LATTE
    from gattn.sampling import HeteroNeighborBatches

    data = _hetero(seed=1)
    torch.manual_seed(0)
    model = LATTE((data.node_types, data.edge_types), {"paper": 5, "author": 4}, 3, "paper", hidden_channels=8,
                  num_layers=2, heads=2, num_nodes_dict={"subject": 6}, meta_weights=meta_weights).eval()
    x_dict = {t: data[t].x for t in ("paper", "author")}
    with torch.no_grad():
        full = model(x_dict, data.edge_index_dict)
        for batch in HeteroNeighborBatches(data, [-1, -1, -1], "paper", batch_size=7):
            size = batch["paper"].batch_size
            out = model({t: batch[t].x for t in ("paper", "author")}, batch.edge_index_dict,
                        {t: batch[t].n_id for t in batch.node_types})
            torch.testing.assert_close(out[:size], full[batch["paper"].n_id[:size]], atol=1e-5, rtol=1e-4)


def test_hop_counts_are_reported_derived_or_none_and_nodegnn_agrees_every_way():
    """hop_counts gives a batch's own per-hop counts; for a batch without them (as torch-sparse's
    NeighborLoader hands over) the same counts read back from its hop-by-hop layout; (None, None)
    where the layout is not hop by hop. NodeGNN's seed outputs are the same every way."""
    from gattn.models.node_gnn import NodeGNN
    from gattn.sampling import hop_counts

    data = _graph()
    for fanout in ([3, 3], [-1, 2], [2, 2, 2]):
        batch = next(iter(NeighborBatches(data, fanout, batch_size=7, generator=torch.Generator().manual_seed(0))))
        nodes, edges = hop_counts(batch)
        assert nodes == [int(n) for n in batch.num_sampled_nodes]
        assert edges == [int(e) for e in batch.num_sampled_edges]
        torch.manual_seed(0)
        model = NodeGNN(in_channels=1, hidden_channels=8, out_channels=3, num_layers=len(fanout), conv="gattn",
                        heads=2).eval()
        with torch.no_grad():
            trimmed = model(batch.x, batch.edge_index, nodes, edges)
            del batch.num_sampled_nodes, batch.num_sampled_edges
            # the sampler's counts, read back from the layout (trailing empty hops padded to num_hops)
            derived = hop_counts(batch, len(fanout))
            assert derived == (nodes, edges), fanout
            whole = model(batch.x, batch.edge_index)[:batch.batch_size]
            # not hop by hop: an edge of hop 1 moved behind hop 2's
            edge_index = batch.edge_index
            late = torch.cat([edge_index[:, 1:], edge_index[:, :1]], dim=1)
            batch.edge_index = late
            assert hop_counts(batch, len(fanout)) == (None, None)
            batch.edge_index = edge_index
            assert hop_counts(batch, len(fanout) - 1) == (None, None)  # more hops than the model's layers
        torch.testing.assert_close(trimmed, model(batch.x, batch.edge_index, *derived), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(whole, trimmed, atol=1e-5, rtol=1e-4)


def test_derived_hop_counts_pad_empty_hops_and_refuse_unaccounted_nodes():
    from torch_geometric.data import Data

    from gattn.sampling import hop_counts

    # 2 seeds; hop 1 finds nodes 2 and 3; hop 2 finds nothing (no in-edges of 2 or 3)
    batch = Data(x=torch.zeros(4, 1), edge_index=torch.tensor([[2, 3, 0], [0, 1, 1]]), batch_size=2)
    assert hop_counts(batch) == ([2, 2], [3])
    assert hop_counts(batch, 3) == ([2, 2, 0, 0], [3, 0, 0])
    batch.x = torch.zeros(5, 1)  # a fifth node that no hop reached
    assert hop_counts(batch, 2) == (None, None)
    assert hop_counts(Data(x=torch.zeros(3, 1), edge_index=torch.zeros(2, 0, dtype=torch.long))) == (None, None)
