"""The MIMIC-III loader benchmark's code on tiny files (its timings are not checked): the
like-for-like pandas reference gives exactly the loader's result, and every method runs."""

from __future__ import annotations

import pytest

from benchmarks import mimic_loader
from gattn.datasets.mimic import load_notes, write_mimic_fixture, write_noteevents


def loader_result(directory, cache):
    table = load_notes(directory, cache_dir=cache).read()
    return dict(zip(table.column("HADM_ID").to_pylist(), table.column("TEXT").to_pylist())), dict(
        zip(table.column("HADM_ID").to_pylist(), table.column("NUM_NOTES").to_pylist()))


def test_pandas_reference_equals_the_loader_on_the_fixture(tmp_path):
    fx = write_mimic_fixture(tmp_path, num_admissions=40, seed=7, tables=("NOTEEVENTS",))
    texts, counts = mimic_loader.pandas_reference(fx.mimic_dir)
    ours, our_counts = loader_result(fx.mimic_dir, tmp_path / "cache")
    assert texts.to_dict() == ours and counts.to_dict() == our_counts


def test_generated_noteevents_and_every_method(tmp_path):
    stats = write_noteevents(tmp_path / "NOTEEVENTS.csv", 3_000, seed=1)
    assert stats["notes"] == 3_000 and stats["bytes"] > 1_000_000 and stats["discharge_notes"] > 30
    texts, _ = mimic_loader.pandas_reference(tmp_path)
    ours, _ = loader_result(tmp_path, tmp_path / "cache0")
    assert texts.to_dict() == ours and len(ours) > 20
    spec = {"dir": str(tmp_path), "cache": str(tmp_path / "cache")}
    for method in mimic_loader.METHODS:
        result = mimic_loader.measure({**spec, "method": method})
        assert result["s"] > 0 and result["peak_mb"] >= result["base_mb"] > 0
        if method.startswith("gattn"):
            assert result["rows"] == 3_000 and result["admissions"] == len(ours)
            assert result["from_cache"] == (method == "gattn cached run")
    with pytest.raises(ValueError, match="unknown method"):
        mimic_loader.measure({**spec, "method": "dask"})
