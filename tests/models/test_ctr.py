"""The CTR models: wiring against the layers composed by hand, ragged vs padded input,
decoupled embeddings, mini-batch aware regularisation, Hiformer pruning, and learning."""

from __future__ import annotations

import numba
import pytest
import torch

from gattn.models.ctr import DARE, DIN, CategoricalFeature, Hiformer, NumericFeature, SequenceFeature

FEATURES = [CategoricalFeature("user_id", 20), CategoricalFeature("item_id", 50), CategoricalFeature("cate_id", 6)]
SEQUENCES = [SequenceFeature("hist_item_id", "item_id"), SequenceFeature("hist_cate_id", "cate_id")]
SIZES = [5, 0, 2, 9, 1]


def batch(sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, rows = len(sizes), sum(sizes)
    features = {
        "user_id": torch.randint(0, 20, (b,), generator=gen),
        "item_id": torch.randint(1, 50, (b,), generator=gen),
        "cate_id": torch.randint(1, 6, (b,), generator=gen),
    }
    history = {
        "hist_item_id": torch.randint(1, 50, (rows,), generator=gen),
        "hist_cate_id": torch.randint(1, 6, (rows,), generator=gen),
    }
    return features, history, torch.tensor(sizes)


def pad(history, sizes, fill=0):
    longest = max(sizes)
    valid = torch.arange(longest) < torch.tensor(sizes).unsqueeze(1)
    out = {}
    for name, ids in history.items():
        padded = torch.full((len(sizes), longest), fill, dtype=ids.dtype)
        padded[valid] = ids
        out[name] = padded
    return out, valid


def by_hand(model, features, history, lengths):
    """The model's logits from its parts: embeddings, the layer on gathered rows, the head."""
    emb = {f.name: model.embedding.tables[f.name](features[f.name]) for f in FEATURES}
    att = model.attention_tables if model.decoupled else model.embedding.tables
    query = torch.cat([att["item_id"](features["item_id"]), att["cate_id"](features["cate_id"])], 1)
    keys = torch.cat([att["item_id"](history["hist_item_id"]), att["cate_id"](history["hist_cate_id"])], 1)
    value = torch.cat([model.embedding.tables["item_id"](history["hist_item_id"]),
                       model.embedding.tables["cate_id"](history["hist_cate_id"])], 1)
    interest = model.attention(query, keys, lengths=lengths, value=value)
    parts = [emb["user_id"], emb["item_id"], emb["cate_id"], interest]
    if model.interest_product:
        parts.append(torch.cat([emb["item_id"], emb["cate_id"]], 1) * interest)
    return model.head(torch.cat(parts, 1)).squeeze(1)


MODELS = {
    "din": lambda: DIN(FEATURES, SEQUENCES, embedding_dim=4, attention_hidden_channels=(6,), hidden_channels=(8,)),
    "din-decoupled": lambda: DIN(FEATURES, SEQUENCES, embedding_dim=4, attention_hidden_channels=(6,),
                                 hidden_channels=(8,), decoupled=True, attention_embedding_dim=3),
    "dare": lambda: DARE(FEATURES, SEQUENCES, embedding_dim=4, top_k=3, hidden_channels=(8,)),
    "dare-shared": lambda: DARE(FEATURES, SEQUENCES, embedding_dim=4, top_k=3, hidden_channels=(8,), decoupled=False),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_equals_its_parts_and_padded_equals_ragged(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    features, history, lengths = batch()
    logits, weights = model(features, history, lengths=lengths, return_attention_weights=True)
    assert logits.shape == (len(SIZES),) and weights.shape == (sum(SIZES),)
    torch.testing.assert_close(logits, by_hand(model, features, history, lengths), atol=1e-5, rtol=1e-5)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    torch.testing.assert_close(model(features, history, ptr), logits)
    for fill in (0, 7):  # whatever the padding holds
        padded, valid = pad(history, SIZES, fill)
        out, padded_weights = model(features, padded, padding_mask=~valid, return_attention_weights=True)
        torch.testing.assert_close(out, logits)
        torch.testing.assert_close(padded_weights[valid], weights)
        assert torch.all(padded_weights[~valid] == 0)
        torch.testing.assert_close(model(features, padded, lengths=lengths), logits)


def test_decoupled_attention_tables_drive_the_weights_only():
    torch.manual_seed(1)
    model = MODELS["din-decoupled"]().eval()
    features, history, lengths = batch()
    _, weights = model(features, history, lengths=lengths, return_attention_weights=True)
    with torch.no_grad():
        model.embedding.tables["item_id"].weight.mul_(3.0)  # representation only
    _, same = model(features, history, lengths=lengths, return_attention_weights=True)
    torch.testing.assert_close(same, weights)
    with torch.no_grad():
        model.attention_tables["item_id"].weight.mul_(3.0)
    _, changed = model(features, history, lengths=lengths, return_attention_weights=True)
    assert not torch.allclose(changed, weights)
    assert model.attention_tables["item_id"].embedding_dim == 3
    with pytest.raises(ValueError, match="decoupled=True"):
        DIN(FEATURES, SEQUENCES, attention_embedding_dim=8)


def test_dare_retrieving_more_than_the_longest_history_is_full_attention():
    torch.manual_seed(2)
    model = MODELS["dare"]().eval()
    features, history, lengths = batch()
    full = DARE(FEATURES, SEQUENCES, embedding_dim=4, top_k=None, hidden_channels=(8,)).eval()
    full.load_state_dict(model.state_dict())
    model.attention.top_k = max(SIZES)
    torch.testing.assert_close(model(features, history, lengths=lengths), full(features, history, lengths=lengths))


def test_minibatch_aware_penalty_matches_plain_computation():
    torch.manual_seed(3)
    model = MODELS["din-decoupled"]()
    features, history, lengths = batch()
    padded, valid = pad(history, SIZES)
    item_freq = torch.randint(1, 9, (50,))
    cate_freq = torch.randint(1, 9, (6,))
    penalty = model.minibatch_aware_penalty(
        {"item_id": item_freq, "cate_id": cate_freq}, features, padded, padding_mask=~valid
    )
    want = 0.0
    for name, hist, freq in (("item_id", "hist_item_id", item_freq), ("cate_id", "hist_cate_id", cate_freq)):
        ids = set(features[name].tolist()) | set(history[hist].tolist())  # never the padding
        for table in (model.embedding.tables[name], model.attention_tables[name]):
            want = want + sum(table.weight[j].square().sum() / freq[j] for j in ids)
    torch.testing.assert_close(penalty, want)
    with pytest.raises(ValueError, match="`frequencies` names"):
        model.minibatch_aware_penalty({"price": item_freq}, features, history, lengths=lengths)


def test_loss_is_binary_cross_entropy():
    logits = torch.tensor([0.3, -2.0, 1.5])
    labels = torch.tensor([1, 0, 0])
    want = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), labels.float())
    torch.testing.assert_close(DIN.loss(logits, labels), want)
    with pytest.raises(ValueError, match="`labels`"):
        DIN.loss(logits, labels[:2])


def test_din_learns_whether_the_target_category_is_in_the_history():
    """Label 1 iff the user's history holds the target's category: only attention can see it."""
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    sizes = torch.randint(1, 8, (256,), generator=gen).tolist()
    features, history, lengths = batch(sizes, seed=5)
    seg = torch.repeat_interleave(torch.arange(len(sizes)), lengths)
    match = torch.zeros(len(sizes), dtype=torch.bool).index_put_(
        (seg,), history["hist_cate_id"] == features["cate_id"][seg], accumulate=True
    )
    labels = match.float()
    # many small steps: one numba thread avoids a parallel launch per kernel on a busy machine
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        loss, first, accuracy = _train_din_on(features, history, lengths, labels)
    finally:
        numba.set_num_threads(threads)
    assert loss < 0.5 * first and accuracy > 0.9


def _train_din_on(features, history, lengths, labels):
    model = DIN(FEATURES, SEQUENCES, embedding_dim=8, attention_hidden_channels=(16,), hidden_channels=(16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(120):
        optimizer.zero_grad()
        loss = model.loss(model(features, history, lengths=lengths), labels)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    model.eval()
    accuracy = ((model(features, history, lengths=lengths) > 0).float() == labels).float().mean()
    return loss.item(), first, float(accuracy)


def test_bad_input_errors_name_the_input():
    model = MODELS["din"]()
    features, history, lengths = batch()
    with pytest.raises(ValueError, match="lacks \\['cate_id'\\]"):
        model({k: v for k, v in features.items() if k != "cate_id"}, history, lengths=lengths)
    with pytest.raises(ValueError, match="`features\\['item_id'\\]` has ids"):
        model({**features, "item_id": features["item_id"] + 100}, history, lengths=lengths)
    with pytest.raises(ValueError, match="`history\\['hist_cate_id'\\]` has ids"):
        model(features, {**history, "hist_cate_id": history["hist_cate_id"] + 10}, lengths=lengths)
    with pytest.raises(TypeError, match="integer ids"):
        model({**features, "user_id": features["user_id"].float()}, history, lengths=lengths)
    with pytest.raises(ValueError, match="`lengths`"):
        model(features, history, lengths=lengths + 1)
    with pytest.raises(ValueError, match="not a categorical feature"):
        DIN(FEATURES, [SequenceFeature("hist_brand", "brand_id")])


def hiformer_features():
    return [CategoricalFeature("c1", 10), CategoricalFeature("c2", 7), NumericFeature("n1", (0.0, 1.0, 10.0))]


@pytest.mark.parametrize("rank", [None, 3])
def test_hiformer_pruning_gives_the_full_models_output(rank):
    torch.manual_seed(6)
    gen = torch.Generator().manual_seed(6)
    features = {
        "c1": torch.randint(0, 10, (8,), generator=gen),
        "c2": torch.randint(0, 7, (8,), generator=gen),
        "n1": torch.randn(8, generator=gen) * 5,
    }
    pruned = Hiformer(hiformer_features(), embedding_dim=6, num_layers=2, heads=2, rank=rank, num_tasks=2).eval()
    full = Hiformer(hiformer_features(), embedding_dim=6, num_layers=2, heads=2, rank=rank, num_tasks=2,
                    prune=False).eval()
    full.load_state_dict(pruned.state_dict())
    logits = pruned(features)
    assert logits.shape == (8, 2)
    torch.testing.assert_close(logits, full(features), atol=1e-6, rtol=1e-5)
    # the numeric feature is bucketed by its boundaries: bucket i holds [b[i-1], b[i])
    ids = pruned.embedding.ids({**features, "n1": torch.tensor([-1.0, 0.0, 0.5, 1.0, 99.0] + [0.0] * 3)})
    assert ids["n1"][:5].tolist() == [0, 1, 1, 2, 3]


def test_hiformer_errors():
    with pytest.raises(ValueError, match="one size"):
        Hiformer([CategoricalFeature("c1", 10, embedding_dim=4), CategoricalFeature("c2", 5)], embedding_dim=6)
    model = Hiformer(hiformer_features(), embedding_dim=6)
    with pytest.raises(TypeError, match="numeric"):
        model({"c1": torch.zeros(2, dtype=torch.long), "c2": torch.zeros(2, dtype=torch.long),
               "n1": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match="strictly increasing"):
        Hiformer([NumericFeature("n", (1.0, 1.0))])
