"""The ``gattn`` command.

::

    gattn train PIPELINE [--config FILE] [options]     train once, print the metrics
    gattn train --config runs/<pipeline>/<run>/config.yaml      repeat a run
    gattn train --resume runs/<pipeline>/<run>          continue an interrupted run
    gattn tune PIPELINE --trials N [--timeout S] [--storage URL] [--study-name NAME] [options]
    gattn tune PIPELINE --trials N --workers K          K local worker processes on one study
    gattn train PIPELINE --devices N [--num-nodes M] --strategy ddp     distributed training
    gattn datasets [--root DIR]                         the data sets found locally
    gattn pipelines                                     the registered pipelines
    gattn tune PIPELINE --trials N --dashboard [PORT]   ... watched live in optuna-dashboard
    gattn dashboard RUN_DIR|STUDY_FILE|URL [--port P]   a finished study in optuna-dashboard

``gattn train PIPELINE --help`` lists a pipeline's options (generated from its typed
configuration). A config file (YAML) sets options; options on the command line override it.
Every run writes a folder ``RUNS_DIR/<pipeline>/<run>`` with the effective configuration,
metrics, checkpoints and logs. Errors are reported in one line naming the option or file;
``--debug`` shows the traceback. Pipelines outside gattn: ``--plugin MODULE`` or the
``GATTN_PLUGINS`` environment variable (see :mod:`gattn.pipelines.registry`).

OpenMP threads: the command runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` itself (set before torch loads its OpenMP runtime, and
inherited by tuning workers and data-loader processes). With the default policy an OpenMP
thread spins for milliseconds after each parallel region; on a machine with other work that
spinning takes time slices from the threads doing the work. Measured with
``benchmarks/edge_attention.py`` (2 threads, mini-batch steps, two busy-loop processes):
gattn's training step was 0.58-1.03 s with the default policy against 0.49-0.52 s passive,
and the same on an idle machine (0.216 s both).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gattn import __version__

__all__ = ["build_parser", "main"]

_STACK = ("lightning", "optuna", "optuna_integration", "yaml", "pandas", "sklearn", "matplotlib", "tqdm")


class UsageError(ValueError):
    """A command-line mistake that argparse cannot see (names the option)."""


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _missing_stack() -> list[str]:
    return [name for name in _STACK if not _importable(name)]


# ------------------------------------------------------------------------------ parser
def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--config", metavar="FILE", help="YAML file of options (command-line options override it)")
    group.add_argument("--runs-dir", default="runs", metavar="DIR",
                       help="where run folders and studies go (default: runs)")
    group.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def _add_tune_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search")
    group.add_argument("--trials", type=_positive_int, required=True,
                       help="target number of finished (complete or pruned) trials in the study")
    group.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                       help="stop starting trials after this many seconds")
    group.add_argument("--storage", default=None, metavar="URL",
                       help="Optuna storage: sqlite:///file.db, postgresql://user:pw@host/db, journal:PATH "
                            "(default: sqlite under RUNS_DIR/<pipeline>/study.db)")
    group.add_argument("--study-name", default=None,
                       help="default: <pipeline>-<data set>-<hash of the fixed configuration>")
    group.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed (default 0)")
    group.add_argument("--no-prune", action="store_true", help="disable median pruning")
    group.add_argument("--pruner-warmup", type=int, default=5,
                       help="epochs (or folds) before a trial may be pruned (default 5)")
    group.add_argument("--pruner-startup", type=int, default=5, help="trials before pruning starts (default 5)")
    group.add_argument("--dashboard", nargs="?", const=8080, default=None, type=_port, metavar="PORT",
                       help="serve the study in optuna-dashboard on 127.0.0.1:PORT while it runs "
                            "(default port 8080; 0: any free port)")
    group.add_argument("--report-dir", default=None, metavar="DIR",
                       help="where the report goes (default: RUNS_DIR/<pipeline>/<study-name>)")
    group.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    workers = parser.add_argument_group("workers (many processes or machines on one study)")
    workers.add_argument("--workers", type=_positive_int, default=1,
                         help="worker processes started here, sharing the study (default 1); more workers "
                              "elsewhere run the same command with the same --storage and --study-name")
    workers.add_argument("--heartbeat-interval", type=_positive_int, default=None, metavar="SECONDS",
                         help=f"RDB storages: seconds between heartbeats of a running trial "
                              f"(default {_tuning_default('HEARTBEAT_INTERVAL')})")
    workers.add_argument("--grace-period", type=_positive_int, default=None, metavar="SECONDS",
                         help="RDB storages: a running trial without a heartbeat for this long is failed "
                              f"(at least twice the interval; default {_tuning_default('GRACE_PERIOD')})")
    workers.add_argument("--retries", type=_non_negative_int, default=None,
                         help="times a trial whose worker died is queued again with its parameters "
                              f"(default {_tuning_default('RETRIES')})")
    workers.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)


def _whole_number(low: int, expected: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1, "a positive integer")
_non_negative_int = _whole_number(0, "a whole number >= 0")


def _tuning_default(name: str) -> int:
    # the values live in gattn.tune.study, which imports optuna: not needed to build the parser
    return {"HEARTBEAT_INTERVAL": 60, "GRACE_PERIOD": 180, "RETRIES": 1}[name]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {value}")
    return value


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0]


def build_parser(plugins: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser: one sub-command per registered pipeline under ``train`` and ``tune``.

    Args:
        plugins (Sequence[str], optional): modules to import first, so that the pipelines they
            register get sub-commands (``--plugin``). (default: ``()``)
    """
    from gattn.pipelines.config import add_options
    from gattn.pipelines.registry import discover, problems

    parser = argparse.ArgumentParser(prog="gattn", description=_first_line(__doc__) or "gattn")
    _add_global(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registry = discover(plugins)
    for command, help_text in (("train", "train one configuration and print its metrics"),
                               ("tune", "Optuna search over a pipeline's hyperparameters")):
        sub = commands.add_parser(command, help=help_text, description=help_text)
        pipes = sub.add_subparsers(dest="pipeline", required=command == "tune", metavar="PIPELINE")
        for name in sorted(registry):
            cls = registry[name]
            doc = cls.__doc__ or ""
            pipe = pipes.add_parser(name, help=_first_line(doc), description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
            _add_run_options(pipe)
            if command == "train":
                pipe.add_argument("--run-name", metavar="NAME",
                                  help="name of the run folder (default: time and data set)")
            else:
                _add_tune_options(pipe)
            add_options(pipe, cls.Config)
        if command == "train":
            sub.description = (f"{help_text}. `gattn train --config FILE` repeats the run a config file "
                               "describes (its 'pipeline:' key names the pipeline).")
            sub.add_argument("--resume", metavar="RUN_DIR",
                             help="continue the interrupted run in RUN_DIR (its config.yaml)")
            sub.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
        for module, why in problems().items():
            sub.epilog = (sub.epilog or "") + f"unavailable: {module} ({why})\n"
    data = commands.add_parser("datasets", help="list the data sets available locally")
    data.add_argument("--root", default=None, metavar="DIR",
                      help="data directory (default: $GATTN_DATA, else ~/.local/share/gattn)")
    commands.add_parser("pipelines", help="list the registered pipelines")
    board = commands.add_parser("dashboard", help="serve a study in optuna-dashboard (until Ctrl-C)")
    board.add_argument("target", metavar="RUN_DIR", help="runs/<pipeline>, a study's folder, a study file "
                       "(study.db, .log) or a storage URL")
    board.add_argument("--port", type=_port, default=8080, help="port on 127.0.0.1 (default 8080; 0: any free)")
    return parser


def _add_global(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"gattn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE to register its pipelines (repeatable)")


# ---------------------------------------------------------------------------- results
def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        tmp.replace(target)


# --------------------------------------------------------------------------- commands
_RUN_KEYS = {"command", "pipeline", "config", "runs_dir", "json", "run_name", "resume", "trials", "timeout",
             "storage", "study_name", "sampler_seed", "no_prune", "pruner_warmup", "pruner_startup",
             "report_dir", "no_plots", "debug", "plugin", "dashboard", "workers", "heartbeat_interval",
             "grace_period", "retries", "worker_index", "argv"}


def _configuration(args: argparse.Namespace, pipeline: Any) -> Any:
    """The effective configuration: defaults, then ``--config`` FILE, then the options given."""
    from gattn.pipelines.config import read_config_file
    from gattn.pipelines.runner import make_config

    values: dict[str, Any] = {}
    source = "the command line"
    if getattr(args, "config", None):
        values = read_config_file(args.config)
        named = values.pop("pipeline", pipeline.name)
        if named != pipeline.name:
            raise UsageError(f"config file {args.config} is for pipeline {named!r}, not {pipeline.name!r}")
        source = f"config file {args.config}"
    given = {k: v for k, v in vars(args).items() if k not in _RUN_KEYS}
    if given and source != "the command line":
        source = f"{source} or the command line"
    return make_config(pipeline, {**values, **given}, source=source)


def _train(args: argparse.Namespace) -> int:
    from gattn.pipelines.registry import get_pipeline
    from gattn.pipelines.runner import new_run_dir

    if args.resume:
        return _resume(args)
    pipeline = get_pipeline(args.pipeline)
    config = _configuration(args, pipeline)
    run_dir = _distributed_run_dir(args, pipeline, config)
    if run_dir is None:
        if args.run_name:
            run_dir = new_run_dir(args.runs_dir, pipeline, config, args.run_name)
            if run_dir.exists() and any(run_dir.iterdir()):
                raise UsageError(f"run folder {run_dir} exists: continue it with --resume {run_dir}, "
                                 "or choose another --run-name")
        else:
            run_dir = new_run_dir(args.runs_dir, pipeline, config)
        print(f"{pipeline.describe(config)}: run folder {run_dir}", flush=True)
    return _run_shared(args, pipeline, config, run_dir)


def _distributed_run_dir(args: argparse.Namespace, pipeline: Any, config: Any) -> Path | None:
    """The run folder of a process of a distributed run that is not rank zero (rank zero's), or
    None for rank zero and single-process runs.

    The processes Lightning starts for the other ranks inherit rank zero's folder through the
    environment; processes that torchrun or SLURM start together must be given ``--run-name``.
    """
    import os

    from gattn.pipelines.runner import RANK_VARIABLES, RUN_DIR_ENV, is_rank_zero, new_run_dir, processes_per_run

    if processes_per_run(config) == 1:
        return None
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return None if is_rank_zero(config) else Path(inherited)
    if any(name in os.environ for name in RANK_VARIABLES) and not args.run_name:
        raise UsageError("every process of a distributed run launched by torchrun, SLURM or by hand must write "
                         "to one run folder: give --run-name NAME (and --runs-dir on a file system the nodes share)")
    if not is_rank_zero(config):
        return new_run_dir(args.runs_dir, pipeline, config, args.run_name)
    return None


def _run_shared(args: argparse.Namespace, pipeline: Any, config: Any, run_dir: Path, resume: bool = False) -> int:
    """Train in ``run_dir``; the processes Lightning starts for the other ranks learn the folder
    from the environment."""
    import os

    from gattn.pipelines.runner import RUN_DIR_ENV

    before = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(Path(run_dir).resolve())
    try:
        result = pipeline.run(config, run_dir, resume=resume)
    finally:
        if before is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = before
    return _report_run(args, pipeline, config, result)


def _report_run(args: argparse.Namespace, pipeline: Any, config: Any, result: Any) -> int:
    from gattn.pipelines.results import format_results

    if not result.rank_zero:
        return 0  # rank zero of the distributed run prints and writes the results

    print(format_results(result.metrics, result.chance))
    extra = {k: v for k, v in result.files.items() if k not in ("config", "metrics")}
    for name, path in extra.items():
        print(f"{name}: {path}")
    print(f"run folder: {result.run_dir} (config.yaml repeats it: gattn train --config "
          f"{result.run_dir / 'config.yaml'})")
    from gattn.pipelines.config import config_dict

    _write_json(args.json, {"pipeline": pipeline.name, "config": config_dict(config), "metrics": result.metrics,
                            "chance": result.chance, "run_dir": str(result.run_dir)})
    return 0


def _resume(args: argparse.Namespace) -> int:
    from gattn.pipelines.config import read_config_file
    from gattn.pipelines.registry import get_pipeline
    from gattn.pipelines.runner import make_config

    run_dir = Path(args.resume).expanduser()
    values = read_config_file(run_dir / "config.yaml")
    name = values.pop("pipeline", None)
    if not name:
        raise UsageError(f"{run_dir / 'config.yaml'} names no pipeline: it is not a gattn run folder")
    pipeline = get_pipeline(name)
    config = make_config(pipeline, values, source=str(run_dir / "config.yaml"))
    from gattn.pipelines.runner import is_rank_zero

    if is_rank_zero(config):
        print(f"{pipeline.describe(config)}: resuming {run_dir}", flush=True)
    return _run_shared(args, pipeline, config, run_dir, resume=True)


def _tune(args: argparse.Namespace) -> int:
    from gattn.pipelines.registry import get_pipeline
    from gattn.tune import finished_trials, optimize
    from gattn.tune.report import summary_table, write_report
    from gattn.tune.study import (
        GRACE_PERIOD,
        HEARTBEAT_INTERVAL,
        RETRIES,
        check_heartbeat,
        check_storage,
        default_study_name,
        open_study,
    )

    pipeline = get_pipeline(args.pipeline)
    config = _configuration(args, pipeline)
    heartbeat = dict(heartbeat_interval=args.heartbeat_interval or HEARTBEAT_INTERVAL,
                     grace_period=args.grace_period or GRACE_PERIOD,
                     retries=RETRIES if args.retries is None else args.retries)
    try:
        check_heartbeat(heartbeat["heartbeat_interval"], heartbeat["grace_period"])
    except ValueError as exc:
        raise UsageError(str(exc).replace("grace_period", "--grace-period")
                         .replace("heartbeat_interval", "--heartbeat-interval")) from None
    if args.storage is not None:
        check_storage(args.storage, pipeline.name, args.runs_dir)
    worker = args.worker_index
    pipeline.prepare(config)  # a missing data set is reported before any study is created
    study_name = args.study_name or default_study_name(pipeline, config)
    report_dir = Path(args.report_dir or Path(args.runs_dir) / pipeline.name / study_name)
    prefix = "" if worker is None else f"worker {worker}: "
    print(f"{prefix}{pipeline.describe(config)}: study {study_name!r}, {args.trials} trials"
          + (f", {args.workers} workers" if args.workers > 1 else ""), flush=True)
    options = dict(
        timeout=args.timeout, storage=args.storage, study_name=study_name, runs_dir=args.runs_dir,
        seed=args.sampler_seed, prune=not args.no_prune, n_startup_trials=args.pruner_startup,
        n_warmup_steps=args.pruner_warmup, **heartbeat,
    )
    dashboard = None
    if worker is None and args.dashboard is not None:  # the parent serves it, not every worker
        from gattn.tune.dashboard import start_dashboard

        dashboard = start_dashboard(args.dashboard, check_storage(args.storage, pipeline.name, args.runs_dir),
                                    study_name)
    try:
        if args.workers > 1:
            from gattn.tune.workers import launch_workers

            # the study exists, bound to this configuration, before the workers open it
            shared = dict(storage=args.storage, study_name=study_name, runs_dir=args.runs_dir, **heartbeat)
            open_study(pipeline, config, **shared)
            statuses = launch_workers([*args.argv, "--workers", "1", "--study-name", study_name], args.workers)
            failed = {k: code for k, code in enumerate(statuses) if code != 0}
            for index, code in failed.items():
                how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                print(f"gattn: worker {index} stopped early ({how})", file=sys.stderr)
            study = open_study(pipeline, config, **shared)
        else:
            study = optimize(pipeline, config, args.trials, **options)
            failed = {}
    except KeyboardInterrupt:
        print(f"\ngattn: {prefix}interrupted: the finished trials are kept in study {study_name!r}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if dashboard is not None:
            dashboard.stop()
    if worker is not None:
        print(f"{prefix}done ({finished_trials(study)} finished trials in the study)", flush=True)
        return 0
    summary = write_report(study, report_dir, plots=not args.no_plots)
    print(summary_table(summary))
    print(f"\nreport: {report_dir} ({finished_trials(study)} finished trials)")
    _write_json(args.json, summary)
    if failed and finished_trials(study) < args.trials:
        raise UsageError(f"{len(failed)} worker(s) stopped early and the study has {finished_trials(study)} of "
                         f"{args.trials} trials: run the same command again to finish it")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from gattn.datasets.root import resolve_root, sources
    from gattn.tune.report import format_table

    root = resolve_root(args.root)
    print(f"data root: {root}{'' if root.is_dir() else ' (missing)'}")
    found, problems = sources()
    for source in found:
        folder = root / source.folder if source.folder else root
        rows = [(name, "yes" if present else "no", detail) for name, present, detail in source.available(folder)]
        print(f"\n[{source.name}]")
        print(format_table(rows, header=("name", "present", "where / what is missing")) if rows else "  (none)")
    for problem in problems:
        print(f"\n(not loaded: {problem})")
    return 0


def _pipelines(args: argparse.Namespace) -> int:
    from gattn.pipelines.registry import discover, problems
    from gattn.tune.report import format_table

    registry = discover()
    rows = [(name, cls.metric, _first_line(cls.__doc__)) for name, cls in sorted(registry.items())]
    print(format_table(rows, header=("pipeline", "metric", "what")))
    for module, why in problems().items():
        print(f"unavailable: {module} ({why})")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from gattn.tune.dashboard import serve

    return serve(args.target, port=args.port)


# ------------------------------------------------------------------------------- main
def _insert_pipeline(argv: list[str]) -> list[str]:
    """``train --config FILE`` without a pipeline: take it from the file's ``pipeline:`` key."""
    if not argv or argv[0] != "train" or len(argv) < 2 or not argv[1].startswith("-"):
        return argv
    if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
        return argv
    if "--resume" in argv:
        return argv
    from gattn.pipelines.config import read_config_file

    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            return argv
        path = argv[index + 1]
    else:
        path = next(a for a in argv if a.startswith("--config=")).split("=", 1)[1]
    name = read_config_file(path).get("pipeline")
    if not name:
        raise UsageError(f"config file {path} has no 'pipeline:' key: give the pipeline, "
                         "gattn train PIPELINE --config FILE")
    return ["train", str(name), *argv[1:]]


def _passive_openmp(environ) -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` in `environ` unless the user chose a wait policy or spin count
    (see the module's docstring: OpenMP threads then sleep at once after a parallel region
    instead of spinning, which a busy machine pays for)."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gattn`` console script; returns the exit status.

    Args:
        argv (Sequence[str], optional): the arguments (``None``: ``sys.argv[1:]``). (default: ``None``)
    """
    if argv is None:  # the console script, not a caller's own process
        _passive_openmp(os.environ)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if any(a in ("--version", "-V") for a in argv[:1]):
        print(f"gattn {__version__}")
        return 0
    missing = _missing_stack()
    if missing:
        print(f"gattn: the command needs the training stack (missing: {', '.join(missing)}): "
              "pip install 'gattn[pipelines]'", file=sys.stderr)
        return 2
    try:
        plugins, argv = _plugins(argv)
        argv = _insert_pipeline(argv)
        parser = build_parser(plugins)
        args = parser.parse_args(argv)
        args.argv = [*(a for plugin in plugins for a in ("--plugin", plugin)), *argv]
        if args.command == "train" and not args.pipeline and not args.resume:
            parser.error("train needs a PIPELINE (or --config FILE naming one, or --resume RUN_DIR)")
        handler = {"train": _train, "tune": _tune, "datasets": _datasets, "pipelines": _pipelines,
                   "dashboard": _dashboard}
        return handler[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ngattn: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:
        if debug:
            raise
        message = _first_line(str(exc)) or type(exc).__name__
        if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and exc.filename not in message:
            message += f" ({exc.filename})"
        print(f"gattn: error: {message}  (--debug shows the traceback)", file=sys.stderr)
        return 1


def _plugins(argv: list[str]) -> tuple[list[str], list[str]]:
    """``--plugin MODULE`` values (imported before the parser is built, so they may stand
    anywhere on the line) and the other arguments."""
    found, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--plugin="):
            found.append(argv[i].split("=", 1)[1])
        else:
            rest.append(argv[i])
        i += 1
    return found, rest


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
