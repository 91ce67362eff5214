"""DIN's layers against a padded dense computation of the paper's formulas."""

from __future__ import annotations

import pytest
import torch

from gattn.nn.din import Dice, DINAttention, LocalActivationUnit, minibatch_aware_l2

SIZES = [4, 0, 1, 7, 3]


def ragged(sizes, dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(sum(sizes), dim, generator=gen, dtype=dtype)
    query = torch.randn(len(sizes), dim, generator=gen, dtype=dtype)
    ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return query, keys, ptr


def padded(rows: torch.Tensor, sizes, fill: float = 0.0):
    """[B, L, ...] with `fill` in the padding, and the valid mask (True = real)."""
    longest = max(sizes)
    out = torch.full((len(sizes), longest, *rows.shape[1:]), fill, dtype=rows.dtype)
    valid = torch.arange(longest) < torch.tensor(sizes).unsqueeze(1)
    out[valid] = rows
    return out, valid


def reference_activation(act, h):
    if isinstance(act, Dice):
        if act.training:
            mean, var = h.mean(0), h.var(0, unbiased=False)
        else:
            mean, var = act.running_mean, act.running_var
        p = torch.sigmoid((h - mean) / torch.sqrt(var + act.eps))
        return h * (act.alpha + (1 - act.alpha) * p)
    return act(h)


def reference_din(layer: DINAttention, query, keys_pad, valid, value_pad=None):
    """The paper's unit on [q, k, q - k, q * k] of the real positions, then a masked sum."""
    unit = layer.unit
    batch, length, dim = keys_pad.shape
    q = query.unsqueeze(1).expand(batch, length, dim)
    inputs = torch.cat([q, keys_pad, q - keys_pad, q * keys_pad], dim=-1)[valid]
    h = inputs @ unit.lin_in.weight.t() + unit.lin_in.bias
    for act, lin in zip(unit.activations, unit.lins):
        h = reference_activation(act, h) @ lin.weight.t() + lin.bias
    scores = torch.zeros(batch, length, dtype=h.dtype).masked_scatter(valid, h.squeeze(1))
    if layer.softmax:
        scores = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1).nan_to_num(0.0)
    value_pad = keys_pad if value_pad is None else value_pad
    return (scores.unsqueeze(-1) * value_pad).sum(1), scores


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("activation", ["dice", "prelu", "sigmoid"])
@pytest.mark.parametrize("training", [True, False])
def test_din_attention_matches_dense(softmax, activation, training):
    torch.manual_seed(0)
    query, keys, ptr = ragged(SIZES, 6)
    layer = DINAttention(6, hidden_channels=(8, 5), activation=activation, softmax=softmax)
    if activation == "dice":  # non-trivial running statistics for the evaluation case
        for act in layer.unit.activations:
            act.running_mean.normal_()
            act.running_var.uniform_(0.5, 2.0)
            act.alpha.data.uniform_(-0.5, 0.5)
    layer.train(training)
    value = torch.randn(keys.size(0), 3)
    keys_pad, valid = padded(keys, SIZES)
    value_pad, _ = padded(value, SIZES)
    want, want_weights = reference_din(layer, query, keys_pad, valid, value_pad)
    out, weights = layer(query, keys, ptr, value=value, return_attention_weights=True)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights, want_weights[valid], atol=1e-5, rtol=1e-4)
    assert torch.all(out[1] == 0)  # the empty history


def test_padded_input_never_attends_padding():
    torch.manual_seed(1)
    query, keys, ptr = ragged(SIZES, 4)
    layer = DINAttention(4, hidden_channels=(6,))
    ragged_out, ragged_weights = layer(query, keys, ptr, return_attention_weights=True)
    stats = layer.unit.activations[0].running_mean.clone()
    for fill in (0.0, 1e3):  # garbage in the padding changes nothing, not even Dice's statistics
        layer.unit.activations[0].running_mean.copy_(stats)
        keys_pad, valid = padded(keys, SIZES, fill)
        out_mask, weights_mask = layer(query, keys_pad, padding_mask=~valid, return_attention_weights=True)
        out_len = layer(query, keys_pad, lengths=torch.tensor(SIZES))
        torch.testing.assert_close(out_mask, ragged_out)
        torch.testing.assert_close(out_len, ragged_out)
        assert weights_mask.shape == valid.shape and torch.all(weights_mask[~valid] == 0)
        torch.testing.assert_close(weights_mask[valid], ragged_weights)
    # lengths on ragged rows are the same as ptr
    torch.testing.assert_close(layer(query, keys, lengths=torch.tensor(SIZES)), ragged_out)


def test_eval_mode_output_of_a_user_does_not_depend_on_its_batch():
    """Dice uses running statistics in evaluation (the published code's BatchNorm bug did not)."""
    torch.manual_seed(2)
    query, keys, ptr = ragged(SIZES, 4)
    layer = DINAttention(4, hidden_channels=(6, 3))
    for _ in range(3):  # move the running statistics away from their initial values
        layer(query, keys, ptr)
    layer.eval()
    full = layer(query, keys, ptr)
    for b, size in enumerate(SIZES):
        alone = layer(query[b:b + 1], keys[int(ptr[b]):int(ptr[b + 1])], torch.tensor([0, size]))
        torch.testing.assert_close(alone[0], full[b])
    layer.train()
    training = layer(query[:1], keys[:4], torch.tensor([0, 4]))
    assert not torch.allclose(training[0], layer(query, keys, ptr)[0])  # batch statistics differ


