"""The benchmark scripts' measuring code on tiny inputs (the timings themselves are not checked).

The GPU rows of ``benchmarks/edge_attention.py`` can only be produced on a machine with a
GPU; here the same ``measure`` code runs on CPU for every method, the Triton method under
the interpreter, and on CUDA when one is present.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks import edge_attention
from benchmarks import laplacian_pe as lappe_bench


def tiny_spec(method: str, device: str = "cpu", graph: str = "random", layer: str = "transformer") -> dict:
    return dict(device=device, method=method, layer=layer, graph=graph, nodes=60, edges=300,
                heads=2, dim=4, repeats=1)


@pytest.mark.parametrize("method", ["gattn", "reference", "pyg", "triton"])
def test_edge_attention_measure_runs_every_method(method: str) -> None:
    result = edge_attention.measure(tiny_spec(method, graph="powerlaw"))
    assert result["fwd_s"] > 0 and result["step_s"] > 0 and result["peak_mb"] > 0


@pytest.mark.parametrize("layer", ["gat", "gatv2"])
@pytest.mark.parametrize("method", ["gattn", "pyg"])
def test_edge_attention_measure_runs_the_gat_rows(layer: str, method: str) -> None:
    result = edge_attention.measure(tiny_spec(method, layer=layer))
    assert result["fwd_s"] > 0 and result["step_s"] > 0 and result["peak_mb"] > 0
    assert type(edge_attention.build(method, 8, 2, 4, layer)).__module__.startswith(
        "gattn" if method == "gattn" else "torch_geometric")


def test_edge_attention_main_writes_table_chart_and_json(tmp_path, monkeypatch, capsys) -> None:
    """The whole script on the quick cases shrunk to one tiny graph (children stubbed)."""
    import json
    import sys

    monkeypatch.setattr(edge_attention, "benchmark_cases",
                        lambda *args: [("random", 60, 300, 2, 4)])
    monkeypatch.setattr(edge_attention, "run_child", lambda module, spec: edge_attention.measure(spec))
    argv = ["edge_attention.py", "--quick", "--repeats", "1", "--layers", "transformer,gat,gatv2",
            "--threads", "1", "--batch", "full,mini", "--load", "none",
            "--chart", str(tmp_path / "chart.png"), "--json", str(tmp_path / "rows.json")]
    monkeypatch.setattr(sys, "argv", argv)
    edge_attention.main()
    printed = capsys.readouterr().out
    assert "counting sort" in printed and "gatv2" in printed and "mini" in printed
    cores = len(os.sched_getaffinity(0))
    assert "machine: " in printed and f", {cores} cores" in printed  # the host, beside its figures
    assert (tmp_path / "chart.png").stat().st_size > 0
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert saved["machine"].endswith(f"{cores} cores")
    assert saved["huge_pages"].startswith("transparent huge pages: ") and "THP_MEM_ALLOC_ENABLE" in printed
    rows = saved["rows"]
    assert {(r["layer"], r["method"]) for r in rows} >= {("gat", "gattn"), ("gat", "pyg"), ("gatv2", "pyg")}


def test_edge_attention_dgl_rows_read_the_same_graph_file(tmp_path, monkeypatch, capsys) -> None:
    """--dgl-python: the DGL child (stubbed: DGL needs its own venv) gets the graph file the
    other methods read, and its ratios sit beside PyG's in the table, the JSON and the chart."""
    import json
    import sys

    from benchmarks._common import read_chart_data
    from benchmarks.peers import dgl_attention

    seen = []

    def fake_dgl(spec, python):
        saved = dgl_attention.load_graph(spec["graph_file"])
        seen.append((spec["layer"], spec["batch"], python, len(saved["batches"])))
        return {"fwd_s": 1.0, "step_s": 2.0, "peak_mb": 4096.0, "above_inputs_mb": 1.0, "load": 0.0,
                "nodes": saved["num_nodes"], "edges": int(saved["edge_index"].size(1))}

    monkeypatch.setattr(edge_attention, "benchmark_cases", lambda *args: [("random", 60, 300, 2, 4)])
    monkeypatch.setattr(edge_attention, "run_child", lambda module, spec: edge_attention.measure(spec))
    monkeypatch.setattr(dgl_attention, "measure_dgl", fake_dgl)
    python = tmp_path / "python"
    python.write_text("")
    argv = ["edge_attention.py", "--quick", "--repeats", "1", "--layers", "transformer,gatv2", "--threads", "1",
            "--batch", "full,mini", "--load", "none", "--dtype", "float32,bfloat16", "--dgl-python", str(python),
            "--chart", str(tmp_path / "chart.png"), "--json", str(tmp_path / "rows.json")]
    monkeypatch.setattr(sys, "argv", argv)
    edge_attention.main()
    assert "step x DGL" in capsys.readouterr().out
    # float32 only; mini: one edge list per timed call and warm-up
    assert sorted(seen) == sorted((layer, batch, str(python), 6 if batch == "mini" else 0)
                                  for layer in ("transformer", "gatv2") for batch in ("full", "mini"))
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    gattn = [r for r in rows if r["method"] == "gattn" and r["dtype"] == "float32"]
    assert len(gattn) == 4 and all(r["edges"] == 300 for r in rows)
    chart = read_chart_data(str(tmp_path / "chart.png"))
    steps = [v for v in chart["series"]["train step vs DGL (gattn)"] if v is not None]
    assert steps == pytest.approx([2.0 / r["step_s"] for r in gattn])
    assert len(chart["series"]["train step vs PyG (gattn)"]) == len(chart["cases"]) == 8


