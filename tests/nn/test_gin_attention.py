"""GIN-Attention (dense and sparse forms) against a per-head loop reference, and the Sparse GIN
adapter around a frozen MultiheadAttention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gattn.nn import GINAttention, SparseGINAdapter, WeightedGINConv


def reference_gin_attention(layer: GINAttention, x, key_padding_mask=None, is_causal=False):
    """The paper's equations with heads in a Python loop and explicit masks (the reference code's
    approach), using the layer's parameters."""
    batch, length, _ = x.shape
    d, heads = layer.head_channels, layer.heads
    q_all, k_all = layer.lin_query(x), layer.lin_key(x)
    mask = torch.zeros(batch, length, length)
    if key_padding_mask is not None:
        mask = mask.masked_fill(key_padding_mask.view(batch, 1, length), float("-inf"))
    if is_causal:
        mask = mask + torch.full((length, length), float("-inf")).triu(1)
    outs = []
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        q, k, xh = q_all[..., part], k_all[..., part], x[..., part]
        scores = layer.alpha * (q @ k.transpose(1, 2) / math.sqrt(d)) / layer.temperature + mask
        empty = torch.isinf(scores).all(-1, keepdim=True)
        attention = torch.softmax(scores.masked_fill(empty, 0.0), -1).masked_fill(empty, 0.0)
        eps = layer.eps[h] if layer.eps_mode == "reference" else 1 + layer.eps[h]
        mlp = layer.mlp
        z = eps * xh + attention @ xh
        z = z @ mlp.weight1[h] + mlp.bias1[h]
        z = torch.nn.functional.silu(z / z.pow(2).mean(-1, keepdim=True).add(torch.finfo(z.dtype).eps).sqrt()
                                     * mlp.norm_weight[h])
        outs.append(z @ mlp.weight2[h] + mlp.bias2[h])
    out = torch.cat(outs, -1)
    return layer.lin_out(out) if layer.lin_out is not None else out


def padding(batch=3, length=7):
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[0, 5:] = True
    mask[2, :] = True  # a sequence with no key at all
    return mask


@pytest.mark.parametrize("eps_mode", ["gin", "reference"])
@pytest.mark.parametrize("masks", [(False, False), (True, False), (False, True), (True, True)])
def test_dense_form_matches_the_per_head_loop(eps_mode, masks) -> None:
    use_padding, causal = masks
    torch.manual_seed(0)
    layer = GINAttention(12, heads=3, temperature=0.7, eps_mode=eps_mode, eps_init=0.3, mlp_ratio=1.5)
    with torch.no_grad():
        layer.alpha.fill_(1.4)
        layer.eps.uniform_(-0.5, 0.5)
    x = torch.randn(3, 7, 12)
    kpm = padding() if use_padding else None
    expected = reference_gin_attention(layer, x, kpm, causal)
    out = layer(x, key_padding_mask=kpm, is_causal=causal)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out2, attention = layer(x, key_padding_mask=kpm, is_causal=causal, return_attention_weights=True)
    torch.testing.assert_close(out2, expected, atol=1e-5, rtol=1e-5)
    assert attention.shape == (3, 3, 7, 7)
    if use_padding:
        assert attention[2].abs().sum() == 0 and attention[0, :, :, 5:].abs().sum() == 0
    if causal:
        assert attention.triu(1).abs().sum() == 0


def complete_graph(length: int, causal: bool = False, padded=None, batch: int = 1) -> torch.Tensor:
    """Edges key -> query of `batch` sequences flattened, like the dense form's masks."""
    pieces = []
    for b in range(batch):
        key, query = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        keep = torch.ones(length, length, dtype=torch.bool)
        if causal:
            keep &= key <= query
        if padded is not None:
            keep &= ~padded[b].view(length, 1)
        pieces.append(torch.stack([key[keep], query[keep]]) + b * length)
    return torch.cat(pieces, 1)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("causal,use_padding", [(False, False), (True, False), (False, True)])
