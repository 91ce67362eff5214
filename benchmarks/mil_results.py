"""MIL benchmarks side by side with the published numbers, on the papers' protocol.

Every (data set, pooling) pair runs the configuration ``configs/mil_<dataset>.yaml`` through
the ``mil`` pipeline with ``--pooling`` set: Ilse et al.'s protocol (10-fold cross-validation
repeated 5 times, one bag per step, 100 epochs, the best epoch by validation error + loss; see
:mod:`gattn.pipelines.mil`). The table gives the mean and standard deviation over all test
folds of all repetitions of the accuracy and ROC-AUC, the published figure, and whether the
published mean lies within one standard deviation of ours ("in spread"). Options after the
script's own (``--repeats 1``, ``--epochs 50``: any option of ``gattn train mil``) override
the config files.

Published (Ilse et al. 2018, 5 x 10-fold CV): ABMIL accuracy Musk1 0.892, Musk2 0.858,
Elephant 0.868; gated ABMIL 0.900 / 0.863 / 0.857. Ramsauer et al. 2021: Hopfield pooling
ROC-AUC Elephant 94.9 (%). Nothing is published on this protocol for the other data sets.

The protocol is long on a CPU (a Musk1 fold is 7,400 one-bag steps); ``--runs-dir`` keeps each
pair's run folder and, run again, continues where it stopped (finished folds are kept);
``--json`` is rewritten after every pair. Pairs can run in separate processes (each with its
own ``--json``); ``--table`` prints the table of saved JSON files without training, and
``--from-runs`` the table of the folds finished so far in a ``--runs-dir`` (also of runs still
going or stopped; the folds column then says ``6/10``):

    python benchmarks/mil_results.py --root ../shared/data --runs-dir runs/mil-results \\
        --json runs/mil-results/classic.json                               # the README table
    python benchmarks/mil_results.py --datasets musk1 --poolings abmil --repeats 1
    python benchmarks/mil_results.py --table runs/mil-results/*.json [--markdown]
    python benchmarks/mil_results.py --from-runs runs/mil-results [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table
from gattn.pipelines import get_pipeline, make_config
from gattn.pipelines.config import add_options, config_dict, read_config_file, run_control_fields

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: (data set, pooling) -> (published accuracy, published ROC-AUC); None: not published there
PUBLISHED: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("musk1", "abmil"): (0.892, None),
    ("musk2", "abmil"): (0.858, None),
    ("elephant", "abmil"): (0.868, None),
    ("musk1", "gated"): (0.900, None),
    ("musk2", "gated"): (0.863, None),
    ("elephant", "gated"): (0.857, None),
    ("elephant", "hopfield"): (None, 0.949),
}

#: (data set, pooling) -> the published accuracy's +- (Ilse et al. 2018, Table 1: over their 5
#: runs of 10-fold CV, "a standard error of a mean" by their caption)
PUBLISHED_ERROR: dict[tuple[str, str], float] = {
    ("musk1", "abmil"): 0.040,
    ("musk2", "abmil"): 0.048,
    ("elephant", "abmil"): 0.022,
    ("musk1", "gated"): 0.050,
    ("musk2", "gated"): 0.042,
    ("elephant", "gated"): 0.027,
}

HEADER = ["dataset", "pooling", "folds", "accuracy", "published", "in spread", "in published +-", "per repetition",
          "ROC-AUC", "published", "in spread", "best epoch", "s"]


def in_spread(mean: float, std: float, published: float | None) -> str:
    """``yes`` when ``published`` lies within ``mean +- std``, else ``no`` and the signed gap."""
    if published is None or math.isnan(mean):
        return "-"
    gap = mean - published
    return "yes" if abs(gap) <= std else f"no ({gap:+.3f})"


def table_row(record: dict[str, Any]) -> list[str]:
    """One table row of a saved record (a pair's aggregated metrics)."""
    acc, acc_std = record["test_accuracy"], record["test_accuracy_std"]
    auc, auc_std = record["test_rocauc"], record["test_rocauc_std"]
    acc_pub, auc_pub = record.get("published_accuracy"), record.get("published_rocauc")
    acc_pub_error = record.get("published_accuracy_error")
    published = "-" if acc_pub is None else f"{acc_pub:.3f}"
    if acc_pub is not None and acc_pub_error is not None:
        published += f" +- {acc_pub_error:.3f}"
    return [
        record["dataset"], record["pooling"], str(record["splits"]) + (f"/{record['planned']}" if
                                                                     record.get("planned") else ""),
        f"{acc:.3f} +- {acc_std:.3f}", published, in_spread(acc, acc_std, acc_pub),
        "-" if acc_pub_error is None else in_spread(acc, acc_pub_error, acc_pub),
        repetitions_cell(record.get("repetition_accuracy")),
        f"{auc:.3f} +- {auc_std:.3f}", "-" if auc_pub is None else f"{auc_pub:.3f}", in_spread(auc, auc_std, auc_pub),
        f"{record['best_epoch']:.0f}", f"{record['seconds']:.0f}",
    ]


def repetitions_cell(accuracies: list[float] | None) -> str:
    """Mean +- std over whole repetitions of their cross-validated accuracy, and how many: the
    spread Ilse et al.'s +- describes (folds of 9 to 20 bags make the per-fold std far wider)."""
    if not accuracies:
        return "-"
    return f"{np.mean(accuracies):.3f} +- {np.std(accuracies):.3f} ({len(accuracies)})"


def repetition_accuracies(folds: list[dict[str, Any]], n_folds: int) -> list[float]:
    """The test accuracy of each complete repetition (all its ``n_folds`` folds finished): the
    mean over its folds (stratified, so of equal size to within one bag). ``split`` names a
    fold ``repeat-R-fold-F`` (``fold-F`` in a run of one repetition)."""
    by_repeat: dict[str, list[dict[str, Any]]] = {}
    for fold in folds:
        name = str(fold.get("split", ""))
        by_repeat.setdefault(name.split("-fold-")[0] if "-fold-" in name else "repeat-1", []).append(fold)
    return [float(np.mean([f["test_accuracy"] for f in group]))
            for _, group in sorted(by_repeat.items()) if len(group) == n_folds]


def print_records(records: list[dict[str, Any]], markdown: bool = False) -> None:
    """The results table of ``records`` (aligned text, or Markdown rows for the README)."""
    rows = [table_row(r) for r in records]
    protocols = sorted({r.get("protocol", "?") for r in records})
    if markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "---|" * len(HEADER))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    print_table("MIL, mean +- std over all test folds; " + "; ".join(protocols), HEADER, rows)


