"""LATTE node classifier and the HAN / HGT / R-GCN baselines on small heterogeneous graphs."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

from gattn.models import HAN, HGT, LATTE, RGCN
from gattn.nn import compose_meta_relations

SIZES = {"p": 30, "a": 20, "s": 4}


def hetero_data(seed: int = 0) -> HeteroData:
    """Papers (features), authors (features), subjects (no features); a paper's class is its
    subject, which the features do not show: models must read the relations."""
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    subject = torch.arange(SIZES["p"]) % SIZES["s"]
    data["p"].x = torch.randn(SIZES["p"], 5, generator=gen)
    data["a"].x = torch.randn(SIZES["a"], 3, generator=gen)
    data["s"].num_nodes = SIZES["s"]
    data["p"].y = subject % 3
    pa = torch.stack([torch.randint(0, SIZES["p"], (60,), generator=gen),
                      torch.randint(0, SIZES["a"], (60,), generator=gen)])
    ps = torch.stack([torch.arange(SIZES["p"]), subject])
    data["p", "pa", "a"].edge_index = pa
    data["a", "ap", "p"].edge_index = pa.flip(0)
    data["p", "ps", "s"].edge_index = ps
    data["s", "sp", "p"].edge_index = ps.flip(0)
    return data


def inputs(data: HeteroData):
    x = {t: data[t].x for t in data.node_types if "x" in data[t]}
    sizes = {t: v.size(1) for t, v in x.items()}
    return x, sizes, {t: data[t].num_nodes for t in data.node_types}


def test_latte_layers_orders_betas_and_concatenation() -> None:
    data = hetero_data()
    x, sizes, counts = inputs(data)
    torch.manual_seed(0)
    model = LATTE(data.metadata(), sizes, 3, "p", hidden_channels=8, num_layers=3, heads=2,
                  num_nodes_dict=counts, threshold=0.05, top_k=4).eval()
    out = model.encode(x, data.edge_index_dict)
    assert out.embeddings["p"].shape == (30, 24) and model(x, data.edge_index_dict).shape == (30, 3)
    assert set(out.graphs[0]) == set(data.edge_types)
    for order, graph in enumerate(out.graphs, start=1):
        assert all(name.count(".") == order - 1 for _, name, _ in graph)
        for edge_index in graph.values():
            if order > 1:  # pruned: at most top_k per destination
                assert int(torch.bincount(edge_index[1]).max()) <= 4
    for layer, (beta, slots) in enumerate(zip(out.betas, out.relation_slots)):
        for node_type, weights in beta.items():
            assert weights.shape == (SIZES[node_type], len(slots[node_type])) and slots[node_type][-1] == "self"
            torch.testing.assert_close(weights.sum(1), torch.ones(SIZES[node_type]))
        assert set(slots["p"][:-1]) <= {name for _, name, _ in model.convs[layer].edge_types}
    # the first block of the concatenation is layer 1's output; the order-2 graph is the
    # composition of layer 1's attention with the first-order relations
    h0 = model.input(x)
    first, _, attention = model.convs[0](h0, data.edge_index_dict, return_beta=True, return_attention_weights=True)
    torch.testing.assert_close(out.embeddings["a"][:, :8], first["a"])
    previous = {e: (data.edge_index_dict[e], a.mean(-1)) for e, a in attention.items()}
    composed = compose_meta_relations(previous, data.edge_index_dict, SIZES, threshold=0.05, top_k=4)
    assert {e: t.shape for e, (t, _) in composed.items()} == {e: t.shape for e, t in out.graphs[1].items()}


def test_latte_structure_weights_are_cached_and_the_proximity_loss_trains() -> None:
    data = hetero_data()
    x, sizes, counts = inputs(data)
    model = LATTE(data.metadata(), sizes, 3, "p", hidden_channels=8, num_layers=2, heads=2,
                  num_nodes_dict=counts, meta_weights="structure")
    first = model.encode(x, data.edge_index_dict, proximity=True)
    again = model.encode(x, data.edge_index_dict)
    assert all(again.graphs[1][e] is t for e, t in first.graphs[1].items())
    assert again.proximity_loss is None and first.proximity_loss.item() > 0
    first.proximity_loss.backward()
    assert model.convs[1].lin_key[0].weight.grad.abs().sum() > 0


def builders(data: HeteroData) -> dict:
    x, sizes, counts = inputs(data)
    common = dict(hidden_channels=16, dropout=0.0, num_nodes_dict=counts)
    return {
        "latte": lambda: LATTE(data.metadata(), sizes, 3, "p", heads=2, **common),
        "han": lambda: HAN(data.metadata(), sizes, 3, "p", heads=2, **common),
        "hgt": lambda: HGT(data.metadata(), sizes, 3, "p", heads=2, **common),
        "rgcn": lambda: RGCN(data.metadata(), sizes, 3, "p", **common),
    }


@pytest.mark.parametrize("name", ["latte", "han", "hgt", "rgcn"])
def test_every_model_gives_target_logits_and_trains_every_parameter(name: str) -> None:
    data = hetero_data()
    x, _, _ = inputs(data)
    torch.manual_seed(0)
    model = builders(data)[name]()
    logits = model(x, data.edge_index_dict)
    assert logits.shape == (SIZES["p"], 3)
    before = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert any(changed) and all(torch.isfinite(p).all() for p in model.parameters())
    logits = model(x, data.edge_index_dict)
    torch.nn.functional.cross_entropy(logits, data["p"].y).backward()
    # the author features reach the paper logits through the relations
    assert model.input.proj["a"].weight.grad.abs().sum() > 0
    assert model.input.embedding["s"].weight.grad.abs().sum() > 0
    if name == "latte":  # the embeddings of every node type use every parameter but the head's
        model.zero_grad(set_to_none=True)
        out = model.encode(x, data.edge_index_dict)
        sum(h.square().sum() for h in out.embeddings.values()).backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("head")]
        assert not unused, f"parameters without gradient: {unused}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["latte", "han", "hgt", "rgcn"])
def test_every_model_learns_a_relational_label(name: str) -> None:
    data = hetero_data()
    x, _, _ = inputs(data)
    torch.manual_seed(0)
    model = builders(data)[name]()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(80):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x, data.edge_index_dict), data["p"].y).backward()
        optimizer.step()
    accuracy = (model(x, data.edge_index_dict).argmax(1) == data["p"].y).float().mean()
    assert accuracy >= 0.9, f"{name} fits the training graph to {accuracy:.2f} only"


def test_rgcn_homogeneous_view_matches_pyg_to_homogeneous() -> None:
    data = hetero_data()
    x, sizes, counts = inputs(data)
    model = RGCN(data.metadata(), sizes, 3, "p", hidden_channels=8, num_layers=1, num_nodes_dict=counts).eval()
    h = model.input(x)
    for node_type in data.node_types:
        data[node_type].h = h[node_type]
    homogeneous = data.to_homogeneous(node_attrs=["h"])
    order = [data.node_types.index(t) for t in model.node_types]
    assert order == sorted(order)  # same stacking order as ours
    relation = torch.tensor([model.edge_types.index(data.edge_types[i]) for i in range(len(data.edge_types))])
    full = model.convs[0](homogeneous.h, homogeneous.edge_index, relation[homogeneous.edge_type])
    target = homogeneous.node_type == data.node_types.index("p")
    torch.testing.assert_close(model.convolve(h, data.edge_index_dict), full[target])


def test_models_reject_bad_options() -> None:
    data = hetero_data()
    _, sizes, counts = inputs(data)
    with pytest.raises(ValueError, match="target_type"):
        LATTE(data.metadata(), sizes, 3, "x", num_nodes_dict=counts)
    with pytest.raises(ValueError, match=r"\['s'\] have no features"):
        HGT(data.metadata(), sizes, 3, "p")
    with pytest.raises(ValueError, match="meta_weights"):
        LATTE(data.metadata(), sizes, 3, "p", num_nodes_dict=counts, meta_weights="paths")
    with pytest.raises(ValueError, match="threshold"):
        LATTE(data.metadata(), sizes, 3, "p", num_nodes_dict=counts, threshold=2.0)


def test_latte_composed_graphs_do_not_accumulate_in_the_kernel_cache() -> None:
    """LATTE composes new order-2 graphs every forward; the kernel's CSR cache must let them go
    with their tensors (entries do not pile up forward after forward)."""
    import gc

    from gattn.kernels import _cache

    data = hetero_data()
    x, sizes, counts = inputs(data)
    model = LATTE(data.metadata(), sizes, 3, "p", hidden_channels=8, num_layers=2, heads=2, num_nodes_dict=counts)
    sizes_seen = []
    for _ in range(4):
        out = model.encode(x, data.edge_index_dict)
        model.classify(out).sum().backward()  # the backward pass still finds its CSR
        del out
        gc.collect()
        sizes_seen.append(len(_cache._entries))
    assert sizes_seen[1:] == sizes_seen[:1] * 3, sizes_seen
