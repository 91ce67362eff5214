"""Fast backends against the plain-torch reference: values, gradients, edge cases, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gattn import kernels as K

from .graphs import awkward_graph, pool_inputs, ragged_ptr
from .graphs import edge_inputs as _edge_inputs
from .graphs import rand_leaf as _rand

# The Triton interpreter runs this whole file in ~8 minutes: on CPU the Triton backend has
# its own, smaller suite (test_triton.py); on a GPU it runs here too.
FAST = ["cpu", *(["triton"] if torch.cuda.is_available() else [])]


def _grads(out, inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    cotangent = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    return torch.autograd.grad(out, inputs, cotangent)




EDGE_TERMS = ["none", "bias", "scale_head", "scale_dim", "both"]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("edge_term", EDGE_TERMS)
@pytest.mark.parametrize("shape", [(40, 40, 2, 8, 8, 300), (30, 50, 3, 4, 6, 200)], ids=["square", "bipartite"])
def test_edge_attention_matches_reference(backend, edge_term, shape):
    num_src, num_dst, heads, dim, dim_v, num_edges = shape
    edge_index, q, k, v, kw = _edge_inputs(num_src, num_dst, heads, dim, dim_v, num_edges, edge_term, hub=60)
    leaves = [q, k, v, *kw.values()]
    out, att = K.edge_attention(q, k, v, edge_index, return_attention=True, backend=backend, **kw)
    ref_out, ref_att = K.edge_attention(q, k, v, edge_index, return_attention=True, backend="reference", **kw)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(att, ref_att)
    isolated = torch.ones(num_dst, dtype=torch.bool)
    isolated[edge_index[1]] = False
    assert isolated.any() and (out[isolated] == 0).all()
    for got, want in zip(_grads(out, leaves), _grads(ref_out, leaves)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("edge_term", ["none", "both", "scale_dim"])
def test_edge_attention_gradcheck(backend, edge_term):
    edge_index, q, k, v, kw = _edge_inputs(7, 6, 2, 3, 2, 20, edge_term, hub=4)
    names = list(kw)

    def fn(q, k, v, *edge):
        return K.edge_attention(q, k, v, edge_index, backend=backend, **dict(zip(names, edge)))

    assert torch.autograd.gradcheck(fn, (q, k, v, *kw.values()))


@pytest.mark.parametrize("backend", FAST)
def test_edge_attention_float32_and_half_precision(backend):
    edge_index, q, k, v, kw = _edge_inputs(60, 60, 4, 16, 16, 500, "bias", dtype=torch.float32)
    out = K.edge_attention(q, k, v, edge_index, backend=backend, **kw)
    ref = K.edge_attention(q, k, v, edge_index, backend="reference", **kw)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for dtype in (torch.bfloat16, torch.float16):
        low = [t.detach().to(dtype) for t in (q, k, v)]
        out_low = K.edge_attention(*low, edge_index, backend=backend, edge_bias=kw["edge_bias"].detach().to(dtype))
        assert out_low.dtype == dtype
        torch.testing.assert_close(out_low.float(), ref.detach(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_edge_attention_stable_at_large_logits(backend):
    edge_index = torch.tensor([[0, 1, 2, 1], [0, 0, 0, 1]])
    q = torch.ones(3, 1, 2, dtype=torch.float64)
    k = torch.ones(3, 1, 2, dtype=torch.float64)
    v = torch.arange(6, dtype=torch.float64).view(3, 1, 2)
    bias = torch.tensor([[1e4], [-1e4], [1e4 - 1], [5.0]], dtype=torch.float64)
    out, att = K.edge_attention(q, k, v, edge_index, edge_bias=bias, return_attention=True, backend=backend)
    assert torch.isfinite(out).all() and torch.isfinite(att).all()
    e1 = torch.exp(torch.tensor(-1.0, dtype=torch.float64))
    torch.testing.assert_close(att[:, 0], torch.tensor([1 / (1 + e1), 0.0, e1 / (1 + e1), 1.0], dtype=torch.float64))
    assert (out[2] == 0).all()


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_edge_attention_fully_masked_row_gives_zeros(backend):
    edge_index, q, k, v, kw = _edge_inputs(10, 10, 2, 4, 4, 40, "bias")
    bias = kw["edge_bias"].detach().clone()
    bias[edge_index[1] == 0] = float("-inf")
    bias.requires_grad_(True)
    out = K.edge_attention(q, k, v, edge_index, edge_bias=bias, backend=backend)
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)


@settings(max_examples=25, deadline=None)
@given(
    num_nodes=st.integers(1, 25),
    num_edges=st.integers(0, 80),
    heads=st.integers(1, 3),
    dim=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_edge_attention_property(num_nodes, num_edges, heads, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    q, k, v = (
        torch.randn(num_nodes, heads, dim, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    out = K.edge_attention(q, k, v, edge_index, backend="cpu")
    ref = K.edge_attention(q, k, v, edge_index, backend="reference")
    torch.testing.assert_close(out, ref)
    if num_edges:
        for got, want in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
            torch.testing.assert_close(got, want)


# ---- segment softmax ------------------------------------------------------------------

@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("heads", [None, 3])
def test_segment_softmax_ptr_and_index(backend, heads):
    sizes = [0, 3, 1, 0, 7, 2, 0]
    ptr = ragged_ptr(sizes)
    rows = int(ptr[-1])
    scores = _rand(rows, *([] if heads is None else [heads]))
    index = K.index_from_ptr(ptr)
    ref = K.segment_softmax(scores, ptr=ptr, backend="reference")
    got = K.segment_softmax(scores, ptr=ptr, backend=backend)
    torch.testing.assert_close(got, ref)
    # the same rows shuffled, described by an unsorted index
    perm = torch.randperm(rows, generator=torch.Generator().manual_seed(3))
    shuffled = K.segment_softmax(scores[perm], index=index[perm], num_segments=len(sizes), backend=backend)
    torch.testing.assert_close(shuffled, ref[perm])
    sums = torch.zeros(len(sizes), *ref.shape[1:], dtype=ref.dtype).index_add(0, index, ref)
    nonempty = torch.tensor(sizes) > 0
    torch.testing.assert_close(sums[nonempty], torch.ones_like(sums[nonempty]))
    for g, w in zip(_grads(got, (scores,)), _grads(ref, (scores,))):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_segment_softmax_gradcheck(backend):
    ptr = ragged_ptr([2, 0, 4, 1])
    scores = _rand(7, 2)
    assert torch.autograd.gradcheck(lambda s: K.segment_softmax(s, ptr=ptr, backend=backend), (scores,))


# ---- segment attention pooling ----------------------------------------------------------

POOL_MODES = ["shared_query", "segment_query", "scores", "scores_raw", "value"]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", POOL_MODES)
def test_segment_attention_pool_matches_reference(backend, mode):
    sizes = [4, 0, 1, 9, 0, 3]
    ptr, x, kw = pool_inputs(mode, sizes)
    out, w = K.segment_attention_pool(x, ptr=ptr, backend=backend, **kw)
    ref_out, ref_w = K.segment_attention_pool(x, ptr=ptr, backend="reference", **kw)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    assert (out[1] == 0).all() and (out[4] == 0).all()
    leaves = [x, *(t for t in kw.values() if isinstance(t, torch.Tensor))]
    for g, want in zip(_grads(out, leaves), _grads(ref_out, leaves)):
        torch.testing.assert_close(g, want)
    # the same bags, rows shuffled, given by an unsorted index
    index = K.index_from_ptr(ptr)
    perm = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(0))
    kw_perm = {key: (val[perm] if key in ("scores", "value") else val) for key, val in kw.items()}
    out_p, w_p = K.segment_attention_pool(
        x[perm], index=index[perm], num_segments=len(sizes), backend=backend, **kw_perm
    )
    torch.testing.assert_close(out_p, ref_out)
    torch.testing.assert_close(w_p, ref_w[perm])


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("mode", POOL_MODES)
def test_segment_attention_pool_gradcheck(backend, mode):
    ptr, x, kw = pool_inputs(mode, [2, 0, 3], dim=3)
    tensors = {key: val for key, val in kw.items() if isinstance(val, torch.Tensor)}
    flags = {key: val for key, val in kw.items() if not isinstance(val, torch.Tensor)}

    def fn(x, *args):
        return K.segment_attention_pool(x, ptr=ptr, backend=backend, **flags, **dict(zip(tensors, args)))[0]

    assert torch.autograd.gradcheck(fn, (x, *tensors.values()))


# ---- CSR helpers and dispatch --------------------------------------------------------------

def test_csr_is_cached_and_invalidated_by_in_place_change():
    edge_index = awkward_graph(20, 20, 60)
    first = K.get_csr(edge_index, 20, 20)
    assert K.get_csr(edge_index, 20, 20) is first
    torch.testing.assert_close(edge_index[1][first.perm], K.index_from_ptr(first.rowptr))
    torch.testing.assert_close(edge_index[0][first.perm], first.col)
    colptr, row, csc_pos = first.csc()
    torch.testing.assert_close(first.col[csc_pos], K.index_from_ptr(colptr))
    edge_index[0, 0] = (edge_index[0, 0] + 1) % 20
    assert K.get_csr(edge_index, 20, 20) is not first


def test_prebuilt_csr_and_edge_index_agree():
    edge_index, q, k, v, kw = _edge_inputs(15, 15, 2, 4, 4, 50, "bias")
    csr = K.CSR(edge_index, 15, 15)
    for backend in ("reference", *FAST):
        a = K.edge_attention(q, k, v, csr, backend=backend, **kw)
        b = K.edge_attention(q, k, v, edge_index, backend=backend, **kw)
        torch.testing.assert_close(a, b)


def test_backend_selection(monkeypatch):
    x = torch.randn(3, 2)
    assert K.resolve_backend(None, x).NAME == "cpu"
    monkeypatch.setenv("GATTN_BACKEND", "reference")
    assert K.resolve_backend(None, x).NAME == "reference"
    with pytest.raises(ValueError, match="backend"):
        K.resolve_backend("fastest", x)
    assert "reference" in K.available_backends() and "cpu" in K.available_backends()


# ---- bad input ---------------------------------------------------------------------------

def _good():
    q = torch.randn(4, 2, 3)
    return dict(q=q, k=torch.randn(5, 2, 3), v=torch.randn(5, 2, 6), edge_index=torch.tensor([[0, 4], [1, 3]]))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(edge_index=torch.tensor([[0, 5], [1, 3]])), ValueError, "source index 5 is out of range"),
        (dict(edge_index=torch.tensor([[0, 1], [1, 4]])), ValueError, "destination index 4 is out of range"),
        (dict(edge_index=torch.tensor([[0, -1], [1, 3]])), ValueError, "negative source"),
        (dict(edge_index=torch.tensor([0, 1, 2])), ValueError, r"shape \[2, E\]"),
        (dict(edge_index=torch.tensor([[0.0, 1.0], [1.0, 2.0]])), TypeError, "integer"),
        (dict(q=torch.randn(4, 3, 3)), ValueError, "number of heads"),
        (dict(q=torch.randn(4, 2, 5)), ValueError, "head dim"),
        (dict(v=torch.randn(6, 2, 6)), ValueError, "same number of rows"),
        (dict(k=torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, "share a dtype"),
        (dict(q=torch.ones(4, 2, 3, dtype=torch.long)), TypeError, "`q` must be a floating-point"),
        (dict(q=torch.randn(4, 6)), ValueError, "`q` must be 3-D"),
        (dict(edge_bias=torch.randn(3, 2)), ValueError, "edge_bias"),
        (dict(edge_scale=torch.randn(2, 2, 4)), ValueError, "edge_scale"),
        (dict(num_nodes=7), ValueError, "num_nodes"),
    ],
)
def test_edge_attention_bad_input(change, error, match):
    args = {**_good(), **change}
    with pytest.raises(error, match=match):
        K.edge_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("edge_index"), **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ptr=torch.tensor([0, 3, 2, 4])), ValueError, "non-decreasing"),
        (dict(ptr=torch.tensor([0, 2, 3])), ValueError, "end at the number of rows"),
        (dict(ptr=torch.tensor([1, 2, 4])), ValueError, "start at 0"),
        (dict(index=torch.tensor([0, 1, -1, 0])), ValueError, "negative segment"),
        (dict(index=torch.tensor([0, 1, 5, 0]), num_segments=3), ValueError, "out of range"),
        (dict(index=torch.tensor([0, 1])), ValueError, "one entry per row"),
        (dict(), ValueError, "exactly one of"),
        (dict(ptr=torch.tensor([0, 4]), index=torch.zeros(4, dtype=torch.long)), ValueError, "exactly one of"),
    ],
)
def test_segment_softmax_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        K.segment_softmax(torch.randn(4, 2), **kwargs)


def test_segment_softmax_rejects_integer_scores():
    with pytest.raises(TypeError, match="`scores` must be a floating-point"):
        K.segment_softmax(torch.ones(4, dtype=torch.long), ptr=torch.tensor([0, 4]))


def test_segment_attention_pool_bad_input():
    x, ptr = torch.randn(5, 4), torch.tensor([0, 2, 5])
    with pytest.raises(ValueError, match="exactly one of `query`"):
        K.segment_attention_pool(x, ptr=ptr)
    with pytest.raises(ValueError, match="`query` must have last dim D=4"):
        K.segment_attention_pool(x, torch.randn(1, 3), ptr=ptr)
    with pytest.raises(ValueError, match="one entry per segment"):
        K.segment_attention_pool(x, torch.randn(3, 1, 4), ptr=ptr)
    with pytest.raises(ValueError, match=r"`scores` must be \[R=5, Q\]"):
        K.segment_attention_pool(x, scores=torch.randn(4, 1), ptr=ptr)
    with pytest.raises(ValueError, match="`value` must have one row"):
        K.segment_attention_pool(x, torch.randn(1, 4), ptr=ptr, value=torch.randn(4, 2))


def test_csr_cached_on_pyg_edge_index_and_data():
    from torch_geometric.data import Data
    from torch_geometric.edge_index import EdgeIndex

    raw = awkward_graph(12, 12, 40)
    for edge_index in (EdgeIndex(raw, sparse_size=(12, 12)), Data(edge_index=raw.clone()).edge_index):
        csr = K.get_csr(edge_index, 12, 12)
        assert K.get_csr(edge_index, 12, 12) is csr
        q = torch.randn(12, 2, 4)
        torch.testing.assert_close(
            K.edge_attention(q, q, q, edge_index, backend="cpu"),
            K.edge_attention(q, q, q, raw, backend="reference"),
        )
