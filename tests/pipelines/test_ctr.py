"""The CTR pipelines (din, dare, hiformer) on files the tests write in the real formats: a
tiny MovieLens ``u.data`` + ``u.item`` and a tiny Criteo tab-separated file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from gattn import cli
from gattn.pipelines import ConfigError, get_pipeline, load_checkpoint, make_config, run
from gattn.pipelines._ctr import StreamedBatches
from gattn.pipelines.config import read_config_file
from tests.datasets.test_behaviour import make_log, write_ml100k
from tests.datasets.test_criteo import make_rows, write_tsv

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUICK = dict(epochs=2, batch_size=64, eval_batch_size=100, holdout=3, embedding_dim=8, hidden=(16,),
             progress=False, threads=1)
DIN_QUICK = dict(QUICK, attention_hidden=(8,))
HIFORMER_QUICK = dict(epochs=2, batch_size=64, embedding_dim=8, hidden=(16,), layers=1, progress=False,
                      threads=1, min_count=2)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> Path:
    """40 users with 12-24 ratings each, in ml-100k's files."""
    folder = tmp_path_factory.mktemp("ml") / "ml-tiny"
    return write_ml100k(folder, make_log(num_users=40, num_items=30, per_user=(12, 25), seed=3))


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("criteo") / "day_0", make_rows(600, seed=1))