def test_edge_attention_dgl_python_must_exist(tmp_path, monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys, "argv", ["edge_attention.py", "--dgl-python", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        edge_attention.main()


@pytest.mark.parametrize("method", ["gattn", "reference"])
def test_fused_layer_matches_pyg_transformer_conv(method: str) -> None:
    """The benchmarked layers compute the same function (same weights, same graph)."""
    torch.manual_seed(0)
    heads, dim = 2, 4
    edge_index, _ = edge_attention.make_graph("powerlaw", 40, 200)
    x = torch.randn(40, heads * dim)
    pyg = edge_attention.build("pyg", heads * dim, heads, dim)
    ours = edge_attention.build(method, heads * dim, heads, dim)
    with torch.no_grad():
        for name in ("lin_query", "lin_key", "lin_value"):
            getattr(ours, name).weight.copy_(getattr(pyg, name).weight)
            getattr(ours, name).bias.copy_(getattr(pyg, name).bias)
    torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index), atol=1e-5, rtol=1e-5)


def test_gpu_cases_cover_the_issue_graphs() -> None:
    cases = edge_attention.benchmark_cases("cuda")
    assert {(h, d) for *_, h, d in cases} == {(4, 32), (8, 64)}
    graphs = {(kind, nodes, edges) for kind, nodes, edges, _, _ in cases}
    assert ("random", 50_000, 1_000_000) in graphs
    assert ("powerlaw", 50_000, 1_000_000) in graphs
    assert ("random", 169_343, 1_166_243) in graphs  # ogbn-arxiv sized
    picked = edge_attention.benchmark_cases("cuda", graphs=("arxiv",), shapes=((8, 64),))
    assert picked == [("random", 169_343, 1_166_243, 8, 64)]


def test_cpu_cases_include_the_arxiv_sized_graph() -> None:
    assert edge_attention.benchmark_cases("cpu", graphs=("arxiv", "knn")) == [
        ("random", 169_343, 1_166_243, 4, 32), ("knn", 50_000, 800_000, 4, 32)]
    with pytest.raises(ValueError, match="unknown graph kind 'arxiv'"):
        edge_attention.make_graph("arxiv", 10, 20)  # a size, not a kind: its cases build 'random'


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["gattn", "reference", "pyg"])
def test_edge_attention_measure_on_cuda(method: str) -> None:
    result = edge_attention.measure(tiny_spec(method, device="cuda"))
    assert result["fwd_s"] > 0 and result["peak_mb"] >= 0


def test_laplacian_pe_benchmark_agreement_check() -> None:
    graphs = lappe_bench.random_molecules(12, seed=0)
    assert lappe_bench.check_agreement(graphs, 4) < 1e-5


def test_code_attention_benchmark_methods_agree_and_measure() -> None:
    from benchmarks import code_attention

    code_attention.check_against_padded()
    for method in code_attention.METHODS:
        result = code_attention.measure(dict(method=method, notes=3, median=20, sigma=0.5, max_len=40, codes=4,
                                             dim=8, repeats=1, seed=0))
        assert result["ms"] > 0 and result["peak_mb"] >= 0


