"""The MIL pipeline: contract, a short cross-validated run per pooling, the attention plot."""

from __future__ import annotations

import argparse

import pytest
import torch

from gattn.pipelines import load_pipeline
from gattn.pipelines import mil as pipeline

QUICK = dict(
    dataset="digit-bags",
    folds=3,
    max_folds=1,
    epochs=3,
    patience=2,
    batch_size=16,
    hidden=(16,),
    attention=8,
    plot=False,
)


def test_contract():
    module = load_pipeline("mil")
    assert module.NAME == "mil" and module.METRIC == "rocauc" and module.DIRECTION == "maximize"
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    config = vars(parser.parse_args(["--pooling", "hopfield", "--hidden", "32,16"]))
    assert config["hidden"] == (32, 16) and config["folds"] == 10


@pytest.mark.parametrize("pooling", pipeline.POOLINGS)
def test_quick_run_per_pooling(pooling, tmp_path):
    result = pipeline.run(
        {**QUICK, "pooling": pooling, "runs_dir": str(tmp_path), "checkpoint": str(tmp_path / "best.pt")}
    )
    for key in ("val_rocauc", "test_rocauc", "test_rocauc_std", "test_accuracy"):
        assert key in result
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["folds"] == 1
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert state["pooling"] == pooling


def test_search_space_and_plot(tmp_path):
    import optuna

    trial = optuna.trial.FixedTrial(
        {"lr": 1e-3, "weight_decay": 1e-4, "dropout": 0.1, "attention": 16, "heads": 2, "beta": 0.5}
    )
    params = pipeline.search_space(trial, {"pooling": "hopfield"})
    assert params["heads"] == 2 and params["beta"] == 0.5
    pipeline.run({**QUICK, **params, "pooling": "hopfield", "plot": True, "runs_dir": str(tmp_path)})
    png = tmp_path / "mil_digit-bags_hopfield_attention.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_config():
    with pytest.raises(ValueError, match="pooling"):
        pipeline.run({**QUICK, "pooling": "max"})


def test_optuna_trial_reports_per_fold():
    import optuna

    study = optuna.create_study(direction="maximize")
    config = {**QUICK, "pooling": "gated", "max_folds": 2}

    def objective(trial):
        return pipeline.run({**config, **pipeline.search_space(trial, config)}, trial)["val_rocauc"]

    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [0, 1]


def test_no_validation_split_trains_all_epochs():
    result = pipeline.run({**QUICK, "pooling": "abmil", "val_fraction": 0.0})
    assert result["epochs"] == QUICK["epochs"] and result["val_rocauc"] != result["val_rocauc"]
