"""GIN-Attention vs plain attention models: sizes, causality, masks and the adapter swap."""

from __future__ import annotations

import pytest
import torch

from gattn.models import AttentionBlock, GraphAttentionClassifier, SequenceTransformer
from gattn.nn import SparseGINAdapter


def count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@pytest.mark.parametrize("heads", [2, 4, 8])
def test_gin_and_plain_attention_have_the_same_size(heads: int) -> None:
    for graph in (False, True):
        gin = AttentionBlock(64, heads, "gin", graph=graph)
        mha = AttentionBlock(64, heads, "mha", graph=graph)
        assert abs(count(gin) - count(mha)) / count(mha) < 0.03, (graph, count(gin), count(mha))


@pytest.mark.parametrize("attention", ["gin", "mha"])
def test_graph_classifier(attention: str) -> None:
    torch.manual_seed(0)
    model = GraphAttentionClassifier(10, 16, 3, num_layers=2, heads=2, attention=attention)
    x = torch.randn(12, 10)
    edge_index = torch.randint(0, 12, (2, 40))
    logits = model(x, edge_index)
    assert logits.shape == (12, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="edge_index"):
        model.blocks[0](torch.randn(12, 16))


@pytest.mark.parametrize("attention", ["gin", "mha"])
def test_causal_sequence_model_does_not_look_ahead(attention: str) -> None:
    torch.manual_seed(0)
    model = SequenceTransformer(10, 8, 16, 5, num_layers=2, heads=2, attention=attention, causal=True).eval()
    tokens = torch.randint(0, 10, (2, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 10
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("attention", ["gin", "mha"])
def test_mean_pooling_ignores_padded_tokens(attention: str) -> None:
    torch.manual_seed(0)
    model = SequenceTransformer(10, 6, 16, 2, heads=2, attention=attention, pooling="mean").eval()
    tokens = torch.randint(0, 10, (1, 6))
    padded = torch.tensor([[False, False, False, False, True, True]])
    other = tokens.clone()
    other[0, 4:] = (other[0, 4:] + 3) % 10
    torch.testing.assert_close(model(tokens, padded), model(other, padded))
    assert model(tokens).shape == (1, 2)


def test_adapting_a_trained_block_keeps_the_model_output_and_freezes_it() -> None:
    torch.manual_seed(0)
    model = SequenceTransformer(10, 8, 16, 5, num_layers=2, heads=2, attention="mha", causal=True).eval()
    tokens = torch.randint(0, 10, (3, 8))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    # MultiheadAttention picks a fused or an unfused path by whether autograd is needed, and the
    # two round differently: compare like with like (no_grad) exactly, then with autograd closely
    with torch.no_grad():
        before = model(tokens)
    adapters = [block.adapt(top_k=3, causal=True) for block in model.blocks]
    assert all(isinstance(block.attention, SparseGINAdapter) for block in model.blocks)
    with torch.no_grad():
        assert torch.equal(model(tokens), before)
    torch.testing.assert_close(model(tokens), before)
    assert count(model, trainable_only=True) == sum(count(a.gin) + 1 for a in adapters)
    with pytest.raises(ValueError, match="attention='mha'"):
        AttentionBlock(16, 2, "gin").adapt(top_k=2)