@pytest.mark.parametrize("method", ["gattn-rcm", "gattn-metis"])
def test_edge_attention_measure_runs_the_reordered_layer(method: str) -> None:
    from gattn.kernels.reorder import metis_available

    if method == "gattn-metis" and not metis_available():
        pytest.skip("pymetis absent")
    assert edge_attention.build(method, 8, 2, 4).reorder == method.split("-")[1]
    result = edge_attention.measure(tiny_spec(method, graph="sbm"))
    assert result["fwd_s"] > 0 and result["step_s"] > 0


def test_sbm_graph_has_communities_under_shuffled_ids() -> None:
    from gattn.kernels.reorder import metis_available, node_reordering

    edge_index, nodes = edge_attention.make_graph("sbm", 2000, 20_000)
    assert nodes == 2000 and edge_index.shape == (2, 20_000)
    assert 0 <= int(edge_index.min()) and int(edge_index.max()) < 2000

    def local_share(edges):  # edges whose ends are within one community's width of ids
        return float(((edges[0] - edges[1]).abs() < edge_attention.SBM_BLOCK).float().mean())

    shuffled = local_share(edge_index)
    assert shuffled < 0.5  # ids shuffled: communities are not id ranges
    assert local_share(node_reordering(edge_index, nodes, nodes, "rcm").edge_index) > 1.2 * shuffled
    if metis_available():  # a partition recovers the communities: 90 % of edges are inside one
        assert local_share(node_reordering(edge_index, nodes, nodes, "metis").edge_index) > 0.85


def test_edge_attention_main_reorder_rows(tmp_path, monkeypatch, capsys) -> None:
    """--reorder adds the reordered methods on full-batch rows only, with their chart bars."""
    import json
    import sys

    from benchmarks._common import read_chart_data

    monkeypatch.setattr(edge_attention, "benchmark_cases", lambda *args: [("sbm", 60, 300, 2, 4)])
    monkeypatch.setattr(edge_attention, "csr_build_cost", lambda *a: {"check": 1.0, "counting": 1.0, "argsort": 1.0})
    monkeypatch.setattr(edge_attention, "run_child", lambda module, spec: edge_attention.measure(spec))
    argv = ["edge_attention.py", "--graphs", "sbm", "--repeats", "1", "--threads", "1", "--batch", "full,mini",
            "--load", "none", "--reorder", "--chart", str(tmp_path / "chart.png"), "--json", str(tmp_path / "r.json")]
    monkeypatch.setattr(sys, "argv", argv)
    edge_attention.main()
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    expected = {("full", "gattn-plain"), ("full", "gattn-rcm")}
    assert {(r["batch"], r["method"]) for r in rows if r["method"].startswith("gattn-")} == expected | (
        {("full", "gattn-metis")} if any(r["method"] == "gattn-metis" for r in rows) else set())
    assert edge_attention.build("gattn-plain", 8, 2, 4).reorder is None
    assert edge_attention.build("gattn", 8, 2, 4).reorder == "auto"
    # the one-off costs of each gattn method's first two calls are printed with its row, and
    # what "auto" kept (a 60-node graph's K|V fits in cache: the caller's order)
    out = capsys.readouterr().out
    assert "gattn-plain: first forward" in out and "(reorder='auto' decides there: none)" in out
    assert next(r for r in rows if r["method"] == "gattn" and r["batch"] == "full")["auto_ordering"] == "none"
    chart = read_chart_data(str(tmp_path / "chart.png"))
    assert "train step vs PyG (gattn-rcm)" in json.dumps(chart)


@pytest.mark.parametrize("method", ["gattn", "gattn-rcm"])
def test_edge_attention_profile_parts(method: str, capsys) -> None:
    spec = tiny_spec(method, graph="sbm") | {"threads": 1, "batch": "full", "profile": True}
    result = edge_attention.profile_step(spec)
    parts = result["parts"]
    assert parts["attention kernels (fused forward + backward)"] > 0
    assert parts["projections (Q, K|V matmuls, forward + backward)"] > 0
    assert parts["optimizer (Adam step + zero_grad)"] > 0
    assert parts["node reordering permutations"] == 0  # the CPU kernels visit the order in place
    assert parts["the loss (square().mean(), forward + backward)"] > 0
    assert sum(parts.values()) == pytest.approx(result["step_s"])
    assert result["page_faults"] >= 0
    edge_attention.print_profile(spec, result)
    out = capsys.readouterr().out
    assert "attention kernels" in out and "page faults per step" in out


