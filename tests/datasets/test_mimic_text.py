"""MIMIC-III notes: cleaning (numba kernel vs the plain rule), joining per admission, the cache,
the vocabulary, encoding and word2vec."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch

from gattn.datasets.mimic import (
    UNK,
    build_vocabulary,
    clean_text,
    clean_texts,
    load_notes,
    tokenize,
    train_word2vec,
    write_mimic_fixture,
)
from gattn.datasets.mimic import notes as notes_module


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_mimic_fixture(tmp_path_factory.mktemp("mimic"), num_admissions=40, seed=2)


# ---------------------------------------------------------------------------------- text
def plain_tokens(text: str) -> list[str]:
    """The rule written out character by character, independently of `re`'s \\w."""
    words, current = [], ""
    for ch in text.lower() + " ":
        if ch.isalnum() or ch == "_":
            current += ch
        else:
            if any(c.isalpha() for c in current):
                words.append(current)
            current = ""
    return words


def test_tokenize_examples():
    text = 'Admission Date: [**2151-7-16**] s/p CABG x3, 2mg q.d. "Dr." 123.5 ___ a_1 9_9 café N\u00b0'
    assert tokenize(text) == ["admission", "date", "s", "p", "cabg", "x3", "2mg", "q", "d", "dr", "a_1", "café", "n"]
    assert clean_text(text) == " ".join(tokenize(text))


def test_clean_texts_matches_the_plain_rule_on_random_text():
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ019_ .,;:-/[]*()\"'\n\t") + ["é", "ß", "\u00b0", "\u00bd", "\u0130", "Ω"]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 80)))) for _ in range(400)]
    texts += [None, "", "   ", "123 456", "ALL CAPS WORDS"]
    got = clean_texts(pa.array(texts)).to_pylist()
    assert got == [" ".join(plain_tokens(t or "")) for t in texts]
    assert got == [clean_text(t or "") for t in texts]


def test_clean_texts_on_sliced_and_chunked_arrays():
    texts = ["First Note 12", "second; NOTE", "third_one 3x"]
    expected = [clean_text(t) for t in texts]
    array = pa.array(["skipped", *texts])
    assert clean_texts(array.slice(1)).to_pylist() == expected
    assert clean_texts(pa.chunked_array([texts[:1], texts[1:]])).to_pylist() == expected
    assert clean_texts(texts).to_pylist() == expected
    with pytest.raises(TypeError, match="strings"):
        clean_texts(pa.array([1, 2]))


# --------------------------------------------------------------------------------- notes
def reference_notes(fx, categories=("Discharge summary",), drop_error_notes=True) -> dict[int, tuple[str, int]]:
    """HADM_ID -> (joined cleaned text, number of notes), by the documented order."""
    by_hadm: dict[int, list[dict]] = {}
    for note in fx.notes:
        if note["CATEGORY"] not in categories or note["HADM_ID"] is None:
            continue
        if drop_error_notes and note["ISERROR"] == "1":
            continue
        by_hadm.setdefault(note["HADM_ID"], []).append(note)
    out = {}
    for hadm, notes in by_hadm.items():
        notes.sort(key=lambda n: (n["DESCRIPTION"].lower() == "addendum", n["CHARTDATE"], n["ROW_ID"]))
        cleaned = [clean_text(n["TEXT"]) for n in notes]
        out[hadm] = (" ".join(c for c in cleaned if c), len(notes))
    return out


def as_dict(notes) -> dict[int, tuple[str, int, int]]:
    table = notes.read()
    return {h: (t, n, k) for h, t, n, k in zip(*(table.column(c).to_pylist() for c in
                                                 ("HADM_ID", "TEXT", "NUM_NOTES", "NUM_TOKENS")))}


def test_notes_are_filtered_cleaned_and_joined_in_the_documented_order(fx, tmp_path):
    notes = load_notes(fx.mimic_dir, cache_dir=tmp_path)
    got = as_dict(notes)
    expected = reference_notes(fx)
    assert set(got) == set(expected) and len(notes) == len(expected)
    for hadm, (text, num) in expected.items():
        assert got[hadm][:2] == (text, num)
        assert got[hadm][2] == len(text.split())
    # the fixture has addenda dated, and written, before their report: the report still comes first
    early = [h for h in expected for a in fx.notes for r in fx.notes
             if a["HADM_ID"] == r["HADM_ID"] == h and a["DESCRIPTION"] == "Addendum" and r["DESCRIPTION"] == "Report"
             and r["CATEGORY"] == "Discharge summary" and a["ROW_ID"] < r["ROW_ID"] and a["CHARTDATE"] < r["CHARTDATE"]]
    assert early
    report_text = [clean_text(r["TEXT"]) for r in fx.notes if r["HADM_ID"] == early[0] and r["ISERROR"] != "1"
                   and r["CATEGORY"] == "Discharge summary" and r["DESCRIPTION"] == "Report"][0]
    assert got[early[0]][0].startswith(report_text)
    report = notes.report
    assert report.rows == len(fx.notes) and report.kept == sum(n for _, n in expected.values())
    assert report.skipped["other CATEGORY"] == sum(n["CATEGORY"] != "Discharge summary" for n in fx.notes)
    assert report.skipped["ISERROR = 1"] == sum(n["ISERROR"] == "1" for n in fx.notes)
    assert not notes.from_cache


