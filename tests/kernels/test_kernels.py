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




EDGE_TERMS = ["none", "bias", "scale_head", "scale_dim", "both", "key_value", "bias_key_value"]
# (score, edge term) pairs: the additive (GAT) score takes no edge_scale
CASES = [("dot", term) for term in EDGE_TERMS] + [
    ("additive", term) for term in ("none", "bias", "key_value", "bias_key_value")
]


def _tensors(kw):
    return [t for t in kw.values() if isinstance(t, torch.Tensor)]


def _edge_loss(out, attention):
    """A loss on the output and on the attention weights (users regularise attention)."""
    w_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    w_att = torch.linspace(0, 2, attention.numel(), dtype=attention.dtype).view_as(attention)
    return (out * w_out).sum() + (attention * w_att).sum()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("score, edge_term", CASES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(40, 40, 2, 8, 8, 300), (30, 50, 3, 4, 6, 200)], ids=["square", "bipartite"])
def test_edge_attention_matches_reference(backend, score, edge_term, dropout_p, shape):
    num_src, num_dst, heads, dim, dim_v, num_edges = shape
    edge_index, q, k, v, kw = _edge_inputs(
        num_src, num_dst, heads, dim, dim_v, num_edges, edge_term, hub=60, score=score
    )
    leaves = [q, k, v, *_tensors(kw)]
    kw.update(dropout_p=dropout_p, dropout_seed=2024, return_attention=True)
    out, att = K.edge_attention(q, k, v, edge_index, backend=backend, **kw)
    ref_out, ref_att = K.edge_attention(q, k, v, edge_index, backend="reference", **kw)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(att, ref_att)
    isolated = torch.ones(num_dst, dtype=torch.bool)
    isolated[edge_index[1]] = False
    assert isolated.any() and (out[isolated] == 0).all()
    got = torch.autograd.grad(_edge_loss(out, att), leaves)
    want = torch.autograd.grad(_edge_loss(ref_out, ref_att), leaves)
    for name, g, w in zip(["q", "k", "v", *kw], got, want):
        torch.testing.assert_close(g, w, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("score, edge_term", [("dot", "none"), ("dot", "both"), ("dot", "scale_dim"),
                                              ("dot", "bias_key_value"), ("additive", "bias_key_value")])
@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
def test_edge_attention_gradcheck(backend, score, edge_term, dropout_p):
    edge_index, q, k, v, kw = _edge_inputs(7, 6, 2, 3, 2, 20, edge_term, hub=4, score=score)
    names = [name for name, t in kw.items() if isinstance(t, torch.Tensor)]
    extra = {name: t for name, t in kw.items() if not isinstance(t, torch.Tensor)}

    def fn(q, k, v, *edge):
        out, att = K.edge_attention(q, k, v, edge_index, backend=backend, dropout_p=dropout_p, dropout_seed=3,
                                    return_attention=True, **extra, **dict(zip(names, edge)))
        return out, att

    assert torch.autograd.gradcheck(fn, (q, k, v, *_tensors(kw)))


def test_dropout_mask_is_the_documented_hash():
    """The fused kernels drop exactly the entries of `dropout_keep_mask`, at rate p."""
    edge_index, q, k, v, _ = _edge_inputs(30, 30, 3, 4, 4, 200, "none")
    num_edges = edge_index.size(1)
    mask = K.dropout_keep_mask(77, num_edges, 3, 0.25)
    expected = None
    for backend in ("reference", *FAST):
        out = K.edge_attention(q, k, v, edge_index, dropout_p=0.25, dropout_seed=77, backend=backend)
        if expected is None:
            # the same layer computed by hand: softmax, mask / (1 - p), weighted sum
            _, att = K.edge_attention(q, k, v, edge_index, return_attention=True, backend="reference")
            weights = att * mask / 0.75
            src, dst = edge_index
            expected = torch.zeros_like(out).index_add(0, dst, weights.unsqueeze(-1) * v[src])
        torch.testing.assert_close(out, expected)
    big = K.dropout_keep_mask(5, 200_000, 4, 0.3)
    assert abs(big.float().mean().item() - 0.7) < 0.005  # Bernoulli(0.7): sd ~ 0.0007
    # heads and edges decorrelated: P(keep both of two heads) ~ 0.49
    assert abs((big[:, 0] & big[:, 1]).float().mean().item() - 0.49) < 0.005
    assert not torch.equal(big, K.dropout_keep_mask(6, 200_000, 4, 0.3))
    assert K.dropout_keep_mask(5, 10, 2, 0.0).all()


def test_dropout_seed_comes_from_torch_rng():
    edge_index, q, k, v, _ = _edge_inputs(20, 20, 2, 4, 4, 100, "none")
    torch.manual_seed(0)
    first = K.edge_attention(q, k, v, edge_index, dropout_p=0.5)
    second = K.edge_attention(q, k, v, edge_index, dropout_p=0.5)
    torch.manual_seed(0)
    again = K.edge_attention(q, k, v, edge_index, dropout_p=0.5)
    assert not torch.equal(first, second)
    torch.testing.assert_close(first, again)
    gen = torch.Generator().manual_seed(3)
    with_gen = K.edge_attention(q, k, v, edge_index, dropout_p=0.5, generator=gen)
    gen.manual_seed(3)
    torch.testing.assert_close(with_gen, K.edge_attention(q, k, v, edge_index, dropout_p=0.5, generator=gen))


@pytest.mark.parametrize("backend", FAST)
def test_double_backward_raises_a_clear_error(backend):
    """Defect 7 of issue 9: a second derivative through a fused kernel raises a
    NotImplementedError naming the op (the reference backend supports it)."""
    edge_index, q, k, v, _ = _edge_inputs(8, 8, 2, 3, 3, 30, "none")
    out = K.edge_attention(q, k, v, edge_index, backend=backend)
    (dq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"double backward.*edge_attention"):
        dq.sum().backward()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    pooled, _ = K.segment_attention_pool(x, scores=x[:, :1], ptr=torch.tensor([0, 2, 6]), backend=backend)
    (dx,) = torch.autograd.grad(pooled.square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"double backward.*gattn\.kernels\.segment_"):
        dx.sum().backward()
    # the plain-torch reference gives true second derivatives
    ref = K.edge_attention(q, k, v, edge_index, backend="reference")
    (dq_ref,) = torch.autograd.grad(ref.square().sum(), q, create_graph=True)
    (ddq,) = torch.autograd.grad(dq_ref.sum(), k)
    assert torch.isfinite(ddq).all() and ddq.abs().sum() > 0


def test_first_derivative_with_create_graph_still_works():
    """create_graph=True alone (gradient penalties) does not raise: only a second derivative does."""
    edge_index, q, k, v, _ = _edge_inputs(8, 8, 2, 3, 3, 30, "none")
    out = K.edge_attention(q, k, v, edge_index, backend="cpu")
    (dq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    ref = K.edge_attention(q, k, v, edge_index, backend="reference")
    (dq_ref,) = torch.autograd.grad(ref.square().sum(), q)
    torch.testing.assert_close(dq, dq_ref)


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

def test_checksum_walks_chunks_and_catches_every_edit(monkeypatch):
    """The cache's checksum works chunk by chunk (a fixed table of weights, a factor per chunk):
    an edit in any chunk, a swap of two equal positions of two chunks included, changes it,
    and the weight table stays one chunk long whatever the tensor's size."""
    from gattn.kernels import _cache

    monkeypatch.setattr(_cache, "CHECKSUM_CHUNK", 64)
    monkeypatch.setattr(_cache, "_weights", {})
    gen = torch.Generator().manual_seed(3)
    edge_index = torch.randint(0, 1000, (2, 500), generator=gen)  # 1,000 ids: 16 chunks of 64
    flat = edge_index.reshape(-1)
    base = _cache.checksum(edge_index)
    assert base == _cache.checksum(edge_index.clone())
    # the same sum done at once in float64, with each position's weight
    weights = _cache._weights[torch.device("cpu")]
    index = torch.arange(flat.numel())
    factors = 1.0 + ((index // 64).double() * _cache._GOLDEN) % 1.0
    expected = float((flat.double() * weights[index % 64] * factors).sum())
    assert base == pytest.approx(expected, rel=1e-12)
    assert weights.numel() == 64
    for i, j in ((5, 5 + 64), (70, 700), (0, 999)):  # same slot of two chunks, anywhere, first and last
        swapped = flat.clone()
        swapped[i], swapped[j] = flat[j], flat[i]
        if flat[i] != flat[j]:
            assert _cache.checksum(swapped.view(2, -1)) != base, (i, j)
    for i in (0, 63, 64, 640, 999):
        bumped = flat.clone()
        bumped[i] += 1
        assert _cache.checksum(bumped.view(2, -1)) != base, i


@pytest.mark.parametrize("presorted", [True, False])
def test_a_cached_csr_goes_with_its_edge_index(presorted):
    """The CSR of an edge list lives as long as that tensor and no longer: a sorted edge list's
    CSR shares its rows without holding the tensor (a view would keep the tensor object, and so
    the entry, alive: layer-wise inference over 42 batches kept 64 CSRs, about 300 MB)."""
    import gc

    from gattn.kernels import _cache

    edge_index = awkward_graph(30, 30, 200, seed=5)
    if presorted:
        edge_index = edge_index[:, torch.argsort(edge_index[1], stable=True)].contiguous()
    before = len(_cache._entries)
    csr = K.get_csr(edge_index, 30, 30)
    assert csr.is_sorted == presorted and len(_cache._entries) == before + 1
    if presorted:  # shared, not copied
        assert csr.col.data_ptr() == edge_index[0].data_ptr()
    del edge_index
    gc.collect()
    assert len(_cache._entries) == before
    colptr, row, csc_edge = csr.csc()  # the CSR itself still works
    assert int(colptr[-1]) == csr.num_edges == row.numel() == csc_edge.numel()


def test_csr_is_cached_and_invalidated_by_in_place_change():
    edge_index = awkward_graph(20, 20, 60)
    first = K.get_csr(edge_index, 20, 20)
    assert K.get_csr(edge_index, 20, 20) is first
    torch.testing.assert_close(edge_index[1][first.perm], K.index_from_ptr(first.rowptr))
    torch.testing.assert_close(edge_index[0][first.perm], first.col)
    colptr, row, csc_edge = first.csc()
    torch.testing.assert_close(edge_index[0][csc_edge], K.index_from_ptr(colptr))
    torch.testing.assert_close(edge_index[1][csc_edge], row)
    edge_index[0, 0] = (edge_index[0, 0] + 1) % 20
    assert K.get_csr(edge_index, 20, 20) is not first


def test_csr_cache_changes_nothing_the_user_saves(tmp_path):
    """Defect 2 of issue 9: after a forward pass, torch.save of the edge index (or of a
    PyG Data holding it) writes the same bytes as before, and loads with weights_only."""
    import io

    from torch_geometric.data import Data

    edge_index, q, k, v, _ = _edge_inputs(15, 15, 2, 4, 4, 50, "none")
    data = Data(edge_index=edge_index, num_nodes=15)

    def saved(obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    before_tensor, before_data = saved(edge_index), saved(data)
    for backend in FAST:
        K.edge_attention(q, k, v, data.edge_index, backend=backend).sum().backward()
    assert saved(edge_index) == before_tensor
    assert saved(data) == before_data
    torch.save(edge_index, tmp_path / "ei.pt")
    assert torch.equal(torch.load(tmp_path / "ei.pt", weights_only=True), edge_index)
    assert not any(name.startswith("_gattn") for name in dir(edge_index))


def test_csr_cache_works_for_inference_mode_tensors():
    """Defect 1 of issue 9: inference tensors have no version counter."""
    with torch.inference_mode():
        edge_index = awkward_graph(12, 12, 40)
        q = torch.randn(12, 2, 4)
        for backend in FAST:
            out = K.edge_attention(q, q, q, edge_index, backend=backend)
            torch.testing.assert_close(out, K.edge_attention(q, q, q, edge_index, backend="reference"))
        assert K.get_csr(edge_index, 12, 12) is K.get_csr(edge_index, 12, 12)


@pytest.mark.parametrize("edit", ["numpy", "data", "inference"])
def test_csr_cache_sees_edits_that_bypass_the_version_counter(edit):
    """Defect 3 of issue 9: no stale structure after an in-place edit of any kind."""
    q = torch.randn(12, 2, 4, dtype=torch.float64)
    with torch.inference_mode(edit == "inference"):
        edge_index = awkward_graph(12, 12, 40)
    first = K.get_csr(edge_index, 12, 12)
    K.edge_attention(q, q, q, edge_index, backend="cpu")
    version = edge_index._version if edit != "inference" else None
    if edit == "numpy":
        edge_index.numpy()[1] = (edge_index.numpy()[1] + 5) % 12
    elif edit == "data":
        edge_index.data[1] = (edge_index.data[1] + 5) % 12
    else:
        with torch.inference_mode():
            edge_index[1] = (edge_index[1] + 5) % 12
    if version is not None:
        assert edge_index._version == version  # the edit really bypassed the version counter
    assert K.get_csr(edge_index, 12, 12) is not first
    fresh = edge_index.clone()
    for backend in FAST:
        torch.testing.assert_close(
            K.edge_attention(q, q, q, edge_index, backend=backend),
            K.edge_attention(q, q, q, fresh, backend="reference"),
        )


def test_csr_cache_entries_die_with_their_tensor():
    import gc

    from gattn.kernels import _cache

    _cache.clear()
    edge_index = awkward_graph(12, 12, 40)
    K.get_csr(edge_index, 12, 12)
    K.get_csr(edge_index, 12, 12)  # same key: still one entry
    assert len(_cache._entries) == 1
    K.get_csr(edge_index[:, :30], 12, 12)  # a view with another shape: a second entry, then gone
    gc.collect()
    assert len(_cache._entries) == 1
    del edge_index
    gc.collect()
    assert len(_cache._entries) == 0


def test_prebuilt_csr_and_edge_index_agree():
    edge_index, q, k, v, kw = _edge_inputs(15, 15, 2, 4, 4, 50, "bias")
    csr = K.CSR(edge_index, 15, 15)
    for backend in ("reference", *FAST):
        a = K.edge_attention(q, k, v, csr, backend=backend, **kw)
        b = K.edge_attention(q, k, v, edge_index, backend=backend, **kw)
        torch.testing.assert_close(a, b)


def test_a_backend_that_cannot_fuse_an_option_falls_back_to_the_reference(monkeypatch):
    """The kernel API's one fallback: a backend declaring less in EDGE_FEATURES runs the
    call on the reference (announced once), with the same result."""
    from gattn.kernels import cpu

    edge_index, q, k, v, _ = _edge_inputs(10, 10, 2, 3, 3, 40, "none")
    want = K.edge_attention(q, k, v, edge_index, dropout_p=0.3, dropout_seed=1, backend="cpu")
    monkeypatch.setattr(cpu, "EDGE_FEATURES", frozenset({"edge_bias"}))
    monkeypatch.setattr(K, "_fallback_told", set())
    with pytest.warns(UserWarning, match=r"backend 'cpu' cannot fuse \['dropout'\]"):
        got = K.edge_attention(q, k, v, edge_index, dropout_p=0.3, dropout_seed=1, backend="cpu")
    torch.testing.assert_close(got, want)
    K.edge_attention(q, k, v, edge_index, backend="cpu")  # nothing missing: no warning, fused


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
        (dict(score="cosine"), ValueError, "score"),
        (dict(score="additive", scale=0.5), ValueError, "`scale` applies to score='dot'"),
        (dict(score="additive", edge_scale=torch.randn(2, 2)), ValueError, "`edge_scale` applies"),
        (dict(score="additive", att=torch.randn(3, 3)), ValueError, r"`att` must have shape \[H=2, D=3\]"),
        (dict(att=torch.randn(2, 3)), ValueError, "`att` applies to score='additive'"),
        (dict(edge_key=torch.randn(2, 2)), ValueError, "edge_key"),
        (dict(edge_value=torch.randn(2, 2, 3)), ValueError, "`edge_value` must have last dimension D=6"),
        (dict(dropout_p=1.0), ValueError, "dropout_p"),
        (dict(edge_index=torch.sparse_coo_tensor(torch.tensor([[0], [1]]), torch.ones(1), (5, 4))),
         TypeError, "sparse"),
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


@pytest.mark.parametrize("segments", [3, 200])  # the short (list) and the long (tensor) check
def test_segment_softmax_rejects_a_malformed_ptr(segments):
    sizes = torch.full((segments,), 2, dtype=torch.long)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    scores = torch.randn(int(ptr[-1]), 2)
    K.segment_softmax(scores, ptr=ptr, backend="reference")  # well formed: no error
    for bad, message in ((ptr + 1, "must start at 0"), (ptr[:-1], "must end at the number of rows")):
        with pytest.raises(ValueError, match=message):
            K.segment_softmax(scores, ptr=bad, backend="reference")
    swapped = ptr.clone()
    swapped[1], swapped[2] = ptr[2], ptr[1]
    with pytest.raises(ValueError, match="must be non-decreasing"):
        K.segment_softmax(scores, ptr=swapped, backend="reference")


@pytest.mark.parametrize("form", ["query", "query3", "scores", "raw", "masked"])
def test_one_segment_pool_matches_the_reference(form):
    """One segment under the automatic backend takes the dense path: same values and gradients
    as the reference kernels, gradcheck in float64, zero weights for an all -inf query."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    value = torch.randn(7, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    query = torch.randn(2, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    scores = torch.randn(7, 2, dtype=torch.float64, generator=gen)
    if form == "masked":
        scores[:, 1] = float("-inf")
        scores[2:4, 0] = float("-inf")
    scores.requires_grad_(True)
    ptr = torch.tensor([0, 7])

    def pool(backend, x, value, query, scores):
        kwargs = dict(value=value, ptr=ptr, backend=backend, normalize=form != "raw")
        if form in ("query", "query3"):
            return K.segment_attention_pool(x, query if form == "query" else query.unsqueeze(0), **kwargs)
        return K.segment_attention_pool(x, scores=scores, **kwargs)

    inputs = (x, value, query, scores)
    fast, ref = pool(None, *inputs), pool("reference", *inputs)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b)
    if form == "masked":
        assert torch.equal(fast[1][:, 1], torch.zeros(7, dtype=torch.float64))
        assert torch.equal(fast[0][0, 1], torch.zeros(3, dtype=torch.float64))
    weights = torch.randn(1, 2, 3, dtype=torch.float64, generator=gen)
    grads = [torch.autograd.grad((p[0] * weights).sum() + p[1].sum(), inputs, allow_unused=True)
             for p in (fast, ref)]
    for a, b in zip(*grads):
        assert (a is None) == (b is None)  # the unused one of query / scores
        if a is not None:
            torch.testing.assert_close(a, b)
    if form != "masked":  # -inf scores have no finite-difference gradient
        torch.autograd.gradcheck(lambda *t: pool(None, *t), inputs, check_undefined_grad=False)