def test_sparse_form_on_the_complete_graph_equals_the_dense_form(backend, causal, use_padding) -> None:
    torch.manual_seed(1)
    layer = GINAttention(8, heads=2, backend=backend)
    x = torch.randn(3, 7, 8)
    kpm = padding() if use_padding else None
    dense = layer(x, key_padding_mask=kpm, is_causal=causal)
    edge_index = complete_graph(7, causal, kpm, batch=3)
    sparse = layer(x.reshape(21, 8), edge_index).view(3, 7, 8)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    _, (returned, alpha) = layer(x.reshape(21, 8), edge_index, return_attention_weights=True)
    assert returned is edge_index and alpha.shape == (edge_index.size(1), 2)


def test_empty_neighbourhoods_and_fully_padded_rows_give_finite_values_and_gradients() -> None:
    torch.manual_seed(2)
    layer = GINAttention(8, heads=2, out_proj=False)
    x = torch.randn(5, 8, requires_grad=True)
    edge_index = torch.tensor([[0, 1], [1, 2]])  # nodes 0, 3, 4 receive nothing
    out = layer(x, edge_index)
    expected = layer.mlp((1 + layer.eps).view(-1, 1) * x.view(5, 2, 4)).reshape(5, 8)
    torch.testing.assert_close(out[[0, 3, 4]], expected[[0, 3, 4]])
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    x_dense = torch.randn(3, 7, 8, requires_grad=True)
    layer(x_dense, key_padding_mask=padding()).sum().backward()
    assert torch.isfinite(x_dense.grad).all() and torch.isfinite(layer.alpha.grad)


def test_gradcheck_float64_both_forms() -> None:
    torch.manual_seed(3)
    layer = GINAttention(4, heads=2, mlp_ratio=1.0).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2, 3, 5, 5, 0], [1, 1, 3, 3, 0, 2, 0]])
    assert torch.autograd.gradcheck(lambda t: layer(t, edge_index), (x,), fast_mode=True)
    x_dense = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[False, False, True], [False, False, False]])
    assert torch.autograd.gradcheck(lambda t: layer(t, key_padding_mask=kpm, is_causal=True), (x_dense,))