def test_notes_cache_is_keyed_by_the_options(fx, tmp_path):
    first = load_notes(fx.mimic_dir, cache_dir=tmp_path)
    again = load_notes(fx.mimic_dir, cache_dir=tmp_path)
    assert again.from_cache and again.path == first.path and as_dict(again) == as_dict(first)
    assert str(again.report) == str(first.report)
    other = load_notes(fx.mimic_dir, cache_dir=tmp_path, categories=("Discharge summary", " Radiology "))
    assert not other.from_cache and other.path != first.path
    expected = reference_notes(fx, ("Discharge summary", "Radiology"))
    assert {h: v[:2] for h, v in as_dict(other).items()} == expected
    with_errors = load_notes(fx.mimic_dir, cache_dir=tmp_path, drop_error_notes=False)
    assert {h: v[:2] for h, v in as_dict(with_errors).items()} == reference_notes(fx, drop_error_notes=False)
    refreshed = load_notes(fx.mimic_dir, cache_dir=tmp_path, refresh=True)
    assert not refreshed.from_cache and as_dict(refreshed) == as_dict(first)


def test_notes_in_small_blocks_and_many_buckets_are_the_same(fx, tmp_path, monkeypatch):
    whole = as_dict(load_notes(fx.mimic_dir, cache_dir=tmp_path / "a"))
    monkeypatch.setattr(notes_module, "_BYTES_PER_BUCKET", 4096)
    monkeypatch.setattr(notes_module, "_FLUSH_BYTES", 1024)
    split = load_notes(fx.mimic_dir, cache_dir=tmp_path / "b", block_size=1 << 16)
    assert as_dict(split) == whole


def test_notes_read_by_admission_and_hadm_filter(fx, tmp_path):
    notes = load_notes(fx.mimic_dir, cache_dir=tmp_path)
    expected = reference_notes(fx)
    wanted = sorted(expected)[::-1][:5]
    table = notes.read(wanted)
    assert table.column("HADM_ID").to_pylist() == wanted
    assert table.column("TEXT").to_pylist() == [expected[h][0] for h in wanted]
    with pytest.raises(KeyError, match="1 admission"):
        notes.read([wanted[0], 1])
    some = load_notes(fx.mimic_dir, cache_dir=tmp_path, hadm_ids=wanted[:2])
    assert sorted(as_dict(some)) == sorted(wanted[:2])
    assert some.report.skipped["HADM_ID not requested"] > 0
    with pytest.raises(ValueError, match="categories"):
        load_notes(fx.mimic_dir, cache_dir=tmp_path, categories="Discharge summary")


# ------------------------------------------------------------------------------ vocabulary
DOCS = ["b a a c", "a b d", "", "a e e e", "b c f"]


def test_vocabulary_by_document_frequency():
    vocab = build_vocabulary([pa.array(DOCS[:2]), pa.array(DOCS[2:])], min_count=2)
    doc_freq = Counter(w for d in DOCS for w in set(d.split()))
    term_freq = Counter(w for d in DOCS for w in d.split())
    kept = sorted((w for w, c in doc_freq.items() if c >= 2), key=lambda w: (-doc_freq[w], w))
    assert vocab.words == ["<pad>", "<unk>", *kept]
    assert vocab.doc_freq[2:].tolist() == [doc_freq[w] for w in kept]
    assert vocab.term_freq[2:].tolist() == [term_freq[w] for w in kept]
    assert build_vocabulary([pa.array(DOCS)], min_count=1, max_size=2).words[2:] == ["a", "b"]
    with pytest.raises(ValueError, match="min_count"):
        build_vocabulary([pa.array(DOCS)], min_count=0)


def test_encode_truncates_and_maps_unknown_words():
    vocab = build_vocabulary([pa.array(DOCS)], min_count=2)
    texts = pa.array(["a b zz c a", "", "e e e e"], type=pa.large_string())
    ids, ptr = vocab.encode(texts, max_length=3, chunk_size=2)
    index = {w: i for i, w in enumerate(vocab.words)}
    expected = [[index.get(w, UNK) for w in t.split()[:3]] for t in texts.to_pylist()]
    assert ptr.tolist() == [0, 3, 3, 6]
    assert [ids[ptr[i]:ptr[i + 1]].tolist() for i in range(3)] == expected
    full_ids, full_ptr = vocab.encode(texts)
    assert full_ptr.tolist() == [0, 5, 5, 9] and ids.dtype == torch.long
    assert vocab.index("a") == index["a"] and vocab.index("never") == UNK
    with pytest.raises(ValueError, match="max_length"):
        vocab.encode(texts, max_length=0)


def test_word2vec_rows_follow_the_vocabulary_and_are_seeded(fx, tmp_path):
    table = load_notes(fx.mimic_dir, cache_dir=tmp_path).read()
    texts = table.column("TEXT").combine_chunks()
    vocab = build_vocabulary([texts], min_count=2)
    make = lambda: iter([texts.slice(0, 10), texts.slice(10)])
    a = train_word2vec(make, vocab, 12, epochs=2, seed=3)
    b = train_word2vec(make, vocab, 12, epochs=2, seed=3)
    assert a.shape == (len(vocab), 12) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert torch.all(a[0] == 0)
    torch.testing.assert_close(a[1:].norm(dim=1), torch.ones(len(vocab) - 1))
    c = train_word2vec(make, vocab, 12, epochs=2, seed=4)
    assert not torch.allclose(a[2:], c[2:])


def test_no_token_is_lost_between_cleaning_and_encoding(fx, tmp_path):
    table = load_notes(fx.mimic_dir, cache_dir=tmp_path).read()
    texts = table.column("TEXT")
    vocab = build_vocabulary([texts], min_count=1)
    ids, ptr = vocab.encode(texts)
    words = [w for t in texts.to_pylist() for w in t.split(" ") if w]
    assert [vocab.words[i] for i in ids.tolist()] == words
    assert (ptr[1:] - ptr[:-1]).tolist() == table.column("NUM_TOKENS").to_pylist()
    assert all(re.fullmatch(r"\w*[^\W\d_]\w*", w) for w in words[:500])
