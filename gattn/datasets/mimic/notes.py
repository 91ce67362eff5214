"""Discharge summaries from ``NOTEEVENTS``: filtered early, cleaned, joined per admission, cached.

:func:`load_notes` streams ``NOTEEVENTS.csv[.gz]`` block by block (the full file is about 4 GB):

1. only the columns it needs are converted; rows whose ``CATEGORY`` is not in ``categories``
   (default: ``"Discharge summary"``) are dropped right away, then notes flagged
   ``ISERROR = 1`` (when ``drop_error_notes``), notes without a ``HADM_ID`` and, if given,
   admissions not in ``hadm_ids``; each reason is counted in the report;
2. the text of the rest is cleaned and tokenised (:mod:`.text`);
3. notes are spread over hash buckets of ``HADM_ID`` in temporary parquet files, so that
4. each bucket alone is sorted and its notes joined per ``HADM_ID`` in this order: the reports
   first (``DESCRIPTION`` other than ``"Addendum"``), then the addenda; within each, by
   ``CHARTDATE``, then ``ROW_ID`` (the order the notes were written in); notes are joined
   with a single space.

Memory stays bounded by a few CSV blocks plus one bucket (about 1/16 of the discharge text
of the full database). The result is a parquet file in the cache (:mod:`.cache`), one row per
admission: ``HADM_ID`` (int64), ``SUBJECT_ID`` (int64), ``NUM_NOTES`` (int32), ``NUM_TOKENS``
(int32), ``TEXT`` (the cleaned words, space separated). A second call with the same options
and the same file reads the cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .cache import CacheEntry, file_identity
from .tables import TableReport, find_table, iter_table
from .text import clean_texts

__all__ = ["MimicNotes", "load_notes"]

_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "DESCRIPTION", "ISERROR", "TEXT"]
_PART_SCHEMA = pa.schema([
    ("HADM_ID", pa.int64()), ("SUBJECT_ID", pa.int64()), ("IS_ADDENDUM", pa.bool_()),
    ("CHARTDATE", pa.timestamp("s")), ("ROW_ID", pa.int64()), ("TEXT", pa.large_string()),
])
_OUT_SCHEMA = pa.schema([
    ("HADM_ID", pa.int64()), ("SUBJECT_ID", pa.int64()), ("NUM_NOTES", pa.int32()),
    ("NUM_TOKENS", pa.int32()), ("TEXT", pa.large_string()),
])
# Bytes of NOTEEVENTS per bucket: keeps one bucket's discharge text near 1/16 of the full database's.
_BYTES_PER_BUCKET = 256 << 20
_FLUSH_BYTES = 8 << 20


@dataclass
class MimicNotes:
    """The cleaned notes of each admission, in a parquet file (see the module docstring).

    Attributes:
        path (Path): the parquet file.
        report (TableReport): what reading ``NOTEEVENTS`` found (rows, kept, skipped by reason, malformed).
        options (dict, optional): the options it was built with.
        from_cache (bool, optional): whether this call read an existing cache entry. (default: ``False``)
        num_admissions (int, optional): admissions (rows) in the file. (default: ``0``)
    """

    path: Path
    report: TableReport
    options: dict = field(default_factory=dict)
    from_cache: bool = False
    num_admissions: int = 0

    def read(self, hadm_ids: Sequence[int] | np.ndarray | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of ``hadm_ids`` in that order (default: every row, in file order).

        An admission of ``hadm_ids`` without a note raises ``KeyError`` naming how many are
        missing and the first few.
        """
        columns = list(columns) if columns is not None else list(_OUT_SCHEMA.names)
        if "HADM_ID" not in columns:
            columns = ["HADM_ID", *columns]
        if hadm_ids is None:
            return pq.read_table(self.path, columns=columns)
        wanted = np.asarray(hadm_ids, dtype=np.int64)
        table = pq.read_table(self.path, columns=columns, filters=[("HADM_ID", "in", pa.array(wanted))])
        index = pc.index_in(pa.array(wanted), value_set=table.column("HADM_ID"))
        missing = pc.is_null(index)
        if pc.any(missing).as_py():
            absent = wanted[np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)]
            raise KeyError(f"{absent.size} admission(s) have no note in {self.path.name}: "
                           f"HADM_ID {', '.join(map(str, absent[:5]))}{' ...' if absent.size > 5 else ''}")
        return table.take(index)

    def __len__(self) -> int:
        return self.num_admissions

    def __repr__(self) -> str:
        return f"MimicNotes({self.num_admissions} admissions, {self.path})"


