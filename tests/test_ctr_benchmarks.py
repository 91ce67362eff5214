"""The CTR benchmark's data helpers and measuring code on tiny inputs, and the peer script end
to end on a parquet split the test writes (when the peer venv exists)."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import ctr_attention
from benchmarks.peers import ctr_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_split(path, split, labels=None):
    offsets = pa.array(split["hist_offsets"])
    table = pa.table({
        "user_id": split["user_id"], "item_id": split["item_id"], "cate_id": split["cate_id"],
        "hist_item_id": pa.ListArray.from_arrays(offsets, pa.array(split["hist_item_id"])),
        "hist_cate_id": pa.ListArray.from_arrays(offsets, pa.array(split["hist_cate_id"])),
        "label": split["label"] if labels is None else labels,
    })
    pq.write_table(table, path)


def test_lognormal_lengths_are_not_all_at_the_maximum():
    lengths = ctr_data.lognormal_lengths(1024, 1000, seed=0)
    assert lengths.min() >= 1 and lengths.max() <= 1000
    assert 80 < np.median(lengths) < 170 and lengths.max() > 500


@pytest.mark.parametrize("side", ["post", "pre"])
def test_padded_keeps_the_most_recent_behaviours(side):
    split = ctr_data.synthetic_split(6, 9, seed=1, num_users=5, num_items=30, num_cates=4)
    out = ctr_data.padded(split, "hist_item_id", 4, side)
    for i in range(6):
        history = split["hist_item_id"][split["hist_offsets"][i]:split["hist_offsets"][i + 1]][-4:]
        pad = [0] * (4 - len(history))
        want = list(history) + pad if side == "post" else pad + list(history)
        assert out[i].tolist() == want


def test_read_split_and_take_round_trip(tmp_path):
    split = ctr_data.synthetic_split(7, 5, seed=2, num_users=5, num_items=30, num_cates=4)
    write_split(tmp_path / "s.parquet", split)
    back = ctr_data.read_split(str(tmp_path / "s.parquet"))
    for key, value in split.items():
        assert np.array_equal(back[key], value), key
    part = ctr_data.take(back, np.array([3, 0]))
    assert np.array_equal(part["hist_item_id"], np.concatenate([
        split["hist_item_id"][split["hist_offsets"][3]:split["hist_offsets"][4]],
        split["hist_item_id"][split["hist_offsets"][0]:split["hist_offsets"][1]],
    ]))
    assert ctr_data.vocab_sizes(back)["item_id"] == int(max(split["item_id"].max(), split["hist_item_id"].max())) + 1
    pq.write_table(pa.table({"user_id": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        ctr_data.read_split(str(tmp_path / "bad.parquet"))


@pytest.mark.parametrize("method", ["gattn-din", "gattn-dare", "hiformer-full", "hiformer-lowrank-pruned"])
def test_measure_runs_every_gattn_method(method):
    spec = dict(method=method, dim=4, threads=1, seed=0, repeats=1, batches=1, median_fraction=0.25, top_k=3,
                batch=8, max_len=12, rank=4)
    result = ctr_attention.measure(spec)
    assert result["step_s"] > 0 and result["peak_mb"] >= 0


PEER_PYTHON = os.path.join(ROOT, "benchmarks", "peers", ".venv-ctr", "bin", "python")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(PEER_PYTHON), reason="peer venv absent (bash benchmarks/peers/make_ctr_env.sh)")
@pytest.mark.parametrize("peer", ["deepctr", "fuxictr"])
def test_peer_trains_on_parquet_and_prints_metrics_and_predictions(tmp_path, peer):
    paths = {}
    for name, count, seed in (("train", 300, 3), ("test", 80, 4)):
        split = ctr_data.synthetic_split(count, 12, seed, num_users=20, num_items=40, num_cates=5)
        paths[name] = str(tmp_path / f"{name}.parquet")
        write_split(paths[name], split)
    proc = subprocess.run(
        [PEER_PYTHON, "-m", "benchmarks.peers.ctr_peers", "--peer", peer, "--train", paths["train"],
         "--test", paths["test"], "--epochs", "1", "--batch-size", "64", "--embedding-dim", "8", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["peer"] == peer and result["num_test"] == 80 and 0 <= result["auc"] <= 1 and result["logloss"] > 0
    header = lines.index("user_id,label,prediction")
    predictions = [line.split(",") for line in lines[header + 1:-1]]
    assert len(predictions) == 80 and all(0 < float(p) < 1 for _, _, p in predictions)
