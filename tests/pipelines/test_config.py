"""Typed configurations: command-line options, config files and checks from one declaration."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from gattn.pipelines.config import (
    ConfigError,
    TrainConfig,
    add_options,
    build_config,
    config_dict,
    option,
    read_config_file,
    run_control_fields,
    write_config_file,
)


@dataclass
class DemoConfig(TrainConfig):
    hidden: tuple[int, ...] = option((64, 32), "widths", low=1, group="model")
    heads: int = option(4, "heads", low=1, group="model")
    dropout: float = option(0.0, "dropout", low=0, high=1, high_open=True, group="model")
    pooling: str = option("mean", "pooling", choices=("mean", "max"), group="model")
    beta: float | None = option(None, "inverse temperature", low=0, low_open=True, group="model")
    plot: bool = option(True, "write a plot", group="output")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_options(parser, DemoConfig)
    return vars(parser.parse_args(argv))


def test_only_given_options_are_parsed_and_converted():
    assert _parse([]) == {}
    values = _parse(["--hidden", "32,16", "--beta", "none", "--no-plot", "--lr", "3e-4", "--patience", "5"])
    assert values == {"hidden": (32, 16), "beta": None, "plot": False, "lr": 3e-4, "patience": 5}
    config = build_config(DemoConfig, values)
    assert config.hidden == (32, 16) and config.plot is False and config.heads == 4


@pytest.mark.parametrize("argv, message", [
    (["--heads", "x"], "expected an integer, got 'x'"),
    (["--hidden", "3,a"], "expected comma-separated ints"),
    (["--pooling", "sum"], None),
])
def test_wrong_types_are_argparse_errors(argv, message, capsys):
    values = None
    try:
        values = _parse(argv)
    except SystemExit as exc:
        assert exc.code == 2
        assert message in capsys.readouterr().err
        return
    # choices are checked by build_config, naming the option as written on the command line
    with pytest.raises(ConfigError, match=r"--pooling must be one of mean, max; got 'sum'"):
        build_config(DemoConfig, values)


@pytest.mark.parametrize("values, message", [
    ({"dropout": 1.5}, r"--dropout must be in \[0, 1\), got 1.5"),
    ({"lr": -1}, r"--lr must be > 0, got -1.0"),
    ({"hidden": (16, 0)}, r"--hidden must be >= 1, got \(16, 0\)"),
    ({"beta": 0.0}, r"--beta must be > 0"),
    ({"epochs": 0}, "--epochs must be >= 1"),
    ({"lr": float("nan")}, "--lr must be a number"),
    ({"heads": 2.5}, "--heads must be an integer"),
    ({"heads": True}, "--heads must be an integer"),
    ({"nope": 1}, "unknown option 'nope'"),
])
def test_bounds_types_and_unknown_options_name_the_option(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(DemoConfig, values, source="config file x.yaml")


def test_yaml_round_trip_and_file_errors(tmp_path):
    config = build_config(DemoConfig, {"hidden": [8, 4], "beta": 0.5, "dropout": 0.25})
    path = write_config_file(tmp_path / "run" / "config.yaml", "demo", config)
    data = read_config_file(path)
    assert data.pop("pipeline") == "demo"
    assert build_config(DemoConfig, data) == config
    assert config_dict(config)["hidden"] == [8, 4]
    # dashes are accepted in file keys, as on the command line
    (tmp_path / "dash.yaml").write_text("batch-size: 7\n")
    assert read_config_file(tmp_path / "dash.yaml") == {"batch_size": 7}
    with pytest.raises(ConfigError, match=r"config file 'missing.yaml' not found \(looked in"):
        read_config_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of option names"):
        read_config_file(tmp_path / "list.yaml")


def test_run_control_fields_do_not_bind_a_study():
    assert {"progress", "verbose", "threads", "num_workers", "root"} <= run_control_fields(DemoConfig)
    assert "lr" not in run_control_fields(DemoConfig)
