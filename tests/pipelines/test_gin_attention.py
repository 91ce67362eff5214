"""The GIN-Attention pipeline on a tiny graph the tests write in Planetoid's raw format: a quick
run per attention, the metrics against scikit-learn on the best checkpoint, self-loops, the
command line (train and tune)."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from gattn import cli
from gattn.pipelines import ConfigError, get_pipeline, make_config, run
from tests.datasets.test_planetoid import write_planetoid
from tests.pipelines.test_latte import best_model

QUICK = dict(dataset="Cora", hidden=16, heads=2, epochs=3, progress=False, lr=0.01)


@pytest.fixture
def pipeline():
    return get_pipeline("gin_attention")


@pytest.fixture
def root(tmp_path):
    write_planetoid(tmp_path / "planetoid" / "Cora" / "raw")
    return tmp_path


@pytest.mark.parametrize("attention", ["gin", "mha"])
def test_quick_run_per_attention(attention, pipeline, root, tmp_path):
    config = make_config(pipeline, {**QUICK, "root": str(root), "attention": attention})
    result = run(pipeline, config, tmp_path / "run")
    for key in ("val_f1_micro", "val_f1_macro", "test_f1_micro", "test_f1_macro", "test_accuracy"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    # one label per node: Micro-F1 is the accuracy
    assert result.metrics["test_f1_micro"] == pytest.approx(result.metrics["test_accuracy"])
    assert result.metrics["epochs"] == 3 and 0.0 < result.chance["test_accuracy"] < 1.0


def test_parameter_counts_match_and_config_errors(pipeline, root):
    counts = []
    for attention in ("gin", "mha"):
        config = make_config(pipeline, {**QUICK, "root": str(root), "attention": attention})
        data = pipeline.prepare(config)
        model = pipeline.build_model(config, data, pipeline.splits(config, data)[0])
        counts.append(sum(p.numel() for p in model.parameters()))
    assert abs(counts[0] - counts[1]) <= 0.02 * counts[1]  # "of the same size"
    with pytest.raises(ConfigError, match="--attention must be one of gin, mha"):
        make_config(pipeline, {"attention": "gat"})
    with pytest.raises(ConfigError, match="--dataset must be one of Cora, CiteSeer, PubMed"):
        make_config(pipeline, {"dataset": "cora"})
    with pytest.raises(FileNotFoundError, match=r"ind\.citeseer\.x.*not found in folder"):
        pipeline.prepare(make_config(pipeline, {"dataset": "CiteSeer", "root": str(root)}))


def test_self_loops_one_per_node(pipeline, root):
    with_loops = pipeline.prepare(make_config(pipeline, {**QUICK, "root": str(root)}))
    without = pipeline.prepare(make_config(pipeline, {**QUICK, "root": str(root), "self_loops": False}))
    src, dst = with_loops.edge_index
    assert int((src == dst).sum()) == with_loops.num_nodes
    assert int((without.edge_index[0] == without.edge_index[1]).sum()) == 0
    assert with_loops.edge_index.size(1) == without.edge_index.size(1) + with_loops.num_nodes


def test_metrics_are_sklearn_of_the_best_checkpoint(pipeline, root, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    config = make_config(pipeline, {**QUICK, "epochs": 6, "root": str(root)})
    result = run(pipeline, config, tmp_path / "run")
    data, model = best_model(pipeline, config, tmp_path / "run")
    with torch.no_grad():
        predicted = model(data.x, data.edge_index).argmax(1)
    truth, guess = data.y[data.test_mask].numpy(), predicted[data.test_mask].numpy()
    assert result.metrics["test_accuracy"] == pytest.approx(accuracy_score(truth, guess))
    assert result.metrics["test_f1_macro"] == pytest.approx(f1_score(truth, guess, average="macro"))


def test_search_space(pipeline):
    trial = optuna.trial.FixedTrial({"lr": 0.005, "weight_decay": 5e-4, "dropout": 0.5, "hidden": 32, "heads": 4,
                                     "temperature": 1.0})
    params = pipeline.search_space(trial, make_config(pipeline, {}))
    assert params["temperature"] == 1.0
    assert "temperature" not in pipeline.search_space(trial, make_config(pipeline, {"attention": "mha"}))
    make_config(pipeline, params)  # every suggestion is a valid option value


def _cli_options(root, tmp_path):
    return ["--root", str(root), "--hidden", "16", "--heads", "2", "--epochs", "2", "--no-progress",
            "--runs-dir", str(tmp_path / "runs")]


def test_cli_train(root, tmp_path, capsys):
    out = tmp_path / "train.json"
    assert cli.main(["train", "gin_attention", *_cli_options(root, tmp_path), "--json", str(out)]) == 0
    assert "test_f1_macro" in capsys.readouterr().out
    assert "val_f1_micro" in json.loads(out.read_text())["metrics"]


def test_cli_tune(root, tmp_path, capsys):
    assert cli.main(["tune", "gin_attention", *_cli_options(root, tmp_path), "--trials", "1", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and "f1_micro" in printed
