"""The triton backend against the plain-torch reference: values, gradients, edge cases.

Without CUDA the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET=1), so
the CPU cases stay small; `ROW_SPLIT` is lowered so that the hub rows and long segments
go through the split-and-merge path. Tests marked `gpu` add larger graphs, the default
split threshold and fp16/bf16.
"""

from __future__ import annotations

import pytest
import torch

from gattn import kernels as K

from .graphs import edge_inputs, pool_inputs, ragged_ptr, rand_leaf

TB = pytest.importorskip("gattn.kernels.triton_backend")
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
if not CUDA and TB.unsupported(torch.empty(0)) is not None:
    # the backend was imported before tests/kernels/conftest.py could set TRITON_INTERPRET
    pytest.skip(TB.unsupported(torch.empty(0)), allow_module_level=True)

gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def small_split(monkeypatch):
    """Split segments longer than 16 rows, so small graphs exercise the merge kernels."""
    monkeypatch.setattr(TB, "ROW_SPLIT", 16)
    monkeypatch.setattr(TB, "ATOMIC", None)
    monkeypatch.delenv("GATTN_TRITON_ATOMIC", raising=False)


def _rand(*shape, dtype=torch.float64, seed=0, grad=True):
    return rand_leaf(*shape, dtype=dtype, seed=seed, grad=grad, device=DEVICE)


def _grads(outs, inputs, seed=1):
    """Gradients of <outs, random cotangents> (one tensor or several) w.r.t. `inputs`."""
    gen = torch.Generator().manual_seed(seed)
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    cotangents = [
        torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
        for out in outs
    ]
    return torch.autograd.grad(outs, inputs, cotangents)


def _edge_inputs(*args, **kwargs):
    return edge_inputs(*args, device=DEVICE, **kwargs)


def _check_edge_attention(edge_index, q, k, v, kw, tol=None, **options):
    """Output, attention and the gradients of a loss on both, against the reference."""
    tol = tol or {}
    names = [name for name, t in kw.items() if isinstance(t, torch.Tensor)]
    leaves = [q, k, v, *(kw[name] for name in names)]
    out, att = K.edge_attention(q, k, v, edge_index, return_attention=True, backend="triton", **kw, **options)
    ref, ref_att = K.edge_attention(q, k, v, edge_index, return_attention=True, backend="reference", **kw,
                                    **options)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(att, ref_att, **tol)
    for name, got, want in zip(["q", "k", "v", *names], _grads((out, att), leaves), _grads((ref, ref_att), leaves)):
        torch.testing.assert_close(got, want, **tol, msg=lambda m, n=name: f"grad {n}: {m}")
    return out


EDGE_TERMS = ["none", "bias", "scale_head", "scale_dim", "both", "bias_key_value"]


@pytest.mark.parametrize("edge_term", ["none", "bias_key_value"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.35])
def test_edge_attention_additive_score_and_dropout(edge_term, dropout_p):
    """GAT/GATv2's additive score and the fused dropout mask, split rows included."""
    edge_index, q, k, v, kw = _edge_inputs(30, 30, 2, 4, 3, 120, edge_term, hub=30, score="additive")
    _check_edge_attention(edge_index, q, k, v, kw, dropout_p=dropout_p, dropout_seed=11)


def test_edge_attention_dot_score_with_dropout_and_atomics(monkeypatch):
    monkeypatch.setenv("GATTN_TRITON_ATOMIC", "1")
    edge_index, q, k, v, kw = _edge_inputs(30, 30, 2, 4, 3, 120, "bias_key_value", hub=30)
    _check_edge_attention(edge_index, q, k, v, kw, dropout_p=0.35, dropout_seed=12)
    edge_index, q, k, v, kw = _edge_inputs(30, 30, 2, 4, 3, 120, "bias_key_value", hub=30, score="additive")
    _check_edge_attention(edge_index, q, k, v, kw, dropout_p=0.35, dropout_seed=12)


