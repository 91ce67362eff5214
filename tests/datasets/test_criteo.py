"""Criteo loader: files written here in the real formats, checked against a plain-Python
reference of the documented protocol (vocabularies, buckets, split)."""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from gattn.datasets import criteo
from gattn.datasets._tables import hex_to_int
from gattn.datasets.criteo import CATEGORICAL, COLUMNS, INTEGER, load_criteo, prepare_criteo

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def make_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Rows of text fields: label, 13 integers (with missing values, negatives, 0-2 and
    heavy tails), 26 hex categoricals (Zipf-like, with missing values)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(int(rng.random() < 0.25))
        ints = []
        for j in range(13):
            if rng.random() < 0.2:
                ints.append("")
            elif j == 1 and rng.random() < 0.1:
                ints.append(str(int(rng.integers(-3, 0))))
            else:
                ints.append(str(int(rng.lognormal(1.0, 1.5))))
        cats = []
        for j in range(26):
            if rng.random() < 0.1:
                cats.append("")
            else:
                cats.append(f"{(int(rng.zipf(1.6)) * 2654435761 + j) % 2**32:08x}")
        rows.append([label, *ints, *cats])
    return rows


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------- reference
def token(text: str, numeric: bool) -> object:
    """The documented bucket token, in the same order as the loader's (x <= 2 itself, then
    the log buckets above every small value, missing last)."""
    if not numeric:
        return (1, "") if text == "" else (0, text)
    if text == "":
        return (1, 0)
    x = int(float(text))
    return (0, x) if x <= 2 else (0, 3 + math.floor(math.log(x) ** 2))


def reference(rows: list[list[str]], min_count: int, seed: int = 2018, split=(0.8, 0.1, 0.1)):
    which = criteo._split_of_rows(np.arange(len(rows)), seed, split)
    vocab = {}
    for j, name in enumerate(COLUMNS[1:], start=1):
        numeric = name in INTEGER
        counts = Counter(token(r[j], numeric) for r, s in zip(rows, which) if s == 0)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        vocab[name] = {t: i + 1 for i, t in enumerate(kept)}
    out = {}
    for s, name in enumerate(("train", "val", "test")):
        part = [r for r, w in zip(rows, which) if w == s]
        sparse = [[vocab[c].get(token(r[1 + 13 + j], False), 0) for j, c in enumerate(CATEGORICAL)] for r in part]
        dense = [[vocab[c].get(token(r[1 + j], True), 0) for j, c in enumerate(INTEGER)] for r in part]
        out[name] = (np.array(sparse).reshape(-1, 26), np.array(dense).reshape(-1, 13),
                     np.array([float(r[0]) for r in part]))
    return out, vocab


# ------------------------------------------------------------------------------ tests
def test_ids_and_buckets_match_reference(tmp_path):
    rows = make_rows(3000)
    path = write_tsv(tmp_path / "train.txt", rows)
    data = load_criteo(path, min_count=3, cache_dir=tmp_path / "cache", block_size=1 << 14)
    expected, vocab = reference(rows, min_count=3)
    for name in ("train", "val", "test"):
        part = getattr(data, name)
        sparse, dense, label = expected[name]
        assert part.sparse.dtype == torch.int64 and part.dense.dtype == torch.int64
        np.testing.assert_array_equal(part.sparse.numpy(), sparse)
        np.testing.assert_array_equal(part.dense.numpy(), dense)
        np.testing.assert_array_equal(part.label.numpy(), label)
    assert sum(data.info["split_sizes"].values()) == 3000
    cards = {f.name: f.cardinality for f in data.fields}
    assert all(cards[name] == len(vocab[name]) + 1 for name in COLUMNS[1:])
    assert [f.key for f in data.fields] == ["dense"] * 13 + ["sparse"] * 26