def test_dice_running_statistics_follow_batchnorm():
    torch.manual_seed(3)
    x = torch.randn(50, 7) * 3 + 1
    act, bn = Dice(7, eps=1e-5, momentum=0.2), torch.nn.BatchNorm1d(7, eps=1e-5, momentum=0.2, affine=False)
    act.alpha.data.uniform_(-1, 1)
    for _ in range(2):
        out = act(x)
        normalised = bn(x)
    torch.testing.assert_close(act.running_mean, bn.running_mean)
    torch.testing.assert_close(act.running_var, bn.running_var)
    gate = torch.sigmoid(normalised)
    torch.testing.assert_close(out, x * (act.alpha + (1 - act.alpha) * gate), atol=1e-5, rtol=1e-5)
    act.eval()
    bn.eval()
    gate = torch.sigmoid(bn(x))
    torch.testing.assert_close(act(x), x * (act.alpha + (1 - act.alpha) * gate), atol=1e-5, rtol=1e-5)


def test_local_activation_unit_equals_concatenated_mlp():
    torch.manual_seed(4)
    query, keys, ptr = ragged([5, 2], 3)
    unit = LocalActivationUnit(3, hidden_channels=(4,), activation="relu").eval()
    seg = torch.repeat_interleave(torch.arange(2), ptr[1:] - ptr[:-1])
    q = query[seg]
    h = torch.relu(torch.cat([q, keys, q - keys, q * keys], 1) @ unit.lin_in.weight.t() + unit.lin_in.bias)
    want = (h @ unit.lins[0].weight.t() + unit.lins[0].bias).squeeze(1)
    torch.testing.assert_close(unit(query, keys, ptr), want)


@pytest.mark.parametrize("softmax", [False, True])
def test_gradcheck_float64(softmax):
    query, keys, ptr = ragged([2, 0, 1], 2, dtype=torch.float64)  # small: two evaluations per element
    layer = DINAttention(2, hidden_channels=(3, 2), softmax=softmax).double()
    value = torch.randn(keys.size(0), 2, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_() for t in (query, keys, value))
    # training mode: Dice's batch statistics are part of the function (the running ones are not)
    assert torch.autograd.gradcheck(lambda q, k, v: layer(q, k, ptr, value=v), inputs)
    layer.eval()
    assert torch.autograd.gradcheck(lambda q, k, v: layer(q, k, ptr, value=v), inputs)


def test_empty_histories_give_zeros_not_nan():
    layer = DINAttention(4, hidden_channels=(5,), softmax=True)
    query = torch.randn(3, 4, requires_grad=True)
    keys = torch.zeros(0, 4, requires_grad=True)
    out = layer(query, keys, torch.zeros(4, dtype=torch.long))
    assert torch.equal(out, torch.zeros(3, 4))
    out.sum().backward()
    assert torch.isfinite(query.grad).all()
    padded_out = layer(query, torch.randn(3, 2, 4), padding_mask=torch.ones(3, 2, dtype=torch.bool))
    assert torch.equal(padded_out, torch.zeros(3, 4))


def test_bad_input_errors_name_the_argument():
    query, keys, ptr = ragged(SIZES, 4)
    layer = DINAttention(4, hidden_channels=(5,))
    with pytest.raises(ValueError, match="`query`"):
        layer(query[:, :3], keys, ptr)
    with pytest.raises(ValueError, match="`keys`"):
        layer(query, keys[:, :3], ptr)
    with pytest.raises(ValueError, match="`ptr`"):
        layer(query, keys[:-1], ptr)
    with pytest.raises(ValueError, match="exactly one"):
        layer(query, keys, ptr, lengths=torch.tensor(SIZES))
    with pytest.raises(ValueError, match="exactly one"):
        layer(query, keys)
    with pytest.raises(ValueError, match="`lengths`"):
        layer(query, keys, lengths=torch.tensor([1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="query has 4 rows"):
        layer(query[:4], keys, ptr)
    with pytest.raises(TypeError, match="`padding_mask`"):
        layer(query, torch.randn(5, 7, 4), padding_mask=torch.zeros(5, 7))
    with pytest.raises(ValueError, match="`value`"):
        layer(query, keys, ptr, value=torch.randn(3, 2))
    with pytest.raises(TypeError, match="`keys`"):
        layer(query, keys.double(), ptr)
    with pytest.raises(ValueError, match="activation"):
        DINAttention(4, activation="tanh")


def test_minibatch_aware_l2_matches_plain_sum():
    torch.manual_seed(5)
    weight = torch.randn(10, 3, requires_grad=True)
    frequency = torch.tensor([0, 5, 1, 2, 9, 3, 0, 4, 1, 7])
    ids = torch.tensor([[1, 4, 4], [9, 1, 2]])
    want = sum(weight[j].square().sum() / frequency[j] for j in {1, 4, 9, 2})
    penalty = minibatch_aware_l2(weight, ids, frequency)
    torch.testing.assert_close(penalty, want)
    penalty.backward()
    untouched = [0, 3, 5, 6, 7, 8]
    assert torch.all(weight.grad[untouched] == 0)
    torch.testing.assert_close(weight.grad[4], 2 * weight[4].detach() / 9)
    assert minibatch_aware_l2(weight, torch.zeros(0, dtype=torch.long), frequency).item() == 0
    with pytest.raises(ValueError, match="`frequency` of id 0"):
        minibatch_aware_l2(weight, torch.tensor([0, 1]), frequency)
    with pytest.raises(ValueError, match="`ids` has id 10"):
        minibatch_aware_l2(weight, torch.tensor([10]), frequency)
    with pytest.raises(ValueError, match="`frequency` must be"):
        minibatch_aware_l2(weight, ids, frequency[:5])
    with pytest.raises(TypeError, match="`ids`"):
        minibatch_aware_l2(weight, ids.float(), frequency)