@pytest.mark.parametrize("edge_term", EDGE_TERMS)
@pytest.mark.parametrize(
    "shape", [(40, 40, 2, 8, 8, 160), (30, 50, 3, 5, 3, 120)], ids=["square", "bipartite"]
)
def test_edge_attention_matches_reference(edge_term, shape):
    num_src, num_dst, heads, dim, dim_v, num_edges = shape
    # the hub (destination 0, ~45 incoming edges) is split into 3 chunks at ROW_SPLIT=16
    edge_index, q, k, v, kw = _edge_inputs(
        num_src, num_dst, heads, dim, dim_v, num_edges, edge_term, hub=30
    )
    out = _check_edge_attention(edge_index, q, k, v, kw)
    isolated = torch.ones(num_dst, dtype=torch.bool, device=DEVICE)
    isolated[edge_index[1]] = False
    assert isolated.any() and (out[isolated] == 0).all()


@pytest.mark.parametrize("edge_term", ["none", "both", "scale_dim"])
def test_edge_attention_atomic_backward_matches_reference(monkeypatch, edge_term):
    monkeypatch.setenv("GATTN_TRITON_ATOMIC", "1")
    edge_index, q, k, v, kw = _edge_inputs(30, 30, 2, 4, 6, 120, edge_term, hub=25)
    _check_edge_attention(edge_index, q, k, v, kw)


@pytest.mark.parametrize("atomic", [False, True], ids=["csc", "atomic"])
@pytest.mark.parametrize("score", ["dot", "additive"])
def test_packed_kv_is_read_in_place_and_its_gradient_is_one_buffer(monkeypatch, atomic, score):
    """K and V as the two halves of one packed projection (strided rows) give the reference's
    results; dK and dV come back as the two halves of one buffer, which split_kv hands on as
    the packed gradient (also through the split-row merges: hub=25 > ROW_SPLIT)."""
    monkeypatch.setattr(TB, "ATOMIC", atomic)
    heads, dim, dim_value, num = 2, 4, 3, 30
    edge_index, q, _, _, kw = _edge_inputs(num, num, heads, dim, dim_value, 120, "bias", hub=25, score=score)
    kv = _rand(num, heads * (dim + dim_value), seed=5)
    k, v = K.split_kv(kv, heads, dim, dim_value)
    assert TB._rows(k).data_ptr() == kv.data_ptr() and TB._rows(v).data_ptr() == v.data_ptr()
    out = K.edge_attention(q, k, v, edge_index, backend="triton", **kw)
    dk, dv = torch.autograd.grad(out, (k, v), torch.ones_like(out), retain_graph=True)
    assert K._edge.kv_halves(dk, dv)
    plain = kv.detach().clone().requires_grad_()
    k2 = plain[:, : heads * dim].reshape(num, heads, dim)
    v2 = plain[:, heads * dim :].reshape(num, heads, dim_value)
    ref = K.edge_attention(q, k2, v2, edge_index, backend="reference", **kw)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    (dkv,) = torch.autograd.grad(out, kv, grad)
    (want,) = torch.autograd.grad(ref, plain, grad)
    torch.testing.assert_close(dkv, want)


def test_edge_attention_csc_backward_is_deterministic():
    edge_index, q, k, v, kw = _edge_inputs(30, 30, 2, 4, 4, 150, "bias", dtype=torch.float32, hub=40)
    runs = []
    for _ in range(2):
        out = K.edge_attention(q, k, v, edge_index, backend="triton", **kw)
        runs.append(_grads(out, (q, k, v, kw["edge_bias"])))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_edge_attention_unsplit_rows_and_odd_dims(monkeypatch):
    """Default split threshold (no merge), D and Dv not powers of two."""
    monkeypatch.setattr(TB, "ROW_SPLIT", 512)
    edge_index, q, k, v, kw = _edge_inputs(25, 25, 1, 7, 3, 100, "both", hub=20)
    _check_edge_attention(edge_index, q, k, v, kw)


