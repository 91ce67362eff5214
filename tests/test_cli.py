"""The ``gattn`` command: discovery through the registry, config files, one-line errors,
resumable tuning, and pipelines from outside gattn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from gattn import __version__, cli
from gattn.datasets.root import default_root, register_source, resolve_root
from gattn.pipelines.config import read_config_file

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"
FAKE = ["--plugin", "tests.tune.fake_pipeline"]
GATTN = str(Path(sys.executable).parent / "gattn")


def _env(**extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT)])}
    env.update(extra)
    return env


def test_resolve_root_order_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GATTN_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "work").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_root(None) == default_root() == tmp_path / "xdg" / "gattn"
    monkeypatch.setenv("GATTN_DATA", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(tmp_path / "x") == tmp_path / "x"
    assert resolve_root("relative").is_absolute()


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gattn {__version__}"


@pytest.mark.parametrize("preset, seen", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_command_runs_openmp_passive_unless_the_user_chose(preset, seen):
    """The console command sets OMP_WAIT_POLICY before torch loads its OpenMP runtime, so that
    runtime (asked to print its settings) runs passive; a policy in the environment is kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "TRUE"
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = ("import sys; sys.argv = ['gattn', '--version']\n"
            "from gattn.cli import main\nmain()\nimport torch\ntorch.ones(8).sum()")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"OMP_WAIT_POLICY = '{seen}'" in done.stderr


