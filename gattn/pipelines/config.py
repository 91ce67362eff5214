"""Typed pipeline configurations.

A pipeline's configuration is a dataclass deriving from :class:`TrainConfig`; every field is
declared with :func:`option`, which records its help text, its choices or bounds and its
command-line group. From that one declaration come

* the command-line options (:func:`add_options`: ``--hidden 64``, ``--no-progress``, ...);
* config files: YAML mappings of option names to values (:func:`read_config_file`), checked
  against the same declaration (unknown keys and wrong types are named);
* validation (:func:`build_config`): types, choices and bounds, with messages that name the
  option as the user writes it (``--dropout must be in [0, 1), got 1.5``). What a model
  constructor already checks (``hidden`` divisible by ``heads``, ...) is not checked again
  here; its error reaches the user as one line all the same.

Values are merged in this order: the dataclass defaults, then a config file, then the options
given on the command line. Each run folder holds the full effective configuration
(:func:`write_config_file`), which ``gattn train --config FILE`` reads back to repeat the run.

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``tuple[int, ...]`` and
``tuple[float, ...]`` (written ``256,128`` on the command line), each optionally ``| None``
(written ``none``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "TrainConfig",
    "add_options",
    "build_config",
    "config_dict",
    "option",
    "option_flag",
    "read_config_file",
    "write_config_file",
]


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the option or the file."""


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    group: str | None = None,
    run_control: bool = False,
    metavar: str | None = None,
) -> Any:
    """A configuration field.

    Args:
        default (Any): the value when neither a config file nor the command line sets it.
        help (str): one line for ``--help``.
        choices (Sequence[Any], optional): the allowed values. (default: ``None``)
        low (float, optional): lower bound of a number (or of every element of a tuple).
            (default: ``None``)
        high (float, optional): upper bound. (default: ``None``)
        low_open (bool, optional): ``low`` itself is excluded. (default: ``False``)
        high_open (bool, optional): ``high`` itself is excluded. (default: ``False``)
        group (str, optional): the ``--help`` section (``data``, ``model``, ``training``, ``hardware``, ...).
            (default: ``None``)
        run_control (bool, optional): the field changes how a run is carried out, not its result (progress bars,
            worker count, the data folder): it is not part of what binds an Optuna study. (default: ``False``)
        metavar (str, optional): the placeholder shown by ``--help``. (default: ``None``)
    """
    meta = dict(help=help, choices=tuple(choices) if choices is not None else None, low=low, high=high,
                low_open=low_open, high_open=high_open, group=group, run_control=run_control, metavar=metavar)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainConfig:
    """The options every pipeline has: data folder, seed, optimisation, stopping, hardware.

    A family's configuration derives from this class, adds its data and model options and may
    redeclare a field to change its default.
    """

    root: str | None = option(None, "data directory (default: $GATTN_DATA, else ~/.local/share/gattn)",
                              group="data", run_control=True, metavar="DIR")
    seed: int = option(0, "random seed (weights, shuffling, data splits)", group="training")
    epochs: int = option(100, "maximum number of epochs", low=1, group="training")
    batch_size: int = option(32, "samples (graphs, bags, users) per optimisation step", low=1, group="training")
    lr: float = option(1e-3, "learning rate", low=0, low_open=True, group="training")
    weight_decay: float = option(0.0, "weight decay (L2; decoupled with adamw)", low=0, group="training")
    optimizer: str = option("adam", "optimiser", choices=("adam", "adamw", "sgd"), group="training")
    scheduler: str = option("none", "learning-rate schedule: plateau (ReduceLROnPlateau on the monitored "
                            "validation metric), cosine (annealing over --epochs), none",
                            choices=("plateau", "cosine", "none"), group="training")
    lr_factor: float = option(0.5, "plateau schedule: factor applied to the learning rate", low=0, high=1,
                              low_open=True, high_open=True, group="training")
    lr_patience: int = option(10, "plateau schedule: epochs without improvement before the rate drops", low=0,
                              group="training")
    min_lr: float | None = option(None, "stop when the learning rate falls below this", low=0, group="training")
    patience: int | None = option(None, "early stopping: epochs without improvement of the monitored "
                                  "validation metric (none: never)", low=1, group="training")
    grad_clip: float | None = option(None, "clip the gradient norm to this value", low=0, low_open=True,
                                     group="training")
    max_time: float | None = option(None, "stop training after this many seconds", low=0, low_open=True,
                                    group="training", metavar="SECONDS")
    accelerator: str = option("auto", "Lightning accelerator", choices=("auto", "cpu", "gpu", "cuda", "mps"),
                              group="hardware")
    devices: str = option("auto", "devices per node: auto, a count, or a comma-separated list of ids",
                          group="hardware")
    num_nodes: int = option(1, "machines taking part in distributed training", low=1, group="hardware")
    strategy: str = option("auto", "Lightning strategy (auto, ddp, ...)", group="hardware")
    sync_batchnorm: bool = option(False, "distributed training: batch norm statistics over the global batch "
                                  "(all processes) instead of each process's share", group="hardware")
    device: str | None = option(None, "shorthand for --accelerator and --devices: cpu, cuda or cuda:N",
                                group="hardware")
    precision: str = option("32-true", "numeric precision (bf16-mixed where the hardware supports it)",
                            choices=("32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed"),
                            group="hardware")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)", low=1, group="hardware",
                                 run_control=True)
    num_workers: int = option(0, "data-loader worker processes", low=0, group="hardware", run_control=True)
    progress: bool | None = option(None, "progress bars (default: when stderr is a terminal)", group="output",
                                   run_control=True)
    verbose: bool = option(False, "one line per epoch (or fold)", group="output", run_control=True)


