"""benchmarks/ctr_results.py: the synthetic Criteo file carries its planted signal and is read
without a malformed row; the MovieLens table and chart come from saved records."""

from __future__ import annotations

import json

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from benchmarks import ctr_results
from gattn.datasets.criteo import prepare_criteo


def test_planted_criteo_file_is_valid_and_learnable(tmp_path, recwarn):
    path = tmp_path / "synthetic.txt"
    rate = ctr_results.planted_criteo(path, 6000, seed=0, chunk=2500)
    assert 0.15 < rate < 0.5
    processed = prepare_criteo(path, min_count=2, cache_dir=tmp_path / "cache", on_malformed="raise")
    splits = [processed.load(name) for name in ("train", "val", "test")]
    assert sum(len(s) for s in splits) == 6000
    train, _, test = splits
    assert torch.cat([s.label for s in splits]).sum().item() == round(rate * 6000)
    # the columns the click depends on predict it; a column outside the signal does not
    signal = [0, 1, 5, 8, 13, 16]

    def auc(columns: list[int]) -> float:
        encoder = OneHotEncoder(handle_unknown="ignore").fit(train.sparse[:, columns].numpy())
        model = LogisticRegression(C=0.5, max_iter=300).fit(encoder.transform(train.sparse[:, columns].numpy()),
                                                            train.label.numpy())
        return roc_auc_score(test.label.numpy(), model.predict_proba(encoder.transform(test.sparse[:, columns]
                                                                                       .numpy()))[:, 1])

    assert auc(signal) > 0.6 and auc([2]) < 0.58


def test_movielens_table_and_chart_from_records(tmp_path, capsys):
    records = [{"part": "movielens", "method": method, "seed": seed, "test_rocauc": 0.7 + 0.01 * n,
                "test_gauc": 0.65, "test_logloss": 0.6, "time_s": 10.0 * (n + 1), "epochs": 2}
               for n, method in enumerate(["gattn DIN", "DeepCTR-Torch DIN"]) for seed in (0, 1)]
    records.append({"part": "hiformer", "data": "x", "variant": "full rank", "seed": 0})
    results, epochs, seeds = ctr_results.from_records(json.loads(json.dumps(records)))
    assert epochs == 2 and seeds == [0, 1] and results["gattn DIN"]["time_s"] == [10.0, 10.0]
    ctr_results.movielens_table(results, epochs, seeds)
    table = capsys.readouterr().out
    assert "2.00x" in table and "0.7000 +- 0.0000" in table and "0.7100 +- 0.0000" in table
    path = ctr_results.chart(str(tmp_path / "chart.png"), results)
    assert np.fromfile(path, dtype=np.uint8)[:4].tobytes() == b"\x89PNG"
