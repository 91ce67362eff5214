"""The MIMIC-III ICD-coding data set (CAML's setting, used by TransICD), assembled end to end.

:func:`load_icd_coding` puts the parts together:

1. the CAML splits (:mod:`.splits`) of ``setting`` (``"50"`` or ``"full"``);
2. the codes of their admissions (:mod:`.codes`), read as strings and dotted;
3. the label set: by default, for ``"50"`` the 50 codes assigned to the most admissions of the
   *full* splits together (train + dev + test: CAML counted over every admission with a
   discharge summary), for ``"full"`` every code of those admissions; or ``labels=k`` for the
   top ``k``, or an explicit list of dotted codes (e.g. a published list);
4. the discharge summaries, cleaned and joined per admission (:mod:`.notes`, cached);
5. the vocabulary of the training notes and word2vec vectors trained on them (:mod:`.vocab`,
   cached: ``vocab-<key>.parquet`` and ``.npy``), then each document encoded and truncated to
   ``max_length`` tokens;
6. the code descriptions (``D_ICD_*`` when present, then ``ICD9_descriptions``), cleaned and
   encoded with the same vocabulary, for label initialisation;
7. optionally the hourly time series (:mod:`.timeseries`).

Because CAML read procedure codes as numbers, some of its top-50 codes differ from the
correctly read ones; the admissions of the ``_50`` split files are kept as CAML listed them, so
a few may carry none of this label set (the report counts them as ``no_label``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from .cache import CacheEntry, file_identity
from .codes import code_lists, read_code_descriptions, read_icd_codes, top_codes
from .documents import MimicDocuments
from .notes import MimicNotes, load_notes
from .splits import SPLITS, read_caml_splits, split_file
from .tables import find_table
from .text import clean_texts
from .timeseries import SeriesFeature, load_time_series
from .vocab import UNK, Vocabulary, build_vocabulary, train_word2vec

__all__ = ["MimicICD", "load_icd_coding"]


@dataclass
class MimicICD:
    """The ICD-coding data set.

    Attributes:
        train (MimicDocuments): the training documents.
        dev (MimicDocuments): the validation documents.
        test (MimicDocuments): the test documents.
        codes (list[str]): the C label codes (dotted), the column order of every label matrix.
        descriptions (list[str]): one description per code ("" when no source has one).
        description_ids (Tensor): the descriptions cleaned and encoded with ``vocab``, all
            concatenated, ``[n]`` int64, not truncated.
        description_ptr (Tensor): the codes over ``description_ids``, ``[C+1]`` int64.
        vocab (Vocabulary): the :class:`Vocabulary` (0 ``<pad>``, 1 ``<unk>``).
        embeddings (Tensor, optional): ``[len(vocab), d]`` float32 word2vec vectors, or None (``embedding_dim=None``,
            or no training words).
        series_features (list[str], optional): the time-series feature names, or None. (default: ``None``)
        report (dict, optional): what each step found: per-table reports, counts per split (documents, tokens,
            truncated documents, documents without a label, admissions without a note).
    """

    train: MimicDocuments
    dev: MimicDocuments
    test: MimicDocuments
    codes: list[str]
    descriptions: list[str]
    description_ids: Tensor
    description_ptr: Tensor
    vocab: Vocabulary
    embeddings: Tensor | None
    series_features: list[str] | None = None
    report: dict = field(default_factory=dict)

    @property
    def splits(self) -> dict[str, MimicDocuments]:
        return {"train": self.train, "dev": self.dev, "test": self.test}

    @property
    def num_labels(self) -> int:
        return len(self.codes)

    def description_tokens(self, empty: str = "raise") -> list[Tensor]:
        """One int64 tensor of token ids per code, its description (the form
        :class:`gattn.models.LabelDependentAttention`'s ``label_descriptions`` takes).

        Args:
            empty: a code whose description is empty (no source had one, see
                ``report["codes_without_description"]``): ``"raise"`` (default) or ``"unk"``
                (the single token ``<unk>``).
        """
        if empty not in ("raise", "unk"):
            raise ValueError(f"`empty` must be 'raise' or 'unk', got {empty!r}")
        out = []
        for c, code in enumerate(self.codes):
            tokens = self.description_ids[self.description_ptr[c]: self.description_ptr[c + 1]]
            if tokens.numel() == 0:
                if empty == "raise":
                    raise ValueError(f"code {code} has no description; pass empty='unk' to use <unk>")
                tokens = torch.tensor([UNK], dtype=torch.long)
            out.append(tokens)
        return out

    @property
    def train_label_counts(self) -> Tensor:
        """[C] int64 training documents per label (for the LDAM loss's margins)."""
        return self.train.label_counts()

    def __repr__(self) -> str:
        return (f"MimicICD({self.num_labels} labels, vocab {len(self.vocab)}, train {len(self.train)}, "
                f"dev {len(self.dev)}, test {len(self.test)})")


def _label_set(labels, setting: str, codes, full_ids: np.ndarray) -> list[str]:
    if labels is None:
        labels = 50 if setting == "50" else "all"
    if isinstance(labels, str) and labels == "all":
        present = codes[codes["HADM_ID"].isin(full_ids)]["ICD9_CODE"].unique()
        return sorted(present.tolist())
    if isinstance(labels, int) and not isinstance(labels, bool):
        return top_codes(codes, labels, full_ids)
    if isinstance(labels, Sequence) and not isinstance(labels, str) and labels:
        out = [str(c).strip() for c in labels]
        if len(set(out)) != len(out):
            raise ValueError("`labels` lists a code twice")
        return out
    raise ValueError(f"`labels` must be None, 'all', a positive int or a non-empty list of dotted codes, "
                     f"got {labels!r}")


def _notes_of(notes: MimicNotes, hadm: np.ndarray, missing_notes: str, split: str) -> tuple[pa.Array, np.ndarray, int]:
    """(cleaned texts in ``hadm`` order, the admissions kept, #missing) under the policy."""
    present = notes.read(columns=["HADM_ID"]).column("HADM_ID").to_numpy()
    has = np.isin(hadm, present)
    missing = int((~has).sum())
    if missing and missing_notes == "raise":
        raise KeyError(f"{missing} of the {hadm.size} {split} admissions have no note in NOTEEVENTS "
                       f"(HADM_ID {', '.join(map(str, hadm[~has][:5]))}); pass missing_notes='drop' or 'empty'")
    found = hadm[has]
    texts = notes.read(found, columns=["TEXT"]).column("TEXT").combine_chunks() if found.size else pa.array(
        [], pa.large_string())
    if missing_notes == "drop":
        hadm = found
    elif missing:
        full = np.full(hadm.size, "", dtype=object)
        full[has] = np.asarray(texts.to_pylist(), dtype=object)
        texts = pa.array(full.tolist(), type=pa.large_string())
    return texts, hadm, missing


def load_icd_coding(
    mimic_dir: str | os.PathLike,
    splits_dir: str | os.PathLike,
    *,
    setting: str = "50",
    labels: int | str | Sequence[str] | None = None,
    code_kind: str = "both",
    max_length: int | None = 2500,
    min_count: int = 3,
    max_vocab: int | None = None,
    embedding_dim: int | None = 100,
    embedding_epochs: int = 5,
    embedding_workers: int = 1,
    seed: int = 0,
    descriptions_file: str | os.PathLike | None = None,
    missing_notes: str = "raise",
    time_series: Sequence[SeriesFeature] | None = None,
    max_hours: int = 48,
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
    on_malformed: str = "raise",
) -> MimicICD:
    """The MIMIC-III ICD-coding data set (module docstring for the steps).

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory (NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD; ADMISSIONS
            and CHARTEVENTS / LABEVENTS for ``time_series``).
        splits_dir (str or os.PathLike): the CAML split files.
        setting (str, optional): ``"50"`` (default) or ``"full"``: which split files give the documents.
        labels (int or str or Sequence[str], optional): the label set: None (the setting's: top 50,
            or ``"all"``), ``"all"``, a positive int k (top k), or a list of dotted codes. (default:
            ``None``)
        code_kind (str, optional): ``"both"`` (default), ``"diagnosis"`` or ``"procedure"``.
        max_length (int, optional): tokens kept per document (default 2500; None keeps all).
        min_count (int, optional): a word enters the vocabulary when in at least this many training notes (3).
            (default: ``3``)
        max_vocab (int, optional): keep at most this many words (default: no limit).
        embedding_dim (int, optional): word2vec size (default 100; None: no embeddings).
        embedding_epochs (int, optional): word2vec's epochs. (default: ``5``)
        embedding_workers (int, optional): word2vec's threads. (default: ``1``)
        seed (int, optional): word2vec's seed. (default: ``0``)
        descriptions_file (str or os.PathLike, optional): CAML's ``ICD9_descriptions`` (default:
            ``splits_dir/ICD9_descriptions`` when it exists).
        missing_notes (str, optional): what to do with a split admission that has no discharge summary:
            ``"raise"`` (default), ``"drop"`` it, or keep it with an ``"empty"`` document.
        time_series (Sequence[SeriesFeature], optional): features for hourly series (e.g.
            :data:`.timeseries.DEFAULT_FEATURES`); None (default) for none.
        max_hours (int, optional): hours of series from admission (48). (default: ``48``)
        cache_dir (str or os.PathLike, optional): as in :func:`.notes.load_notes`. (default: ``None``)
        refresh (bool, optional): as in :func:`.notes.load_notes`. (default: ``False``)
        on_malformed (str, optional): as in :func:`.notes.load_notes`. (default: ``"raise"``)
    """
    if setting not in ("50", "full"):
        raise ValueError(f"`setting` must be '50' or 'full', got {setting!r}")
    if missing_notes not in ("raise", "drop", "empty"):
        raise ValueError(f"`missing_notes` must be 'raise', 'drop' or 'empty', got {missing_notes!r}")
    if descriptions_file is None and (Path(splits_dir) / "ICD9_descriptions").is_file():
        descriptions_file = Path(splits_dir) / "ICD9_descriptions"
    report: dict = {}
    splits = read_caml_splits(splits_dir, setting)
    full_ids = np.concatenate(list(read_caml_splits(splits_dir, "full").values()))
    needed = np.union1d(full_ids, np.concatenate(list(splits.values())))
    codes = read_icd_codes(mimic_dir, code_kind, hadm_ids=needed, on_malformed=on_malformed)
    report["codes"] = [str(r) for r in codes.attrs["reports"]]
    label_codes = _label_set(labels, setting, codes, full_ids)

    notes = load_notes(mimic_dir, cache_dir=cache_dir, refresh=refresh, on_malformed=on_malformed)
    report["notes"] = str(notes.report)
    texts, hadm, counts = {}, {}, {}
    for split in SPLITS:
        texts[split], hadm[split], missing = _notes_of(notes, splits[split], missing_notes, split)
        counts[split] = {"admissions": int(splits[split].size), "no_note": missing}

    vocab_options = {
        "notes": notes.options, "train": file_identity(split_file(splits_dir, "train", setting)),
        "missing_notes": missing_notes, "min_count": min_count, "max_vocab": max_vocab,
        "embedding": None if embedding_dim is None else [embedding_dim, embedding_epochs, seed],
    }
    entry = CacheEntry(cache_dir, "vocab", vocab_options)
    train_texts = texts["train"]
    if entry.exists(".parquet") and not refresh:
        vocab = Vocabulary.from_table(pq.read_table(entry.file(".parquet")))
        embeddings = torch.from_numpy(np.load(entry.file(".npy"))) if entry.file(".npy").is_file() else None
    else:
        vocab = build_vocabulary([train_texts.slice(s, 4096) for s in range(0, len(train_texts), 4096)],
                                 min_count=min_count, max_size=max_vocab)
        embeddings = None
        if embedding_dim is not None and len(vocab) > 2:
            embeddings = train_word2vec(
                lambda: (train_texts.slice(s, 4096) for s in range(0, len(train_texts), 4096)), vocab, embedding_dim,
                epochs=embedding_epochs, seed=seed, workers=embedding_workers)
        pq.write_table(vocab.to_table(), entry.temporary(".parquet"))
        suffixes = [".parquet"]
        if embeddings is not None:
            with open(entry.temporary(".npy"), "wb") as handle:
                np.save(handle, embeddings.numpy())
            suffixes.append(".npy")
        entry.commit(suffixes, {"vocab_size": len(vocab)})

    series = None
    if time_series is not None:
        all_hadm = np.concatenate([hadm[s] for s in SPLITS])
        series = load_time_series(mimic_dir, all_hadm, features=time_series, max_hours=max_hours,
                                  cache_dir=cache_dir, refresh=refresh, on_malformed=on_malformed)
        report["time_series"] = {t: str(r) for t, r in series.reports.items()}

    documents, offset = {}, 0
    for split in SPLITS:
        ids, ptr = vocab.encode(texts[split], max_length)
        label_ptr, label_index = code_lists(codes, hadm[split], label_codes)
        num = hadm[split].size
        part = slice(offset, offset + num)
        offset += num
        documents[split] = MimicDocuments(
            torch.from_numpy(hadm[split].copy()), ids, ptr, torch.from_numpy(label_index),
            torch.from_numpy(label_ptr), len(label_codes),
            None if series is None else series.values[part], None if series is None else series.mask[part])
        full_length = np.asarray(pc.add(pc.count_substring(texts[split], " "), 1)) if len(texts[split]) else []
        counts[split].update({
            "documents": num, "tokens": int(ids.numel()),
            "truncated": int(np.sum(np.asarray(full_length) > max_length)) if max_length is not None else 0,
            "no_label": int((np.diff(label_ptr) == 0).sum()),
            "unknown_tokens": int((ids == 1).sum()),
        })
    report["splits"] = counts

    d_icd = mimic_dir if any(_has(mimic_dir, t) for t in ("D_ICD_DIAGNOSES", "D_ICD_PROCEDURES")) else None
    descriptions_map = read_code_descriptions(d_icd, descriptions_file) if (d_icd or descriptions_file) else {}
    descriptions = [descriptions_map.get(code, "") for code in label_codes]
    report["codes_without_description"] = [c for c, d in zip(label_codes, descriptions) if not d]
    description_ids, description_ptr = vocab.encode(clean_texts(descriptions), None)
    return MimicICD(documents["train"], documents["dev"], documents["test"], label_codes, descriptions,
                    description_ids, description_ptr, vocab, embeddings,
                    None if series is None else series.features, report)


def _has(mimic_dir: str | os.PathLike, table: str) -> bool:
    try:
        find_table(mimic_dir, table)
    except FileNotFoundError:
        return False
    return True

