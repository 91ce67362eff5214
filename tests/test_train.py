import math

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader as GraphLoader
from torch_geometric.nn import global_mean_pool

from gattn.metrics import accuracy, rmse
from gattn.train import (
    FitResult,
    default_forward,
    evaluate,
    fit,
    load_checkpoint,
    predict,
    save_checkpoint,
    seed_everything,
)


def _regression(n=128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    return TensorDataset(x, y)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def _fit(model, **kw):
    data = _regression()
    args = dict(loss_fn=nn.MSELoss(), evaluate={"rmse": rmse}, metric="rmse",
                direction="minimize", lr=0.05, epochs=20, progress=False)
    args.update(kw)
    return fit(model, DataLoader(data, batch_size=32, shuffle=True), DataLoader(data, 64), **args)


def test_fit_learns_and_restores_best_epoch():
    seed_everything(0)
    model = Linear()
    result = _fit(model, epochs=40)
    assert isinstance(result, FitResult)
    assert result.epochs_run == 40 and len(result.history) == 40
    values = [h["val_rmse"] for h in result.history]
    best = min(range(40), key=values.__getitem__)
    assert result.best_epoch == best + 1
    assert result.best_value == pytest.approx(values[best])
    assert result.best_value < 0.05
    # the model on return holds the best epoch's weights
    data = _regression()
    assert evaluate(model, DataLoader(data, 64), {"rmse": rmse})["rmse"] == \
        pytest.approx(result.best_value)


class Scripted(nn.Module):
    """A model whose validation 'score' follows a script, one value per epoch."""

    def __init__(self, script):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.epoch_marker = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.script = list(script)

    def forward(self, x):
        return (x * self.w).sum(-1)


def _scripted_evaluate(model, loader):
    epoch = len(model.seen)
    model.seen.append(epoch)
    # Make the weights identify the epoch, so restoring the best epoch can be checked.
    with torch.no_grad():
        model.epoch_marker.fill_(epoch + 1)
    return {"score": model.script[epoch]}


def _scripted_fit(script, **kw):
    model = Scripted(script)
    model.seen = []
    data = _regression(16)
    args = dict(loss_fn=nn.MSELoss(), evaluate=_scripted_evaluate, metric="score",
                direction="maximize", epochs=len(script), progress=False)
    args.update(kw)
    result = fit(model, DataLoader(data, 8), DataLoader(data, 8), **args)
    return model, result


def test_early_stopping_after_patience_epochs_without_improvement():
    script = [0.1, 0.5, 0.4, 0.5, 0.3, 0.2, 0.9, 1.0]
    model, result = _scripted_fit(script, patience=3)
    # best 0.5 at epoch 2; 0.5 again at epoch 4 is not an improvement; stop after epoch 5
    assert result.stopped_early
    assert result.epochs_run == 5
    assert result.best_epoch == 2 and result.best_value == 0.5
    assert model.epoch_marker.item() == 2  # weights of epoch 2 restored


def test_minimize_direction_and_nan_is_never_best():
    model, result = _scripted_fit([3.0, math.nan, 1.0, 2.0], direction="minimize")
    assert result.best_epoch == 3 and result.best_value == 1.0
    assert not result.stopped_early


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "sub" / "best.pt"
    model, result = _scripted_fit([0.2, 0.7, 0.1], checkpoint=path)
    assert result.checkpoint == path and path.is_file()
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temporary file
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["value"] == 0.7 and ckpt["metric"] == "score"
    fresh = Scripted([])
    meta = load_checkpoint(path, fresh)
    assert meta["direction"] == "maximize"
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert fresh.epoch_marker.item() == 2


def test_save_and_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gattn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    path = save_checkpoint(tmp_path / "m.pt", Linear(), note="x")
    assert load_checkpoint(path)["note"] == "x"


def test_pruning_raises_trial_pruned():
    # A study whose pruner prunes anything worse than the first trial's intermediate values.
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1,
                                                                   n_warmup_steps=0))
    reported = []

    def objective(trial):
        script = [0.9, 0.9, 0.9, 0.9] if trial.number == 0 else [0.1, 0.1, 0.1, 0.1]
        model, result = _scripted_fit(script, trial=trial)
        reported.append(result.epochs_run)
        return result.best_value

    study.optimize(objective, n_trials=2)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert study.trials[0].intermediate_values == {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.9}
    assert study.trials[1].intermediate_values == {1: 0.1}  # pruned after its first epoch


