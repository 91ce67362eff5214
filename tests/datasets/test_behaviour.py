"""Behaviour-sequence loaders: files written here in each source's real format, samples
checked against a brute-force reference of the documented protocol (history strictly
earlier in time, labels, splits)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gattn.datasets.behaviour import (
    ML100K_GENRES,
    UNKNOWN_CATEGORY,
    Interactions,
    build_behaviour_data,
    collate_behaviour,
    export_din_parquet,
    load_amazon,
    load_movielens,
    load_taobao,
    read_movielens,
    read_taobao,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def make_log(num_users=12, num_items=30, per_user=(1, 25), seed=0):
    """Ratings with many equal timestamps (the tie rule matters)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, num_users + 1):
        n = int(rng.integers(*per_user))
        items = rng.choice(np.arange(1, num_items + 1), size=n, replace=False)
        times = 1_000_000 + rng.integers(0, 12, size=n) * 60  # 12 distinct times: ties
        for i, t in zip(items, times):
            rows.append((u * 7, int(i) * 3, int(rng.integers(1, 6)), int(t)))  # raw ids not contiguous
    order = rng.permutation(len(rows))
    return [rows[k] for k in order]


def genres_of(item: int) -> list[str]:
    return [ML100K_GENRES[1 + item % 5], ML100K_GENRES[7 + item % 3]] if item % 4 else []


def write_ml100k(folder: Path, log, num_items=30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in log))
    lines = []
    for i in range(1, num_items + 1):
        flags = ["1" if g in genres_of(i * 3) else "0" for g in ML100K_GENRES]
        lines.append("|".join([str(i * 3), f"Caf\xe9 {i} (1995)", "01-Jan-1995", "", "http://x", *flags]))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def reference(log, *, positive=4.0, holdout=1, max_history=None, min_history=0):
    """Brute force: per user, chronological (ties in file order); a target's history = the
    user's interactions strictly earlier in time, the last `max_history` of them."""
    samples = []  # (split, user, item, label, time, hist items)
    for u in sorted({r[0] for r in log}):
        mine = sorted([(r[3], k, r[1], r[2]) for k, r in enumerate(log) if r[0] == u])
        kept = []
        for t, _, item, rating in mine:
            hist = [it for (tt, _, it, _) in mine if tt < t]
            if max_history is not None:
                hist = hist[-max_history:]
            if len(hist) >= min_history:
                kept.append((u, item, float(rating >= positive), t, hist))
        for j, s in enumerate(kept):
            from_end = len(kept) - 1 - j
            split = 2 if from_end < holdout else 1 if from_end < 2 * holdout else 0
            samples.append((split, *s))
    return samples


def decoded(data, split):
    """Samples of `split` with raw keys, in stored order."""
    part = getattr(data, split)
    users, items = data.vocab["user_id"], data.vocab["item_id"]
    out = []
    for b in range(len(part)):
        s, e = int(part.hist_ptr[b]), int(part.hist_ptr[b + 1])
        out.append((users[int(part.user_id[b])], items[int(part.item_id[b])], float(part.label[b]),
                    int(part.timestamp[b]), [items[int(i)] for i in part.hist_item_id[s:e]]))
    return out


@pytest.mark.parametrize("max_history,min_history,holdout", [(None, 0, 1), (3, 0, 2), (None, 2, 1)])
def test_rating_mode_matches_reference(tmp_path, max_history, min_history, holdout):
    log = make_log()
    data = load_movielens(str(write_ml100k(tmp_path / "ml", log)), max_history=max_history,
                          min_history=min_history, holdout=holdout)
    expected = reference(log, max_history=max_history, min_history=min_history, holdout=holdout)
    for index, split in enumerate(("train", "val", "test")):
        assert decoded(data, split) == [s[1:] for s in expected if s[0] == index]
    # categories follow the items, in the history too
    for part in (data.train, data.test):
        assert torch.equal(part.cate_id, data.item_category[part.item_id])
        assert torch.equal(part.hist_cate_id, data.item_category[part.hist_item_id])


def test_no_history_from_the_future_or_the_same_second(tmp_path):
    log = make_log(seed=3)
    data = load_movielens(str(write_ml100k(tmp_path / "ml", log)), split="global_time")
    time_of = {(u, i): t for u, i, _, t in log}
    checked = 0
    for split in ("train", "val", "test"):
        for user, _, _, t, hist in decoded(data, split):
            assert all(time_of[(user, h)] < t for h in hist)
            checked += len(hist)
    assert checked > 100


