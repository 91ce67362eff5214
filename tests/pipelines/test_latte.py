"""The LATTE pipeline on a tiny HeCo-layout folder the tests write: a quick run per model, the
metrics against scikit-learn on the best checkpoint, the proximity loss, the beta artefacts,
the command line (train and tune) and clear errors."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from gattn import cli
from gattn.pipelines import ConfigError, get_pipeline, load_checkpoint, make_config, run
from gattn.pipelines import latte as latte_module
from tests.datasets.test_hetero import acm_like

QUICK = dict(hidden=8, heads=2, epochs=3, patience=None, progress=False, lr=0.01)


@pytest.fixture
def pipeline():
    return get_pipeline("latte")


@pytest.fixture
def acm(tmp_path):
    acm_like(tmp_path / "hetero" / "acm")
    return tmp_path


def test_presets_and_conflicts(pipeline, acm):
    config = make_config(pipeline, {"dataset": "acm", "root": str(acm)})
    assert (config.layers, config.heads, config.model) == (2, 4, "latte")
    han = make_config(pipeline, {"dataset": "acm", "root": str(acm), "model": "han"})
    assert (han.layers, han.heads) == (1, 8)
    assert make_config(pipeline, {"model": "rgcn"}).heads is None
    with pytest.raises(ConfigError, match="--proximity-weight is LATTE's loss"):
        make_config(pipeline, {"model": "hgt", "proximity_weight": 0.1})
    with pytest.raises(ConfigError, match="--heads: --model rgcn"):
        make_config(pipeline, {"model": "rgcn", "heads": 2})
    with pytest.raises(ConfigError, match="--meta-weights applies to --model latte only; --model hgt"):
        make_config(pipeline, {"model": "hgt", "meta_weights": "structure"})
    with pytest.raises(ConfigError, match="--metapath-neighbours applies to --model han-metapath only"):
        make_config(pipeline, {"model": "han", "metapath_neighbours": 8})
    with pytest.raises(ConfigError, match="--model must be one of"):
        make_config(pipeline, {"model": "gat"})


def test_dataset_is_a_name_under_the_root_or_a_folder(pipeline, acm, tmp_path):
    by_name = make_config(pipeline, {"dataset": "acm", "root": str(acm)})
    assert latte_module.dataset_folder(by_name) == acm / "hetero" / "acm"
    by_path = make_config(pipeline, {"dataset": str(acm / "hetero" / "acm")})
    assert latte_module.dataset_folder(by_path) == acm / "hetero" / "acm"
    with pytest.raises(ConfigError, match="--dataset must be one of acm.*no such folder"):
        latte_module.dataset_folder(make_config(pipeline, {"dataset": str(tmp_path / "nowhere")}))
    missing = make_config(pipeline, {"dataset": "dblp", "root": str(acm)})
    with pytest.raises(FileNotFoundError, match="dblp"):
        pipeline.prepare(missing)


@pytest.mark.parametrize("model", ["latte", "han", "hgt", "rgcn", "han-metapath"])
def test_quick_run_per_model(model, pipeline, acm, tmp_path):
    config = make_config(pipeline, {**QUICK, "dataset": "acm", "root": str(acm), "model": model,
                                    "heads": None if model == "rgcn" else 2})
    result = run(pipeline, config, tmp_path / "run")
    for key in ("val_f1_micro", "val_f1_macro", "test_f1_micro", "test_f1_macro"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert result.metrics["epochs"] == 3 and 0.0 <= result.chance["test_f1_micro"] <= 1.0
    assert ("beta plot" in result.files) == (model == "latte")


def test_metrics_are_sklearn_f1_of_the_best_checkpoint(pipeline, acm, tmp_path):
    from sklearn.metrics import f1_score

    config = make_config(pipeline, {**QUICK, "epochs": 5, "dataset": "acm", "root": str(acm)})
    result = run(pipeline, config, tmp_path / "run")
    data, model = best_model(pipeline, config, tmp_path / "run")
    x = {t: data[t].x for t in data.node_types if "x" in data[t]}
    with torch.no_grad():
        predicted = model(x, data.edge_index_dict).argmax(1)
    store = data["p"]
    truth, guess = store.y[store.test_mask].numpy(), predicted[store.test_mask].numpy()
    assert result.metrics["test_f1_micro"] == pytest.approx(f1_score(truth, guess, average="micro"))
    assert result.metrics["test_f1_macro"] == pytest.approx(f1_score(truth, guess, average="macro"))


def best_model(pipeline, config, run_dir):
    """The data and the model of a single-split run, restored from its best checkpoint (eval mode)."""
    data = pipeline.prepare(config)
    model = pipeline.build_model(config, data, pipeline.splits(config, data)[0])
    state = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return data, model.eval()


def test_beta_artefacts(pipeline, acm, tmp_path):
    config = make_config(pipeline, {**QUICK, "dataset": str(acm / "hetero" / "acm")})
    result = run(pipeline, config, tmp_path / "run")
    assert (tmp_path / "run" / "beta_acm.png").stat().st_size > 0
    betas = json.loads((tmp_path / "run" / "beta.json").read_text())
    assert len(betas) == 2  # one entry per layer
    for layer in betas:
        for node_type, slots in layer.items():
            assert "self" in slots and sum(slots.values()) == pytest.approx(1.0, abs=1e-5), node_type
    assert set(betas[1]["p"]) == {"pa.ap", "ps.sp", "self"}
    assert result.files["beta"].endswith("beta.json")


def test_proximity_loss_is_added_in_training(pipeline, acm, tmp_path, monkeypatch):
    from gattn.nn.latte import LATTEConv

    calls = []
    original = LATTEConv.proximity_loss
    monkeypatch.setattr(LATTEConv, "proximity_loss",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    config = make_config(pipeline, {**QUICK, "epochs": 2, "dataset": "acm", "root": str(acm), "plot": False})
    run(pipeline, config, tmp_path / "off")
    assert not calls
    run(pipeline, make_config(pipeline, {**QUICK, "epochs": 2, "dataset": "acm", "root": str(acm),
                                         "proximity_weight": 0.5, "plot": False}), tmp_path / "on")
    assert len(calls) == 2 * 2  # two layers, two training steps; never in evaluation


def test_graphs_per_model(acm):
    from gattn.datasets import load_heco

    data = load_heco(acm / "hetero" / "acm", metapaths=True)
    relations = latte_module.model_graph("latte", data)
    assert ("p", "pap", "p") not in relations and ("p", "pa", "a") in relations
    han = latte_module.model_graph("han", data)
    assert torch.equal(han[("s", "self", "s")], torch.arange(3).repeat(2, 1))
    assert set(latte_module.model_graph("han-metapath", data)) == {("p", "pap", "p")}
    (acm / "hetero" / "acm" / "pap.npz").unlink()
    with pytest.raises(ConfigError, match="han-metapath needs meta-path files"):
        latte_module.model_graph("han-metapath", load_heco(acm / "hetero" / "acm", metapaths=True))


def test_metapath_sampling_keeps_at_most_k_per_destination():
    edge_index = torch.stack([torch.arange(30), torch.tensor([0] * 20 + [1] * 7 + [2] * 3)])
    sampled = latte_module.sample_per_destination(edge_index, 5, seed=0)
    assert torch.bincount(sampled[1]).tolist() == [5, 5, 3]
    pairs = {tuple(p) for p in edge_index.t().tolist()}
    assert all(tuple(p) in pairs for p in sampled.t().tolist())


def test_search_space(pipeline):
    trial = optuna.trial.FixedTrial({"lr": 0.005, "weight_decay": 1e-3, "dropout": 0.3, "hidden": 32, "heads": 4,
                                     "layers": 2, "threshold": 0.01})
    params = pipeline.search_space(trial, make_config(pipeline, {}))
    assert params["heads"] == 4 and params["layers"] == 2
    assert "heads" not in pipeline.search_space(trial, make_config(pipeline, {"model": "rgcn"}))
    make_config(pipeline, params)  # every suggestion is a valid option value


def _cli_options(root, tmp_path):
    return ["--dataset", "acm", "--root", str(root), "--hidden", "8", "--heads", "2", "--epochs", "2",
            "--no-progress", "--runs-dir", str(tmp_path / "runs")]


def test_cli_train(acm, tmp_path, capsys):
    out = tmp_path / "train.json"
    assert cli.main(["train", "latte", *_cli_options(acm, tmp_path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test_f1_macro" in printed and "beta plot" in printed
    assert "val_f1_micro" in json.loads(out.read_text())["metrics"]


def test_cli_tune(acm, tmp_path, capsys):
    assert cli.main(["tune", "latte", *_cli_options(acm, tmp_path), "--trials", "1", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and "f1_macro" in printed


def test_mini_batch_options_are_checked(pipeline):
    with pytest.raises(ConfigError, match="--batch-size applies to mini-batch training only"):
        make_config(pipeline, {"batch_size": 16})
    with pytest.raises(ConfigError, match="--fanout: --model han-metapath"):
        make_config(pipeline, {"model": "han-metapath", "fanout": "2,2"})
    with pytest.raises(ConfigError, match="--fanout counts"):
        make_config(pipeline, {"fanout": "2,-2,2"})
    assert make_config(pipeline, {"fanout": "5,5,5", "batch_size": 16}).fanout == (5, 5, 5)


@pytest.mark.parametrize("model", ["latte", "hgt"])
def test_mini_batch_run(model, pipeline, acm, tmp_path):
    config = make_config(pipeline, {**QUICK, "epochs": 2, "dataset": "acm", "root": str(acm), "model": model,
                                    "fanout": "3,3,3", "batch_size": 5, "plot": False})
    data = pipeline.prepare(config)
    loaders = pipeline.datamodule(config, data, None)
    labelled = int(data[data.target_type].train_mask.sum())
    assert len(loaders.train_loader) == -(-labelled // 5) > 1
    result = run(pipeline, config, tmp_path / "run")
    assert 0.0 <= result.metrics["test_f1_macro"] <= 1.0 and result.metrics["epochs"] == 2


def test_mini_batches_with_every_neighbour_give_the_full_batch_logits(pipeline, acm):
    """-1 fan-outs over LATTE's 3 hops: each batch's seed logits (through the task, as in
    training) are the whole graph's, the featureless node types' embeddings included."""
    config = make_config(pipeline, {**QUICK, "dataset": "acm", "root": str(acm), "fanout": "-1,-1,-1",
                                    "batch_size": 4})
    data = pipeline.prepare(config)
    model = pipeline.build_model(config, data, None).eval()
    task = pipeline.task(config, data, model).eval()
    loaders = pipeline.datamodule(config, data, None)
    full = next(iter(loaders.val_loader))
    with torch.no_grad():
        logits = model(full["x_dict"], full["edge_index_dict"])
        seen = []
        for batch in loaders.train_loader:
            (out, _), target, _ = task.unpack(batch)
            seeds = batch["n_id_dict"][data.target_type][batch["mask"]]
            torch.testing.assert_close(out, logits[seeds], atol=1e-5, rtol=1e-4)
            assert torch.equal(target, data[data.target_type].y[seeds])
            seen += seeds.tolist()
    assert sorted(seen) == data[data.target_type].train_mask.nonzero().view(-1).tolist()
