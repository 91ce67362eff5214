"""DARE's two-stage attention against a per-user loop of the paper's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from gattn.nn.dare import DAREAttention

SIZES = [30, 0, 3, 1, 25]


def inputs(sizes, dim=4, value_dim=6, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(sum(sizes), dim, generator=gen, dtype=dtype)
    value = torch.randn(sum(sizes), value_dim, generator=gen, dtype=dtype)
    query = torch.randn(len(sizes), dim, generator=gen, dtype=dtype)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return query, keys, value, ptr


def reference_dare(query, keys, value, ptr, top_k, softmax=True):
    """Per user: score all behaviours, keep the top-K, softmax over them, sum the values."""
    outs, weights = [], torch.zeros(keys.size(0), dtype=keys.dtype)
    scale = 1 / math.sqrt(keys.size(1))
    for b in range(query.size(0)):
        lo, hi = int(ptr[b]), int(ptr[b + 1])
        scores = keys[lo:hi] @ query[b] * scale
        order = sorted(range(hi - lo), key=lambda j: (float(scores[j]), j), reverse=True)
        kept = sorted(order[: top_k or len(order)])
        if not kept:
            outs.append(torch.zeros(value.size(1), dtype=value.dtype))
            continue
        w = torch.softmax(scores[kept], 0) if softmax else scores[kept]
        weights[[lo + j for j in kept]] = w
        outs.append(w @ value[lo:hi][kept])
    return torch.stack(outs), weights


@pytest.mark.parametrize("top_k", [None, 1, 5, 40])
@pytest.mark.parametrize("softmax", [True, False])
def test_dare_matches_per_user_loop(top_k, softmax):
    query, keys, value, ptr = inputs(SIZES)
    layer = DAREAttention(4, top_k=top_k, softmax=softmax)
    out, weights = layer(query, keys, ptr, value=value, return_attention_weights=True)
    want, want_weights = reference_dare(query, keys, value, ptr, top_k, softmax)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, want_weights, atol=1e-6, rtol=1e-5)
    assert torch.all(out[1] == 0)
    kept = (weights != 0).view(-1)
    # histories shorter than K keep everything
    sizes = torch.tensor(SIZES)
    counts = torch.zeros(len(SIZES), dtype=torch.long).index_add_(
        0, torch.repeat_interleave(torch.arange(len(SIZES)), sizes), kept.long()
    )
    assert torch.equal(counts, sizes if top_k is None else sizes.clamp(max=top_k))


def test_padded_history_and_padding_is_never_retrieved():
    query, keys, value, ptr = inputs(SIZES)
    layer = DAREAttention(4, top_k=5)
    ragged = layer(query, keys, ptr, value=value)
    longest = max(SIZES)
    valid = torch.arange(longest) < torch.tensor(SIZES).unsqueeze(1)
    # padding whose score would win any retrieval
    keys_pad = (query.unsqueeze(1) * 1e3).expand(-1, longest, -1).clone()
    value_pad = torch.full((len(SIZES), longest, 6), 1e6)
    keys_pad[valid], value_pad[valid] = keys, value
    out, weights = layer(query, keys_pad, padding_mask=~valid, value=value_pad, return_attention_weights=True)
    torch.testing.assert_close(out, ragged)
    assert weights.shape == (len(SIZES), longest) and torch.all(weights[~valid] == 0)
    torch.testing.assert_close(layer(query, keys_pad, lengths=torch.tensor(SIZES), value=value_pad), ragged)


def test_gradcheck_float64():
    query, keys, value, ptr = inputs([5, 0, 2], dim=2, value_dim=2, dtype=torch.float64)
    layer = DAREAttention(2, top_k=3)
    args = tuple(t.clone().requires_grad_() for t in (query, keys, value))
    assert torch.autograd.gradcheck(lambda q, k, v: layer(q, k, ptr, value=v), args)


def test_bad_input_and_options():
    query, keys, value, ptr = inputs(SIZES)
    layer = DAREAttention(4)
    with pytest.raises(ValueError, match="`query`"):
        layer(query[:, :2], keys, ptr)
    with pytest.raises(ValueError, match="`value`"):
        layer(query, keys, ptr, value=value[:3])
    with pytest.raises(ValueError, match="`top_k`"):
        DAREAttention(4, top_k=0)
    with pytest.raises(ValueError, match="`in_channels`"):
        DAREAttention(0)
