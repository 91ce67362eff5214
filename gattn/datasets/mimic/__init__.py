"""MIMIC-III from a local directory (credentialed data: never downloaded).

Modules: :mod:`.tables` (schema, finding and streaming a table), :mod:`.codes` (ICD-9 codes,
dots, label sets, descriptions), :mod:`.splits` (CAML splits, ADMISSIONS), :mod:`.text`
(cleaning and tokenisation), :mod:`.notes` (discharge summaries, cached), :mod:`.vocab`
(vocabulary, encoding, word2vec), :mod:`.timeseries` (hourly CHARTEVENTS / LABEVENTS series),
:mod:`.documents` (ragged documents, a torch Dataset and its batches), :mod:`.icd` (the
ICD-coding data set end to end) and :mod:`.fixture` (invented data in the exact schema).
"""

from __future__ import annotations

from pathlib import Path

from ..root import register_source
from .cache import default_cache_dir
from .codes import code_lists, format_icd9, read_code_descriptions, read_icd_codes, top_codes
from .documents import DocumentBatch, LengthBucketBatchSampler, MimicDocuments, gather_ragged
from .fixture import MimicFixture, write_mimic_fixture, write_noteevents
from .icd import MimicICD, load_icd_coding
from .notes import MimicNotes, load_notes
from .splits import read_admissions, read_caml_splits
from .tables import SCHEMAS, TableReport, find_table, iter_table, read_table
from .text import clean_text, clean_texts, tokenize
from .timeseries import DEFAULT_FEATURES, SeriesFeature, TimeSeries, load_time_series
from .vocab import PAD, UNK, Vocabulary, build_vocabulary, train_word2vec

__all__ = [
    "DEFAULT_FEATURES",
    "PAD",
    "SCHEMAS",
    "UNK",
    "DocumentBatch",
    "LengthBucketBatchSampler",
    "MimicDocuments",
    "MimicFixture",
    "MimicICD",
    "MimicNotes",
    "SeriesFeature",
    "TableReport",
    "TimeSeries",
    "Vocabulary",
    "available",
    "build_vocabulary",
    "clean_text",
    "clean_texts",
    "code_lists",
    "default_cache_dir",
    "find_table",
    "format_icd9",
    "gather_ragged",
    "iter_table",
    "load_icd_coding",
    "load_notes",
    "load_time_series",
    "read_admissions",
    "read_caml_splits",
    "read_code_descriptions",
    "read_icd_codes",
    "read_table",
    "tokenize",
    "top_codes",
    "train_word2vec",
    "write_mimic_fixture",
    "write_noteevents",
]

_TABLES = ("ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "NOTEEVENTS", "CHARTEVENTS", "LABEVENTS")


@register_source("mimic3", folder="mimic3")
def available(root: str | Path) -> list[tuple[str, bool, str]]:
    """MIMIC-III directories under ``root`` (``root`` itself and its sub-folders): one
    ``(name, present, detail)`` per folder holding MIMIC tables or CAML split files, where
    ``detail`` lists the tables found (and which are missing or header-only).

    Args:
        root (str or Path): the folder searched (itself and its sub-folders).
    """
    root = Path(root)
    rows = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        found, empty = [], []
        for table in _TABLES:
            try:
                path = find_table(folder, table)
            except FileNotFoundError:
                continue
            found.append(table)
            if path.stat().st_size < 512 and sum(1 for _ in open(path, "rb")) <= 1:
                empty.append(table)
        splits = sorted(p.name for p in folder.glob("*_hadm_ids.csv"))
        if not found and not splits:
            continue
        missing = [t for t in _TABLES if t not in found]
        detail = f"{folder}: tables {', '.join(found) or 'none'}"
        if empty:
            detail += f" (header only: {', '.join(empty)})"
        if missing and found:
            detail += f"; missing {', '.join(missing)}"
        if splits:
            detail += f"; {len(splits)} CAML split files"
        rows.append((folder.name, bool(found) or bool(splits), detail))
    return rows