def _prepare(batch: pa.Table, categories: pa.Array, drop_error_notes: bool, wanted: pa.Array | None,
             report: TableReport) -> pa.Table | None:
    keep = pc.fill_null(pc.is_in(pc.utf8_trim_whitespace(batch.column("CATEGORY")), value_set=categories), False)
    report.skip("other CATEGORY", batch.num_rows - int(pc.sum(keep).as_py() or 0))
    if drop_error_notes:
        error = pc.and_(keep, pc.fill_null(pc.equal(pc.utf8_trim_whitespace(batch.column("ISERROR")), "1"), False))
        report.skip("ISERROR = 1", int(pc.sum(error).as_py() or 0))
        keep = pc.and_(keep, pc.invert(error))
    no_hadm = pc.and_(keep, pc.is_null(batch.column("HADM_ID")))
    report.skip("no HADM_ID", int(pc.sum(no_hadm).as_py() or 0))
    keep = pc.and_(keep, pc.invert(no_hadm))
    if wanted is not None:
        outside = pc.and_(keep, pc.invert(pc.is_in(batch.column("HADM_ID"), value_set=wanted)))
        report.skip("HADM_ID not requested", int(pc.sum(outside).as_py() or 0))
        keep = pc.and_(keep, pc.invert(outside))
    batch = batch.filter(keep)
    if batch.num_rows == 0:
        return None
    description = pc.utf8_lower(pc.utf8_trim_whitespace(pc.fill_null(batch.column("DESCRIPTION"), "")))
    return pa.table({
        "HADM_ID": batch.column("HADM_ID"),
        "SUBJECT_ID": batch.column("SUBJECT_ID"),
        "IS_ADDENDUM": pc.equal(description, "addendum"),
        "CHARTDATE": batch.column("CHARTDATE"),
        "ROW_ID": batch.column("ROW_ID"),
        "TEXT": clean_texts(batch.column("TEXT")),
    }, schema=_PART_SCHEMA)


class _Buckets:
    """Notes spread over ``n`` parquet files by ``HADM_ID % n``, buffered to few row groups."""

    def __init__(self, directory: Path, n: int):
        self.directory, self.n = directory, n
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.buffers: list[list[pa.Table]] = [[] for _ in range(n)]
        self.sizes = [0] * n

    def path(self, bucket: int) -> Path:
        return self.directory / f"bucket-{bucket:03d}.parquet"

    def add(self, table: pa.Table) -> None:
        bucket_of = pc.remainder(table.column("HADM_ID"), self.n).to_numpy()
        for bucket in np.unique(bucket_of):
            part = table.filter(pa.array(bucket_of == bucket))
            self.buffers[bucket].append(part)
            self.sizes[bucket] += part.nbytes
            if self.sizes[bucket] >= _FLUSH_BYTES:
                self._flush(int(bucket))

    def _flush(self, bucket: int) -> None:
        if not self.buffers[bucket]:
            return
        if bucket not in self.writers:
            # temporary files, read back once: not worth compressing
            self.writers[bucket] = pq.ParquetWriter(self.path(bucket), _PART_SCHEMA, compression="none")
        self.writers[bucket].write_table(pa.concat_tables(self.buffers[bucket]))
        self.buffers[bucket], self.sizes[bucket] = [], 0

    def close(self) -> list[Path]:
        for bucket in range(self.n):
            self._flush(bucket)
        for writer in self.writers.values():
            writer.close()
        return [self.path(b) for b in sorted(self.writers)]


def _join(part: pa.Table) -> pa.Table:
    """One row per HADM_ID: its notes' cleaned text joined in the documented order."""
    part = part.sort_by([("HADM_ID", "ascending"), ("IS_ADDENDUM", "ascending"),
                         ("CHARTDATE", "ascending"), ("ROW_ID", "ascending")])
    hadm = part.column("HADM_ID").to_numpy()
    starts = np.flatnonzero(np.r_[True, hadm[1:] != hadm[:-1]])
    offsets = np.r_[starts, hadm.size].astype(np.int32)
    texts = part.column("TEXT").combine_chunks()
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), texts), pa.scalar(" ", pa.large_string()))
    if not pc.all(pc.greater(pc.binary_length(texts), 0)).as_py():
        # a note with no word left would leave a doubled or edge space
        joined = pc.utf8_trim(pc.replace_substring_regex(joined, " {2,}", " "), " ")
    length = pc.binary_length(joined)
    num_tokens = pc.if_else(pc.greater(length, 0), pc.add(pc.count_substring(joined, " "), 1), 0)
    return pa.table({
        "HADM_ID": pa.array(hadm[starts]),
        "SUBJECT_ID": part.column("SUBJECT_ID").take(pa.array(starts)),
        "NUM_NOTES": pa.array(np.diff(offsets).astype(np.int32)),
        "NUM_TOKENS": pc.cast(num_tokens, pa.int32()),
        "TEXT": joined,
    }, schema=_OUT_SCHEMA)


