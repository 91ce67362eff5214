"""Printing results: plain-text tables, integers as integers, ``mean ± std`` where a run has a
standard deviation, and a chance or baseline column (used by the ``gattn`` command, the tuning
report and the examples)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_results", "format_table"]


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
    """A plain-text table: ``rows`` as a sequence of rows or a mapping ``name -> value``."""
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
    where the pipeline gave one."""
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
