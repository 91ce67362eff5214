"""benchmarks/large_graphs.py: the memory cap's clean failure, the extrapolated mini-batch
epoch and the table (children stubbed where a real run would take minutes)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import large_graphs
from benchmarks._common import run_child


def test_an_allocation_past_the_cap_is_reported_as_not_fitting() -> None:
    torch_error = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 17179869184 bytes. Error code 12")
    result = large_graphs._does_not_fit(torch_error, 14.0)
    assert result["error"][0].startswith("does not fit in 14 GiB: needs more than")
    assert result["needs_more_than_gib"] >= 16.0  # at least the allocation that failed
    assert large_graphs._does_not_fit(MemoryError(), 14.0)["needs_more_than_gib"] > 0
    assert large_graphs._does_not_fit(RuntimeError("shapes do not match"), 14.0) is None


@pytest.mark.slow
def test_a_child_under_a_small_cap_fails_cleanly(tmp_path) -> None:
    """A real child: building an ogbn-products-sized graph (several GB) under a 4 GiB cap."""
    spec = dict(make=True, graph="ogbn-products", scale=1.0, graph_file=str(tmp_path / "g.pt"), memory_cap_gb=4.0)
    result = run_child("benchmarks.large_graphs", spec, timeout=600)
    assert result["error"][0].startswith("does not fit in 4 GiB"), result
    assert not (tmp_path / "g.pt").exists()


def test_main_table_says_what_was_extrapolated_and_what_did_not_fit(monkeypatch, capsys) -> None:
    def fake(module, spec, timeout):
        if spec.get("make"):
            return {"graph": "g", "nodes": 10, "edges": 20}
        if spec["mode"] == "full" and spec["conv"] != "gattn":
            return {"error": ["does not fit in 14 GiB: needs more than 20.0 GiB"], "needs_more_than_gib": 20.0}
        seconds = {"gattn": 1.0, "transformer": 2.0, "gat": 1.5}[spec["conv"]]
        out = {"graph": "g", "nodes": 10, "edges": 20, "seconds": seconds, "peak_mb": 100.0}
        return {**out, "batches": 50, "timed_batches": 5} if spec["mode"] == "mini" else out

    monkeypatch.setattr(large_graphs, "run_child", fake)
    monkeypatch.setattr(sys, "argv", ["large_graphs.py", "--graphs", "ogbn-products", "--modes", "full", "mini",
                                      "--max-batches", "5", "--chart", ""])
    large_graphs.main()
    printed = capsys.readouterr().out
    assert "does not fit in 14 GiB: needs more than 20.0 GiB" in printed
    assert "5 of 50 batches timed, x10" in printed
    assert "memory cap 14.0 GiB" in printed
