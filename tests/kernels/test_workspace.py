"""The CPU kernels' reused buffers: memory comes back only once nothing references it."""

from __future__ import annotations

import gc

import pytest
import torch

from gattn import kernels as K
from gattn.kernels import _workspace

from .graphs import awkward_graph

BIG = (1 << 20) // 4 + 1024  # float32 elements of a little more than MIN_BYTES


@pytest.fixture(autouse=True)
def empty_pool():
    _workspace.clear()
    yield
    _workspace.clear()


def test_memory_is_reused_only_after_every_view_is_gone():
    first = _workspace.take((BIG,), torch.float32)
    address = first.data_ptr()
    second = _workspace.take((BIG,), torch.float32)
    assert second.data_ptr() != address  # the first is still referenced
    derived = first[2:].view(-1, 2)  # a tensor made from a view (BIG is even)
    del first
    gc.collect()
    third = _workspace.take((BIG,), torch.float32)
    assert third.data_ptr() not in (address, second.data_ptr())  # a view of the first lives on
    del derived
    gc.collect()
    again = _workspace.take((BIG // 2, 2), torch.float32)
    assert again.data_ptr() == address and again.shape == (BIG // 2, 2)


def test_sizes_and_dtypes_that_do_not_fit_get_fresh_memory():
    first = _workspace.take((BIG,), torch.float32)
    address = first.data_ptr()
    del first
    assert _workspace.take((BIG,), torch.float64).data_ptr() != address  # other dtype
    assert _workspace.take((2 * BIG,), torch.float32).data_ptr() != address  # larger than its room
    assert _workspace.take((BIG // 2,), torch.float32).data_ptr() != address  # far smaller
    assert _workspace.take((BIG + BIG // 16,), torch.float32).data_ptr() == address  # within its 1/8 room


def test_small_requests_bypass_the_pool():
    small = _workspace.take((100,), torch.float32)
    assert small.shape == (100,) and _workspace.pooled_bytes() == 0


def test_the_pool_keeps_at_most_max_bytes_of_free_buffers(monkeypatch):
    monkeypatch.setattr(_workspace, "MAX_BYTES", 3 * (BIG + BIG // 8) * 4)
    held = [_workspace.take((BIG,), torch.float32) for _ in range(3)]
    del held
    gc.collect()
    for scale in (3, 5):  # new sizes: each new buffer pushes out the oldest free one
        _workspace.take((scale * BIG // 4,), torch.float32)
    assert _workspace.pooled_bytes() <= _workspace.MAX_BYTES


def test_backward_buffers_kept_by_the_caller_are_never_overwritten():
    """Two backward calls on the CPU kernels: the first call's gradients, still held, keep
    their values while the second runs; once dropped, their memory serves the next call."""
    num, heads, dim = 1200, 4, 64  # dQ 1.2 MB and dK|dV 2.4 MB: above MIN_BYTES, so pooled
    edge_index = awkward_graph(num, num, 6000, seed=3)
    gen = torch.Generator().manual_seed(0)

    def grads(seed):
        q, k, v = (torch.randn(num, heads, dim, generator=gen, requires_grad=True) for _ in range(3))
        out = K.edge_attention(q, k, v, edge_index, backend="cpu")
        return torch.autograd.grad(out, (q, k, v), torch.randn(out.shape, generator=gen)), (q, k, v)

    (dq1, dk1, dv1), inputs1 = grads(1)
    kept = [g.clone() for g in (dq1, dk1, dv1)]
    (dq2, dk2, dv2), _ = grads(2)
    for got, want in zip((dq1, dk1, dv1), kept):
        assert torch.equal(got, want)
    assert dq2.data_ptr() != dq1.data_ptr()
    address = dq1.data_ptr()
    q, k, v = (x.detach().requires_grad_() for x in inputs1)
    ref = K.edge_attention(q, k, v, edge_index, backend="reference")
    del dq1, dk1, dv1
    gc.collect()
    (dq3, _, _), _ = grads(3)
    assert dq3.data_ptr() == address  # the released buffer came back
    out = K.edge_attention(*inputs1, edge_index, backend="cpu")
    grad = torch.randn(out.shape, generator=gen)
    for got, want in zip(torch.autograd.grad(out, inputs1, grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_clear_caches_drops_the_reused_buffers_and_cached_structures():
    from gattn.kernels import _cache

    num = 1200
    edge_index = awkward_graph(num, num, 6000, seed=5)
    q, k, v = (torch.randn(num, 4, 64, requires_grad=True) for _ in range(3))
    K.edge_attention(q, k, v, edge_index, backend="cpu").sum().backward()
    assert _workspace.pooled_bytes() > 0 and len(_cache._entries) > 0
    K.clear_caches()
    assert _workspace.pooled_bytes() == 0 and len(_cache._entries) == 0
    out = K.edge_attention(q, k, v, edge_index, backend="cpu")  # rebuilt on demand
    torch.testing.assert_close(out, K.edge_attention(q, k, v, edge_index, backend="reference"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_pooled_linear_matches_f_linear_and_reuses_its_output_memory(bias):
    gen = torch.Generator().manual_seed(4)
    rows, cin, cout = 2048, 16, 160  # a 1.3 MB float32 output: pooled
    x = torch.randn(rows, cin, generator=gen, requires_grad=True)
    weight = torch.randn(cout, cin, generator=gen, requires_grad=True)
    b = torch.randn(cout, generator=gen, requires_grad=True) if bias else None
    out = _workspace.linear(x, weight, b)
    want = torch.nn.functional.linear(x, weight, b)
    torch.testing.assert_close(out, want)
    grad = torch.randn(out.shape, generator=gen)
    inputs = (x, weight) + ((b,) if bias else ())
    for got, expect in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        torch.testing.assert_close(got, expect)
    assert _workspace.pooled_bytes() > 0
    held = out.detach().clone()
    second = _workspace.linear(x, weight, b)  # `out` is still referenced: other memory
    assert second.data_ptr() != out.data_ptr() and torch.equal(out, held)
    address = out.data_ptr()
    del out
    gc.collect()
    with torch.no_grad():
        assert _workspace.linear(x, weight, b).data_ptr() == address


def test_pooled_linear_gradcheck_float64():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1100, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(128, 3, dtype=torch.float64, generator=gen, requires_grad=True)  # 1.1 MB: pooled
    bias = torch.randn(128, dtype=torch.float64, generator=gen, requires_grad=True)
    assert x.size(0) * weight.size(0) * 8 >= _workspace.MIN_BYTES
    assert torch.autograd.gradcheck(_workspace.linear, (x, weight, bias), fast_mode=True)
    assert torch.autograd.gradgradcheck(_workspace.linear, (x, weight, bias), fast_mode=True)


def test_pooled_linear_leaves_small_3d_and_half_inputs_to_f_linear():
    weight = torch.randn(8, 4)
    for x in (torch.randn(10, 4), torch.randn(3, 10, 4)):
        torch.testing.assert_close(_workspace.linear(x, weight), torch.nn.functional.linear(x, weight))
    half = torch.randn(40000, 4, dtype=torch.bfloat16)
    torch.testing.assert_close(_workspace.linear(half, weight.bfloat16()),
                               torch.nn.functional.linear(half, weight.bfloat16()))
    assert _workspace.pooled_bytes() == 0


def test_set_workspace_limit_trades_reuse_for_memory():
    """Below a buffer's size the limit turns reuse off (a fresh buffer per call, none kept);
    the previous limit comes back and restoring it turns reuse on again."""
    default = _workspace.MAX_BYTES
    try:
        kept = _workspace.take((BIG,), torch.float32)
        assert _workspace.pooled_bytes() > 0
        assert K.set_workspace_limit(BIG * 4 - 1) == default
        assert _workspace.pooled_bytes() == 0  # lowering drops what was kept
        del kept
        gc.collect()
        fresh = _workspace.take((BIG,), torch.float32)
        assert fresh.shape == (BIG,) and _workspace.pooled_bytes() == 0  # handed out, not kept
        layer_input = torch.randn(600, 8)
        assert torch.equal(_workspace.linear(layer_input, torch.ones(BIG // 600 + 1, 8)),
                           torch.nn.functional.linear(layer_input, torch.ones(BIG // 600 + 1, 8)))
        assert _workspace.pooled_bytes() == 0  # the projection's output is not kept either
        assert K.set_workspace_limit(default) == BIG * 4 - 1
        first = _workspace.take((BIG,), torch.float32)
        address = first.data_ptr()
        del first, fresh
        gc.collect()
        assert _workspace.take((BIG,), torch.float32).data_ptr() == address
    finally:
        _workspace.MAX_BYTES = default


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_set_workspace_limit_rejects_what_is_not_a_byte_count(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        K.set_workspace_limit(bad)


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


huge_pages = pytest.mark.skipif(not _workspace.HUGE_PAGES, reason="no transparent huge pages for this process")
LARGE = (64 << 20) // 4  # float32 elements of 64 MB


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    assert _workspace._thp_mode(str(mode)) == "madvise"
    mode.write_text("[never] always\n")
    assert _workspace._thp_mode(str(mode)) == "never"
    assert _workspace._thp_mode(str(tmp_path / "absent")) == ""


def test_huge_pages_can_be_turned_off_from_the_environment():
    import subprocess
    import sys

    code = "from gattn.kernels import _workspace as W; print(W.HUGE_PAGES)"
    env = {"PATH": "/usr/bin:/bin", "GATTN_WORKSPACE_HUGE_PAGES": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@huge_pages
def test_kept_buffers_start_on_a_huge_page_boundary():
    large = _workspace.take((LARGE // 32,), torch.float32)  # 2 MB
    small = _workspace.take((BIG,), torch.float32)  # 1 MB: below a huge page, kept as allocated
    assert large.data_ptr() % _workspace.HUGE_PAGE == 0
    assert small.shape == (BIG,) and _workspace.pooled_bytes() > 0


@huge_pages
def test_release_gives_back_only_the_memory_of_buffers_nobody_uses(monkeypatch):
    monkeypatch.setattr(_workspace, "RELEASE_MIN_BYTES", 0)
    used = _workspace.take((LARGE,), torch.float32)
    used.fill_(3.0)
    idle = _workspace.take((LARGE,), torch.float32)
    idle.fill_(1.0)
    address = idle.data_ptr()
    del idle
    gc.collect()
    before = _resident_mb()
    released = _workspace.release_idle()
    after = _resident_mb()
    assert 64 << 20 <= released <= (72 << 20)  # the idle buffer (with its 1/8 room), not the used one
    assert before - after >= 50  # the operating system has the memory back
    assert bool((used == 3.0).all())  # the used buffer kept its values
    assert _workspace.release_idle() == 0  # nothing more to give back
    again = _workspace.take((LARGE,), torch.float32)
    assert again.data_ptr() == address  # the buffer itself was kept
    again.fill_(2.0)
    assert bool((again == 2.0).all()) and _resident_mb() - after >= 50
    del again
    gc.collect()
    assert _workspace.release_idle() >= 60 << 20  # released again once idle again


@huge_pages
def test_idle_buffers_below_the_release_threshold_stay_resident(monkeypatch):
    """Below RELEASE_MIN_BYTES in all, idle buffers keep their memory (re-faulting it would cost
    more than it saves); once the idle total reaches it, all of them are given back."""
    first = _workspace.take((LARGE,), torch.float32)
    first.fill_(1.0)
    del first
    gc.collect()
    monkeypatch.setattr(_workspace, "RELEASE_MIN_BYTES", 100 << 20)
    assert _workspace.release_idle() == 0  # 72 MB idle: kept
    assert not _workspace._released
    second = _workspace.take((LARGE * 5 // 4,), torch.float32)  # too large for the first buffer
    second.fill_(1.0)
    del second
    gc.collect()
    released = _workspace.release_idle()  # 72 + 90 MB idle: both given back
    assert released >= (64 + 80) << 20 and len(_workspace._released) == 2


@huge_pages
def test_the_attention_forward_releases_the_backwards_buffers_and_gradients_stay_exact(monkeypatch):
    """The backward's kept buffers are given back by the next forward and faulted in again by
    the next backward: the gradients still match the reference."""
    monkeypatch.setattr(_workspace, "RELEASE_MIN_BYTES", 0)
    num, heads, dim = 3000, 4, 64  # dQ 3 MB, dK|dV 6 MB: huge-page buffers
    edge_index = awkward_graph(num, num, 20000, seed=7)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(num, heads, dim, generator=gen, requires_grad=True) for _ in range(3))
    grad = torch.randn(num, heads, dim, generator=gen)
    first = torch.autograd.grad(K.edge_attention(q, k, v, edge_index, backend="cpu"), (q, k, v), grad)
    del first
    gc.collect()
    out = K.edge_attention(q, k, v, edge_index, backend="cpu")
    released = [b for b in _workspace._buffers if b.data_ptr() in _workspace._released]
    assert sum(_workspace._nbytes(b) for b in released) >= 9 << 20
    got = torch.autograd.grad(out, (q, k, v), grad)
    ref = torch.autograd.grad(K.edge_attention(q, k, v, edge_index, backend="reference"), (q, k, v), grad)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GATv2Conv"])
def test_buffers_first_made_under_inference_mode_serve_a_later_training_step(name):
    """Lightning validates under torch.inference_mode: a kept buffer first made there must not be
    an inference tensor, which a training step could not write ("Inplace update to inference
    tensor outside InferenceMode")."""
    import gattn.nn

    num = 1200  # the K|V projection (1200 x 512 float32, 2.4 MB) and the backward's buffers are kept
    edge_index = awkward_graph(num, num, 6000, seed=11)
    x = torch.randn(num, 64, generator=torch.Generator().manual_seed(2))

    def gradients(inference_first):
        K.clear_caches()
        torch.manual_seed(3)
        layer = getattr(gattn.nn, name)(64, 128, heads=4)
        if inference_first:
            with torch.inference_mode():
                layer(x, edge_index)
            assert _workspace.pooled_bytes() > 0
        layer(x, edge_index).square().mean().backward()
        return [p.grad for p in layer.parameters()]

    for got, want in zip(gradients(True), gradients(False)):
        torch.testing.assert_close(got, want)


def _advised_huge(address: int) -> bool:
    """Whether the mapping holding `address` is marked for huge pages (``hg`` in its
    VmFlags in /proc/self/smaps): set by madvise(MADV_HUGEPAGE), whether or not its pages
    are written yet (glibc may serve a large request from memory its heap already has)."""
    inside = False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(part, 16) for part in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return "hg" in line.split()[1:]
    return False


@huge_pages
def test_large_fresh_outputs_are_asked_for_huge_pages_and_small_ones_are_not():
    big = _workspace.empty((_workspace.FRESH_HUGE_BYTES // 4 + 3 * (1 << 19),), torch.float32)
    assert big.storage_offset() == 0 and big.is_contiguous() and big.dtype == torch.float32
    # every whole 2 MB page inside the tensor is advised, before anything writes it
    inner = -(-big.data_ptr() // _workspace.HUGE_PAGE) * _workspace.HUGE_PAGE
    end = big.data_ptr() + big.numel() * 4
    assert all(_advised_huge(page) for page in range(inner, end - _workspace.HUGE_PAGE + 1, _workspace.HUGE_PAGE))
    big.fill_(1.0)
    assert bool((big == 1.0).all())


def test_fresh_outputs_advise_only_whole_huge_pages_inside_large_tensors(monkeypatch):
    calls = []
    monkeypatch.setattr(_workspace, "HUGE_PAGES", True)
    monkeypatch.setattr(_workspace, "_madvise", lambda address, length, advice: calls.append((address, length, advice)))
    small = _workspace.empty((1 << 20,), torch.float32)  # 4 MB: below FRESH_HUGE_BYTES
    assert small.shape == (1 << 20,) and calls == []
    big = _workspace.empty((_workspace.FRESH_HUGE_BYTES // 8 + 5, 2), torch.float32)
    assert big.shape == (_workspace.FRESH_HUGE_BYTES // 8 + 5, 2)
    ((address, length, advice),) = calls
    start, end = big.data_ptr(), big.data_ptr() + big.numel() * 4
    assert advice == _workspace._MADV_HUGEPAGE and address % _workspace.HUGE_PAGE == 0
    assert length % _workspace.HUGE_PAGE == 0 and start <= address and address + length <= end
    assert address - start < _workspace.HUGE_PAGE and end - (address + length) < _workspace.HUGE_PAGE


def test_fresh_outputs_are_plain_tensors_without_huge_pages(monkeypatch):
    monkeypatch.setattr(_workspace, "HUGE_PAGES", False)
    out = _workspace.empty((_workspace.FRESH_HUGE_BYTES // 4 + 1,), torch.float32)
    assert out.numel() == _workspace.FRESH_HUGE_BYTES // 4 + 1 and out.storage_offset() == 0


def test_pooled_linear_input_gradient_matches_and_double_backward_still_works():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3000, 24, generator=gen, requires_grad=True)
    weight = torch.randn(100, 24, generator=gen, requires_grad=True)  # 1.2 MB output: pooled
    grad = torch.randn(3000, 100, generator=gen)
    got = torch.autograd.grad(_workspace.linear(x, weight), (x, weight), grad)
    want = torch.autograd.grad(torch.nn.functional.linear(x, weight), (x, weight), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # with create_graph the input gradient is a graph node (out= would refuse it)
    (dx,) = torch.autograd.grad(_workspace.linear(x, weight), x, grad, create_graph=True)
    (second,) = torch.autograd.grad(dx.square().sum(), weight)
    (expect,) = torch.autograd.grad(
        torch.autograd.grad(torch.nn.functional.linear(x, weight), x, grad, create_graph=True)[0].square().sum(),
        weight)
    torch.testing.assert_close(second, expect)
