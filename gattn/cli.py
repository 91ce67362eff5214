"""The ``gattn`` command.

::

    gattn train <pipeline> [pipeline options]        train once, print the metrics
    gattn tune  <pipeline> --trials N [--timeout S] [--storage URL] [--study-name NAME]
                [pipeline options]                     Optuna search, print + save a report
    gattn datasets [--root DIR]                        which data sets are available locally

``gattn train <pipeline> --help`` lists a pipeline's options. The data root is ``--root``,
else the environment variable ``GATTN_DATA``, else ``../shared/data`` if that folder exists,
else ``./data``. Runs (study databases, reports, checkpoints) go under ``--runs-dir``
(default ``runs``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gattn.pipelines import PIPELINES, load_pipeline

__all__ = ["main", "resolve_root"]

#: dataset modules asked by ``gattn datasets`` (skipped when not present), with the folder
#: under the data root that each one's ``available(root)`` expects ("" for the root itself)
DATASET_MODULES = {"gattn.datasets.ogb": "ogb", "gattn.datasets.sbm": "",
                   "gattn.datasets.mil": ""}

# Keys the CLI puts in a pipeline's config; not pipeline options.
_CLI_KEYS = {"command", "pipeline", "trials", "timeout", "storage", "study_name", "no_prune",
             "pruner_warmup", "pruner_startup", "report_dir", "no_plots", "json", "no_progress",
             "sampler_seed"}


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$GATTN_DATA``, else ``../shared/data``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("GATTN_DATA")
    if env:
        return Path(env).expanduser()
    shared = Path("..") / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path("data")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None,
                        help="data directory (default: $GATTN_DATA, ../shared/data, ./data)")
    parser.add_argument("--runs-dir", default="runs",
                        help="where studies, reports and checkpoints go (default: runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the result as JSON to PATH")


def _add_tune_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search")
    group.add_argument("--trials", type=_positive_int, required=True,
                       help="target number of finished (complete or pruned) trials in the study")
    group.add_argument("--timeout", type=_positive_float, default=None,
                       help="stop starting trials after this many seconds")
    group.add_argument("--storage", default=None,
                       help="Optuna storage URL: sqlite:///file.db, postgresql://user:pw@host/db, "
                            "journal:PATH (default: sqlite under RUNS_DIR/<pipeline>/study.db)")
    group.add_argument("--study-name", default=None,
                       help="default: <pipeline>-<dataset>-<model>")
    group.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
    group.add_argument("--no-prune", action="store_true", help="disable median pruning")
    group.add_argument("--pruner-warmup", type=int, default=5,
                       help="epochs before a trial may be pruned (default 5)")
    group.add_argument("--pruner-startup", type=int, default=5,
                       help="trials before pruning starts (default 5)")
    group.add_argument("--report-dir", default=None,
                       help="where the report goes (default: RUNS_DIR/<pipeline>/<study-name>)")
    group.add_argument("--no-plots", action="store_true", help="do not write PNG plots")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (pipeline modules are imported to add their options)."""
    parser = argparse.ArgumentParser(
        prog="gattn", description="Train and tune gattn pipelines; list local data sets.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for command, help_text in (("train", "train one configuration and print its metrics"),
                               ("tune", "Optuna search over a pipeline's hyperparameters")):
        sub = commands.add_parser(command, help=help_text, description=help_text)
        pipes = sub.add_subparsers(dest="pipeline", required=True, metavar="PIPELINE")
        for name in PIPELINES:
            try:
                module = load_pipeline(name)
            except (ImportError, TypeError) as exc:
                pipe = pipes.add_parser(name, help=f"(unavailable: {exc})")
                pipe.set_defaults(_unavailable=str(exc))
                continue
            pipe = pipes.add_parser(name, help=(module.__doc__ or "").strip().split("\n")[0],
                                    description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
            _add_common(pipe)
            if command == "train":
                pipe.add_argument("--checkpoint", default=None, metavar="PATH",
                                  help="write the best model's weights here")
            else:
                _add_tune_options(pipe)
            module.add_arguments(pipe)

    data = commands.add_parser("datasets", help="list the data sets available locally")
    data.add_argument("--root", default=None,
                      help="data directory (default: $GATTN_DATA, ../shared/data, ./data)")
    return parser


def _config(args: argparse.Namespace) -> dict[str, Any]:
    config = {k: v for k, v in vars(args).items() if k not in _CLI_KEYS and not k.startswith("_")}
    config["root"] = str(resolve_root(args.root))
    config["progress"] = None if not args.no_progress else False
    return config


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        tmp.replace(target)


def _train(args: argparse.Namespace) -> int:
    from gattn.tune.report import format_table

    module = load_pipeline(args.pipeline)
    config = _config(args)
    metrics = module.run(config)
    print(format_table(metrics, header=("metric", "value")))
    _write_json(args.json, {"pipeline": args.pipeline, "config": config, "metrics": metrics})
    return 0


def _tune(args: argparse.Namespace) -> int:
    from gattn.tune import default_study_name, finished_trials, optimize
    from gattn.tune.report import summary_table, write_report

    module = load_pipeline(args.pipeline)
    config = _config(args)
    study_name = args.study_name or default_study_name(module.NAME, config)
    report_dir = Path(args.report_dir or Path(args.runs_dir) / module.NAME / study_name)
    try:
        study = optimize(
            module, config, args.trials, timeout=args.timeout, storage=args.storage,
            study_name=study_name, runs_dir=args.runs_dir, seed=args.sampler_seed,
            prune=not args.no_prune, n_startup_trials=args.pruner_startup,
            n_warmup_steps=args.pruner_warmup,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished trials are kept in the study {study_name!r}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    summary = write_report(study, report_dir, plots=not args.no_plots)
    print(summary_table(summary))
    print(f"\nreport: {report_dir} ({finished_trials(study)} finished trials)")
    _write_json(args.json, summary)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from gattn.tune.report import format_table

    root = resolve_root(args.root)
    print(f"data root: {root}{'' if root.is_dir() else ' (missing)'}")
    for module_path, subfolder in DATASET_MODULES.items():
        short = module_path.rsplit(".", 1)[1]
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_path.startswith(exc.name):
                continue  # that loader is not part of this installation
            raise
        available = getattr(module, "available", None)
        if available is None:
            continue
        found = available(root / subfolder if subfolder else root)
        print(f"\n[{short}]")
        if isinstance(found, dict):
            found = list(found.items())
        if not isinstance(found, (list, tuple)):
            found = [found]
        rows = []
        for item in found:
            if isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[1], bool):
                # (name, present, detail)
                rows.append((item[0], "yes" if item[1] else "no", item[2]))
            elif isinstance(item, (list, tuple)):
                rows.append(tuple(item))
            else:
                rows.append((item,))
        print(format_table(rows, header=("name", "present", "where / what is missing")
                           if rows and len(rows[0]) == 3 else None) if rows else "  (none)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gattn`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        parser.error(f"pipeline {args.pipeline!r} is unavailable: {args._unavailable}")
    if args.command == "train":
        return _train(args)
    if args.command == "tune":
        return _tune(args)
    return _datasets(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