@pytest.mark.parametrize("edge_term, score, dropout_p", [
    ("none", "dot", 0.0), ("both", "dot", 0.0), ("scale_dim", "dot", 0.0),
    ("bias_key_value", "additive", 0.3),
])
def test_edge_attention_gradcheck(edge_term, score, dropout_p):
    edge_index, q, k, v, kw = _edge_inputs(7, 6, 2, 3, 2, 20, edge_term, hub=18, score=score)
    names = [name for name, t in kw.items() if isinstance(t, torch.Tensor)]
    extra = {name: t for name, t in kw.items() if not isinstance(t, torch.Tensor)}

    def fn(q, k, v, *edge):
        return K.edge_attention(q, k, v, edge_index, backend="triton", dropout_p=dropout_p, dropout_seed=5,
                                return_attention=True, **extra, **dict(zip(names, edge)))

    assert torch.autograd.gradcheck(fn, (q, k, v, *(kw[n] for n in names)), fast_mode=not CUDA)


def test_edge_attention_float32():
    edge_index, q, k, v, kw = _edge_inputs(50, 50, 2, 16, 16, 200, "bias", dtype=torch.float32, hub=30)
    _check_edge_attention(edge_index, q, k, v, kw, tol=dict(rtol=1e-4, atol=1e-5))


def test_edge_attention_stable_at_large_logits():
    edge_index = torch.tensor([[0, 1, 2, 1], [0, 0, 0, 1]], device=DEVICE)
    q = torch.ones(3, 1, 2, dtype=torch.float64, device=DEVICE)
    k = torch.ones(3, 1, 2, dtype=torch.float64, device=DEVICE)
    v = torch.arange(6, dtype=torch.float64, device=DEVICE).view(3, 1, 2)
    bias = torch.tensor([[1e4], [-1e4], [1e4 - 1], [5.0]], dtype=torch.float64, device=DEVICE)
    out, att = K.edge_attention(q, k, v, edge_index, edge_bias=bias, return_attention=True, backend="triton")
    assert torch.isfinite(out).all() and torch.isfinite(att).all()
    e1 = torch.exp(torch.tensor(-1.0, dtype=torch.float64))
    want = torch.tensor([1 / (1 + e1), 0.0, e1 / (1 + e1), 1.0], dtype=torch.float64)
    torch.testing.assert_close(att[:, 0].cpu(), want)
    assert (out[2] == 0).all()


@pytest.mark.parametrize("hub", [0, 30], ids=["short_row", "split_row"])
def test_edge_attention_fully_masked_row_gives_zeros(hub):
    edge_index, q, k, v, kw = _edge_inputs(12, 12, 2, 4, 4, 40, "bias", hub=hub)
    bias = kw["edge_bias"].detach().clone()
    bias[edge_index[1] == 0] = float("-inf")
    bias.requires_grad_(True)
    out, att = K.edge_attention(q, k, v, edge_index, edge_bias=bias, return_attention=True, backend="triton")
    ref = K.edge_attention(q, k, v, edge_index, edge_bias=bias, backend="reference")
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    assert (att[edge_index[1] == 0] == 0).all()
    torch.testing.assert_close(out, ref)
    grads = _grads(out, (q, k, v, bias))
    assert all(torch.isfinite(g).all() for g in grads)
    for got, want in zip(grads, _grads(ref, (q, k, v, bias))):
        torch.testing.assert_close(got, want)


def test_edge_attention_without_edges():
    q, k, v = _rand(4, 2, 3), _rand(5, 2, 3), _rand(5, 2, 2)
    edge_index = torch.empty(2, 0, dtype=torch.long, device=DEVICE)
    out, att = K.edge_attention(q, k, v, edge_index, return_attention=True, backend="triton")
    assert out.shape == (4, 2, 2) and (out == 0).all() and att.shape == (0, 2)
    grads = _grads(out, (q, k, v))
    assert all((g == 0).all() for g in grads)


def test_edge_attention_prebuilt_csr_is_reused():
    edge_index, q, k, v, kw = _edge_inputs(15, 15, 2, 4, 4, 50, "bias", hub=20)
    csr = K.CSR(edge_index, 15, 15)
    a = K.edge_attention(q, k, v, csr, backend="triton", **kw)
    b = K.edge_attention(q, k, v, csr, backend="triton", **kw)
    torch.testing.assert_close(a, b)
    assert len(csr.plans) == 1


def test_unsupported_device_is_explained():
    assert TB.unsupported(torch.empty(1, device="meta")) is not None
    assert TB.unsupported(torch.empty(1, device=DEVICE)) is None


