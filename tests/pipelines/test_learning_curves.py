"""Learning curves: every run folder gets a PNG of its metrics.csv."""

from __future__ import annotations

import math

import pytest
from matplotlib.axes import Axes

from gattn.pipelines import make_config, run
from gattn.pipelines.results import plot_learning_curves, read_epoch_table
from tests.plugins.toy_pipeline import ToyPipeline

toy = ToyPipeline()


@pytest.fixture
def drawn(monkeypatch):
    """The (label, x, y) of every line drawn."""
    lines: list[tuple[str, list[float], list[float]]] = []
    original = Axes.plot

    def plot(self, x, y, *args, **kwargs):
        lines.append((kwargs.get("label"), list(x), list(y)))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", plot)
    return lines


def test_the_curves_are_the_csv_columns(tmp_path, drawn):
    table = tmp_path / "metrics.csv"
    table.write_text("epoch,train_loss,val_loss,val_rocauc,lr,seconds\n1,0.9,1.0,0.6,0.01,0.5\n2,0.5,,0.8,0.01,0.4\n")
    columns = read_epoch_table(table)
    assert columns["epoch"] == [1.0, 2.0] and math.isnan(columns["val_loss"][1])
    png = plot_learning_curves({"run": table}, tmp_path / "curves.png", "toy")
    assert png == tmp_path / "curves.png" and png.stat().st_size > 5_000
    assert [(label, y) for label, _, y in drawn if label != "val_loss"] == [("train_loss", [0.9, 0.5]),
                                                                          ("val_rocauc", [0.6, 0.8])]
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_or_empty_tables(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,train_loss\n1,0.5\n2\n")
    with pytest.raises(ValueError, match="line 3: 1 cells"):
        read_epoch_table(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,train_loss\n")
    assert plot_learning_curves({"run": empty}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(FileNotFoundError):
        read_epoch_table(tmp_path / "missing.csv")


def test_a_cross_validated_run_draws_each_split_and_all_together(tmp_path, drawn):
    result = run(toy, make_config(toy, {"progress": False, "folds": 2, "epochs": 2}), tmp_path / "cv")
    folder = tmp_path / "cv"
    assert result.files["learning_curves"] == str(folder / "learning_curves.png")
    for path in (folder / "learning_curves.png", folder / "fold-1" / "learning_curves.png",
                 folder / "fold-2" / "learning_curves.png"):
        assert path.stat().st_size > 5_000
    together = {label: y for label, _, y in drawn if label.startswith("fold-")}  # the run folder's figure
    for fold in ("fold-1", "fold-2"):
        table = read_epoch_table(folder / fold / "metrics.csv")
        assert together[f"{fold} train_loss"] == table["train_loss"]
        assert together[f"{fold} val_rocauc"] == table["val_rocauc"]


def test_a_single_split_in_its_own_folder_draws_there(tmp_path):
    """One fold of a cross-validation (MIL with one repeat of one fold trains in fold-01/)."""

    class OneFold(ToyPipeline):
        def splits(self, config, data):
            from gattn.pipelines import Split

            return [Split("fold-01")]

    one = OneFold()
    result = run(one, make_config(one, {"progress": False, "epochs": 2}), tmp_path / "one")
    assert result.files["learning_curves"] == str(tmp_path / "one" / "fold-01" / "learning_curves.png")
    assert (tmp_path / "one" / "fold-01" / "learning_curves.png").stat().st_size > 5_000
