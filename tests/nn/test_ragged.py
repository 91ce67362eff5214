"""`to_segments` and the agreement of every ragged layer on the awkward inputs (issue 9,
defect 6): zero rows, zero bags, unsorted `batch`, padded input, non-integer `batch`/`ptr`,
wrong feature sizes."""

from __future__ import annotations

import pytest
import torch

from gattn.nn import (
    ABMIL,
    ACMIL,
    AttentionMILPooling,
    Hopfield,
    HopfieldMIL,
    HopfieldPooling,
    to_segments,
)

D = 6


def _layers():
    """name -> (module, function(module, x, **segments) -> (bag output, per-row weights or None))."""

    def pool_output(result):
        return result if isinstance(result, tuple) else (result, None)

    return {
        "HopfieldPooling": (HopfieldPooling(D, quantity=2, num_heads=2, hidden_size=4),
                            lambda m, x, **kw: m(x, return_association=True, **kw)),
        "Hopfield": (Hopfield(D, num_heads=2, hidden_size=4),
                     lambda m, x, **kw: pool_output(m(x, **kw))),
        "AttentionMILPooling": (AttentionMILPooling(D, 8, branches=2),
                                lambda m, x, **kw: m(x, **kw)),
        "ABMIL": (ABMIL(D, hidden=(8,), attention_channels=4),
                  lambda m, x, **kw: m(x, return_attention=True, **kw)),
        "HopfieldMIL": (HopfieldMIL(D, hidden=(8,), hopfield_hidden=4),
                        lambda m, x, **kw: m(x, return_attention=True, **kw)),
        "ACMIL": (ACMIL(D, hidden=(8,), attention_channels=4, branches=3),
                  lambda m, x, **kw: (lambda out: (out.bag_logits, out.weights))(m(x, **kw))),
    }


LAYERS = list(_layers())


def _call(name, **kw):
    torch.manual_seed(0)
    module, fn = _layers()[name]
    module.eval()
    return module, fn(module, **kw)


def _bags(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), D, generator=gen)
    ptr = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, ptr, batch




@pytest.mark.parametrize("name", LAYERS)
def test_zero_rows_and_zero_bags_give_shaped_results(name):
    # two bags, both empty: bag outputs exist and are finite (zero features for the pooling)
    out, weights = _call(name, x=torch.empty(0, D), ptr=torch.tensor([0, 0, 0]))[1]
    if name == "Hopfield":  # self-association: one output per row, so none here
        assert out.shape[0] == 0
    else:
        assert out.shape[0] == 2 and torch.isfinite(out).all()
    if weights is not None:
        assert weights.shape[0] == 0
    # no bags at all
    out, weights = _call(name, x=torch.empty(0, D), ptr=torch.tensor([0]))[1]
    assert out.shape[0] == 0
    if weights is not None:
        assert weights.shape[0] == 0
    out, _ = _call(name, x=torch.empty(0, D), batch=torch.empty(0, dtype=torch.long))[1]
    assert out.shape[0] == 0


@pytest.mark.parametrize("name", ["HopfieldPooling", "AttentionMILPooling"])
def test_empty_bag_pools_to_zeros(name):
    x, ptr, _ = _bags([3, 0, 2])
    out, _ = _call(name, x=x, ptr=ptr)[1]
    assert torch.all(out[1] == 0) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", LAYERS)
def test_unsorted_batch_equals_sorted_ptr(name):
    x, ptr, batch = _bags([3, 1, 4, 2])
    perm = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(3))
    want_out, want_weights = _call(name, x=x, ptr=ptr)[1]
    got_out, got_weights = _call(name, x=x[perm], batch=batch[perm])[1]
    if name == "Hopfield":  # per-row outputs come back in the caller's row order
        torch.testing.assert_close(got_out, want_out[perm])
    else:
        torch.testing.assert_close(got_out, want_out)
    if want_weights is not None:
        if name == "Hopfield":
            return
        torch.testing.assert_close(got_weights, want_weights[perm])


