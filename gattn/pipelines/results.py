"""Showing results: plain-text tables (integers as integers, ``mean ± std`` where a run has a
standard deviation, a chance or baseline column; used by the ``gattn`` command, the tuning
report and the examples), and the learning curves of a run folder's ``metrics.csv``."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_results", "format_table", "plot_learning_curves", "read_epoch_table"]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.4g}"
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[Sequence[Any]] | Mapping[str, Any],
                 header: Sequence[str] | None = None) -> str:
    """A plain-text table, columns aligned, a rule under the header.

    Args:
        rows (Sequence or Mapping): a sequence of rows (sequences of cells), or a mapping
            ``name -> value`` (two columns).
        header (Sequence[str], optional): the column names. (default: ``("name", "value")``
            for a mapping, none otherwise)
    """
    if isinstance(rows, Mapping):
        rows = [(k, v) for k, v in rows.items()]
        header = header or ("name", "value")
    cells = [[_fmt(c) for c in row] for row in rows]
    if header is not None:
        cells = [list(header)] + cells
    if not cells:
        return ""
    ncol = max(len(r) for r in cells)
    cells = [r + [""] * (ncol - len(r)) for r in cells]
    widths = [max(len(r[i]) for r in cells) for i in range(ncol)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    if header is not None:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_results(metrics: dict[str, Any], chance: dict[str, float] | None = None) -> str:
    """A table of results: ``mean ± std`` where a ``<name>_std`` is present, a chance column
    where the pipeline gave one.

    Args:
        metrics (dict): ``name -> value`` (a run's aggregated metrics).
        chance (dict, optional): ``name -> chance level or baseline``. (default: :obj:`None`)
    """
    chance = chance or {}
    rows = []
    for key, value in metrics.items():
        if key.endswith("_std") and key[:-4] in metrics:
            continue
        shown = _fmt(value)
        if f"{key}_std" in metrics:
            shown += f" ± {_fmt(metrics[key + '_std'])}"
        row = [key, shown]
        if chance:
            row.append(_fmt(chance[key]) if key in chance else "")
        rows.append(row)
    header = ("metric", "value", "chance / baseline") if chance else ("metric", "value")
    return format_table(rows, header=header)


def read_epoch_table(path: str | os.PathLike) -> dict[str, list[float]]:
    """The columns of a ``metrics.csv`` written during training (one row per epoch), as floats
    (NaN where a row has no value).

    Args:
        path (str or os.PathLike): the ``metrics.csv`` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a row whose number of cells differs from the header's (with its line number).
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header, columns = rows[0], {name: [] for name in rows[0]}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {number}: {len(row)} cells, the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            columns[name].append(float(cell) if cell else math.nan)
    return columns


def plot_learning_curves(
    tables: Mapping[str, str | os.PathLike], path: str | os.PathLike, title: str = "",
    metrics: Sequence[str] | None = None,
) -> Path | None:
    """A PNG of learning curves per epoch: the losses (left) and the validation metrics (right).

    Args:
        tables (Mapping[str, str | os.PathLike]): ``label -> metrics.csv`` (one table: a run; several: the folds of a
            cross-validation, one line each, labelled).
        path (str or os.PathLike): the PNG to write (atomically).
        title (str, optional): the figure's title. (default: ``""``)
        metrics (Sequence[str], optional): the validation columns of the right panel (default: every ``val_*`` column
            that is not a loss).

    Returns:
        ``path``, or None when no table holds an epoch (nothing is written).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    read = {label: read_epoch_table(csv_path) for label, csv_path in tables.items()}
    read = {label: table for label, table in read.items() if table.get("epoch")}
    if not read:
        return None
    if metrics is None:
        metrics = sorted({c for t in read.values() for c in t if c.startswith("val_") and not c.endswith("loss")})
    several = len(read) > 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for n, (label, table) in enumerate(read.items()):
        for m, (column, axis) in enumerate([(c, left) for c in ("train_loss", "val_loss")]
                                           + [(c, right) for c in metrics]):
            if column in table:
                name = f"{label} {column}" if several else column
                axis.plot(table["epoch"], table[column], marker="o" if len(table["epoch"]) < 20 else None,
                          markersize=3, linewidth=1, label=name, color=f"C{n if several else m}",
                          linestyle="--" if column == "val_loss" else "-")
    for axis, ylabel in ((left, "loss"), (right, "validation metric")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7, ncol=2 if several else 1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure to ``path`` (its folder created) through a temporary file and a
    rename, so that a reader never sees half a PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path