def protocol_of(config: Any) -> str:
    return (f"{config.folds}-fold CV x {config.repeats}, batch {config.batch_size}, {config.epochs} epochs, "
            f"best epoch by val {config.monitor}" + (f", patience {config.patience}" if config.patience else ""))


def published(dataset: str, pooling: str) -> dict[str, float | None]:
    acc, auc = PUBLISHED.get((dataset, pooling), (None, None))
    return {"published_accuracy": acc, "published_rocauc": auc,
            "published_accuracy_error": PUBLISHED_ERROR.get((dataset, pooling))}


def records_from_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """A record per ``<dataset>-<pooling>`` run folder of ``runs_dir`` from the folds it has
    finished so far (their ``result.json``), with ``planned``, the folds its configuration asks for."""
    pipeline = get_pipeline("mil")
    records = []
    for saved in sorted(Path(runs_dir).glob("*/config.yaml")):
        values = read_config_file(saved)
        values.pop("pipeline", None)
        config = make_config(pipeline, values)
        folds = [{**json.loads(p.read_text()), "split": p.parent.name}
                 for p in sorted(saved.parent.glob("*fold-*/result.json"))]
        if not folds:
            continue
        planned = config.folds * config.repeats
        record: dict[str, Any] = {"dataset": config.dataset, "pooling": config.pooling, "splits": len(folds),
                                  "planned": min(planned, config.max_folds or planned),
                                  "seconds": sum(f["time_s"] for f in folds), "protocol": protocol_of(config),
                                  **published(config.dataset, config.pooling)}
        for key in ("test_accuracy", "test_rocauc", "best_epoch"):
            values = np.array([f[key] for f in folds], dtype=float)
            record[key], record[f"{key}_std"] = float(np.nanmean(values)), float(np.nanstd(values))
        record["repetition_accuracy"] = repetition_accuracies(folds, config.folds)
        records.append(record)
    return records