def test_plateau_scheduler_and_min_lr_stop():
    # constant score: ReduceLROnPlateau halves the lr after scheduler_patience bad epochs
    model, result = _scripted_fit([0.5] * 30, lr=0.1, scheduler="plateau",
                                  scheduler_patience=1, scheduler_factor=0.5, min_lr=0.02)
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == pytest.approx(0.1)
    assert min(lrs) < 0.1
    assert result.stopped_early and result.epochs_run < 30


def test_cosine_scheduler():
    model, result = _scripted_fit([0.5] * 4, lr=0.1, scheduler="cosine")
    lrs = [h["lr"] for h in result.history]
    expected = [0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lrs == pytest.approx(expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        _fit(Linear(), direction="up")
    with pytest.raises(ValueError, match="epochs"):
        _fit(Linear(), epochs=0)
    with pytest.raises(ValueError, match="patience"):
        _fit(Linear(), patience=0)
    with pytest.raises(ValueError, match="scheduler"):
        _fit(Linear(), scheduler="step")
    with pytest.raises(ValueError, match="not among"):
        _fit(Linear(), metric="auc")


def test_non_finite_loss_raises():
    data = TensorDataset(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([math.inf]))
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(Linear(), DataLoader(data), loss_fn=nn.MSELoss(), epochs=2, progress=False)


def test_no_validation_keeps_last_epoch(tmp_path):
    data = _regression()
    model = Linear()
    result = fit(model, DataLoader(data, 32), loss_fn=nn.MSELoss(), lr=0.05, epochs=3,
                 checkpoint=tmp_path / "last.pt", progress=False)
    assert result.best_epoch == 3 and math.isnan(result.best_value)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_batch_transform_applies_to_training_batches_only():
    seen = []

    def transform(batch):
        seen.append(len(batch[0]))
        return batch

    _fit(Linear(), epochs=2, batch_transform=transform)
    assert seen == [32] * 4 * 2  # 128 rows / 32 per batch, 2 epochs; validation untouched


class GraphRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, data):
        return global_mean_pool(self.lin(data.x), data.batch).squeeze(-1)


def _graphs(n=40):
    gen = torch.Generator().manual_seed(1)
    graphs = []
    for _ in range(n):
        nodes = int(torch.randint(2, 6, (1,), generator=gen))
        x = torch.randn(nodes, 2, generator=gen)
        graphs.append(Data(x=x, edge_index=torch.empty(2, 0, dtype=torch.long),
                           y=(x[:, 0] - x[:, 1]).mean().reshape(1)))
    return graphs


def test_pyg_batches_and_predict():
    seed_everything(0)
    graphs = _graphs()
    model = GraphRegressor()
    result = fit(model, GraphLoader(graphs, batch_size=8, shuffle=True), GraphLoader(graphs, 16),
                 loss_fn=nn.MSELoss(), evaluate={"rmse": rmse}, direction="minimize",
                 lr=0.05, epochs=60, progress=False)
    assert result.best_value < 0.05
    out, target = predict(model, GraphLoader(graphs, 16))
    assert out.shape == target.shape == (40,)
    assert model.training  # predict restores the mode


def test_default_forward_errors_and_custom_forward():
    with pytest.raises(TypeError, match="forward="):
        default_forward(Linear(), {"x": 1}, torch.device("cpu"))
    with pytest.raises(ValueError, match="target"):
        default_forward(Linear(), (torch.zeros(1, 3),), torch.device("cpu"))
    # a custom adapter: dict batches
    data = [{"inputs": torch.tensor([[1.0, 0.0, 0.0]]), "label": torch.tensor([1])}] * 4

    def forward(model, batch, device):
        return torch.stack([-model(batch["inputs"]), model(batch["inputs"])], -1), batch["label"]

    metrics = evaluate(Linear(), data, {"accuracy": accuracy}, forward=forward)
    assert set(metrics) == {"accuracy"}


def test_progress_bar_runs(capsys):
    _fit(Linear(), epochs=2, progress=True, log=print)
    assert "epoch    2" in capsys.readouterr().out


def test_time_limit_stops_after_the_epoch():
    model, result = _scripted_fit([0.5] * 10, time_limit=1e-9)
    assert result.stopped_early and result.epochs_run == 1
    with pytest.raises(ValueError, match="time_limit"):
        _scripted_fit([0.5], time_limit=0)
