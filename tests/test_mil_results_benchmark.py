"""benchmarks/mil_results.py: run folders kept and resumed, tables of saved and of unfinished runs."""

from __future__ import annotations

import pytest

from benchmarks import mil_results
from gattn.pipelines import get_pipeline, make_config

QUICK = dict(dataset="digit-bags", folds=3, repeats=1, epochs=1, batch_size=16, hidden=(8,), attention=4,
             plot=False, progress=False)


@pytest.fixture
def pipeline():
    return get_pipeline("mil")


def test_runs_dir_table_matches_the_run_and_counts_unfinished_folds(tmp_path, pipeline):
    config = make_config(pipeline, {**QUICK, "pooling": "gated"})
    metrics, _ = mil_results.run_pair(pipeline, config, str(tmp_path))
    [record] = mil_results.records_from_runs(tmp_path)
    assert (record["dataset"], record["pooling"], record["splits"], record["planned"]) == ("digit-bags", "gated", 3, 3)
    for key in ("test_accuracy", "test_rocauc", "test_accuracy_std", "test_rocauc_std"):
        assert record[key] == pytest.approx(metrics[key])  # the same mean and std as the platform's
    assert record["protocol"] == mil_results.protocol_of(config)

    (tmp_path / "digit-bags-gated" / "fold-03" / "result.json").unlink()  # a run stopped after two folds
    [partial] = mil_results.records_from_runs(tmp_path)
    assert (partial["splits"], partial["planned"]) == (2, 3)
    assert mil_results.table_row(partial)[2] == "2/3"
    metrics, _ = mil_results.run_pair(pipeline, config, str(tmp_path))  # resumed: trains the missing fold
    assert metrics["splits"] == 3 and (tmp_path / "digit-bags-gated" / "fold-03" / "result.json").is_file()


def test_a_runs_dir_of_another_configuration_is_refused(tmp_path, pipeline):
    mil_results.run_pair(pipeline, make_config(pipeline, {**QUICK, "max_folds": 1}), str(tmp_path))
    with pytest.raises(SystemExit, match="epochs differ"):
        mil_results.run_pair(pipeline, make_config(pipeline, {**QUICK, "max_folds": 1, "epochs": 2}), str(tmp_path))


def test_in_spread_says_the_signed_gap():
    assert mil_results.in_spread(0.85, 0.05, 0.892) == "yes"
    assert mil_results.in_spread(0.80, 0.05, 0.892) == "no (-0.092)"
    assert mil_results.in_spread(0.80, 0.05, None) == "-"
