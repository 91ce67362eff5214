"""MIMIC-III time series, ragged document batches and the ICD-coding data set end to end; the
real demo's structured tables when present."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gattn.datasets.mimic import (
    DEFAULT_FEATURES,
    DocumentBatch,
    LengthBucketBatchSampler,
    MimicDocuments,
    SeriesFeature,
    clean_text,
    code_lists,
    load_icd_coding,
    load_time_series,
    read_admissions,
    read_caml_splits,
    read_icd_codes,
    top_codes,
    write_mimic_fixture,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mimic3"
DEMO, CAML = SHARED / "demo-1.4", SHARED / "caml-splits"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_mimic_fixture(tmp_path_factory.mktemp("mimic"), num_admissions=40, seed=5)


# --------------------------------------------------------------------------- time series
def reference_series(fx, hadm_ids, features, max_hours):
    """Plain loops over the rows the fixture wrote."""
    admit = {a["HADM_ID"]: a["ADMITTIME"] for a in fx.admissions}
    sums = np.zeros((len(hadm_ids), max_hours, len(features)))
    counts = np.zeros_like(sums)
    row_of = {h: i for i, h in enumerate(hadm_ids)}
    for table, rows in (("CHARTEVENTS", fx.chartevents), ("LABEVENTS", fx.labevents)):
        for r in rows:
            if r["HADM_ID"] not in row_of or r["VALUENUM"] is None or r.get("ERROR") == 1:
                continue
            for f, feature in enumerate(features):
                if feature.table == table and r["ITEMID"] in feature.itemids:
                    hour = math.floor((r["CHARTTIME"] - admit[r["HADM_ID"]]).total_seconds() / 3600)
                    if 0 <= hour < max_hours:
                        sums[row_of[r["HADM_ID"]], hour, f] += r["VALUENUM"]
                        counts[row_of[r["HADM_ID"]], hour, f] += 1
    mask = counts > 0
    return np.where(mask, sums / np.maximum(counts, 1), 0.0), mask


def test_time_series_match_plain_loops(fx, tmp_path):
    hadm = [a["HADM_ID"] for a in fx.admissions][::-1]
    ts = load_time_series(fx.mimic_dir, hadm, max_hours=24, cache_dir=tmp_path)
    values, mask = reference_series(fx, hadm, DEFAULT_FEATURES, 24)
    assert ts.values.shape == (len(hadm), 24, len(DEFAULT_FEATURES)) and ts.mask.dtype == torch.bool
    assert ts.hadm_ids.tolist() == hadm and ts.features == [f.name for f in DEFAULT_FEATURES]
    np.testing.assert_array_equal(ts.mask.numpy(), mask)
    np.testing.assert_allclose(ts.values.numpy(), values, rtol=1e-6)
    assert mask.sum() > 20  # heart rate mixes CareVue 211 and MetaVision 220045
    chart = ts.reports["CHARTEVENTS"]
    assert chart.skipped["ERROR = 1"] > 0 and chart.skipped["no VALUENUM"] > 0 and chart.skipped["other ITEMID"] > 0
    assert ts.reports["LABEVENTS"].skipped["no HADM_ID"] > 0
    again = load_time_series(fx.mimic_dir, hadm, max_hours=24, cache_dir=tmp_path)
    assert again.from_cache and torch.equal(again.values, ts.values)
    longer = load_time_series(fx.mimic_dir, hadm, max_hours=30, cache_dir=tmp_path)
    assert not longer.from_cache and torch.equal(longer.mask[:, :24], ts.mask)


def test_time_series_custom_features_and_errors(fx, tmp_path):
    features = [SeriesFeature("hr_carevue", "CHARTEVENTS", (211,)), SeriesFeature("k", "LABEVENTS", (50971,))]
    hadm = [a["HADM_ID"] for a in fx.admissions]
    ts = load_time_series(fx.mimic_dir, hadm, features=features, max_hours=48, cache_dir=tmp_path,
                          drop_error_rows=True)
    values, mask = reference_series(fx, hadm, features, 48)
    np.testing.assert_array_equal(ts.mask.numpy(), mask)
    np.testing.assert_allclose(ts.values.numpy(), values, rtol=1e-6)
    with pytest.raises(KeyError, match="not in ADMISSIONS"):
        load_time_series(fx.mimic_dir, [1], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="max_hours"):
        load_time_series(fx.mimic_dir, hadm, max_hours=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="table"):
        SeriesFeature("x", "INPUTEVENTS", (1,))


# ------------------------------------------------------------------- ragged documents
def small_documents(with_series: bool = True) -> MimicDocuments:
    lengths = torch.tensor([3, 0, 5, 2])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    labels = [[0, 2], [], [1], [0, 1, 2]]
    label_ptr = torch.tensor([0, 2, 2, 3, 6])
    series = torch.randn(4, 6, 2) if with_series else None
    mask = series > 0 if with_series else None
    return MimicDocuments(torch.tensor([11, 12, 13, 14]), torch.arange(10) + 2, ptr,
                          torch.tensor([i for row in labels for i in row]), label_ptr, 3, series, mask)


def test_batches_are_ragged_and_match_item_by_item_collation():
    docs = small_documents()
    index = [2, 0, 1]
    fast = docs.batch(index)
    slow = docs.collate([docs[i] for i in index])
    for name in ("token_ids", "ptr", "labels", "hadm_ids", "series", "series_mask"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    assert fast.ptr.tolist() == [0, 5, 8, 8] and fast.token_ids.tolist() == [5, 6, 7, 8, 9, 2, 3, 4]
    assert fast.labels.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0]]
    assert docs.multi_hot().sum().item() == 6 and docs.label_counts().tolist() == [2, 2, 2]
    sub = docs.subset([3, 1])
    assert sub.hadm_ids.tolist() == [14, 12] and sub.multi_hot().tolist() == [[1, 1, 1], [0, 0, 0]]


def test_loader_covers_every_document_once():
    docs = small_documents(with_series=False)
    seen = []
    for batch in docs.loader(batch_size=3, shuffle=True, seed=1):
        assert isinstance(batch, DocumentBatch) and batch.series is None
        assert batch.ptr[-1] == batch.token_ids.numel() and batch.labels.shape == (len(batch), 3)
        seen += batch.hadm_ids.tolist()
    assert sorted(seen) == [11, 12, 13, 14]
    with pytest.raises(ValueError, match="batch_size"):
        docs.loader(0)



def test_length_buckets_cover_every_document_once_and_pad_little():
    lengths = torch.randint(1, 500, (103,), generator=torch.Generator().manual_seed(0))
    sampler = LengthBucketBatchSampler(lengths, 4, shuffle=True, pool=5, seed=3)
    epochs = [list(sampler) for _ in range(2)]
    for batches in epochs:
        assert len(batches) == len(sampler) == 5 * 5 + 1  # 5 pools of 20 documents, then 3 left
        assert sorted(i for b in batches for i in b) == list(range(103))
    assert epochs[0] != epochs[1]  # a new order every pass
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # set_epoch (Lightning) repeats an epoch's order

    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    plain = list(LengthBucketBatchSampler(lengths, 4, shuffle=True, pool=1, seed=3))
    assert padding(epochs[0]) < padding(plain) / 2
    ordered = list(LengthBucketBatchSampler(lengths, 4))
    flat = [i for b in ordered for i in b]
    assert len(ordered) == 26 and lengths[flat].tolist() == sorted(lengths.tolist())
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        LengthBucketBatchSampler(lengths, 0)
    with pytest.raises(TypeError, match="`lengths` must be a 1-D integer tensor"):
        LengthBucketBatchSampler(lengths.float(), 2)

def test_documents_validate_their_input():
    docs = small_documents()
    with pytest.raises(ValueError, match="ptr"):
        MimicDocuments(docs.hadm_ids, docs.token_ids, docs.ptr[:-1], docs.label_index, docs.label_ptr, 3)
    with pytest.raises(ValueError, match="label_index"):
        MimicDocuments(docs.hadm_ids, docs.token_ids, docs.ptr, docs.label_index, docs.label_ptr, 2)
    with pytest.raises(TypeError, match="token_ids"):
        MimicDocuments(docs.hadm_ids, docs.token_ids.int(), docs.ptr, docs.label_index, docs.label_ptr, 3)
    with pytest.raises(ValueError, match="together"):
        MimicDocuments(docs.hadm_ids, docs.token_ids, docs.ptr, docs.label_index, docs.label_ptr, 3, docs.series)
    with pytest.raises(IndexError):
        docs[4]


# --------------------------------------------------------------- ICD coding end to end
def test_icd_coding_end_to_end(fx, tmp_path):
    data = load_icd_coding(fx.mimic_dir, fx.splits_dir, setting="full", labels=8, embedding_dim=8,
                           embedding_epochs=1, min_count=2, max_length=60, cache_dir=tmp_path,
                           time_series=DEFAULT_FEATURES[:3], max_hours=12)
    codes = read_icd_codes(fx.mimic_dir)
    full = np.concatenate(list(read_caml_splits(fx.splits_dir, "full").values()))
    assert data.codes == top_codes(codes, 8, full)
    notes = {}
    for n in sorted(fx.notes, key=lambda n: (n["DESCRIPTION"] == "Addendum", n["CHARTDATE"], n["ROW_ID"])):
        if n["CATEGORY"] == "Discharge summary" and n["HADM_ID"] is not None and n["ISERROR"] != "1":
            notes[n["HADM_ID"]] = " ".join(x for x in (notes.get(n["HADM_ID"], ""), clean_text(n["TEXT"])) if x)
    index = {w: i for i, w in enumerate(data.vocab.words)}
    for split, docs in data.splits.items():
        hadm = fx.splits[f"{split}_full"]
        assert docs.hadm_ids.tolist() == hadm
        for row, h in enumerate(hadm):
            expected = [index.get(w, 1) for w in notes[h].split()[:60]]
            assert docs.token_ids[docs.ptr[row]:docs.ptr[row + 1]].tolist() == expected
        ptr, label_index = code_lists(codes, hadm, data.codes)
        assert torch.equal(docs.multi_hot(), _dense(ptr, label_index, len(data.codes)))
        assert docs.series.shape == (len(hadm), 12, 3)
    assert data.train_label_counts.tolist() == data.train.multi_hot().sum(0).long().tolist()
    assert data.embeddings.shape == (len(data.vocab), 8)
    # the vocabulary comes from the training notes only
    train_words = {w for h in fx.splits["train_full"] for w in notes[h].split()}
    assert set(data.vocab.words[2:]) <= train_words
    # descriptions: cleaned and encoded with the same vocabulary
    assert data.descriptions[0] == fx.descriptions[data.codes[0]]
    first = data.description_ids[data.description_ptr[0]:data.description_ptr[1]].tolist()
    assert first == [index.get(w, 1) for w in clean_text(data.descriptions[0]).split()]
    train_report = data.report["splits"]["train"]
    assert train_report["documents"] == len(fx.splits["train_full"])
    assert train_report["truncated"] == sum(len(notes[h].split()) > 60 for h in fx.splits["train_full"]) > 0
    again = load_icd_coding(fx.mimic_dir, fx.splits_dir, setting="full", labels=8, embedding_dim=8,
                            embedding_epochs=1, min_count=2, max_length=60, cache_dir=tmp_path)
    assert torch.equal(again.embeddings, data.embeddings) and again.vocab.words == data.vocab.words
    assert torch.equal(again.train.token_ids, data.train.token_ids) and again.train.series is None


def _dense(ptr, index, num_labels):
    out = torch.zeros(len(ptr) - 1, num_labels)
    for row in range(len(ptr) - 1):
        out[row, torch.from_numpy(index[ptr[row]:ptr[row + 1]])] = 1
    return out


def test_icd_coding_label_options_and_missing_notes(fx, tmp_path):
    explicit = ["401.9", "38.93", "999.99"]
    data = load_icd_coding(fx.mimic_dir, fx.splits_dir, labels=explicit, embedding_dim=None, cache_dir=tmp_path)
    assert data.codes == explicit and data.embeddings is None
    assert data.report["codes_without_description"] == ["999.99"]
    with pytest.raises(ValueError, match="999.99 has no description"):
        data.description_tokens()
    tokens = data.description_tokens(empty="unk")
    assert tokens[2].tolist() == [1] and len(tokens) == 3
    assert tokens[0].tolist() == data.description_ids[data.description_ptr[0]:data.description_ptr[1]].tolist()
    assert data.train.hadm_ids.tolist() == fx.splits["train_50"]
    everything = load_icd_coding(fx.mimic_dir, fx.splits_dir, setting="full", embedding_dim=None,
                                 cache_dir=tmp_path)
    full = set(np.concatenate(list(read_caml_splits(fx.splits_dir, "full").values())).tolist())
    assert everything.codes == sorted({d for h, _, _, d in fx.codes if h in full})
    # an admission of the splits without a discharge summary
    no_note = next(a["HADM_ID"] for a in fx.admissions if all(
        n["HADM_ID"] != a["HADM_ID"] or n["CATEGORY"] != "Discharge summary" or n["ISERROR"] == "1"
        for n in fx.notes))
    splits = tmp_path / "splits"
    splits.mkdir()
    for f in fx.splits_dir.iterdir():
        text = f.read_text()
        splits.joinpath(f.name).write_text(text + f"{no_note}\n" if f.name == "test_full_hadm_ids.csv" else text)
    kwargs = dict(setting="full", embedding_dim=None, cache_dir=tmp_path)
    with pytest.raises(KeyError, match="1 of the"):
        load_icd_coding(fx.mimic_dir, splits, **kwargs)
    dropped = load_icd_coding(fx.mimic_dir, splits, missing_notes="drop", **kwargs)
    assert no_note not in dropped.test.hadm_ids.tolist()
    empty = load_icd_coding(fx.mimic_dir, splits, missing_notes="empty", **kwargs)
    assert empty.test.hadm_ids[-1] == no_note and empty.test.lengths[-1] == 0
    assert empty.report["splits"]["test"]["no_note"] == 1
    with pytest.raises(ValueError, match="labels"):
        load_icd_coding(fx.mimic_dir, fx.splits_dir, labels=0.5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="setting"):
        load_icd_coding(fx.mimic_dir, fx.splits_dir, setting="top50", cache_dir=tmp_path)


# ------------------------------------------------------------------------ the real demo
@pytest.mark.skipif(not (DEMO.is_dir() and CAML.is_dir()), reason="the MIMIC-III demo or CAML splits are absent")
def test_demo_structured_tables_through_the_same_code(tmp_path):
    admissions = read_admissions(DEMO)
    splits = {s: ids[np.isin(ids, admissions.index)] for s, ids in read_caml_splits(CAML, "full").items()}
    assert len(splits["train"]) > 100  # the demo's admissions that are in CAML's training set
    codes = read_icd_codes(DEMO)
    in_splits = np.concatenate(list(splits.values()))
    labels = top_codes(codes, 50, in_splits)
    ptr, index = code_lists(codes, splits["train"], labels)
    assert len(labels) == 50 and ptr[-1] == index.size > len(splits["train"])
    # NOTEEVENTS is header-only in the demo: the data set builds with empty documents
    data = load_icd_coding(DEMO, CAML, setting="full", labels=labels, missing_notes="empty", embedding_dim=None,
                           cache_dir=tmp_path)
    assert data.codes == labels and data.train.token_ids.numel() == 0
    assert data.report["splits"]["train"]["no_note"] == len(data.train)
    rows = np.flatnonzero(np.isin(data.train.hadm_ids.numpy(), splits["train"]))
    assert torch.equal(data.train.multi_hot(torch.from_numpy(rows)), _dense(ptr, index, 50))


# ------------------------------------------------------- the models take these batches
def test_batches_feed_the_clinical_models(fx, tmp_path):
    """The data's contract with gattn.models: ragged ids + ptr, multi-hot labels, series with a
    True-is-observed mask, descriptions as token lists, training label counts for LDAM."""
    from gattn.losses import LDAMLoss
    from gattn.models import LabelDependentAttention, TransICD

    data = load_icd_coding(fx.mimic_dir, fx.splits_dir, labels=6, embedding_dim=8, embedding_epochs=1,
                           min_count=2, cache_dir=tmp_path, time_series=DEFAULT_FEATURES[:4], max_hours=6)
    batch = next(iter(data.train.loader(batch_size=4)))
    torch.manual_seed(0)
    transicd = TransICD(data.num_labels, pretrained_embeddings=data.embeddings, num_heads=2, num_layers=1)
    logits = transicd(batch.token_ids, batch.ptr)
    loss = LDAMLoss(data.train_label_counts)(logits, batch.labels)
    assert logits.shape == batch.labels.shape and torch.isfinite(loss)
    lda = LabelDependentAttention(data.num_labels, pretrained_embeddings=data.embeddings,
                                  label_descriptions=data.description_tokens(empty="unk"),
                                  time_series_channels=4, hidden_channels=8)
    out = lda(batch.token_ids, batch.ptr, batch.series, batch.series_mask)
    assert out.shape == batch.labels.shape and torch.isfinite(out).all()
