"""Hiformer's attention against a per-token loop of the paper's formulas; pruning against the full layer."""

from __future__ import annotations

import math

import pytest
import torch

from gattn.nn.hiformer import HeterogeneousAttention, HiformerLayer

TOKENS, DIM, HEADS, HEAD_DIM = 5, 6, 2, 3


def reference_attention(att: HeterogeneousAttention, x: torch.Tensor) -> torch.Tensor:
    """Loops over tokens and heads: q_i = e_i Q_i; keys/values per token or composite."""
    batch = x.size(0)
    inner = att.heads * att.head_channels
    q = torch.stack([x[:, i] @ att.lin_query.weight[i] + att.lin_query.bias[i] for i in range(TOKENS)], 1)

    def kv(lin):
        if not att.composite:
            return torch.stack([x[:, j] @ lin.weight[j] + lin.bias[j] for j in range(TOKENS)], 1)
        flat = x.reshape(batch, -1)
        weight = lin.up.weight if lin.down is None else lin.up.weight @ lin.down.weight  # U V
        return (flat @ weight.t() + lin.up.bias).view(batch, TOKENS, inner)

    k, v = kv(att.lin_key), kv(att.lin_value)
    outs = []
    for i in range(TOKENS):
        heads = []
        for h in range(att.heads):
            cols = slice(h * att.head_channels, (h + 1) * att.head_channels)
            scores = torch.einsum("bd,btd->bt", q[:, i, cols], k[:, :, cols]) / math.sqrt(att.head_channels)
            heads.append(torch.einsum("bt,btd->bd", torch.softmax(scores, 1), v[:, :, cols]))
        outs.append(torch.cat(heads, 1) @ att.lin_out.weight[i] + att.lin_out.bias[i])
    return torch.stack(outs, 1)


@pytest.mark.parametrize("composite,rank", [(False, None), (True, None), (True, 4)])
def test_attention_matches_per_token_loop(composite, rank):
    torch.manual_seed(0)
    att = HeterogeneousAttention(TOKENS, DIM, HEADS, HEAD_DIM, composite=composite, rank=rank)
    x = torch.randn(3, TOKENS, DIM)
    torch.testing.assert_close(att(x), reference_attention(att, x), atol=1e-5, rtol=1e-5)


def test_tokens_are_heterogeneous():
    """Swapping two tokens' inputs does not just swap their outputs (token-specific weights)."""
    torch.manual_seed(1)
    att = HeterogeneousAttention(TOKENS, DIM, HEADS, composite=False)
    x = torch.randn(2, TOKENS, DIM)
    swapped = x[:, [1, 0, 2, 3, 4]]
    assert not torch.allclose(att(swapped)[:, [1, 0, 2, 3, 4]], att(x), atol=1e-4)


@pytest.mark.parametrize("composite,rank", [(False, None), (True, None), (True, 3)])
def test_pruned_layer_equals_full_layer(composite, rank):
    torch.manual_seed(2)
    layer = HiformerLayer(TOKENS, DIM, HEADS, HEAD_DIM, composite=composite, rank=rank).eval()
    x = torch.randn(4, TOKENS, DIM)
    full = layer(x)
    for tokens in ([4], [3, 4], [0, 2]):
        torch.testing.assert_close(layer(x, tokens), full[:, tokens], atol=1e-6, rtol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(3)
    layer = HiformerLayer(TOKENS, DIM, HEADS, HEAD_DIM, composite=True, rank=2).double()
    x = torch.randn(2, TOKENS, DIM, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t, [4]), (x,))


def test_bad_input_and_options():
    layer = HiformerLayer(TOKENS, DIM, HEADS)
    with pytest.raises(ValueError, match="`x`"):
        layer(torch.randn(2, TOKENS + 1, DIM))
    with pytest.raises(TypeError, match="`x`"):
        layer(torch.ones(2, TOKENS, DIM, dtype=torch.long))
    with pytest.raises(ValueError, match="`query_tokens`"):
        layer(torch.randn(2, TOKENS, DIM), [TOKENS])
    with pytest.raises(ValueError, match="composite=True"):
        HeterogeneousAttention(TOKENS, DIM, rank=2, composite=False)
    with pytest.raises(ValueError, match="`heads`"):
        HeterogeneousAttention(TOKENS, DIM, heads=0)