@pytest.mark.parametrize("name", LAYERS)
def test_padded_input_equals_ragged(name):
    x, ptr, _ = _bags([3, 1, 4])
    padded = torch.zeros(3, 4, D)
    mask = torch.ones(3, 4, dtype=torch.bool)
    for b in range(3):
        n = int(ptr[b + 1] - ptr[b])
        padded[b, :n] = x[ptr[b]:ptr[b + 1]]
        mask[b, :n] = False
    want_out, want_weights = _call(name, x=x, ptr=ptr)[1]
    got_out, got_weights = _call(name, x=padded, mask=mask)[1]
    if name == "Hopfield":
        torch.testing.assert_close(got_out[~mask], want_out)
        return
    torch.testing.assert_close(got_out, want_out)
    if want_weights is not None and name not in ("HopfieldPooling",):
        torch.testing.assert_close(got_weights[~mask], want_weights)


@pytest.mark.parametrize("name", LAYERS)
def test_bad_segments_get_the_same_messages_everywhere(name):
    x, ptr, batch = _bags([2, 3])
    with pytest.raises(TypeError, match="`batch` must be an integer tensor"):
        _call(name, x=x, batch=batch.float())
    with pytest.raises(TypeError, match="`ptr` must be an integer tensor"):
        _call(name, x=x, ptr=ptr.float())
    with pytest.raises(ValueError, match="exactly one of `ptr`"):
        _call(name, x=x)
    with pytest.raises(ValueError, match="`ptr` must end at the number of rows"):
        _call(name, x=x, ptr=torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="`batch` has a negative segment id"):
        _call(name, x=x, batch=batch - 1)
    with pytest.raises(ValueError, match=r"`x`|`stored`"):
        _call(name, x=torch.randn(5, D + 1), ptr=ptr)  # a gattn message, not a matmul error
    with pytest.raises(TypeError, match="mask"):
        _call(name, x=torch.randn(2, 3, D), mask=torch.zeros(2, 3))


def test_to_segments_groups_and_restores():
    x = torch.arange(12.0).view(6, 2)
    batch = torch.tensor([2, 0, 1, 0, 2, 2])
    seg = to_segments(x, batch=batch, num_segments=4)
    assert seg.num_segments == 4 and seg.ptr.tolist() == [0, 2, 3, 6, 6]
    torch.testing.assert_close(seg.x, x[[1, 3, 2, 0, 4, 5]])  # stable: caller order within a bag
    torch.testing.assert_close(seg.ungroup(seg.x), x)
    torch.testing.assert_close(seg.group(x), seg.x)
    assert seg.segment_of_rows().tolist() == [0, 0, 1, 2, 2, 2]
    sorted_seg = to_segments(x, batch=torch.tensor([0, 0, 1, 1, 1, 3]))
    assert sorted_seg.order is None and sorted_seg.ptr.tolist() == [0, 2, 5, 5, 6]
    padded = to_segments(torch.ones(2, 3, 2), mask=torch.tensor([[False, True, False], [True, True, True]]))
    assert padded.ptr.tolist() == [0, 2, 2] and padded.x.shape == (2, 2)
    assert padded.ungroup(torch.ones(2, 1)).shape == (2, 3, 1)
    with pytest.raises(ValueError, match="num_segments"):
        to_segments(x, ptr=torch.tensor([0, 6]), num_segments=2)
    with pytest.raises(ValueError, match="out of range for num_segments=2"):
        to_segments(x, batch=batch, num_segments=2)
    with pytest.raises(ValueError, match="padded"):
        to_segments(torch.ones(2, 3, 2), ptr=torch.tensor([0, 3, 6]))
    with pytest.raises(ValueError, match="`mask` is for padded"):
        to_segments(x, batch=batch, mask=torch.zeros(6, dtype=torch.bool))
