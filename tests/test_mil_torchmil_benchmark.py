"""benchmarks/mil_torchmil.py on a tiny data set written in the `mil` CSV layout.

torchmil lives in its own environment (benchmarks/peers/make_torchmil_env.sh), so its side
is only run here when it happens to be importable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import mil_torchmil


@pytest.fixture
def folds_file(tmp_path):
    gen = np.random.default_rng(0)
    lines = []
    for bag in range(30):
        label = bag % 2
        for _ in range(gen.integers(1, 6)):
            feats = gen.normal(2.0 * label, 1.0, 5).tolist() + [3.0]  # the last column is constant
            lines.append(f"{label},b{bag},{','.join(map(str, feats))}")
    (tmp_path / "mil").mkdir()
    (tmp_path / "mil" / "musk1.csv").write_text("\n".join(lines) + "\n")
    path = tmp_path / "musk1.npz"
    sizes = mil_torchmil.export_folds("musk1", path, str(tmp_path), folds=3, seed=0, val_fraction=0.2)
    assert sizes == {"bags": 30, "instances": int(np.load(path)["ptr"][-1]), "features": 6}
    return path


def test_export_splits_and_standardises_on_the_fitted_bags_only(folds_file):
    data = np.load(folds_file)
    ptr = data["ptr"]
    tests = []
    for fold in range(3):
        fit, val, test = data[f"fit{fold}"], data[f"val{fold}"], data[f"test{fold}"]
        assert len(set(fit) | set(val) | set(test)) == 30 and len(fit) + len(val) + len(test) == 30
        tests.extend(test)
        rows = np.concatenate([np.arange(ptr[b], ptr[b + 1]) for b in fit])
        x = data[f"x{fold}"]
        np.testing.assert_allclose(x[rows, :5].mean(0), 0.0, atol=1e-5)  # fitted bags: centred
        assert not np.allclose(np.delete(x, rows, axis=0)[:, :5].mean(0), 0.0, atol=1e-5)
        assert (x[:, 5] == 0).all()  # the constant column
    assert sorted(tests) == list(range(30))


def test_ragged_batch_forward_matches_one_bag_at_a_time():
    torch.manual_seed(0)
    model, forward = mil_torchmil.build_gattn(6, (8, 4), 3)
    bags = [torch.randn(n, 6) for n in (1, 4, 2)]
    torch.testing.assert_close(forward(bags), torch.cat([forward([b]) for b in bags]))
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("method", mil_torchmil.METHODS)
def test_child_trains_every_fold(folds_file, method):
    if method == "torchmil":
        pytest.importorskip("torchmil")
    spec = dict(
        method=method,
        data=str(folds_file),
        seed=0,
        epochs=3,
        patience=2,
        monitor="error_loss",
        dropout=0.1,
        batch_size=4,
        lr=1e-3,
        weight_decay=1e-4,
        hidden=[8, 4],
        attention=3,
        threads=1,
    )
    result = mil_torchmil.child(spec)
    data = np.load(folds_file)
    assert [len(logits) for logits in result["logits"]] == [len(data[f"test{f}"]) for f in range(3)]
    assert all(1 <= epoch <= 3 for epoch in result["best_epoch"]) and result["epoch_s"] > 0
    metrics = mil_torchmil.fold_metrics(result)
    assert all(0.0 <= a <= 1.0 for a in metrics["accuracy"]) and len(metrics["rocauc"]) == 3


def test_selection_value_is_the_pipelines_error_plus_loss():
    """The benchmark's own copy of the selection rule (the torchmil venv has no gattn) agrees
    with the pipeline's."""
    from gattn.pipelines.mil import error_plus_loss

    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.2])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    assert mil_torchmil.selection_value(logits, labels, "loss") == pytest.approx(loss)
    value = mil_torchmil.selection_value(logits, labels, "error_loss")
    assert value == pytest.approx(2 / 5 + loss)
    assert value == pytest.approx(error_plus_loss(labels, logits), rel=1e-6)


def test_the_torchmil_encoder_gets_the_same_dropout():
    pytest.importorskip("torchmil")
    model, _ = mil_torchmil.build_torchmil(6, (8, 4), 3, dropout=0.25)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.25, 0.25]