def test_passive_openmp_keeps_a_chosen_policy_or_spin_count():
    for preset in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        environ = dict(preset)
        cli._passive_openmp(environ)
        assert environ == preset
    environ = {}
    cli._passive_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_missing_training_stack_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lightning", None)
    assert cli.main(["pipelines"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gattn[pipelines]'" in err and "lightning" in err and err.count("\n") == 1


def test_pipelines_are_listed_from_the_registry(capsys):
    assert cli.main(["pipelines", *FAKE]) == 0
    out = capsys.readouterr().out
    for name in ("graph_transformer", "mil", "fake"):
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name


def test_train_prints_metrics_writes_json_and_run_folder(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main([*FAKE, "train", "fake", "--x", "1.5", "--json", str(out), "--no-progress",
                     "--runs-dir", str(tmp_path), "--epochs", "4"]) == 0
    printed = capsys.readouterr().out
    assert "val_rocauc" in printed and "-0.2500" in printed
    assert any(line.split()[:2] == ["epochs", "4"] for line in printed.splitlines())  # an int, not 4.0000
    saved = json.loads(out.read_text())
    assert saved["metrics"]["val_rocauc"] == pytest.approx(-0.25)
    assert saved["config"]["progress"] is False and saved["config"]["x"] == 1.5


def test_config_file_then_command_line_override(tmp_path, capsys):
    config = tmp_path / "fake.yaml"
    config.write_text("pipeline: fake\nx: 3.0\nepochs: 2\n")
    out = tmp_path / "r.json"
    assert cli.main([*FAKE, "train", "--config", str(config), "--epochs", "5", "--json", str(out),
                     "--runs-dir", str(tmp_path)]) == 0
    saved = json.loads(out.read_text())["config"]
    assert saved["x"] == 3.0 and saved["epochs"] == 5  # the file's x, the command line's epochs
    (tmp_path / "other.yaml").write_text("pipeline: mil\n")
    assert cli.main([*FAKE, "train", "fake", "--config", str(tmp_path / "other.yaml")]) == 1
    assert "is for pipeline 'mil', not 'fake'" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("pipeline: fake\nepoch: 3\n")
    assert cli.main([*FAKE, "train", "--config", str(tmp_path / "typo.yaml")]) == 1
    assert "unknown option 'epoch'" in capsys.readouterr().err


def test_a_run_folder_config_repeats_the_run(tmp_path, capsys):
    """Real Lightning training of the toy pipeline; the run's config.yaml gives the same numbers."""
    sys.path.insert(0, str(PLUGINS))
    try:
        first = tmp_path / "first.json"
        assert cli.main(["--plugin", "toy_pipeline", "train", "toy", "--epochs", "2", "--lr", "0.02",
                         "--runs-dir", str(tmp_path / "runs"), "--run-name", "a", "--json", str(first),
                         "--no-progress"]) == 0
        saved = tmp_path / "runs" / "toy" / "a" / "config.yaml"
        assert read_config_file(saved)["lr"] == 0.02
        again = tmp_path / "again.json"
        assert cli.main(["--plugin", "toy_pipeline", "train", "--config", str(saved), "--runs-dir",
                         str(tmp_path / "runs"), "--json", str(again)]) == 0
        assert json.loads(again.read_text())["metrics"] == json.loads(first.read_text())["metrics"] | {
            "time_s": json.loads(again.read_text())["metrics"]["time_s"]}
        # the same run name again would mix two runs: refused, with the way out named
        assert cli.main(["--plugin", "toy_pipeline", "train", "toy", "--runs-dir", str(tmp_path / "runs"),
                         "--run-name", "a"]) == 1
        assert "--resume" in capsys.readouterr().err
        # --resume of a finished run reports it without training again
        assert cli.main(["--plugin", "toy_pipeline", "train", "--resume", str(saved.parent)]) == 0
    finally:
        sys.path.remove(str(PLUGINS))


@pytest.mark.parametrize("argv, message", [
    (["train", "mil", "--dropout", "1.5"], r"--dropout must be in [0, 1), got 1.5"),
    (["train", "mil", "--lr", "-1"], "--lr must be > 0"),
    (["train", "mil", "--folds", "1"], "--folds must be >= 2"),
    (["train", "mil", "--dataset", "musk1"], "MIL data set 'musk1' not found"),
    (["train", "mil", "--dataset", "digit-bags", "--accelerator", "gpu"], "--accelerator gpu"),
    (["tune", "mil", "--trials", "2", "--storage", "bogus"], "--storage must be"),
    (["tune", "mil", "--trials", "2", "--storage", "postgresql://u:pw@localhost/db", "--dataset", "digit-bags"],
     "pip install 'psycopg[binary]'"),
    (["train", "--config", "nowhere.yaml"], "config file 'nowhere.yaml' not found"),
    (["train", "--resume", "nowhere"], "config file 'config.yaml' not found"),
])
def test_errors_are_one_line_naming_the_option_or_file(argv, message, tmp_path, capsys, monkeypatch, no_mil_package):
    if "--accelerator" in argv and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("GATTN_DATA", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the driver missing (the dev extra installs it)
    assert cli.main([*argv, "--runs-dir", str(tmp_path)] if argv[1] != "--resume" else argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(Exception):  # noqa: B017  --debug shows the real exception
        cli.main(["--debug", *argv] if argv[1] != "--resume" else ["--debug", *argv])


@pytest.mark.parametrize("argv, message", [
    ([], "required"),
    (["train", "nope"], "invalid choice"),
    (["train"], "needs a PIPELINE"),
    (["tune", "mil"], "--trials"),
    (["tune", "mil", "--trials", "0"], "positive integer"),
    (["tune", "mil", "--trials", "2", "--timeout", "-1"], "positive number"),
    (["train", "mil", "--epochs", "x"], "expected an integer, got 'x'"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tune_checks_the_data_before_creating_a_study(tmp_path, capsys, monkeypatch, no_mil_package):
    monkeypatch.setenv("GATTN_DATA", str(tmp_path / "empty"))
    assert cli.main(["tune", "mil", "--dataset", "musk1", "--trials", "2", "--runs-dir", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "mil" / "study.db").exists()


def test_tune_then_resume_after_ctrl_c(tmp_path, capsys, monkeypatch):
    args = [*FAKE, "tune", "fake", "--trials", "3", "--runs-dir", str(tmp_path), "--no-plots"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and "3 finished trials" in printed
    monkeypatch.setenv("FAKE_INTERRUPT_AT", "4")
    more = [a if a != "3" else "5" for a in args]
    assert cli.main(more) == 130  # interrupted: finished trials kept
    assert "resume" in capsys.readouterr().err
    monkeypatch.delenv("FAKE_INTERRUPT_AT")
    assert cli.main(more) == 0
    assert "5 finished trials" in capsys.readouterr().out
    # another fixed configuration: another study, not the old one's winner
    assert cli.main([*more, "--epochs", "7"]) == 0
    assert "5 finished trials" in capsys.readouterr().out


def test_tune_report_plots_are_labelled_with_the_metric(tmp_path, capsys):
    assert cli.main([*FAKE, "tune", "fake", "--trials", "3", "--study-name", "s",
                     "--report-dir", str(tmp_path / "rep"), "--runs-dir", str(tmp_path)]) == 0
    for name in ("optimization_history.png", "param_importances.png", "best.json"):
        assert (tmp_path / "rep" / name).stat().st_size > 0


def test_datasets_lists_registered_sources(tmp_path, capsys):
    @register_source("test-source", folder="sub")
    def available(root):
        return [("alpha", True, f"found in {root}"), ("beta", False, "missing")]

    assert cli.main(["datasets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"data root: {tmp_path}" in out and "[test-source]" in out and "[mil]" in out
    assert f"found in {tmp_path / 'sub'}" in out
    assert any(line.split()[:2] == ["beta", "no"] for line in out.splitlines())


def test_help_is_generated_from_the_typed_config(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "mil", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--pooling" in out and "--val-fraction" in out and "(default: 0.1)" in out and "--accelerator" in out


def test_a_pipeline_from_outside_gattn_trains_and_tunes_through_the_command(tmp_path):
    """tests/plugins/toy_pipeline.py is named only by GATTN_PLUGINS: no gattn file knows it."""
    env = _env(GATTN_PLUGINS="toy_pipeline")
    train = subprocess.run([GATTN, "train", "toy", "--epochs", "2", "--runs-dir", str(tmp_path),
                            "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert train.returncode == 0, train.stderr
    assert "test_rocauc" in train.stdout and "chance" in train.stdout
    tune = subprocess.run([GATTN, "tune", "toy", "--trials", "2", "--epochs", "1", "--runs-dir", str(tmp_path),
                           "--no-plots"], capture_output=True, text=True, env=env, timeout=300)
    assert tune.returncode == 0, tune.stderr
    assert "2 finished trials" in tune.stdout


def test_sigkill_mid_trial_loses_no_finished_trial(tmp_path):
    args = [GATTN, "--plugin", "tests.tune.fake_pipeline", "tune", "fake", "--trials", "5", "--runs-dir",
            str(tmp_path), "--no-plots", "--study-name", "killed"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(FAKE_HANG_AT="2"), cwd=ROOT)
    try:
        deadline, line = time.time() + 240, ""
        while "HANGING" not in line and time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "HANGING" in line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    storage = f"sqlite:///{tmp_path / 'fake' / 'study.db'}"
    study = optuna.load_study(study_name="killed", storage=storage)
    kept = {t.number: t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(kept) == 2
    again = subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=240)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="killed", storage=storage)
    complete = {t.number: t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(complete) == 5 and all(complete[n] == p for n, p in kept.items())
