"""The MIL pipeline on the platform: a short cross-validated run per pooling, ACMIL's loss in its
task module, per-fold pruning, the attention plot."""

from __future__ import annotations

import optuna
import pytest
import torch

from gattn.pipelines import ConfigError, get_pipeline, make_config, run
from gattn.pipelines import mil as mil_module

QUICK = dict(dataset="digit-bags", folds=3, max_folds=1, epochs=3, patience=2, batch_size=16, hidden=(16,),
             attention=8, plot=False, progress=False)


@pytest.fixture
def pipeline():
    return get_pipeline("mil")


def test_config_from_options(pipeline):
    config = make_config(pipeline, {"pooling": "hopfield", "hidden": "32,16"})
    assert config.hidden == (32, 16) and config.folds == 10 and config.epochs == 100
    with pytest.raises(ConfigError, match="--pooling must be one of"):
        make_config(pipeline, {**QUICK, "pooling": "max"})
    with pytest.raises(ConfigError, match="--folds must be >= 2"):
        make_config(pipeline, {"folds": 1})
    with pytest.raises(ConfigError, match=r"--dropout must be in \[0, 1\)"):
        make_config(pipeline, {"dropout": 1.5})


@pytest.mark.parametrize("pooling", mil_module.POOLINGS)
def test_quick_run_per_pooling(pooling, tmp_path, pipeline):
    result = run(pipeline, make_config(pipeline, {**QUICK, "pooling": pooling}), tmp_path / "run")
    metrics = result.metrics
    for key in ("val_rocauc", "test_rocauc", "test_accuracy", "val_loss"):
        assert key in metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["splits"] == 1
    assert result.chance["test_rocauc"] == 0.5 and 0.5 <= result.chance["test_accuracy"] < 1
    assert (tmp_path / "run" / "fold-01" / "checkpoints" / "best.ckpt").is_file()


def test_accuracy_thresholds_the_bag_logits(tmp_path, pipeline):
    """Accuracy and ROC-AUC of a trained model agree with scikit-learn on its own logits."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    config = make_config(pipeline, {**QUICK, "epochs": 10, "lr": 5e-3, "hidden": (32,), "pooling": "abmil"})
    result = run(pipeline, config, tmp_path / "run")
    bags = pipeline.prepare(config)
    split = pipeline.splits(config, bags)[0]
    _, _, test = pipeline._standardised(bags, split)
    model = pipeline.build_model(config, bags, split)
    from gattn.pipelines import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "fold-01" / "checkpoints" / "best.ckpt")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    model.eval()
    with torch.no_grad():
        logits = model(test.instances, test.ptr)
    y = test.labels.numpy()
    assert result.metrics["test_accuracy"] == pytest.approx(accuracy_score(y, logits.numpy() > 0))
    assert result.metrics["test_rocauc"] == pytest.approx(roc_auc_score(y, logits.numpy()))
    assert result.metrics["test_accuracy"] > 0.6  # digit bags are learnable in 10 epochs


def test_acmil_trains_on_its_own_loss(tmp_path, pipeline, monkeypatch):
    from gattn.nn.mil import ACMIL

    calls = []
    original = ACMIL.loss
    monkeypatch.setattr(ACMIL, "loss", lambda self, out, y: calls.append(1) or original(self, out, y))
    run(pipeline, make_config(pipeline, {**QUICK, "pooling": "acmil", "epochs": 1}), tmp_path / "run")
    assert calls  # bag + branch + diversity terms, from the MIL task module


def test_search_space_and_plot(tmp_path, pipeline):
    trial = optuna.trial.FixedTrial(
        {"lr": 1e-3, "weight_decay": 1e-4, "dropout": 0.1, "attention": 16, "heads": 2, "beta": 0.5})
    params = pipeline.search_space(trial, make_config(pipeline, {"pooling": "hopfield"}))
    assert params["heads"] == 2 and params["beta"] == 0.5
    config = make_config(pipeline, {**QUICK, **params, "pooling": "hopfield", "plot": True})
    result = run(pipeline, config, tmp_path / "run")
    png = tmp_path / "run" / "attention_digit-bags_hopfield.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert result.files["attention plot"] == str(png)


def test_optuna_trial_reports_per_fold(tmp_path, pipeline):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    run(pipeline, make_config(pipeline, {**QUICK, "pooling": "gated", "max_folds": 2}), tmp_path / "r", trial=trial)
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0, 1]


def test_no_validation_split_trains_all_epochs(tmp_path, pipeline):
    result = run(pipeline, make_config(pipeline, {**QUICK, "pooling": "abmil", "val_fraction": 0.0}), tmp_path / "r")
    assert result.metrics["epochs"] == QUICK["epochs"] and "val_rocauc" not in result.metrics


def test_repeats_name_their_folds(pipeline):
    config = make_config(pipeline, {**QUICK, "repeats": 2, "max_folds": None})
    names = [split.name for split in pipeline.splits(config, pipeline.prepare(config))]
    assert names[:2] == ["repeat-1-fold-01", "repeat-1-fold-02"] and names[-1] == "repeat-2-fold-03"