def test_bucket_rule_keeps_small_values_apart_from_log_buckets(tmp_path):
    # I1 takes 2 and 5 (both "2" in the common protocol's strings), 3 and 4 (one bucket), -1, missing
    values = ["2", "5", "3", "4", "-1", ""] * 5
    rows = [["0", v, *["1"] * 12, *["aa"] * 26] for v in values]
    data = load_criteo(write_tsv(tmp_path / "f.txt", rows), min_count=1, split=(1.0, 0.0, 0.0),
                       cache_dir=tmp_path / "c")
    ids = dict(zip(values, data.train.dense[:, 0].tolist()))
    assert ids["2"] != ids["5"]
    assert ids["3"] == ids["4"]  # floor(ln(3)^2) = floor(ln(4)^2) = 1
    assert len({ids["2"], ids["3"], ids["5"], ids["-1"], ids[""]}) == 5
    assert min(ids.values()) >= 1  # every token was seen: no OOV
    assert len(data.val) == 0 and len(data.test) == 0


def test_log_mode(tmp_path):
    rows = make_rows(200, seed=1)
    data = load_criteo(write_tsv(tmp_path / "f.txt", rows), numeric="log", min_count=1, split=(1.0, 0.0, 0.0),
                       cache_dir=tmp_path / "c")
    expected = [[math.log1p(max(int(v), 0)) if v else 0.0 for v in r[1:14]] for r in rows]
    assert data.train.dense.dtype == torch.float32
    np.testing.assert_allclose(data.train.dense.numpy(), np.array(expected), rtol=1e-6)
    assert all(f.kind == "numeric" and f.cardinality is None for f in data.fields[:13])


def test_split_is_seeded_and_near_8_1_1():
    rows = np.arange(200_000)
    a = criteo._split_of_rows(rows, 7, (0.8, 0.1, 0.1))
    np.testing.assert_array_equal(a, criteo._split_of_rows(rows, 7, (0.8, 0.1, 0.1)))
    assert (a != criteo._split_of_rows(rows, 8, (0.8, 0.1, 0.1))).mean() > 0.2
    fractions = np.bincount(a, minlength=3) / rows.size
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.005)
    # a row's split does not depend on the rows around it (chunking)
    np.testing.assert_array_equal(a[1000:1010], criteo._split_of_rows(rows[1000:1010], 7, (0.8, 0.1, 0.1)))


