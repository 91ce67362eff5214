import importlib
import json
import sys
import types

import pytest

from gattn import cli
from gattn.pipelines import (
    PIPELINES,
    load_pipeline,
    pipeline_direction,
    pipeline_metric,
)


@pytest.fixture
def fake(monkeypatch):
    """Register tests/tune/fake_pipeline.py as pipeline "fake"."""
    monkeypatch.setitem(PIPELINES, "fake", "tests.tune.fake_pipeline")
    return "fake"


def test_resolve_root_order(tmp_path, monkeypatch):
    monkeypatch.delenv("GATTN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.resolve_root(None) == cli.Path("data")
    (tmp_path / "work").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert cli.resolve_root(None) == cli.Path("../shared/data")
    monkeypatch.setenv("GATTN_DATA", str(tmp_path / "env"))
    assert cli.resolve_root(None) == tmp_path / "env"
    assert cli.resolve_root(tmp_path / "x") == tmp_path / "x"


def test_load_pipeline_errors(monkeypatch):
    with pytest.raises(ValueError, match="pipeline must be one of"):
        load_pipeline("nope")
    monkeypatch.setitem(PIPELINES, "ghost", "gattn.pipelines.does_not_exist")
    with pytest.raises(ImportError, match="not installed"):
        load_pipeline("ghost")
    module = types.ModuleType("half_pipeline")
    module.NAME = "half"
    monkeypatch.setitem(sys.modules, "half_pipeline", module)
    monkeypatch.setitem(PIPELINES, "half", "half_pipeline")
    with pytest.raises(TypeError, match="missing METRIC"):
        load_pipeline("half")


def test_metric_and_direction_resolution(fake):
    module = load_pipeline(fake)
    assert pipeline_metric(module, {}) == "score"
    assert pipeline_direction(module, {}) == "maximize"
    dyn = types.SimpleNamespace(__name__="dyn", METRIC="x", DIRECTION="maximize",
                                metric=lambda c: c["m"], direction=lambda c: c["d"])
    assert pipeline_metric(dyn, {"m": "rmse"}) == "rmse"
    assert pipeline_direction(dyn, {"d": "minimize"}) == "minimize"
    with pytest.raises(ValueError, match="direction"):
        pipeline_direction(dyn, {"d": "sideways"})


def test_train_prints_metrics_and_writes_json(fake, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["train", fake, "--x", "1.5", "--json", str(out), "--no-progress",
                     "--root", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "val_score" in printed and "-0.2500" in printed
    saved = json.loads(out.read_text())
    assert saved["metrics"]["val_score"] == pytest.approx(-0.25)
    assert saved["config"]["root"] == str(tmp_path)
    assert saved["config"]["progress"] is False


def test_tune_then_resume(fake, tmp_path, capsys):
    args = ["tune", fake, "--trials", "3", "--runs-dir", str(tmp_path), "--no-plots"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and "3 finished trials" in printed
    report = tmp_path / "fake" / "fake" / "best.json"
    assert json.loads(report.read_text())["trials"]["complete"] >= 1
    # interrupted run: exit status 130, finished trials kept; the next run completes the study
    assert cli.main(args[:3] + ["5"] + args[4:] + ["--interrupt-at", "4"]) == 130
    assert "resume" in capsys.readouterr().err
    assert cli.main(args[:3] + ["5"] + args[4:]) == 0
    assert "5 finished trials" in capsys.readouterr().out


def test_tune_with_journal_storage_and_plots(fake, tmp_path, capsys):
    storage = f"journal:{tmp_path / 'study.log'}"
    assert cli.main(["tune", fake, "--trials", "3", "--storage", storage, "--study-name", "s",
                     "--report-dir", str(tmp_path / "rep"), "--runs-dir", str(tmp_path)]) == 0
    assert (tmp_path / "rep" / "optimization_history.png").is_file()
    assert (tmp_path / "rep" / "param_importances.png").is_file()
    assert (tmp_path / "study.log").is_file()


@pytest.mark.parametrize("argv, message", [
    ([], "required"),
    (["train"], "required"),
    (["train", "nope"], "invalid choice"),
    (["tune", "fake"], "--trials"),
    (["tune", "fake", "--trials", "0"], "positive integer"),
    (["tune", "fake", "--trials", "2", "--timeout", "-1"], "positive number"),
    (["train", "fake", "--epochs", "x"], "invalid int"),
])
def test_bad_input_is_an_argparse_error(fake, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unavailable_pipeline_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(PIPELINES, "ghost", "gattn.pipelines.does_not_exist")
    with pytest.raises(SystemExit):
        cli.main(["train", "ghost"])
    assert "unavailable" in capsys.readouterr().err


def test_datasets_lists_each_module(monkeypatch, tmp_path, capsys):
    importlib.import_module("gattn.datasets")  # the real package first; fakes replace its loaders
    ogb = types.ModuleType("gattn.datasets.ogb")
    ogb.available = lambda root: [("ogbg-molbace", True, f"found in {root}"),
                                  ("ogbg-molhiv", False, "missing")]
    sbm = types.ModuleType("gattn.datasets.sbm")
    sbm.available = lambda root: ["PATTERN", "CLUSTER"]
    monkeypatch.setitem(sys.modules, "gattn.datasets.ogb", ogb)
    monkeypatch.setitem(sys.modules, "gattn.datasets.sbm", sbm)
    monkeypatch.setattr(cli, "DATASET_MODULES", {"gattn.datasets.ogb": "ogb",
                                                 "gattn.datasets.sbm": "",
                                                 "gattn.datasets.absent": ""})
    assert cli.main(["datasets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"data root: {tmp_path}" in out
    assert f"found in {tmp_path / 'ogb'}" in out and "CLUSTER" in out and "absent" not in out
    assert any(line.split()[:2] == ["ogbg-molhiv", "no"] for line in out.splitlines())


def test_help_of_a_pipeline(fake, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", fake, "--help"])
    assert exc.value.code == 0
    assert "--interrupt-at" in capsys.readouterr().out
