"""TransICD: positional encoding by position in the document, code-wise attention on ragged
documents against a per-document dense computation, the whole model against documents
encoded one at a time without padding."""

from __future__ import annotations

import math

import pytest
import torch

from gattn.kernels import segment_attention_pool
from gattn.models import TransICD
from gattn.nn import CodeWiseAttention, LabelWiseLinear, sinusoidal_position_encoding

from .clinical import assert_same_parameter_gradients, train_and_score

SIZES = [4, 0, 1, 6, 3]


def ragged(sizes, dim=None, vocab=None, dtype=torch.float32, seed=0):
    """Rows of len(sizes) documents: features [R, dim] or token ids [R] < vocab, and ptr."""
    gen = torch.Generator().manual_seed(seed)
    rows = sum(sizes)
    x = torch.randn(rows, dim, generator=gen, dtype=dtype) if dim else torch.randint(vocab, (rows,), generator=gen)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return x, ptr


def docs(ptr):
    return [slice(int(a), int(b)) for a, b in zip(ptr[:-1], ptr[1:])]


# ----------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("channels", [6, 7])
def test_sinusoidal_encoding_formula(channels):
    position = torch.tensor([0, 1, 5, 2499])
    pe = sinusoidal_position_encoding(position, channels, dtype=torch.float64)
    for row, p in enumerate(position.tolist()):
        for col in range(channels):
            angle = p / 10000 ** ((col - col % 2) / channels)
            want = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert pe[row, col].item() == pytest.approx(want, abs=1e-12)


def test_encoding_follows_position_in_document_not_batch_index_or_token():
    torch.manual_seed(0)
    model = TransICD(3, vocab_size=10, embedding_dim=8, num_heads=2).eval()
    ids = torch.tensor([5, 5, 5, 5, 5, 7])
    ptr = torch.tensor([0, 3, 5, 6])
    embedded = model.embed(ids, ptr)
    position = torch.tensor([0, 1, 2, 0, 1, 0])
    want = model.embedding(ids) * math.sqrt(8) + sinusoidal_position_encoding(position, 8)
    torch.testing.assert_close(embedded, want)
    # same token, same position, different documents (batch index 0 and 1): same vector
    torch.testing.assert_close(embedded[0], embedded[3])
    torch.testing.assert_close(embedded[1], embedded[4])
    # same token, same document, different positions: different vectors
    assert not torch.allclose(embedded[0], embedded[1])
    # the first token of every document carries PE(0), whatever its id
    torch.testing.assert_close(embedded[5] - model.embedding.weight[7] * math.sqrt(8), sinusoidal_position_encoding(
        torch.tensor([0]), 8)[0])


def test_batch_order_does_not_change_a_documents_prediction():
    """With the authors' indexing (PE of the batch index), moving a document changes its logits."""
    torch.manual_seed(0)
    model = TransICD(4, vocab_size=20, embedding_dim=8, num_heads=2, dropout=0.0).eval()
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([9, 8, 7])
    ab = model(torch.cat([a, b]), torch.tensor([0, 4, 7]))
    ba = model(torch.cat([b, a]), torch.tensor([0, 3, 7]))
    torch.testing.assert_close(ab, ba.flip(0), atol=1e-5, rtol=1e-5)
    # reversing the words of a document does change it (order is encoded)
    rev = model(torch.cat([a.flip(0), b]), torch.tensor([0, 4, 7]))
    assert not torch.allclose(rev[0], ab[0], atol=1e-4)


# ----------------------------------------------------------------------------- attention
def dense_code_attention(layer: CodeWiseAttention, h: torch.Tensor):
    """One document: A = softmax_tokens(W2 tanh(W1 H)) [C, n], v = A H [C, D]."""
    scores = torch.tanh(h @ layer.w1.weight.t() + layer.w1.bias) @ layer.w2.weight.t()  # [n, C]
    a = torch.softmax(scores, dim=0)
    return a.t() @ h, a


def test_code_wise_attention_matches_dense():
    torch.manual_seed(0)
    x, ptr = ragged(SIZES, 6)
    layer = CodeWiseAttention(6, num_codes=5, attention_channels=7)
    pooled, weights = layer(x, ptr)
    assert pooled.shape == (len(SIZES), 5, 6) and weights.shape == (x.size(0), 5)
    for b, rows in enumerate(docs(ptr)):
        if rows.stop == rows.start:
            assert torch.all(pooled[b] == 0)
            continue
        want, a = dense_code_attention(layer, x[rows])
        torch.testing.assert_close(pooled[b], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights[rows], a, atol=1e-5, rtol=1e-5)


def test_code_wise_attention_gradcheck_float64():
    torch.manual_seed(0)
    x, ptr = ragged([3, 0, 2, 1], 4, dtype=torch.float64)
    layer = CodeWiseAttention(4, num_codes=3, attention_channels=5).double()
    params = (layer.w1.weight, layer.w1.bias, layer.w2.weight)
    x.requires_grad_(True)

    def fn(x, w1, b1, w2):
        scores = torch.tanh(x @ w1.t() + b1) @ w2.t()
        return segment_attention_pool(x, scores=scores, ptr=ptr)[0]

    assert torch.autograd.gradcheck(fn, (x, *params))
    # and the layer itself routes through the same op
    torch.testing.assert_close(layer(x, ptr)[0], fn(x, *params))


def test_label_wise_linear_is_one_linear_per_label():
    torch.manual_seed(0)
    layer = LabelWiseLinear(5, 3)
    x = torch.randn(4, 3, 5)
    want = torch.stack([x[:, c] @ layer.weight[c] + layer.bias[c] for c in range(3)], dim=1)
    torch.testing.assert_close(layer(x), want)
    with pytest.raises(ValueError, match=r"`x` must be \[B, 3, 5\]"):
        layer(torch.randn(4, 2, 5))


