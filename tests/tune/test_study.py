import json

import optuna
import pytest
from optuna.trial import TrialState

from gattn.pipelines import make_config
from gattn.tune import (
    create_study,
    default_storage,
    default_study_name,
    finished_trials,
    format_table,
    make_storage,
    optimize,
    summarize,
    summary_table,
    write_report,
)
from gattn.tune.study import StorageError, StudyMismatch, fixed_configuration, searched_options

from .fake_pipeline import FakePipeline

optuna.logging.set_verbosity(optuna.logging.WARNING)
fake_pipeline = FakePipeline()
CONFIG = make_config(fake_pipeline, {"epochs": 3})


def _config(**values):
    return make_config(fake_pipeline, {"epochs": 3, **values})


def _load(tmp_path, config=CONFIG):
    return optuna.load_study(study_name=default_study_name(fake_pipeline, config),
                             storage=default_storage("fake", tmp_path))


def test_default_storage_is_sqlite_under_runs(tmp_path):
    url = default_storage("fake", tmp_path)
    assert url == f"sqlite:///{(tmp_path / 'fake' / 'study.db').resolve()}"
    assert (tmp_path / "fake").is_dir()


def test_default_study_name_is_bound_to_the_fixed_configuration():
    name = default_study_name(fake_pipeline, CONFIG)
    assert name.startswith("fake-toy-") and len(name) == len("fake-toy-") + 8
    # searched options and run-control options do not change the study
    assert default_study_name(fake_pipeline, _config(x=3.0, width=16)) == name
    assert default_study_name(fake_pipeline, _config(progress=False, threads=1, root="/elsewhere")) == name
    # any other option does
    assert default_study_name(fake_pipeline, _config(epochs=4)) != name
    assert default_study_name(fake_pipeline, _config(dataset="other")).startswith("fake-other-")
    assert searched_options(fake_pipeline, CONFIG) == ["width", "x"]
    fixed = fixed_configuration(fake_pipeline, CONFIG)
    assert "x" not in fixed and "progress" not in fixed and fixed["epochs"] == 3


def test_a_study_refuses_another_fixed_configuration(tmp_path):
    optimize(fake_pipeline, CONFIG, 2, runs_dir=tmp_path, study_name="mine")
    with pytest.raises(StudyMismatch, match=r"epochs: 3 -> 5"):
        optimize(fake_pipeline, _config(epochs=5), 3, runs_dir=tmp_path, study_name="mine")
    # without a name, the other configuration gets a study of its own
    other = optimize(fake_pipeline, _config(epochs=5), 1, runs_dir=tmp_path)
    assert other.study_name != "mine" and finished_trials(other) == 1
    assert finished_trials(optuna.load_study(study_name="mine", storage=default_storage("fake", tmp_path))) == 2


def test_storage_errors_name_the_problem(tmp_path):
    with pytest.raises(StorageError, match="--storage must be"):
        make_storage("bogus", "fake")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=r"cannot create the study database folder .*a-file"):
        make_storage(None, "fake", runs_dir=blocker / "runs")
    with pytest.raises(StorageError, match="cannot create the study database folder"):
        make_storage(f"sqlite:///{blocker}/sub/study.db", "fake")
    with pytest.raises(StorageError, match="needs the MySQLdb driver: pip install mysqlclient"):
        make_storage("mysql://user:secret@localhost/db", "fake")
    with pytest.raises(StorageError) as info:
        make_storage("nosuchdialect://user:secret@localhost/db", "fake")
    assert "secret" not in str(info.value) and "user:***@localhost" in str(info.value)


def test_optimize_runs_n_trials_and_records_metrics(tmp_path):
    study = optimize(fake_pipeline, CONFIG, 6, runs_dir=tmp_path, seed=1)
    assert finished_trials(study) == 6
    assert (tmp_path / "fake" / "study.db").is_file()
    best = study.best_trial
    assert best.user_attrs["val_rocauc"] == best.value
    assert best.user_attrs["test_rocauc"] == best.value - 1.0
    assert best.user_attrs["epochs"] == 3 and isinstance(best.user_attrs["epochs"], int)
    assert study.user_attrs["metric"] == "rocauc"
    assert study.user_attrs["config"]["dataset"] == "toy"
    # every trial reported its intermediate values (what the pruner works on)
    assert all(t.intermediate_values for t in study.trials)


