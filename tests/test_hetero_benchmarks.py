"""The LATTE and GIN-Attention benchmark and results scripts on tiny inputs: their measuring
code runs, the reference implementation they compare against computes the same function, and
the helpers (synthetic graphs, token tasks, LoRA) do what they say. Timings are not checked."""

from __future__ import annotations

import torch

from benchmarks import gin_attention as gin_bench
from benchmarks import gin_attention_results as gin_results
from benchmarks import latte as latte_bench


def test_synthetic_acm_scales_the_schema() -> None:
    sizes, edges = latte_bench.synthetic_acm(2)
    assert sizes == {"p": 8038, "a": 14334, "s": 120}
    assert edges[("p", "pa", "a")].size(1) == 2 * latte_bench.ACM_PA_EDGES
    assert torch.equal(edges[("a", "ap", "p")], edges[("p", "pa", "a")].flip(0))
    assert torch.equal(edges[("p", "ps", "s")][0], torch.arange(8038))  # one subject per paper


def test_latte_benchmark_measures_every_method(monkeypatch) -> None:
    monkeypatch.setattr(latte_bench, "ACM_SIZES", {"p": 30, "a": 40, "s": 3})
    monkeypatch.setattr(latte_bench, "ACM_PA_EDGES", 60)
    for method in latte_bench.METHODS:
        spec = dict(device="cpu", graph="synthetic", scale=1, method=method, channels=8, heads=2, repeats=1)
        result = latte_bench.measure(spec)
        assert result["fwdbwd_s"] > 0 and result["edges"] == 2 * (60 + 30)


def test_reference_loop_computes_gin_attention() -> None:
    torch.manual_seed(0)
    reference, layer = gin_bench.build("reference", 16, 4)
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(reference(x), layer(x), atol=1e-5, rtol=1e-5)


def test_sequence_graphs() -> None:
    full = gin_bench.sequence_graph(5, 2, None)
    assert full.size(1) == 2 * 25 and int(full.max()) == 9
    window = gin_bench.sequence_graph(6, 1, 1)
    src, dst = window
    assert (src - dst).abs().max() == 1 and window.size(1) == 6 * 3 - 2
    per_query = torch.bincount(dst)
    assert per_query.tolist() == [2, 3, 3, 3, 3, 2]


def test_gin_benchmark_measures_every_method() -> None:
    for method in gin_bench.METHODS:
        spec = dict(method=method, length=12, batch=2, channels=8, heads=2, window=2, repeats=1)
        assert gin_bench.measure(spec)["fwdbwd_s"] > 0


def test_token_tasks_label_counts() -> None:
    tokens, labels = gin_results.token_task(4, seed=0)
    row = tokens[0]
    expected = torch.tensor([int((row == t).sum()) for t in row]).clamp(max=gin_results.COUNT_CLASSES) - 1
    assert torch.equal(labels[0], expected)
    tokens, labels = gin_results.token_task(4, seed=0, task="group")
    row = tokens[1] % gin_results.GROUPS
    assert torch.equal(labels[1], torch.tensor([int((row == t).sum()) for t in row]) - 1)
    tokens, labels = gin_results.token_task(4, seed=0, task="parity")
    row = tokens[2]
    assert torch.equal(labels[2], torch.tensor([int((row == t).sum()) % 2 for t in row]))


def test_lora_starts_at_the_pretrained_function_and_trains_only_low_rank_factors() -> None:
    torch.manual_seed(0)
    model = gin_results.build_sequence_model("mha", 8, 16, 0.0).eval()
    tokens, _ = gin_results.token_task(3, seed=0)
    with torch.no_grad():
        before = model(tokens)
    lora = gin_results.lora_model(model, rank=2)
    torch.testing.assert_close(lora(tokens), before)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("parametrizations" in n and (".up" in n or ".down" in n) for n in trainable)
    # per layer: three [D, r] + [r, D] pairs for q/k/v and one for the output projection
    assert gin_results.count_parameters(lora, trainable_only=True) == 2 * 4 * 2 * (2 * 16)
    adapted = gin_results.adapter_model(gin_results.build_sequence_model("mha", 8, 16, 0.0), 4, 1.0)
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".attention.gin." in n or n.endswith(".attention.scale") for n in trainable)


def test_result_plots_are_written(tmp_path) -> None:
    curve = [dict(epoch=e, train_loss=1.0 / e, train_acc=0.5, val_loss=1.2 / e, val_acc=0.4) for e in (1, 2, 3)]
    gin_results.plot_curves({"gin": [curve, curve], "mha": [curve]}, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0