# ----------------------------------------------------------------------------- model
def reference_transicd(model: TransICD, ids: torch.Tensor, ptr: torch.Tensor):
    """Every document through the encoder alone ([1, n, d], nothing padded), dense attention."""
    logits, attention = [], []
    for rows in docs(ptr):
        n = rows.stop - rows.start
        if n == 0:
            logits.append(model.output.bias)
            continue
        e = model.embedding(ids[rows]) * math.sqrt(model.embedding_dim)
        e = e + sinusoidal_position_encoding(torch.arange(n), model.embedding_dim, dtype=e.dtype)
        h = model.encoder(e.unsqueeze(0))[0]
        v, a = dense_code_attention(model.attention, h)
        logits.append((v * model.output.weight).sum(-1) + model.output.bias)
        attention.append(a)
    return torch.stack(logits), torch.cat(attention)


def test_transicd_matches_unpadded_reference_values_and_gradients():
    torch.manual_seed(0)
    ids, ptr = ragged(SIZES, vocab=30)
    model = TransICD(5, vocab_size=30, embedding_dim=8, num_heads=2, num_layers=2, dropout=0.0).double()
    model.eval()
    logits, attention = model(ids, ptr, return_attention=True)
    want_logits, want_attention = reference_transicd(model, ids, ptr)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(attention, want_attention)
    for rows in docs(ptr):
        if rows.stop > rows.start:
            torch.testing.assert_close(attention[rows].sum(0), torch.ones(5, dtype=torch.float64))

    model.train()  # dropout=0: training mode changes nothing but the encoder's code path
    target = torch.randn(len(SIZES), 5, dtype=torch.float64)
    assert_same_parameter_gradients(
        model, lambda: model(ids, ptr), lambda: reference_transicd(model, ids, ptr)[0], target, "embedding.weight"
    )


def test_empty_documents_give_bias_logits_and_finite_gradients():
    torch.manual_seed(0)
    model = TransICD(3, vocab_size=10, embedding_dim=8, num_heads=2)
    ids, ptr = torch.tensor([1, 2, 3]), torch.tensor([0, 0, 3, 3])
    logits, attention = model(ids, ptr, return_attention=True)
    torch.testing.assert_close(logits[0], model.output.bias)
    torch.testing.assert_close(logits[2], model.output.bias)
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    # a batch of empty documents only
    out = model(torch.zeros(0, dtype=torch.long), torch.tensor([0, 0, 0]))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_pretrained_embeddings_and_freezing():
    pretrained = torch.randn(12, 8)
    model = TransICD(2, pretrained_embeddings=pretrained, freeze_embeddings=True, num_heads=2)
    torch.testing.assert_close(model.embedding.weight, pretrained)
    assert not model.embedding.weight.requires_grad
    assert model.embedding.weight.data_ptr() != pretrained.data_ptr()
    trainable = TransICD(2, vocab_size=12, embedding_dim=8, pretrained_embeddings=pretrained, num_heads=2)
    assert trainable.embedding.weight.requires_grad
    before = model.attention.w1.weight.clone()
    model.reset_parameters()
    assert not torch.equal(before, model.attention.w1.weight)
    torch.testing.assert_close(model.embedding.weight, pretrained)
    assert "TransICD(num_codes=2, vocab_size=12, embedding_dim=8" in repr(model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"vocab_size": 10, "embedding_dim": 8, "num_heads": 3}, ValueError, "`num_heads`=3 must divide"),
        ({"vocab_size": 10, "embedding_dim": 8, "freeze_embeddings": True}, ValueError, "`freeze_embeddings=True`"),
        ({"vocab_size": None, "embedding_dim": 8}, ValueError, "`vocab_size` must be a positive int"),
        ({"pretrained_embeddings": torch.randn(5, 8), "vocab_size": 6}, ValueError, "`vocab_size`=6 disagrees"),
        ({"vocab_size": 10, "embedding_dim": 8, "dropout": 1.0}, ValueError, "`dropout`"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    kwargs.setdefault("num_heads", 2)
    with pytest.raises(error, match=match):
        TransICD(2, **kwargs)


def test_forward_errors_name_the_argument():
    model = TransICD(2, vocab_size=10, embedding_dim=8, num_heads=2)
    ptr = torch.tensor([0, 2, 3])
    with pytest.raises(TypeError, match="`input_ids` must be an integer tensor"):
        model(torch.tensor([1.0, 2.0, 3.0]), ptr)
    with pytest.raises(ValueError, match="`input_ids` must be 1-D"):
        model(torch.tensor([[1, 2, 3]]), ptr)
    with pytest.raises(ValueError, match="`input_ids` holds token id 10, out of range"):
        model(torch.tensor([1, 10, 3]), ptr)
    with pytest.raises(ValueError, match="`ptr` must end at the number of rows"):
        model(torch.tensor([1, 2, 3, 4]), ptr)
    with pytest.raises(ValueError, match="`ptr` must be non-decreasing"):
        model(torch.tensor([1, 2, 3]), torch.tensor([0, 2, 1, 3]))
    with pytest.raises(ValueError, match="`x` must be"):
        CodeWiseAttention(4, 2)(torch.randn(3, 5), ptr)
    with pytest.raises(ValueError, match="`num_codes` must be a positive int"):
        CodeWiseAttention(4, 0)


@pytest.mark.slow
def test_transicd_learns_a_presence_task():
    torch.manual_seed(0)
    model = TransICD(5, vocab_size=40, embedding_dim=32, num_heads=4, dropout=0.0)
    assert train_and_score(model, steps=150, vocab=40, codes=5) > 0.95