def run_pair(pipeline: Any, config: Any, runs_dir: str | None) -> tuple[dict[str, Any], float]:
    """Train one pair; in ``runs_dir/<dataset>-<pooling>`` (resumed) or a temporary folder."""
    start = time.perf_counter()
    if runs_dir:
        folder = Path(runs_dir) / f"{config.dataset}-{config.pooling}"
        saved = folder / "config.yaml"
        if saved.is_file():
            # max_folds only says how many of the folds to run: finished folds stay valid
            ignored = run_control_fields(type(config)) | {"max_folds"}
            before = {k: v for k, v in read_config_file(saved).items() if k not in ignored and k != "pipeline"}
            now = {k: v for k, v in config_dict(config).items() if k not in ignored}
            changed = sorted(k for k in now if before.get(k) != now[k])
            if changed:
                raise SystemExit(f"{folder} holds a run of another configuration ({', '.join(changed)} "
                                 "differ): give another --runs-dir or remove that folder")
        metrics = pipeline.run(config, folder, resume=saved.is_file()).metrics
    else:
        with tempfile.TemporaryDirectory(prefix="gattn-mil-") as tmp:
            metrics = pipeline.run(config, Path(tmp) / "run").metrics
    return metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="musk1,musk2,elephant")
    parser.add_argument("--poolings", default="abmil,gated,hopfield,acmil")
    parser.add_argument("--json", default=None, help="write the records here (after every pair)")
    parser.add_argument("--runs-dir", default=None, help="keep each pair's run folder here and resume it")
    parser.add_argument("--table", nargs="+", default=None, metavar="JSON",
                        help="print the table of these saved record files and exit (no training)")
    parser.add_argument("--from-runs", default=None, metavar="RUNS_DIR",
                        help="print the table of the folds finished so far in this --runs-dir and exit")
    parser.add_argument("--markdown", action="store_true",
                        help="with --table / --from-runs: Markdown rows for the README")
    args, extra = parser.parse_known_args()
    if args.table or args.from_runs:
        records = ([r for path in args.table for r in json.loads(Path(path).read_text())] if args.table
                   else records_from_runs(args.from_runs))
        print_records(records, markdown=args.markdown)
        return
    pipeline = get_pipeline("mil")
    sub = argparse.ArgumentParser(prog="mil options")
    add_options(sub, pipeline.Config)
    overrides = vars(sub.parse_args(extra))  # only the options given
    records: list[dict[str, Any]] = []
    for dataset in args.datasets.split(","):
        base = read_config_file(CONFIGS / f"mil_{dataset}.yaml")
        base.pop("pipeline", None)
        for pooling in args.poolings.split(","):
            config = make_config(pipeline, {**base, "pooling": pooling, "plot": False, "progress": False,
                                            **overrides})
            print(f"{pipeline.describe(config)} ...", flush=True)
            result, seconds = run_pair(pipeline, config, args.runs_dir)
            records.append({"dataset": dataset, "pooling": pooling, **result, "seconds": seconds,
                            **published(dataset, pooling), "protocol": protocol_of(config)})
            row = table_row(records[-1])
            print(f"{dataset} {pooling}: accuracy {row[3]}, ROC-AUC {row[6]} ({seconds:.0f} s)", flush=True)
            if args.json:
                os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
                Path(args.json).write_text(json.dumps(records, indent=2))
    print_records(records)


if __name__ == "__main__":
    main()