def test_tie_rule_on_a_hand_made_log():
    # user 1: a@10, b@10, c@20, d@20, e@30 -> histories: a [], b [], c [a b], d [a b], e [a b c d]
    inter = Interactions(np.ones(5, dtype=np.int64), np.array([1, 2, 3, 4, 5]), np.array([10, 10, 20, 20, 30]),
                         np.full(5, 5.0), np.array([1, 2, 3, 4, 5]), np.array(["x"] * 5))
    data = build_behaviour_data(inter, holdout=1)
    hist = [decoded(data, s) for s in ("train", "val", "test")]
    assert [h[-1] for h in hist[0]] == [[], [], [1, 2]]
    assert hist[1][0][1] == 4 and hist[1][0][-1] == [1, 2]
    assert hist[2][0][1] == 5 and hist[2][0][-1] == [1, 2, 3, 4]


def test_sampled_negatives(tmp_path):
    log = make_log(seed=1)
    folder = write_ml100k(tmp_path / "ml", log)
    data = load_movielens(str(folder), label="sampled", num_negatives=3, seed=5)
    again = load_movielens(str(folder), label="sampled", num_negatives=3, seed=5)
    other = load_movielens(str(folder), label="sampled", num_negatives=3, seed=6)
    assert torch.equal(data.train.item_id, again.train.item_id)
    assert not torch.equal(data.train.item_id, other.train.item_id)
    rated = {}
    for u, i, _, _ in log:
        rated.setdefault(u, set()).add(i)
    positives = sum(r >= 4 for _, _, r, _ in log)
    total = sum(len(getattr(data, s)) for s in ("train", "val", "test"))
    assert total == 4 * positives
    for split in ("train", "val", "test"):
        samples = decoded(data, split)
        for k in range(0, len(samples), 4):
            pos, negs = samples[k], samples[k + 1 : k + 4]
            assert pos[2] == 1.0 and pos[1] in rated[pos[0]]
            for neg in negs:  # same user, time and history; an item the user never rated
                assert neg[2] == 0.0 and neg[0] == pos[0] and neg[3] == pos[3] and neg[4] == pos[4]
                assert neg[1] not in rated[neg[0]]


def test_global_time_split():
    rng = np.random.default_rng(2)
    n = 400
    times = rng.integers(0, 50, size=n)
    inter = Interactions(rng.integers(0, 20, size=n), rng.integers(0, 60, size=n), times, rng.integers(1, 6, size=n)
                         .astype(float), np.arange(60), np.array(["c"] * 60))
    data = build_behaviour_data(inter, split="global_time", time_split=(0.6, 0.2, 0.2))
    ordered = np.sort(times)
    cut1, cut2 = ordered[int(0.6 * n)], ordered[int(0.8 * n)]
    assert data.train.timestamp.max() < cut1
    assert data.val.timestamp.min() >= cut1 and data.val.timestamp.max() < cut2
    assert data.test.timestamp.min() >= cut2
    assert len(data.train) + len(data.val) + len(data.test) == n
    assert len(data.train) <= 0.6 * n <= len(data.train) + len(data.val)


