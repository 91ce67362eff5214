"""The MIL pipeline on the platform: a short cross-validated run per pooling, ACMIL's loss in its
task module, per-fold pruning, the attention plot."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from gattn.pipelines import ConfigError, get_pipeline, make_config, run
from gattn.pipelines import mil as mil_module

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUICK = dict(dataset="digit-bags", folds=3, repeats=1, max_folds=1, epochs=3, patience=2, batch_size=16, hidden=(16,),
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
        {"lr": 1e-3, "weight_decay": 1e-4, "dropout": 0.1, "attention": 32, "heads": 2, "beta": 0.5})
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


def test_defaults_are_the_papers_protocol(pipeline):
    """Ilse et al.'s MIL-benchmark protocol (gattn/pipelines/mil.py says where each value comes from)."""
    config = make_config(pipeline, {})
    assert (config.folds, config.repeats, config.batch_size, config.epochs) == (10, 5, 1, 100)
    assert (config.lr, config.weight_decay, config.dropout) == (5e-4, 5e-3, 0.5)
    assert config.hidden == (256, 128, 64) and config.attention == 64
    assert config.monitor == "error_loss" and config.patience is None and config.threads == 1


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("mil_*.yaml")), ids=lambda p: p.stem)
def test_config_files_are_the_default_protocol(path, pipeline):
    from gattn.pipelines.config import config_dict, read_config_file

    values = read_config_file(path)
    assert values.pop("pipeline") == "mil" and path.stem == f"mil_{values['dataset']}"
    config = config_dict(make_config(pipeline, values))
    defaults = config_dict(make_config(pipeline, {"dataset": values["dataset"]}))
    assert config == defaults  # the files spell the protocol out; it is also the default


def test_best_epoch_has_the_lowest_validation_error_plus_loss(tmp_path, pipeline):
    import csv

    from sklearn.metrics import accuracy_score, log_loss

    config = make_config(pipeline, {**QUICK, "epochs": 6, "patience": None, "val_fraction": 0.3})
    result = run(pipeline, config, tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "fold-01" / "metrics.csv")))
    values = [float(r["val_error_loss"]) for r in rows]
    for r in rows:  # the monitored value is the error plus the BCE loss of the same epoch
        assert float(r["val_error_loss"]) == pytest.approx(1 - float(r["val_accuracy"]) + float(r["val_loss"]),
                                                           abs=1e-4)
    assert len(rows) == 6 and result.metrics["best_epoch"] == 1 + values.index(min(values))
    assert result.metrics["val_error_loss"] == pytest.approx(min(values), abs=1e-6)
    y, logits = [1, 0, 1, 1], torch.tensor([2.0, 0.5, -1.0, 3.0])  # the function itself, against sklearn
    expected = 1 - accuracy_score(y, logits > 0) + log_loss(y, torch.sigmoid(logits).numpy())
    assert mil_module.error_plus_loss(torch.tensor(y), logits) == pytest.approx(expected)


def test_monitor_loss_selects_by_the_validation_loss(tmp_path, pipeline):
    import csv

    config = make_config(pipeline, {**QUICK, "epochs": 5, "patience": None, "monitor": "loss", "val_fraction": 0.3})
    result = run(pipeline, config, tmp_path / "run")
    losses = [float(r["val_loss"]) for r in csv.DictReader(open(tmp_path / "run" / "fold-01" / "metrics.csv"))]
    assert result.metrics["best_epoch"] == 1 + losses.index(min(losses))


def test_training_runs_on_one_torch_and_one_numba_thread(tmp_path, pipeline, monkeypatch):
    """--threads defaults to 1 for MIL, and the platform sets torch's and numba's pools from it."""
    import numba

    seen = []
    original = mil_module.MILPipeline.build_model

    def spy(self, config, bags, split):
        seen.append((torch.get_num_threads(), numba.get_num_threads()))
        return original(self, config, bags, split)

    monkeypatch.setattr(mil_module.MILPipeline, "build_model", spy)
    outside = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(2)  # a pool of two outside the run (numba: as many as it was started with)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    before = (torch.get_num_threads(), numba.get_num_threads())
    try:
        run(pipeline, make_config(pipeline, {**QUICK, "epochs": 1}), tmp_path / "run")
        after = (torch.get_num_threads(), numba.get_num_threads())
    finally:
        numba.set_num_threads(outside[1])
        torch.set_num_threads(outside[0])
    assert seen == [(1, 1)]
    assert after == before  # restored afterwards
