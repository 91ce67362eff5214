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


def test_a_run_resumes_under_another_max_folds_and_keeps_its_folds(tmp_path, pipeline):
    mil_results.run_pair(pipeline, make_config(pipeline, {**QUICK, "max_folds": 1}), str(tmp_path))
    first = (tmp_path / "digit-bags-abmil" / "fold-01" / "result.json").read_text()
    metrics, _ = mil_results.run_pair(pipeline, make_config(pipeline, {**QUICK, "max_folds": 2}), str(tmp_path))
    assert metrics["splits"] == 2
    assert (tmp_path / "digit-bags-abmil" / "fold-01" / "result.json").read_text() == first  # kept, not retrained


def test_repetition_accuracy_counts_only_complete_repetitions():
    folds = [{"split": f"repeat-{r}-fold-{f:02d}", "test_accuracy": acc}
             for r, accs in ((1, (0.8, 1.0)), (2, (0.6, 0.8)), (3, (1.0,))) for f, acc in enumerate(accs, 1)]
    assert mil_results.repetition_accuracies(folds, 2) == pytest.approx([0.9, 0.7])
    assert mil_results.repetitions_cell([0.9, 0.7]) == "0.800 +- 0.100 (2)"
    assert mil_results.repetitions_cell([]) == "-"
    one_repeat = [{"split": "fold-01", "test_accuracy": 0.5}, {"split": "fold-02", "test_accuracy": 1.0}]
    assert mil_results.repetition_accuracies(one_repeat, 2) == pytest.approx([0.75])


def test_published_error_column_compares_with_the_papers_plus_minus():
    """'in published +-': whether our mean lies within the published mean +- its published error
    (Ilse et al.'s), next to the fold-std check."""
    base = {"dataset": "musk1", "pooling": "gated", "splits": 50, "test_accuracy_std": 0.12,
            "test_rocauc": 0.9, "test_rocauc_std": 0.1, "best_epoch": 50, "seconds": 1.0,
            **mil_results.published("musk1", "gated")}
    column = mil_results.HEADER.index("in published +-")
    near = mil_results.table_row({**base, "test_accuracy": 0.860})
    far = mil_results.table_row({**base, "test_accuracy": 0.840})
    assert near[mil_results.HEADER.index("published")] == "0.900 +- 0.050"
    assert near[column] == "yes" and far[column] == "no (-0.060)"
    assert far[mil_results.HEADER.index("in spread")] == "yes"  # within the fold std all the same
    hopfield = mil_results.table_row({**base, **mil_results.published("elephant", "hopfield"), "test_accuracy": 0.8})
    assert hopfield[column] == "-"