def write_ml1m(folder: Path, log, num_items=30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in log))
    lines = [f"{i * 3}::Star Wars: Episode {i} (1977)::{'|'.join(genres_of(i * 3)) or '(no genres listed)'}"
             for i in range(1, num_items + 1)]
    (folder / "movies.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def write_ml20m(folder: Path, log, num_items=30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                        + "".join(f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in log))
    lines = ["movieId,title,genres"] + [
        f'{i * 3},"Good, Bad {i} (1966)",{"|".join(genres_of(i * 3)) or "(no genres listed)"}'
        for i in range(1, num_items + 1)
    ]
    (folder / "movies.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("category", ["genres", "first_genre"])
def test_movielens_formats_agree(tmp_path, category):
    log = make_log(seed=4)
    datasets = [load_movielens(str(write(tmp_path / name, log)), category=category)
                for name, write in (("a", write_ml100k), ("b", write_ml1m), ("c", write_ml20m))]
    for data in datasets[1:]:
        for split in ("train", "val", "test"):
            assert decoded(data, split) == decoded(datasets[0], split)
        assert list(data.vocab["cate_id"]) == list(datasets[0].vocab["cate_id"])
    cats = set(datasets[0].vocab["cate_id"][1:])
    if category == "genres":
        assert "Action|Drama" in cats or "Action|Documentary" in cats
    else:
        assert all("|" not in c for c in cats)
    assert "(no genres listed)" in cats


def test_malformed_ratings_reported(tmp_path):
    folder = write_ml100k(tmp_path / "ml", make_log(seed=5))
    lines = (folder / "u.data").read_text().splitlines()
    lines[2] = "1\t2\t3"            # line 3: 3 fields
    lines[6] = "1\tx\t3\t100"       # line 7: item not an integer
    lines[9] = "1\t2\t3.5e\t100"    # line 10: rating not a number
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"3 malformed row.*line 3: 3 field.*line 7: item is not an integer: 'x'"):
        data = load_movielens(str(folder))
    assert data.info["interactions"] == len(lines) - 3
    report = next(r for r in data.info["malformed"] if r["path"].endswith("u.data"))
    assert report["count"] == 3 and [f[0] for f in report["first"]] == [3, 7, 10]
    with pytest.raises(ValueError, match="line 10: rating is not a finite number"):
        load_movielens(str(folder), on_malformed="raise")


def test_ml1m_separator_checked(tmp_path):
    folder = write_ml1m(tmp_path / "m", make_log(seed=6))
    lines = (folder / "ratings.dat").read_text().splitlines()
    lines[4] = lines[4].replace("::", ":x:", 1)
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 5: not '::' separated"):
        read_movielens(folder, on_malformed="raise")


def test_amazon_strict_and_loose_json(tmp_path):
    reviews = [
        {"reviewerID": "A1", "asin": "B01", "overall": 5.0, "unixReviewTime": 100, "reviewText": "good"},
        {"reviewerID": "A1", "asin": "B02", "overall": 3.0, "unixReviewTime": 200},
        {"reviewerID": "A2", "asin": "B01", "overall": 4.0, "unixReviewTime": 150},
        {"reviewerID": "A1", "asin": "B03", "overall": 1.0, "unixReviewTime": 300},
        {"reviewerID": "A2", "asin": "B04", "overall": 2.0, "unixReviewTime": 250},
        {"reviewerID": "A2", "asin": "B05", "overall": 2.0, "unixReviewTime": 260},
    ]
    lines = [json.dumps(r) for r in reviews]
    lines.insert(2, "{not json at all")                                  # line 3
    lines.insert(4, json.dumps({"reviewerID": "A3", "asin": "B01"}))      # line 5: no time
    folder = tmp_path / "amazon"
    folder.mkdir()
    with gzip.open(folder / "reviews_Electronics_5.json.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    meta = [  # the 2014 meta files are python literals, not JSON
        {"asin": "B01", "categories": [["Electronics", "Computers", "Laptops"], ["Other"]], "title": "it's"},
        {"asin": "B02", "categories": [["Electronics", "Camera"]]},
        {"asin": "B03", "categories": [["Electronics", "Camera"]]},
        {"asin": "B05", "categories": [["Electronics", "TV"]]},
    ]
    (folder / "meta_Electronics.json").write_text("\n".join(repr(m) for m in meta) + "\n")
    with pytest.warns(UserWarning, match=r"2 malformed row.*line 3: neither JSON.*line 5: field 'overall' missing"):
        data = load_amazon("Electronics", root=tmp_path, seed=1)
    item_category = {data.vocab["item_id"][i]: data.vocab["cate_id"][int(c)]
                     for i, c in enumerate(data.item_category.tolist()) if i}
    assert item_category == {"B01": "Laptops", "B02": "Camera", "B03": "Camera", "B04": UNKNOWN_CATEGORY,
                             "B05": "TV"}
    assert data.info["items_without_category"] == 1
    # DIN protocol: every review positive + one negative, last review per user in test
    test = decoded(data, "test")
    assert [(s[0], s[1], s[2]) for s in test[::2]] == [("A1", "B03", 1.0), ("A2", "B05", 1.0)]
    assert test[0][4] == test[1][4] == ["B01", "B02"] and test[2][4] == ["B01", "B04"]
    assert all(s[2] == 0.0 for s in test[1::2])


def test_taobao(tmp_path):
    rows = ["1,10,100,pv,5", "1,11,100,buy,6", "1,12,101,cart,7", "2,10,100,pv,5", "2,13,102,fav,9",
            "2,14,103,pv,3", "3,10,100,clk,4", "3,10", "2,15,103,pv,10", "1,16,104,pv,11", "3,16,105,pv,12"]
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"2 malformed row.*line 7: behaviour type 'clk'.*line 8: 2 field"):
        inter = read_taobao(path)
    assert len(inter) == 9 and inter.rating is None
    assert inter.notes == {"items_with_several_categories": 1}  # item 16: categories 104 and 105
    with pytest.warns(UserWarning):
        only_pv = read_taobao(path, behaviours=("pv",))
    assert len(only_pv) == 6
    with pytest.warns(UserWarning):
        data = load_taobao(path, num_negatives=2, seed=0)
    assert data.num_items == 7 and data.num_categories == 5
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        assert torch.equal(part.label.reshape(-1, 3)[:, 0], torch.ones(len(part) // 3))
    with pytest.raises(ValueError, match="label`='rating' needs ratings"):
        build_behaviour_data(inter, label="rating")
    with pytest.raises(ValueError, match="behaviours"):
        read_taobao(path, behaviours=("click",))


def test_dataset_collate_batches_and_subset_agree(tmp_path):
    data = load_movielens(str(write_ml100k(tmp_path / "ml", make_log(seed=7))), max_history=5)
    part = data.train
    loader = torch.utils.data.DataLoader(part, batch_size=9, collate_fn=collate_behaviour)
    for from_loader, from_batches in zip(loader, part.batches(9)):
        assert from_loader.keys() <= from_batches.keys()
        for key in from_loader:
            assert torch.equal(from_loader[key], from_batches[key]), key
    idx = [5, 0, 3]
    sub = part.subset(idx)
    for b, i in enumerate(idx):
        assert torch.equal(sub[b]["hist_item_id"], part[i]["hist_item_id"])
        assert int(sub.item_id[b]) == int(part.item_id[i])
    batches = list(part.batches(7, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(b["label"]) for b in batches) == len(part)
    assert sum(int(b["hist_ptr"][-1]) for b in batches) == part.hist_item_id.numel()


def test_export_din_parquet(tmp_path):
    data = load_movielens(str(write_ml100k(tmp_path / "ml", make_log(seed=8))), label="sampled")
    paths = export_din_parquet(data, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["vocab_sizes"]["item_id"] == data.num_items + 1 and meta["padding_id"] == 0
    for split, path in paths.items():
        table = pq.read_table(path)
        assert table.column_names == ["user_id", "item_id", "cate_id", "hist_item_id", "hist_cate_id", "label"]
        for name in ("hist_item_id", "hist_cate_id"):
            kind = table.schema.field(name).type
            assert pa.types.is_list(kind) and kind.value_type == pa.int64()
        assert table.schema.field("label").type == pa.int64()
        part = getattr(data, split)
        rows = table.to_pydict()
        assert rows["item_id"] == part.item_id.tolist() and rows["label"] == part.label.long().tolist()
        for b in range(len(part)):
            assert rows["hist_item_id"][b] == part[b]["hist_item_id"].tolist()
            assert rows["hist_cate_id"][b] == part[b]["hist_cate_id"].tolist()
        assert min(min(h, default=1) for h in rows["hist_item_id"]) >= 1  # 0 stays padding


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"u.data, ratings.dat, ratings.csv found in .*ml-100k"):
        load_movielens("movielens-100k", root=tmp_path)
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(FileNotFoundError, match=r"'u.item' not found \(looked in .*ml\)"):
        read_movielens(tmp_path / "ml")
    with pytest.raises(FileNotFoundError, match="reviews_Books"):
        load_amazon("Books", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="UserBehavior.csv"):
        load_taobao(root=tmp_path)


def test_bad_options_named(tmp_path):
    inter = read_movielens(write_ml100k(tmp_path / "ml", make_log()))
    for kwargs, name in [({"label": "x"}, "label"), ({"split": "random"}, "split"), ({"holdout": 0}, "holdout"),
                         ({"max_history": 0}, "max_history"), ({"time_split": (0.5, 0.6, 0.1)}, "time_split"),
                         ({"num_negatives": 0}, "num_negatives"),
                         ({"min_history": 5, "max_history": 3}, "min_history")]:
        with pytest.raises(ValueError, match=name):
            build_behaviour_data(inter, **kwargs)


@pytest.mark.skipif(not (SHARED / "movielens" / "ml-100k" / "u.data").is_file(), reason="shared data absent")
def test_shared_ml100k():
    data = load_movielens("movielens-100k", root=SHARED)
    assert data.num_users == 943 and data.num_items == 1682
    assert data.info["interactions"] == 100_000
    assert len(data.test) == 943 and len(data.val) == 943
    assert 0.5 < float(data.train.label.mean()) < 0.6  # ratings >= 4: 55% of ml-100k