def gauc_reference(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    total = weight = 0.0
    for user in np.unique(users):
        mine = users == user
        if 0 < labels[mine].sum() < mine.sum():
            total += mine.sum() * roc_auc_score(labels[mine], scores[mine])
            weight += mine.sum()
    return total / weight


def test_din_config_resolution_and_errors(movielens):
    din = get_pipeline("din")
    config = make_config(din, {"dataset": str(movielens)})
    assert (config.data_format, config.label, config.positive_rating) == ("movielens", "rating", 4.0)
    assert config.batch_size == 1024 and din.selection_metric(config) == "gauc"
    with pytest.raises(ConfigError, match="--holdout 1 with --label rating"):
        make_config(din, {"dataset": str(movielens), "holdout": 1})
    make_config(din, {"dataset": str(movielens), "holdout": 1, "split": "global_time"})  # GAUC defined there
    with pytest.raises(ConfigError, match="attends over behaviour histories"):
        make_config(din, {"dataset": "criteo-sample"})
    with pytest.raises(ConfigError, match="neither a known data set"):
        make_config(din, {"dataset": str(movielens / "absent")})
    with pytest.raises(ConfigError, match="Taobao's UserBehavior.csv has no ratings"):
        make_config(din, {"dataset": "taobao", "label": "rating"})
    with pytest.raises(ConfigError, match="contradicts"):
        make_config(din, {"dataset": "movielens-100k", "data_format": "amazon"})
    assert make_config(din, {"dataset": "taobao"}).label == "sampled"
    dare = make_config(get_pipeline("dare"), {"dataset": str(movielens)})
    assert (dare.decoupled, dare.softmax, dare.top_k, dare.activation) == (True, True, 20, "prelu")
    hiformer = make_config(get_pipeline("hiformer"), {"dataset": str(movielens / "u.data")})
    assert hiformer.data_format == "criteo"  # a file is a Criteo file for Hiformer


def test_dare_on_a_taobao_file_with_sampled_negatives(tmp_path):
    log = make_log(num_users=30, num_items=40, per_user=(10, 20), seed=5)
    path = tmp_path / "UserBehavior.csv"
    path.write_text("".join(f"{u},{i},{i % 7},pv,{t}\n" for u, i, _, t in log))
    dare = get_pipeline("dare")
    config = make_config(dare, {"dataset": str(path), **QUICK, "top_k": 5, "num_negatives": 2})
    assert (config.data_format, config.label) == ("taobao", "sampled")
    data = dare.prepare(config)
    test = data.splits["test"]
    # one positive then its two sampled negatives, for every held-out interaction
    assert torch.equal(test.label.reshape(-1, 3), torch.tensor([[1.0, 0.0, 0.0]]).expand(len(test) // 3, 3))
    metrics = run(dare, config, tmp_path / "run").metrics
    assert 0 <= metrics["test_gauc"] <= 1 and 0 <= metrics["test_rocauc"] <= 1


def test_missing_data_names_the_folder(tmp_path):
    din = get_pipeline("din")
    with pytest.raises(FileNotFoundError, match="ml-100k"):
        din.prepare(make_config(din, {"dataset": "movielens-100k", "root": str(tmp_path)}))


def test_loader_batches_cover_every_sample_once(movielens):
    din = get_pipeline("din")
    config = make_config(din, {"dataset": str(movielens), **DIN_QUICK})
    data = din.prepare(config)
    train = data.splits["train"]
    seen = []
    for batch in din.datamodule(config, data, None).train_loader:
        ptr = batch["ptr"]
        assert ptr[0] == 0 and ptr[-1] == batch["history"]["hist_item_id"].numel() == \
            batch["history"]["hist_cate_id"].numel()
        assert torch.equal(batch["group"], batch["features"]["user_id"])
        for b in range(batch["label"].numel()):
            # find the sample by its (user, target, time) and compare its history
            matches = torch.nonzero((train.user_id == batch["features"]["user_id"][b])
                                    & (train.item_id == batch["features"]["item_id"][b])).flatten()
            hist = batch["history"]["hist_item_id"][ptr[b]:ptr[b + 1]]
            assert any(torch.equal(train[int(i)]["hist_item_id"], hist) for i in matches)
        seen.append(batch["label"].numel())
    assert sum(seen) == len(train) and max(seen) == config.batch_size


@pytest.mark.parametrize("name", ["din", "dare"])
def test_quick_run_metrics_match_the_checkpoint(name, movielens, tmp_path):
    pipeline = get_pipeline(name)
    config = make_config(pipeline, {"dataset": str(movielens), **(DIN_QUICK if name == "din" else {**QUICK,
                                                                                                    "top_k": 5})})
    result = run(pipeline, config, tmp_path / "run")
    metrics = result.metrics
    for key in ("val_gauc", "val_rocauc", "val_logloss", "test_gauc", "test_rocauc", "test_logloss"):
        assert key in metrics and not math.isnan(metrics[key]), key
    assert result.chance["test_rocauc"] == 0.5 and result.chance["test_logloss"] > 0.5
    # the reported test metrics are those of the best checkpoint's predictions
    data = pipeline.prepare(config)
    model = pipeline.build_model(config, data, None)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    model.eval()
    test = data.splits["test"]
    with torch.no_grad():
        logits = model({k: getattr(test, k) for k in ("user_id", "item_id", "cate_id")},
                       {"hist_item_id": test.hist_item_id, "hist_cate_id": test.hist_cate_id}, ptr=test.hist_ptr)
    labels, scores, users = test.label.numpy(), logits.numpy(), test.user_id.numpy()
    assert metrics["test_rocauc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["test_logloss"] == pytest.approx(log_loss(labels, 1 / (1 + np.exp(-scores))), abs=1e-5)
    assert metrics["test_gauc"] == pytest.approx(gauc_reference(labels, scores, users), abs=1e-6)
    rate = data.splits["train"].label.float().mean().item()
    assert result.chance["test_logloss"] == pytest.approx(log_loss(labels, np.full(len(labels), rate)), abs=1e-6)


def test_minibatch_aware_regularisation_enters_the_training_loss(movielens):
    din = get_pipeline("din")
    config = make_config(din, {"dataset": str(movielens), **DIN_QUICK, "mba_lambda": 0.5})
    data = din.prepare(config)
    model = din.build_model(config, data, None)
    task = din.task(config, data, model)
    batch = next(iter(din.datamodule(config, data, None).train_loader))
    output, target, _ = task.unpack(batch)
    loss = task.training_loss(output, target, batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(output, target)
    penalty = model.minibatch_aware_penalty(data.frequencies, batch["features"], batch["history"], ptr=batch["ptr"])
    assert penalty > 0 and loss.item() == pytest.approx((bce + 0.5 * penalty).item(), rel=1e-6)
    # the counts are those of the training split: every id of a training batch occurs there
    train = data.splits["train"]
    assert data.frequencies["item_id"].sum() == len(train) + train.hist_item_id.numel()
    off = din.task(make_config(din, {"dataset": str(movielens), **DIN_QUICK}), data, model)
    assert off.training_loss(output, target, batch).item() == pytest.approx(bce.item(), rel=1e-6)


def test_no_validation_trains_every_epoch_and_keeps_the_last(movielens, tmp_path):
    din = get_pipeline("din")
    config = make_config(din, {"dataset": str(movielens), **DIN_QUICK, "validation": False, "epochs": 3})
    metrics = run(din, config, tmp_path / "run").metrics
    assert metrics["epochs"] == 3 and "val_gauc" not in metrics and "test_gauc" in metrics
    with pytest.raises(ConfigError, match="drop --no-validation"):
        din.search_space(optuna.trial.FixedTrial({}), config)


def test_search_spaces():
    trial = optuna.trial.FixedTrial({"lr": 2e-3, "dropout": 0.1, "mba_lambda": 0.01, "activation": "prelu",
                                     "top_k": 10, "attention_embedding_dim": 16, "embedding_dim": 8, "layers": 2,
                                     "heads": 2})
    din = get_pipeline("din")
    assert din.search_space(trial, make_config(din, {})) == {
        "lr": 2e-3, "dropout": 0.1, "mba_lambda": 0.01, "activation": "prelu"}
    dare = get_pipeline("dare")
    assert dare.search_space(trial, make_config(dare, {}))["attention_embedding_dim"] == 16
    assert "attention_embedding_dim" not in dare.search_space(trial, make_config(dare, {"decoupled": False}))
    hiformer = get_pipeline("hiformer")
    assert hiformer.search_space(trial, make_config(hiformer, {}))["layers"] == 2


def test_hiformer_on_a_criteo_file(criteo_file, tmp_path):
    hiformer = get_pipeline("hiformer")
    config = make_config(hiformer, {"dataset": str(criteo_file), "cache_dir": str(tmp_path / "cache"),
                                    **HIFORMER_QUICK})
    result = run(hiformer, config, tmp_path / "run")
    assert {"test_rocauc", "test_logloss", "val_rocauc"} <= set(result.metrics)
    assert "test_gauc" not in result.metrics and "test_gauc" not in result.chance
    assert hiformer.selection_metric(config) == "rocauc"


def test_hiformer_streamed_batches_hold_the_same_rows(criteo_file, tmp_path):
    hiformer = get_pipeline("hiformer")
    values = {"dataset": str(criteo_file), "cache_dir": str(tmp_path / "cache"), **HIFORMER_QUICK}
    memory = hiformer.prepare(make_config(hiformer, values))
    config = make_config(hiformer, {**values, "stream": True, "shuffle_buffer": 100, "batch_size": 32})
    streamed = hiformer.prepare(config)
    module = hiformer.datamodule(config, streamed, None)

    def rows(loader) -> torch.Tensor:
        return torch.cat([torch.stack([b["label"], *b["features"].values()], 1) for b in loader])

    def reference(split) -> torch.Tensor:
        columns = [split.sparse[:, f.column] if f.key == "sparse" else split.dense[:, f.column] for f in memory.fields]
        return torch.stack([split.label, *columns], 1)

    assert torch.equal(rows(module.test_loader), reference(memory.splits["test"]))  # in file order
    first, second = rows(module.train_loader), rows(module.train_loader)
    expected = reference(memory.splits["train"])
    assert not torch.equal(first, expected) and not torch.equal(first, second)  # shuffled, anew every epoch
    for got in (first, second):
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))
    sizes = [b["label"].numel() for b in module.train_loader]
    assert all(s == 32 for s in sizes[:-1]) and 0 < sizes[-1] <= 32
    assert isinstance(module.train_loader.dataset, StreamedBatches)
    with pytest.raises(ConfigError, match="--stream reads Criteo files"):
        make_config(hiformer, {**HIFORMER_QUICK, "dataset": "movielens-100k", "stream": True})


def test_hiformer_on_behaviour_data(movielens, tmp_path):
    hiformer = get_pipeline("hiformer")
    config = make_config(hiformer, {"dataset": str(movielens), **HIFORMER_QUICK, "holdout": 3})
    metrics = run(hiformer, config, tmp_path / "run").metrics
    assert {"test_gauc", "test_rocauc", "test_logloss"} <= set(metrics)


def _cli_common(movielens: Path, tmp_path: Path) -> list[str]:
    return ["--dataset", str(movielens), "--holdout", "3", "--epochs", "1", "--batch-size", "64",
            "--embedding-dim", "8", "--hidden", "16", "--threads", "1", "--no-progress",
            "--runs-dir", str(tmp_path / "runs")]


def test_cli_tune(movielens, tmp_path, capsys):
    assert cli.main(["tune", "dare", *_cli_common(movielens, tmp_path), "--trials", "1", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and "val_gauc" in printed


def test_cli_train(movielens, criteo_file, tmp_path, capsys):
    common = _cli_common(movielens, tmp_path)
    out = tmp_path / "din.json"
    assert cli.main(["train", "din", *common, "--attention-hidden", "8", "--mba-lambda", "0.1",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test_gauc" in printed and "0.5000" in printed  # the chance column
    saved = json.loads(out.read_text())
    assert saved["config"]["mba_lambda"] == 0.1 and "val_gauc" in saved["metrics"]
    assert cli.main(["train", "hiformer", "--dataset", str(criteo_file), "--cache-dir", str(tmp_path / "cache"),
                     "--min-count", "2", "--epochs", "1", "--layers", "1", "--embedding-dim", "8", "--threads", "1",
                     "--no-progress", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "test_rocauc" in capsys.readouterr().out
    assert cli.main(["train", "din", "--dataset", "criteo-sample", "--no-progress"]) == 1
    assert "attends over behaviour histories" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["din_movielens-100k", "dare_movielens-100k", "hiformer_criteo-sample"])
def test_config_files_resolve(name):
    values = read_config_file(CONFIGS / f"{name}.yaml")
    pipeline = get_pipeline(values.pop("pipeline"))
    config = make_config(pipeline, values)
    assert name.startswith(pipeline.name) and config.dataset == name.split("_", 1)[1]
    assert all(getattr(config, key) == (tuple(v) if isinstance(v, list) else v) for key, v in values.items())


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "movielens" / "ml-100k" / "u.data").is_file(), reason="no ../shared/data")
def test_real_movielens_one_epoch(tmp_path):
    din = get_pipeline("din")
    config = make_config(din, {"dataset": "movielens-100k", "root": str(SHARED), "epochs": 1, "threads": 1,
                               "progress": False})
    metrics = run(din, config, tmp_path / "run").metrics
    assert metrics["test_rocauc"] > 0.7 and metrics["test_gauc"] > 0.6