def test_same_seed_same_parameters(tmp_path):
    a = optimize(fake_pipeline, CONFIG, 3, runs_dir=tmp_path / "a", seed=7)
    b = optimize(fake_pipeline, CONFIG, 3, runs_dir=tmp_path / "b", seed=7)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_resume_after_keyboard_interrupt_keeps_finished_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_INTERRUPT_AT", "3")
    with pytest.raises(KeyboardInterrupt):
        optimize(fake_pipeline, CONFIG, 8, runs_dir=tmp_path)
    monkeypatch.delenv("FAKE_INTERRUPT_AT")
    study = _load(tmp_path)
    states = [t.state for t in study.trials]
    assert states[:3] == [s for s in states[:3] if s in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert states[3] == TrialState.FAIL
    before = {t.number: (t.params, t.value) for t in study.trials if t.state in
              (TrialState.COMPLETE, TrialState.PRUNED)}
    assert len(before) == 3

    study = optimize(fake_pipeline, CONFIG, 8, runs_dir=tmp_path)
    assert finished_trials(study) == 8  # the count reaches N: 3 kept + 5 new
    after = {t.number: (t.params, t.value) for t in study.trials}
    for number, kept in before.items():
        assert after[number] == kept  # nothing lost or changed
    # running again with the target already reached does nothing
    study = optimize(fake_pipeline, CONFIG, 8, runs_dir=tmp_path)
    assert len(study.trials) == 9


def test_failed_trials_do_not_count(tmp_path):
    calls = {"n": 0}

    class Flaky(FakePipeline):
        def run(self, config, run_dir, *, trial=None, resume=False, progress=None):
            calls["n"] += 1
            if calls["n"] == 2:
                raise FloatingPointError("diverged")
            return super().run(config, run_dir, trial=trial)

    study = optimize(Flaky(), CONFIG, 4, runs_dir=tmp_path)
    assert finished_trials(study) == 4
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1


def test_direction_mismatch_and_bad_arguments(tmp_path):
    create_study("fake", direction="maximize", runs_dir=tmp_path, study_name="s")
    with pytest.raises(ValueError, match="direction"):
        create_study("fake", direction="minimize", runs_dir=tmp_path, study_name="s")
    with pytest.raises(ValueError, match="direction"):
        create_study("fake", direction="up", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="n_trials"):
        optimize(fake_pipeline, CONFIG, 0, runs_dir=tmp_path)
    with pytest.raises(StorageError, match="storage"):
        make_storage("not a url", "fake")


def test_journal_storage(tmp_path):
    url = f"journal:{tmp_path / 'j' / 'study.log'}"
    optimize(fake_pipeline, CONFIG, 2, storage=url, runs_dir=tmp_path)
    study = optimize(fake_pipeline, CONFIG, 4, storage=url, runs_dir=tmp_path)
    assert finished_trials(study) == 4
    assert (tmp_path / "j" / "study.log").is_file()


def test_report_files_and_table(tmp_path):
    study = optimize(fake_pipeline, CONFIG, 5, runs_dir=tmp_path, seed=3)
    summary = write_report(study, tmp_path / "report")
    for name in ("best.json", "trials.csv", "optimization_history.png",
                 "param_importances.png", "intermediate_values.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "report" / "best.json").read_text())
    assert saved["best_value"] == study.best_value
    assert saved["best_params"] == study.best_params
    assert saved["best_metrics"]["test_rocauc"] == study.best_value - 1.0
    text = summary_table(summary)
    assert "best trial" in text and "test_rocauc" in text and "x" in text


def test_report_with_one_trial_skips_importances(tmp_path):
    study = optimize(fake_pipeline, CONFIG, 1, runs_dir=tmp_path)
    summary = write_report(study, tmp_path / "report")
    assert "param_importances" in summary["skipped_plots"]
    assert (tmp_path / "report" / "optimization_history.png").is_file()
    assert not (tmp_path / "report" / "param_importances.png").exists()


def test_report_of_empty_study(tmp_path):
    study = create_study("fake", direction="maximize", runs_dir=tmp_path)
    summary = write_report(study, tmp_path / "report")
    assert "best_value" not in summary
    assert "no complete trial" in summary_table(summary)


def test_format_table():
    text = format_table({"a": 1.0, "long_name": 0.123456}, header=("k", "v"))
    lines = text.splitlines()
    assert lines[0].split() == ["k", "v"] and set(lines[1]) <= {"-", " "}
    assert lines[3].split() == ["long_name", "0.1235"]
    assert summarize  # exported
