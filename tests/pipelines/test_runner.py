"""The platform's engine on a pipeline from outside gattn (tests/plugins/toy_pipeline.py)."""

from __future__ import annotations

import json
import signal

import lightning.pytorch as L
import optuna
import pytest
import torch

from gattn.pipelines import make_config, run
from gattn.pipelines.config import read_config_file
from gattn.pipelines.runner import AtomicCheckpointIO, load_checkpoint
from tests.plugins.toy_pipeline import ToyPipeline

toy = ToyPipeline()


def _config(**values):
    return make_config(toy, {"progress": False, **values})


def test_run_folder_holds_config_metrics_checkpoints_and_epoch_log(tmp_path):
    result = run(toy, _config(), tmp_path / "run")
    folder = tmp_path / "run"
    metrics = result.metrics
    assert metrics["val_rocauc"] > 0.8 and metrics["test_rocauc"] > 0.8  # the blobs are separable
    assert isinstance(metrics["epochs"], int) and 1 <= metrics["best_epoch"] <= metrics["epochs"] == 4
    assert metrics["num_params"] == sum(p.numel() for p in toy.build_model(_config(), None, None).parameters())
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["metrics"]["test_rocauc"] == pytest.approx(metrics["test_rocauc"])
    assert saved["chance"] == {"test_rocauc": 0.5}
    lines = (folder / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["epoch", "train_loss"] and "val_rocauc" in lines[0] and "lr" in lines[0]
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    # checkpoints: Lightning's, loadable with weights_only=True, with optimiser state and config
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = load_checkpoint(folder / "checkpoints" / name)
        assert checkpoint["gattn"]["pipeline"] == "toy"
        assert checkpoint["gattn"]["config"]["lr"] == 0.05
        assert checkpoint["optimizer_states"] and "model.0.weight" in checkpoint["state_dict"]
        torch.load(folder / "checkpoints" / name, weights_only=True)  # plain torch too
    assert not list(folder.rglob(".*.tmp"))
    # the effective configuration, pipeline included, repeats the run exactly (CPU, seeded)
    config = read_config_file(folder / "config.yaml")
    assert config.pop("pipeline") == "toy"
    again = run(toy, make_config(toy, config), tmp_path / "again")
    assert again.metrics["test_rocauc"] == metrics["test_rocauc"]
    assert again.metrics["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_cross_validation_aggregates_and_resume_keeps_finished_splits(tmp_path, monkeypatch):
    config = _config(folds=3, epochs=2)
    first = run(toy, config, tmp_path / "cv")
    assert first.metrics["splits"] == 3 and "test_rocauc_std" in first.metrics
    assert first.metrics["epochs"] == 2 and isinstance(first.metrics["epochs"], int)  # shared counts stay ints
    assert isinstance(first.metrics["num_params"], int)
    per_split = [s["test_rocauc"] for s in first.splits]
    assert first.metrics["test_rocauc"] == pytest.approx(sum(per_split) / 3)
    assert sorted(p.name for p in (tmp_path / "cv").iterdir() if p.is_dir()) == ["fold-1", "fold-2", "fold-3"]
    # resuming a finished run trains nothing again
    calls = []
    monkeypatch.setattr(L.Trainer, "fit", lambda *a, **k: calls.append(1))
    again = run(toy, config, tmp_path / "cv", resume=True)
    assert calls == [] and again.metrics["test_rocauc"] == pytest.approx(first.metrics["test_rocauc"])


class _StopAt(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_ctrl_c_is_a_keyboard_interrupt_and_resume_continues_from_the_last_checkpoint(tmp_path, monkeypatch):
    original = toy.task

    def task_with_interrupt(config, data, model):
        module = original(config, data, model)
        module.configure_callbacks = lambda: [_StopAt(2)]
        return module

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(toy, "task", task_with_interrupt)
    with pytest.raises(KeyboardInterrupt):  # Lightning's sys.exit(1) is turned back into Ctrl-C
        run(toy, _config(epochs=4), tmp_path / "r")
    assert signal.getsignal(signal.SIGINT) is handler  # and SIGINT is not left ignored
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")["epoch"] == 0
    monkeypatch.setattr(toy, "task", original)
    result = run(toy, _config(epochs=4), tmp_path / "r", resume=True)
    assert result.metrics["epochs"] == 4
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4"]


def test_early_stopping_min_lr_and_time_limit(tmp_path):
    # a learning rate too small to change float32 weights: the metric never improves
    stopped = run(toy, _config(lr=1e-12, epochs=20, patience=2), tmp_path / "a")
    assert stopped.metrics["epochs"] == 3 and stopped.metrics["best_epoch"] == 1
    # the plateau schedule's factor pushes the rate under min_lr after the first flat epochs
    # (ReduceLROnPlateau ignores decays smaller than 1e-8, so start higher)
    low = run(toy, _config(lr=1e-6, epochs=20, scheduler="plateau", lr_patience=0, lr_factor=0.1,
                           min_lr=5e-8), tmp_path / "b")
    assert low.metrics["epochs"] < 20
    header, *rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("lr")
    rates = [float(r.split(",")[column]) for r in rows]
    assert rates[0] == pytest.approx(1e-6) and min(rates) < 5e-8
    timed = run(toy, _config(epochs=500, max_time=1.0, samples=2000), tmp_path / "c")
    assert timed.metrics["epochs"] < 500


def test_diverging_loss_is_a_floating_point_error(tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "loss", lambda config, data: lambda out, y: (out * float("nan")).sum())
    with pytest.raises(FloatingPointError, match="training loss is nan at epoch 1"):
        run(toy, _config(), tmp_path / "nan")


def test_optuna_pruning_per_epoch(tmp_path):
    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=Always())
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        run(toy, _config(epochs=5), tmp_path / "p", trial=trial)
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0]


def test_cross_validation_reports_per_split_to_optuna(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    run(toy, _config(folds=2, epochs=1), tmp_path / "cv", trial=trial)
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0, 1]


def test_atomic_checkpoint_never_tears_the_old_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "best.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)

    def broken_save(obj, handle):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


def test_accelerator_and_precision_checks(tmp_path):
    from gattn.pipelines.config import ConfigError

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--accelerator gpu: no CUDA device"):
            run(toy, _config(accelerator="gpu"), tmp_path / "g")
        with pytest.raises(ConfigError, match="16-mixed needs a GPU"):
            run(toy, _config(precision="16-mixed"), tmp_path / "h")
    result = run(toy, _config(precision="bf16-mixed", epochs=2), tmp_path / "bf16")
    assert result.metrics["test_rocauc"] > 0.7


def test_device_shorthand():
    from gattn.pipelines.config import ConfigError

    config = _config(device="cpu")
    assert (config.accelerator, config.devices, config.device) == ("cpu", "auto", None)
    config = _config(device="cuda:1")
    assert (config.accelerator, config.devices) == ("gpu", "1,")
    with pytest.raises(ConfigError, match="disagrees with --accelerator cpu"):
        _config(device="cuda", accelerator="cpu")
    with pytest.raises(ConfigError, match="--device must be cpu, cuda or cuda:N"):
        _config(device="tpu")


def test_threads_apply_to_torch_and_numba_and_are_restored(tmp_path, monkeypatch):
    import numba

    from gattn.pipelines import runner

    seen = []
    original = runner._run
    monkeypatch.setattr(runner, "_run", lambda *a, **k: seen.append(
        (torch.get_num_threads(), numba.get_num_threads())) or original(*a, **k))
    numba_before = numba.get_num_threads()  # first: numba's first call may reset torch's OpenMP pool
    before = (torch.get_num_threads(), numba_before)
    run(toy, _config(threads=1, epochs=1), tmp_path / "t")
    assert seen == [(1, 1)]
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