def test_edge_attention_measure_bf16_kv_reports_its_error() -> None:
    assert edge_attention.build("gattn-bf16kv", 8, 2, 4).kv_dtype == torch.bfloat16
    result = edge_attention.measure(tiny_spec("gattn-bf16kv") | {"threads": 1, "batch": "full"})
    assert result["step_s"] > 0
    assert 0 < result["kv_bf16_rel_error"] < 1e-2


def test_interleaved_steps_alternates_processes_and_prints_medians(monkeypatch, capsys, tmp_path) -> None:
    import numba

    from benchmarks import _common, interleaved_steps

    threads = torch.get_num_threads(), numba.get_num_threads()
    specs = []

    def in_process(module, spec):
        specs.append((spec["tree"], spec["reorder"]))
        return interleaved_steps.measure(spec)

    monkeypatch.setattr(_common, "run_child", in_process)
    try:
        interleaved_steps.main(["--graph", "random", "--nodes", "200", "--edges", "2000", "--reorder", "none,auto",
                                "--rounds", "2", "--warmup", "1", "--steps", "2"])
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    here = os.path.dirname(os.path.dirname(os.path.abspath(interleaved_steps.__file__)))
    assert specs == [(here, "none"), (here, "auto")] * 2  # alternated, round after round
    out = capsys.readouterr().out
    assert sum(line.startswith("median") for line in out.splitlines()) == 2 and "peak RSS MB" in out
    with pytest.raises(SystemExit, match="no gattn package"):
        interleaved_steps.main(["--trees", str(tmp_path)])


def test_kv_projection_benchmark_pooled_output_faults_no_pages(capsys) -> None:
    from benchmarks import kv_projection

    threads = torch.get_num_threads()
    try:
        got = kv_projection.measure(4000, 16, 128, repeats=3, backward=True)  # a 2 MB output: pooled
        kv_projection.main(["--nodes", "4000", "--channels", "16", "--repeats", "2"])
    finally:
        torch.set_num_threads(threads)
    assert got["pooled"]["faults"] == 0 and got["pooled"]["s"] > 0 and got["F.linear"]["s"] > 0
    out = capsys.readouterr().out
    assert "faults pooled" in out and "forward + backward" in out


def test_cpu_passes_times_each_pass_against_the_gather_floor(monkeypatch, capsys) -> None:
    import numba

    from benchmarks import cpu_passes
    from gattn.kernels import cpu

    originals = {name: getattr(cpu, name) for name in cpu_passes.PASSES}
    calls = {name: 0 for name in cpu_passes.PASSES}

    class Counting(cpu_passes.PassTimer):
        def _timed(self, name, kernel):
            timed = super()._timed(name, kernel)

            def counted(*args):
                calls[name] += 1
                return timed(*args)

            return counted

    monkeypatch.setitem(cpu_passes.GRAPHS, "tiny", (300, 3000))
    monkeypatch.setattr(cpu_passes, "PassTimer", Counting)
    threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        cpu_passes.main(["--graphs", "tiny", "--threads", "1", "--repeats", "3"])
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    assert calls == {name: 3 for name in cpu_passes.PASSES}  # each pass once per timed step
    assert {name: getattr(cpu, name) for name in cpu_passes.PASSES} == originals  # the wrappers are gone
    out = capsys.readouterr().out
    for part in (*cpu_passes.PASS_NAMES, "floor: gather", "K|V weight gradient", "floor of a step"):
        assert part in out
    with pytest.raises(SystemExit):
        cpu_passes.main(["--graphs", "nosuch"])


def test_cpu_passes_floor_kernel_sums_each_destinations_rows() -> None:
    import numpy as np

    from benchmarks import cpu_passes
    from gattn.kernels import get_csr

    gen = torch.Generator().manual_seed(3)
    edge_index = torch.randint(0, 40, (2, 300), generator=gen)
    rows = torch.randn(40, 16, generator=gen)
    csr = get_csr(edge_index, 40, 40)
    expected = torch.zeros(40, 16).index_add_(0, edge_index[1], rows[edge_index[0]])
    for ahead in (0, 8):
        out = np.full((40, 16), np.nan, dtype=np.float32)
        cpu_passes._gather_kernel()(csr.rowptr.numpy(), csr.col.numpy(), rows.numpy(), out, ahead)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-5)