def option_flag(name: str) -> str:
    """The command-line spelling of a field: ``batch_size`` -> ``--batch-size``.

    Args:
        name (str): a field name.
    """
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- types
def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is tuple:
        name = f"comma-separated {typing.get_args(base)[0].__name__}s"
    else:
        name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))
    return name + (" or none" if optional else "")


def _scalar(base: type, value: Any) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise TypeError
    if base is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise TypeError
    if base is float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise TypeError
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise TypeError
    raise TypeError(f"unsupported option type {base!r}")


def coerce(tp: Any, value: Any) -> Any:
    """``value`` (from YAML or the command line) converted to the field type ``tp``.

    Raises:
        TypeError / ValueError: the value does not fit (the caller names the option).
    """
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise TypeError
    if typing.get_origin(base) is tuple:
        element = typing.get_args(base)[0]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        items = [item for item in items if not (isinstance(item, str) and not item.strip())]
        if not items:
            raise ValueError
        return tuple(_scalar(element, item) for item in items)
    return _scalar(base, value)


# ----------------------------------------------------------------------------- checks
def _describe_bounds(meta: Mapping[str, Any]) -> str:
    lo, hi = meta["low"], meta["high"]
    if lo is not None and hi is not None:
        return f"in {'(' if meta['low_open'] else '['}{lo:g}, {hi:g}{')' if meta['high_open'] else ']'}"
    if lo is not None:
        return f"{'>' if meta['low_open'] else '>='} {lo:g}"
    return f"{'<' if meta['high_open'] else '<='} {hi:g}"


def _check_value(name: str, meta: Mapping[str, Any], value: Any) -> None:
    if value is None:
        return
    flag = option_flag(name)
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    lo, hi = meta["low"], meta["high"]
    if lo is None and hi is None:
        return
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, float) and math.isnan(item):
            raise ConfigError(f"{flag} must be a number, got nan")
        too_low = lo is not None and (item <= lo if meta["low_open"] else item < lo)
        too_high = hi is not None and (item >= hi if meta["high_open"] else item > hi)
        if too_low or too_high:
            raise ConfigError(f"{flag} must be {_describe_bounds(meta)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_config(cls: type, values: Mapping[str, Any], source: str = "the configuration") -> Any:
    """A ``cls`` instance from ``values`` (option name -> value), converted and checked.

    Args:
        cls (type): the configuration dataclass.
        values (Mapping[str, Any]): option name -> value.
        source (str, optional): what the values came from, for error messages.
            (default: ``"the configuration"``)

    Raises:
        ConfigError: an unknown option, a value of the wrong type, a choice or bound violated;
            the message names the option and ``source`` (e.g. the config file).
    """
    declared = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ConfigError(
            f"{source}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(declared))})"
        )
    hints = _hints(cls)
    converted = {}
    for name, value in values.items():
        try:
            converted[name] = coerce(hints[name], value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{source}: {option_flag(name)} must be {_type_name(hints[name])}, got {value!r}"
            ) from None
    config = cls(**converted)
    check_config(config)
    return config


def check_config(config: Any) -> None:
    """Check every field of ``config`` against its declared choices and bounds."""
    for f in dataclasses.fields(config):
        _check_value(f.name, f.metadata, getattr(config, f.name))


def config_dict(config: Any) -> dict[str, Any]:
    """The configuration as a plain dict (tuples become lists), ready for YAML or JSON.

    Args:
        config (TrainConfig): a configuration instance.
    """
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}


def run_control_fields(cls: type) -> set[str]:
    """Names of the fields that do not change a run's result (see :func:`option`)."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("run_control")}


# ------------------------------------------------------------------------ command line
def _parse_type(tp: Any, name: str):
    def parse(text: str) -> Any:
        try:
            return coerce(tp, text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {_type_name(tp)}, got {text!r}") from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of ``cls`` to ``parser``.

    Options given on the command line appear in the parsed namespace; the others do not
    (``argparse.SUPPRESS``), so that a config file's values are not overridden by defaults.

    Args:
        parser (argparse.ArgumentParser): the parser (or sub-parser) to extend.
        cls (type): the configuration dataclass.
    """
    hints = _hints(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        title = meta.get("group") or "options"
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        group = groups[title]
        tp = hints[f.name]
        base, _ = _unwrap_optional(tp)
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{meta.get('help', '')} (default: {shown})"
        if base is bool:
            group.add_argument(option_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
            continue
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text,
                                      type=_parse_type(tp, f.name))
        if meta.get("choices") is not None:
            kwargs["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}"
        elif meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        group.add_argument(option_flag(f.name), **kwargs)


# ------------------------------------------------------------------------ config files
def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML config file (a ``pipeline:`` key is kept; checks come later).

    Args:
        path (str or os.PathLike): the YAML file.

    Raises:
        ConfigError: the file is missing (named, with the folder looked in), is not YAML, or is
            not a mapping of option names to values.
    """
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path.name!r} not found (looked in {path.parent.resolve()})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"config file {path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def write_config_file(path: str | os.PathLike, pipeline: str, config: Any) -> Path:
    """Write ``pipeline`` and every field of ``config`` as YAML, atomically.

    Args:
        path (str or os.PathLike): the YAML file to write.
        pipeline (str): the pipeline's name (the ``pipeline:`` key).
        config (TrainConfig): the configuration.
    """
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"pipeline": pipeline, **config_dict(config)}, sort_keys=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
