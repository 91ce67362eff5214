"""Distributed training on CPU (gloo): two processes reach the parameters of one process that
sees the same global batch (``make test-scale``), and the evaluation loaders are sharded
without the rows Lightning's sampler repeats (default suite).

Every step here is one full pass over the training set (the global batch is the whole set:
one process with ``--batch-size N``, two with ``N/2`` each), so the order in which
``DistributedSampler`` deals the rows does not matter and the two runs must take the same
optimiser steps. They compare the ``last.ckpt`` weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gattn.pipelines.runner import UnpaddedEvaluation, is_rank_zero, processes_per_run

from .test_graph_transformer import write_ogb

ROOT = Path(__file__).resolve().parents[2]


def test_evaluation_loaders_are_sharded_without_repeats():
    rows = TensorDataset(torch.arange(11))
    loader = DataLoader(rows, batch_size=4)
    module = UnpaddedEvaluation(None)
    seen = []
    for rank in range(3):
        shard = module.unpadded(loader, num_replicas=3, rank=rank)
        assert shard.batch_size == 4
        seen += [int(v) for (batch,) in shard for v in batch]
    assert sorted(seen) == list(range(11))  # each row once: no padding duplicates
    shuffled = DataLoader(rows, batch_size=4, shuffle=True)
    assert module.unpadded(shuffled, num_replicas=3, rank=0) is shuffled  # its own sampling: left to Lightning


def test_sync_batchnorm_on_cpu_is_refused():
    from gattn.pipelines import ConfigError, make_config, run
    from tests.plugins.toy_pipeline import ToyPipeline

    config = make_config(ToyPipeline(), {"accelerator": "cpu", "sync_batchnorm": True})
    with pytest.raises(ConfigError, match="--sync-batchnorm needs GPUs"):
        run(ToyPipeline(), config, Path("unused"))


def test_rank_zero_is_read_from_the_launcher_environment(monkeypatch):
    from types import SimpleNamespace

    config = SimpleNamespace(devices="2", accelerator="cpu", num_nodes=2)
    assert processes_per_run(config) == 4
    for name in ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert is_rank_zero(config)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_rank_zero(config)
    assert is_rank_zero(SimpleNamespace(devices="1", accelerator="cpu", num_nodes=1))  # one process: always


def _train(tmp_path: Path, name: str, argv: list[str], devices: int) -> dict[str, torch.Tensor]:
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "gattn.cli", "train", *argv, "--accelerator", "cpu", "--devices",
               str(devices), "--threads", "1", "--no-progress", "--runs-dir", str(runs), "--run-name", name]
    if devices > 1:
        command += ["--strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "GATTN_DATA": str(tmp_path / "data")}
    env.pop("GATTN_DISTRIBUTED_RUN_DIR", None)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    checkpoints = sorted(runs.rglob("last.ckpt"))
    checkpoints = [c for c in checkpoints if name in c.parts]
    assert len(checkpoints) == 1, checkpoints
    run_dir = next(p for p in checkpoints[0].parents if p.name == name)
    assert (run_dir / "metrics.json").is_file()
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)["state_dict"]
    return {k: v.float() for k, v in state.items() if v.is_floating_point()}


def _assert_same(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor]) -> None:
    # float32 sums in another order differ by ~1e-5 after a few steps; a run whose loader was not
    # sharded (two steps an epoch on half batches) or that counted padding rows is off by ~lr
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-3, atol=1e-4, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.scale
def test_two_processes_train_the_mil_pipeline_like_one(tmp_path):
    # digit-bags, 2 folds: 90 training bags (45 a process), 10 validation, 100 test
    common = ["mil", "--dataset", "digit-bags", "--folds", "2", "--max-folds", "1", "--epochs", "3",
              "--hidden", "16", "--attention", "8", "--pooling", "gated", "--no-plot", "--patience", "none",
              "--dropout", "0"]  # dropout masks are drawn per process: off, so the two runs can agree
    one = _train(tmp_path, "one", [*common, "--batch-size", "90"], devices=1)
    two = _train(tmp_path, "two", [*common, "--batch-size", "45"], devices=2)
    _assert_same(one, two)


@pytest.mark.scale
def test_two_processes_train_the_graph_pipeline_like_one(tmp_path):
    # 24 molecules: 12 training graphs (6 a process); layer norm (SyncBatchNorm is CUDA-only). SGD, not
    # Adam: Adam turns the rounding noise of an all-but-zero gradient (an atom embedding row whose
    # terms cancel) into a full lr-sized step whose sign depends on the summation order
    write_ogb(tmp_path / "data", num_graphs=24)
    common = ["graph_transformer", "--dataset", "ogbg-molbace", "--layers", "2", "--hidden", "16", "--heads", "4",
              "--pe-dim", "3", "--epochs", "3", "--norm", "layer", "--patience", "none",
              "--dropout", "0", "--optimizer", "sgd", "--lr", "0.05"]
    one = _train(tmp_path, "one", [*common, "--batch-size", "12"], devices=1)
    two = _train(tmp_path, "two", [*common, "--batch-size", "6"], devices=2)
    _assert_same(one, two)