def test_bad_input_is_reported() -> None:
    layer = GINAttention(8, heads=2)
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        layer(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        layer(torch.randn(2, 4, 8), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="key_padding_mask"):
        layer(torch.randn(2, 4, 8), key_padding_mask=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="dense form"):
        layer(torch.randn(4, 8), torch.zeros(2, 1, dtype=torch.long), is_causal=True)
    with pytest.raises(ValueError, match="divisible"):
        GINAttention(10, heads=4)
    with pytest.raises(ValueError, match="eps_mode"):
        GINAttention(8, heads=2, eps_mode="plain")
    assert "eps_mode='gin'" in repr(layer)


def test_weighted_gin_conv() -> None:
    torch.manual_seed(4)
    conv = WeightedGINConv(6, mlp_ratio=2.0, eps_init=0.25)
    x = torch.randn(4, 6)
    edge_index = torch.tensor([[0, 1, 3], [1, 2, 2]])
    weight = torch.tensor([0.5, 2.0, -1.0])
    aggregated = torch.zeros(4, 6)
    aggregated[1] = 0.5 * x[0]
    aggregated[2] = 2.0 * x[1] - x[3]
    expected = conv.mlp((1.25 * x + aggregated).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(conv(x, edge_index, weight), expected)


def mha(seed: int = 0, channels: int = 8, heads: int = 2) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    return nn.MultiheadAttention(channels, heads, batch_first=True).eval()


@pytest.mark.parametrize("rule", [{"threshold": 0.3}, {"top_k": 3}])
@pytest.mark.parametrize("causal", [False, True])
def test_adapter_is_exactly_the_wrapped_attention_at_initialisation(rule, causal) -> None:
    attention = mha()
    adapter = SparseGINAdapter(attention, causal=causal, **rule)
    x = torch.randn(2, 6, 8)
    kpm = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    call = dict(key_padding_mask=kpm, need_weights=False)
    if causal:
        mask = torch.ones(6, 6, dtype=torch.bool).triu(1)
        call["attn_mask"] = mask
        expected = attention(x, x, x, **call)[0]
        out, weights = adapter(x, key_padding_mask=kpm, attn_mask=mask)
    else:
        expected = attention(x, x, x, **call)[0]
        out, weights = adapter(x, key_padding_mask=kpm)
    assert weights is None and torch.equal(out, expected)
    trainable = sorted(n for n, p in adapter.named_parameters() if p.requires_grad)
    assert trainable == ["gin.eps", "gin.mlp.bias1", "gin.mlp.bias2", "gin.mlp.norm_weight",
                         "gin.mlp.weight1", "gin.mlp.weight2", "scale"]
    assert all(not p.requires_grad for p in attention.parameters())


def test_adapter_trains_only_the_gin_and_lambda() -> None:
    attention = mha(1)
    frozen = {n: p.clone() for n, p in attention.state_dict().items()}
    adapter = SparseGINAdapter(attention, top_k=2)
    x = torch.randn(2, 5, 8)
    target = torch.randn(2, 5, 8)
    optimizer = torch.optim.SGD([p for p in adapter.parameters() if p.requires_grad], lr=0.1)
    before = adapter(x)[0].detach()
    for _ in range(3):
        optimizer.zero_grad()
        (adapter(x)[0] - target).square().mean().backward()
        optimizer.step()
    assert adapter.scale.item() != 0.0
    assert not torch.equal(adapter(x)[0], before)
    assert all(torch.equal(frozen[n], p) for n, p in attention.state_dict().items())


def test_attention_graph_rules() -> None:
    adapter = SparseGINAdapter(mha(), top_k=2, sharpness=5.0, center=0.2, causal=True)
    weights = torch.rand(2, 3, 4, 4)  # heads summed above one on purpose: clamped
    kpm = torch.tensor([[False, False, False, False], [False, True, False, False]])
    edge_index, edge_weight = adapter.attention_graph(weights, kpm)
    summed = weights.sum(1).clamp(max=1.0)
    sharpened = torch.sigmoid(5.0 * (summed - 0.2))
    src, dst = edge_index
    graph, query, key = dst // 4, dst % 4, src % 4
    assert torch.equal(src // 4, graph)
    assert (key <= query).all(), "causal: keys at or before the query only"
    assert not ((graph == 1) & (key == 1)).any(), "no edge from a padded key"
    torch.testing.assert_close(edge_weight, sharpened[graph, query, key])
    counts = torch.bincount(dst, minlength=8).view(2, 4)
    allowed = torch.tensor([[1, 2, 3, 4], [1, 1, 2, 3]])
    assert torch.equal(counts, allowed.clamp(max=2))
    adapter = SparseGINAdapter(mha(), threshold=0.9)
    edge_index, _ = adapter.attention_graph(weights)
    assert edge_index.size(1) == int((summed >= 0.9).sum())


def test_adapter_wraps_any_module_returning_attention_weights() -> None:
    class SingleHead(nn.Module):
        embed_dim = 8

        def forward(self, x, key_padding_mask=None):
            scores = x @ x.transpose(1, 2) / math.sqrt(8)
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask.unsqueeze(1), float("-inf"))
            weights = scores.softmax(-1)
            return weights @ x, weights  # [B, L, L]

    module = SingleHead()
    adapter = SparseGINAdapter(module, threshold=0.2)
    x = torch.randn(2, 5, 8)
    assert torch.equal(adapter(x)[0], module(x)[0])
    with torch.no_grad():
        adapter.scale.fill_(1.0)
    assert not torch.equal(adapter(x)[0], module(x)[0])


def test_adapter_rejects_conflicting_options() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SparseGINAdapter(mha(), threshold=0.2, top_k=2)
    with pytest.raises(ValueError, match="exactly one"):
        SparseGINAdapter(mha())
    with pytest.raises(ValueError, match="batch_first"):
        SparseGINAdapter(nn.MultiheadAttention(8, 2), top_k=2)
    with pytest.raises(ValueError, match="center"):
        SparseGINAdapter(mha(), threshold=0.2, center=0.5)
    causal = SparseGINAdapter(mha(), top_k=2, causal=True)
    with pytest.raises(ValueError, match="causal=True"):
        causal(torch.randn(1, 3, 8))
    assert torch.isfinite(causal(torch.randn(1, 3, 8), is_causal=True)[0]).all()
    with pytest.raises(ValueError, match="causal=False"):
        SparseGINAdapter(mha(), top_k=2)(torch.randn(1, 3, 8), is_causal=True)
    with pytest.raises(ValueError, match="embed_dim"):
        SparseGINAdapter(mha(), channels=16, top_k=2)