# ---- segment softmax ------------------------------------------------------------------

SIZES = [0, 3, 1, 0, 40, 2, 0, 17]  # two segments longer than ROW_SPLIT=16


@pytest.mark.parametrize("heads", [None, 3])
def test_segment_softmax_ptr_and_index(heads):
    ptr = ragged_ptr(SIZES).to(DEVICE)
    rows = int(ptr[-1])
    scores = _rand(rows, *([] if heads is None else [heads]))
    ref = K.segment_softmax(scores, ptr=ptr, backend="reference")
    got = K.segment_softmax(scores, ptr=ptr, backend="triton")
    torch.testing.assert_close(got, ref)
    for g, w in zip(_grads(got, (scores,)), _grads(ref, (scores,))):
        torch.testing.assert_close(g, w)
    index = K.index_from_ptr(ptr)
    perm = torch.randperm(rows, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    shuffled = K.segment_softmax(scores[perm], index=index[perm], num_segments=len(SIZES), backend="triton")
    torch.testing.assert_close(shuffled, ref[perm])


def test_segment_softmax_masked_segment_and_large_scores():
    ptr = ragged_ptr([3, 20, 2]).to(DEVICE)
    scores = _rand(25, 2, grad=False)
    scores[:3] = float("-inf")  # a fully masked segment
    scores[3:23, 0] += 1e4
    scores.requires_grad_(True)
    got = K.segment_softmax(scores, ptr=ptr, backend="triton")
    ref = K.segment_softmax(scores, ptr=ptr, backend="reference")
    assert (got[:3] == 0).all() and torch.isfinite(got).all()
    torch.testing.assert_close(got, ref)
    (grad,) = _grads(got, (scores,))
    assert torch.isfinite(grad).all()


def test_segment_softmax_gradcheck():
    ptr = ragged_ptr([2, 0, 20, 1]).to(DEVICE)
    scores = _rand(23, 2)
    assert torch.autograd.gradcheck(
        lambda s: K.segment_softmax(s, ptr=ptr, backend="triton"), (scores,), fast_mode=not CUDA
    )


# ---- segment attention pooling ----------------------------------------------------------

POOL_MODES = ["shared_query", "segment_query", "scores", "scores_raw", "value"]


@pytest.mark.parametrize("mode", POOL_MODES)
def test_segment_attention_pool_matches_reference(mode):
    sizes = [4, 0, 1, 35, 0, 3]
    ptr, x, kw = pool_inputs(mode, sizes, device=DEVICE)
    out, w = K.segment_attention_pool(x, ptr=ptr, backend="triton", **kw)
    ref_out, ref_w = K.segment_attention_pool(x, ptr=ptr, backend="reference", **kw)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    assert (out[1] == 0).all() and (out[4] == 0).all()
    leaves = [x, *(t for t in kw.values() if isinstance(t, torch.Tensor))]
    # the weights are differentiable too (as in the reference)
    for g, want in zip(_grads((out, w), leaves), _grads((ref_out, ref_w), leaves)):
        torch.testing.assert_close(g, want)
    index = K.index_from_ptr(ptr)
    perm = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    kw_perm = {key: (val[perm] if key in ("scores", "value") else val) for key, val in kw.items()}
    out_p, w_p = K.segment_attention_pool(
        x[perm], index=index[perm], num_segments=len(sizes), backend="triton", **kw_perm
    )
    torch.testing.assert_close(out_p, ref_out)
    torch.testing.assert_close(w_p, ref_w[perm])


@pytest.mark.parametrize("mode", ["segment_query", "scores_raw"])
def test_segment_attention_pool_gradcheck(mode):
    ptr, x, kw = pool_inputs(mode, [2, 0, 18], dim=3, device=DEVICE)
    tensors = {key: val for key, val in kw.items() if isinstance(val, torch.Tensor)}
    flags = {key: val for key, val in kw.items() if not isinstance(val, torch.Tensor)}

    def fn(x, *args):
        return K.segment_attention_pool(x, ptr=ptr, backend="triton", **flags, **dict(zip(tensors, args)))[0]

    assert torch.autograd.gradcheck(fn, (x, *tensors.values()), fast_mode=not CUDA)


# ---- GPU: larger graphs, default split threshold, low precision ------------------------

def _power_law_graph(num_nodes, num_edges, hub_degree, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, num_nodes + 1, dtype=torch.float64) ** 1.2
    dst = torch.multinomial(weights, num_edges, replacement=True, generator=gen)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    hub_src = torch.randint(0, num_nodes, (hub_degree,), generator=gen)
    src = torch.cat([src, hub_src, hub_src[: hub_degree // 4]])  # and a source hub
    dst = torch.cat([dst, torch.full((hub_degree,), 3), torch.randint(0, num_nodes, (hub_degree // 4,), generator=gen)])
    return torch.stack([src, dst]).to(DEVICE)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("atomic", [False, True], ids=["csc", "atomic"])
@pytest.mark.parametrize("edge_term", ["bias", "scale_dim"])
def test_gpu_power_law_graph_default_split(monkeypatch, atomic, edge_term):
    monkeypatch.setattr(TB, "ROW_SPLIT", 512)
    monkeypatch.setattr(TB, "ATOMIC", atomic)
    num_nodes, heads, dim = 3000, 4, 64
    edge_index = _power_law_graph(num_nodes, 60_000, hub_degree=5000)
    e = edge_index.size(1)
    q, k, v = (_rand(num_nodes, heads, dim, dtype=torch.float32, seed=s) for s in (1, 2, 3))
    kw = {"edge_bias": _rand(e, heads, dtype=torch.float32, seed=4)}
    if edge_term == "scale_dim":
        kw = {"edge_scale": _rand(e, heads, dim, dtype=torch.float32, seed=5)}
    _check_edge_attention(edge_index, q, k, v, kw, tol=dict(rtol=2e-4, atol=2e-5))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dims", [(64, 64), (48, 100)], ids=["pow2", "odd"])
def test_gpu_half_precision(monkeypatch, dtype, dims):
    monkeypatch.setattr(TB, "ROW_SPLIT", 512)
    dim, dim_v = dims
    edge_index = _power_law_graph(2000, 30_000, hub_degree=3000)
    e = edge_index.size(1)
    q, k = (_rand(2000, 4, dim, dtype=torch.float32, seed=s) for s in (1, 2))
    v = _rand(2000, 4, dim_v, dtype=torch.float32, seed=3)
    bias = _rand(e, 4, dtype=torch.float32, seed=4)
    ref = K.edge_attention(q, k, v, edge_index, edge_bias=bias, backend="reference")
    ref_grads = _grads(ref, (q, k, v, bias))
    low = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v, bias)]
    out = K.edge_attention(*low[:3], edge_index, edge_bias=low[3], backend="triton")
    assert out.dtype == dtype
    tol = dict(rtol=5e-2, atol=5e-2) if dtype == torch.bfloat16 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out.float(), ref.detach(), **tol)
    for got, want in zip(_grads(out, low), ref_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, **tol)


@gpu
@pytest.mark.gpu
def test_gpu_segment_ops_long_segments(monkeypatch):
    monkeypatch.setattr(TB, "ROW_SPLIT", 512)
    sizes = [0, 5, 3000, 1, 700, *([7] * 200)]
    for mode in POOL_MODES:
        ptr, x, kw = pool_inputs(mode, sizes, dim=64, nq=4, dtype=torch.float32, device=DEVICE)
        out, w = K.segment_attention_pool(x, ptr=ptr, backend="triton", **kw)
        ref_out, ref_w = K.segment_attention_pool(x, ptr=ptr, backend="reference", **kw)
        # raw (unnormalised) weights over 3000 rows give outputs of size ~50: an absolute
        # tolerance relative to the largest value, for fp32 summation-order differences
        tol = lambda ref: dict(rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))
        torch.testing.assert_close(out, ref_out, **tol(ref_out))
        torch.testing.assert_close(w, ref_w, **tol(ref_w))
        leaves = [x, *(t for t in kw.values() if isinstance(t, torch.Tensor))]
        for g, want in zip(_grads(out, leaves), _grads(ref_out, leaves)):
            torch.testing.assert_close(g, want, **tol(want))
