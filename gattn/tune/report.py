"""Reports of an Optuna study: a printed table, a JSON summary, plots as PNG files."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

from gattn.pipelines.results import _fmt, format_table

__all__ = ["format_table", "summarize", "summary_table", "write_report"]


def summarize(study: optuna.Study) -> dict[str, Any]:
    """The summary of a study.

    Args:
        study (optuna.Study): the study (of :func:`gattn.tune.optimize` or any other).

    Returns:
        dict: the study's name and direction, the trial counts by state, the best trial's
        value, parameters and metrics, and the stored fixed configuration.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": study.user_attrs.get("metric"),
        "trials": {k: v for k, v in counts.items() if v},
        "config": study.user_attrs.get("config", {}),
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=dict(best.params),
            best_metrics={k: v for k, v in best.user_attrs.items()
                          if isinstance(v, (int, float))},
            best_duration_s=(best.duration.total_seconds() if best.duration else None),
        )
    return summary


def _save_plot(name: str, plot: Any, out_dir: Path, study: optuna.Study, **kwargs: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plot(study, **kwargs)
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    label = study.user_attrs.get("label") or study.study_name
    title = ax.get_title() if hasattr(ax, "get_title") else name.replace("_", " ")
    fig.suptitle(f"{label}: {title}" if title else label, fontsize=9)
    if hasattr(ax, "set_title"):
        ax.set_title("")
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def write_report(study: optuna.Study, out_dir: str | Path, plots: bool = True) -> dict[str, Any]:
    """Write ``best.json``, ``trials.csv`` and PNG plots under ``out_dir``; return the summary.

    Plots: ``optimization_history.png`` and ``intermediate_values.png`` (needs a complete
    trial), ``param_importances.png`` (needs at least two complete trials whose parameters
    vary; otherwise skipped, and the reason is recorded under ``"skipped_plots"``).

    Args:
        study (optuna.Study): the study.
        out_dir (str or Path): the report folder (created).
        plots (bool, optional): write the PNG plots. (default: :obj:`True`)

    Returns:
        dict: the summary of :func:`summarize`, with the files written.
    """
    from optuna.trial import TrialState

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(study)
    files: dict[str, str] = {}
    skipped: dict[str, str] = {}

    trials = study.get_trials(deepcopy=False)
    if trials:
        frame = study.trials_dataframe()
        frame.to_csv(out_dir / "trials.csv", index=False)
        files["trials"] = str(out_dir / "trials.csv")

    if plots:
        from optuna.visualization import matplotlib as ovm

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        target = f"validation {summary.get('metric') or 'value'}"
        if complete:
            files["optimization_history"] = _save_plot(
                "optimization_history", ovm.plot_optimization_history, out_dir, study, target_name=target)
            if any(t.intermediate_values for t in trials):
                files["intermediate_values"] = _save_plot(
                    "intermediate_values", ovm.plot_intermediate_values, out_dir, study)
        else:
            skipped["optimization_history"] = "no complete trial"
        varied = {
            name for name in {p for t in complete for p in t.params}
            if len({repr(t.params.get(name)) for t in complete}) > 1
        }
        if len(complete) < 2:
            skipped["param_importances"] = f"needs >= 2 complete trials, have {len(complete)}"
        elif not varied:
            skipped["param_importances"] = "no parameter varies across the complete trials"
        else:
            try:
                files["param_importances"] = _save_plot(
                    "param_importances", ovm.plot_param_importances, out_dir, study, target_name=target)
            except (RuntimeError, ValueError, ZeroDivisionError) as exc:
                skipped["param_importances"] = f"{type(exc).__name__}: {exc}"
    summary["files"] = files
    if skipped:
        summary["skipped_plots"] = skipped
    path = out_dir / "best.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    summary["files"]["summary"] = str(path)
    return summary


def summary_table(summary: Mapping[str, Any]) -> str:
    """The summary of :func:`summarize` as printable tables.

    Args:
        summary (Mapping): a summary of :func:`summarize` (or ``best.json`` read back).
    """
    lines = [f"study {summary['study_name']} ({summary['direction']} "
             f"{summary.get('metric') or 'value'})",
             "trials: " + ", ".join(f"{k} {v}" for k, v in summary["trials"].items())]
    if "best_value" in summary:
        lines.append(f"best trial #{summary['best_trial']}: value {_fmt(summary['best_value'])}")
        lines.append("")
        lines.append(format_table(summary["best_params"], header=("parameter", "value")))
        if summary.get("best_metrics"):
            lines.append("")
            lines.append(format_table(summary["best_metrics"], header=("metric", "value")))
    else:
        lines.append("no complete trial yet")
    return "\n".join(lines)