def test_header_csv_with_float_integers_equals_tsv(tmp_path):
    rows = make_rows(400, seed=2)
    tsv = load_criteo(write_tsv(tmp_path / "a.txt", rows), min_count=2, cache_dir=tmp_path / "c")
    order = list(reversed(COLUMNS))  # any column order
    index = [COLUMNS.index(c) for c in order]
    lines = [",".join(order)]
    for r in rows:
        fields = [f"{r[i]}.0" if (COLUMNS[i] in INTEGER and r[i]) else r[i] for i in index]
        lines.append(",".join(fields))
    csv = load_criteo(_write(tmp_path / "b.csv", "\n".join(lines) + "\n"), min_count=2, cache_dir=tmp_path / "c")
    assert csv.info["format"] == {"delimiter": ",", "header": True}
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(tsv, name).sparse, getattr(csv, name).sparse)
        assert torch.equal(getattr(tsv, name).dense, getattr(csv, name).dense)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_malformed_lines_counted_with_line_numbers(tmp_path):
    rows = ["\t".join(r) for r in make_rows(300, seed=3)]
    good = list(rows)
    rows[4] = rows[4] + "\textra"                                  # line 5: 41 fields
    rows[9] = "\t".join(rows[9].split("\t")[:20])                  # line 10: 20 fields
    f = rows[20].split("\t")
    f[3] = "abc"                                                   # line 21: I3 not an integer
    rows[20] = "\t".join(f)
    f = rows[150].split("\t")
    f[5] = "2.5"                                                   # line 151: I5 not an integer
    rows[150] = "\t".join(f)
    f = rows[200].split("\t")
    f[0] = "2"                                                     # line 201: label not 0/1
    rows[200] = "\t".join(f)
    rows[250] = ""                                                 # line 251: blank line
    f = rows[260].split("\t")
    f[20] = "zz12"                                                 # line 261: C7 not hexadecimal
    rows[260] = "\t".join(f)
    rows[299] = "\t".join(rows[299].split("\t")[:3])               # last line: 3 fields
    path = _write(tmp_path / "bad.txt", "\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="8 malformed row") as record:
        data = load_criteo(path, min_count=1, cache_dir=tmp_path / "c", block_size=4096)
    message = str(record[0].message)
    for line in (5, 10, 21, 151, 201):
        assert f"line {line}:" in message
    assert "41 field(s), expected 40" in message and "I3 is not an integer: 'abc'" in message
    assert "and 3 more" in message
    malformed = data.info["malformed"]
    assert malformed["count"] == 8 and malformed["rows_read"] == 300
    assert sum(data.info["split_sizes"].values()) == 292
    # the kept rows are exactly the good ones: same result as a file without the bad lines
    bad_lines = {5, 10, 21, 151, 201, 251, 261, 300}
    clean = _write(tmp_path / "clean.txt", "".join(r + "\n" for i, r in enumerate(good, 1) if i not in bad_lines))
    reference_data = load_criteo(clean, min_count=1, cache_dir=tmp_path / "c")
    assert torch.equal(data.train.sparse, reference_data.train.sparse)
    with pytest.raises(ValueError, match=r"8 malformed row.*line 5: 41 field"):
        load_criteo(path, min_count=1, cache_dir=tmp_path / "c", on_malformed="raise")


def test_line_numbers_across_blocks(tmp_path):
    rows = ["\t".join(r) for r in make_rows(2000, seed=4)]
    for i in (700, 1500, 1501, 1999):
        rows[i] = "1\t2"
    path = _write(tmp_path / "f.txt", "\n".join(rows))  # no final newline
    with pytest.raises(ValueError) as info:
        prepare_criteo(path, cache_dir=tmp_path / "c", on_malformed="raise", block_size=4096)
    for line in (701, 1501, 1502, 2000):
        assert f"line {line}: 2 field(s)" in str(info.value)
    f = rows[1800].split("\t")
    f[13] = "x"
    rows[1800] = "\t".join(f)
    path = _write(tmp_path / "g.txt", "\n".join(rows))
    with pytest.raises(ValueError, match=r"line 1801: I13 is not an integer: 'x'"):
        prepare_criteo(path, cache_dir=tmp_path / "c", on_malformed="raise", block_size=4096)


def test_hex_values_read_as_integers():
    values, bad = hex_to_int(pa.array(["0a1b2c3d", None, "ffffffff", "xyz", "F", "ffffffffffffffff", "1" * 17, ""]))
    assert values.to_pylist() == [0x0A1B2C3D, None, 2**32 - 1, None, 15, -1, None, None]
    assert bad.tolist() == [3, 6, 7]
    fixed, bad = hex_to_int(pa.array(["0000000a", None, "FFFFFFFF"]).slice(1))  # the 8-digit fast path
    assert fixed.to_pylist() == [None, 2**32 - 1] and bad.size == 0


def test_generated_benchmark_file_reports_its_malformed_lines(tmp_path):
    from benchmarks.criteo_loader import generate, malformed_lines

    valid = generate(tmp_path / "synthetic.txt", 3000, chunk=1000)
    with pytest.warns(UserWarning, match=f"{len(malformed_lines())} malformed row"):
        data = prepare_criteo(tmp_path / "synthetic.txt", cache_dir=tmp_path / "c")
    assert data.info["rows"] == valid == 3000


def test_cache_hit_reprocess_and_reparse(tmp_path, monkeypatch):
    rows = make_rows(500, seed=5)
    path = write_tsv(tmp_path / "f.txt", rows)
    first = prepare_criteo(path, min_count=2, cache_dir=tmp_path / "c")
    assert first.info["cache"] == "parsed"

    def fail(*args, **kwargs):
        raise AssertionError("should not run")

    with monkeypatch.context() as patch:
        patch.setattr(criteo, "_parse", fail)
        patch.setattr(criteo, "_count", fail)
        second = prepare_criteo(path, min_count=2, cache_dir=tmp_path / "c")
        assert second.info["cache"] == "hit"
        assert torch.equal(second.load("train").sparse, first.load("train").sparse)
    with monkeypatch.context() as patch:
        patch.setattr(criteo, "_parse", fail)  # a processing option needs no re-parse
        changed = prepare_criteo(path, min_count=5, cache_dir=tmp_path / "c")
        assert changed.info["cache"] == "processed"
        seeded = prepare_criteo(path, min_count=2, seed=1, cache_dir=tmp_path / "c")
        assert seeded.info["cache"] == "processed"
    assert changed.info["vocab_sizes"]["C1"] < first.info["vocab_sizes"]["C1"]
    rows[0][14] = "ffffffff"
    write_tsv(path, rows)
    os.utime(path, ns=(1, 1))  # a changed file (size or mtime) re-parses
    assert prepare_criteo(path, min_count=2, cache_dir=tmp_path / "c").info["cache"] == "parsed"


def test_batches_dataset_and_streaming_agree(tmp_path):
    data = prepare_criteo(write_tsv(tmp_path / "f.txt", make_rows(700, seed=6)), min_count=2,
                          cache_dir=tmp_path / "c")
    train = data.load("train")
    streamed = list(data.iter_batches("train", 128))
    assert torch.equal(torch.cat([b["sparse"] for b in streamed]), train.sparse)
    assert torch.equal(torch.cat([b["dense"] for b in streamed]), train.dense)
    shuffled = list(train.batches(100, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(b["label"]) for b in shuffled) == len(train)
    assert sorted(torch.cat([b["sparse"] for b in shuffled]).tolist()) == sorted(train.sparse.tolist())
    loader = torch.utils.data.DataLoader(train, batch_size=64)
    first = next(iter(loader))
    ordered = next(train.batches(64))
    assert all(torch.equal(first[k], ordered[k]) for k in ("sparse", "dense", "label"))


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'nope.txt' not found \(looked in .*"):
        prepare_criteo(tmp_path / "nope.txt", cache_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"criteo/criteo_sample.txt found in"):
        load_criteo("criteo-sample", root=tmp_path)
    path = write_tsv(tmp_path / "f.txt", make_rows(20))
    for kwargs, name in [({"min_count": 0}, "min_count"), ({"numeric": "z"}, "numeric"),
                         ({"split": (0.5, 0.5)}, "split"), ({"on_malformed": "drop"}, "on_malformed")]:
        with pytest.raises(ValueError, match=name):
            prepare_criteo(path, cache_dir=tmp_path / "c", **kwargs)
    header = _write(tmp_path / "h.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not the Criteo columns"):
        prepare_criteo(header, cache_dir=tmp_path / "c")


def test_available_lists_named_files(tmp_path):
    (tmp_path / "criteo").mkdir()
    write_tsv(tmp_path / "criteo" / "criteo_sample.txt", make_rows(5))
    found = {name: present for name, present, _ in criteo.available(tmp_path)}
    assert found == {"criteo-sample": True, "criteo-kaggle": False}


@pytest.mark.skipif(not (SHARED / "criteo" / "criteo_sample.txt").is_file(), reason="shared data absent")
def test_shared_sample(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sample has no malformed line
        data = load_criteo("criteo-sample", root=SHARED, cache_dir=tmp_path, min_count=1)
    assert len(data.train) + len(data.val) + len(data.test) == 200
    assert data.info["format"]["header"] is True