def load_notes(
    mimic_dir: str | os.PathLike,
    *,
    categories: Sequence[str] = ("Discharge summary",),
    drop_error_notes: bool = True,
    hadm_ids: Sequence[int] | np.ndarray | None = None,
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
    on_malformed: str = "raise",
    block_size: int = 4 << 20,
) -> MimicNotes:
    """Read, clean and join the notes of every admission (module docstring), with a cache.

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory (holding ``NOTEEVENTS.csv`` or ``.csv.gz``).
        categories (Sequence[str], optional): the ``CATEGORY`` values kept (default ``("Discharge summary",)``, the
            ICD-coding setting of CAML and TransICD), compared without surrounding spaces
            (MIMIC-III spells some with a trailing one: ``"Physician "``, ``"Respiratory "``).
        drop_error_notes (bool, optional): leave out notes with ``ISERROR = 1`` (default True).
        hadm_ids (Sequence[int] or np.ndarray, optional): keep only these admissions (default: all).
        cache_dir (str or os.PathLike, optional): where the parquet cache lives (default
            :func:`.cache.default_cache_dir`).
        refresh (bool, optional): recompute even when a cache entry exists (default False).
        on_malformed (str, optional): ``"raise"`` (default) or ``"skip"`` malformed rows
            (:mod:`gattn.datasets.mimic.tables`).
        block_size (int, optional): bytes of CSV parsed at a time (default 4 MiB).

    Returns:
        A :class:`MimicNotes` pointing at the cached parquet file.
    """
    if isinstance(categories, str) or not categories or not all(isinstance(c, str) for c in categories):
        raise ValueError(f"`categories` must be a non-empty sequence of strings, got {categories!r}")
    source = find_table(mimic_dir, "NOTEEVENTS")
    wanted = None if hadm_ids is None else np.unique(np.asarray(hadm_ids, dtype=np.int64))
    options = {
        "source": file_identity(source), "categories": sorted({c.strip() for c in categories}),
        "drop_error_notes": bool(drop_error_notes),
        "hadm_ids": None if wanted is None else hashlib.sha256(wanted.tobytes()).hexdigest(),
        "on_malformed": on_malformed,
    }
    entry = CacheEntry(cache_dir, "notes", options)
    if entry.exists(".parquet") and not refresh:
        meta = entry.read_meta()
        return MimicNotes(entry.file(".parquet"), TableReport.from_dict(meta["report"]), options, True,
                          meta["num_admissions"])

    report = TableReport(str(source))
    size = source.stat().st_size * (4 if source.name.endswith(".gz") else 1)
    work = entry.temporary(".buckets")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        buckets = _Buckets(work, max(1, math.ceil(size / _BYTES_PER_BUCKET)))
        category_set = pa.array(sorted({c.strip() for c in categories}), type=pa.string())
        wanted_arr = None if wanted is None else pa.array(wanted)
        for batch in iter_table(mimic_dir, "NOTEEVENTS", _COLUMNS, on_malformed=on_malformed,
                                block_size=block_size, report=report):
            part = _prepare(batch, category_set, drop_error_notes, wanted_arr, report)
            if part is not None:
                report.kept += part.num_rows
                buckets.add(part)
        num_admissions = 0
        out_tmp = entry.temporary(".parquet")
        with pq.ParquetWriter(out_tmp, _OUT_SCHEMA) as writer:
            for path in buckets.close():
                joined = _join(pq.read_table(path))
                num_admissions += joined.num_rows
                writer.write_table(joined)
        entry.commit([".parquet"], {"report": report.to_dict(), "num_admissions": num_admissions})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return MimicNotes(entry.file(".parquet"), report, options, False, num_admissions)
