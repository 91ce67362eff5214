"""MIMIC-III tables: their schema, finding a table's file, and reading it in bounded memory.

Every MIMIC-III loader reads its CSV through :func:`iter_table`:

* the file is ``<TABLE>.csv`` or ``<TABLE>.csv.gz`` (or the lower-case name) in the MIMIC
  directory; a missing file raises ``FileNotFoundError`` naming the table, the names tried and
  the directory searched (:func:`find_table`);
* header names are matched case-insensitively (the demo uses lower case, the full database
  upper case); a header that lacks a required column raises ``ValueError`` naming the column
  and the file; batches come back with the upper-case names of :data:`SCHEMAS`;
* the file is streamed with pyarrow's CSV reader in blocks of ``block_size`` bytes, so memory
  stays bounded by a few blocks whatever the size of the file; only the requested columns are
  converted;
* every value is read as a string and checked against its column's kind (integer, number,
  date-time, ICD-9 code) before conversion, so an ICD-9 code is never parsed as a number;
* a malformed row (a wrong number of fields, or a value that does not parse as its column's
  kind) is counted. When any is found, the file is scanned once more with Python's ``csv``
  module to give each its line number (an error path only: that scan is slow); then
  ``on_malformed="raise"`` raises a ``ValueError`` with the count and the first line numbers,
  and ``"skip"`` leaves those rows out and records them in the :class:`TableReport`.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from .._paths import find_first

__all__ = [
    "SCHEMAS",
    "TableReport",
    "find_table",
    "iter_table",
    "read_table",
    "resolve_mimic_dir",
]

#: How many malformed rows an error message lists (a report keeps up to ``_MAX_KEPT``).
_MAX_REPORTED = 5
_MAX_KEPT = 1000

# Column kinds -> (pattern every non-empty value must match, arrow type after conversion).
# The patterns use only syntax that RE2 (pyarrow) and Python's `re` read identically.
_KINDS: dict[str, tuple[str | None, pa.DataType]] = {
    "int": (r"^-?[0-9]+$", pa.int64()),
    "float": (r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$", pa.float64()),
    "datetime": (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}(:[0-9]{2})?)?$", pa.timestamp("s")),
    "code": (r"^[0-9A-Za-z]+$", pa.string()),
    "str": (None, pa.string()),
}
_PY_PATTERNS = {kind: re.compile(p) for kind, (p, _) in _KINDS.items() if p is not None}

_ID = (("ROW_ID", "int"), ("SUBJECT_ID", "int"), ("HADM_ID", "int"))
_ICD = (*_ID, ("SEQ_NUM", "int"), ("ICD9_CODE", "code"))
_D_ICD = (("ROW_ID", "int"), ("ICD9_CODE", "code"), ("SHORT_TITLE", "str"), ("LONG_TITLE", "str"))

#: The MIMIC-III v1.4 tables this package reads or writes: every column, in file order, with
#: its kind (MIMIC-III documentation, "Tables"; the demo's headers list the same columns).
SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "ADMISSIONS": (
        *_ID,
        ("ADMITTIME", "datetime"), ("DISCHTIME", "datetime"), ("DEATHTIME", "datetime"),
        ("ADMISSION_TYPE", "str"), ("ADMISSION_LOCATION", "str"), ("DISCHARGE_LOCATION", "str"),
        ("INSURANCE", "str"), ("LANGUAGE", "str"), ("RELIGION", "str"), ("MARITAL_STATUS", "str"),
        ("ETHNICITY", "str"), ("EDREGTIME", "datetime"), ("EDOUTTIME", "datetime"), ("DIAGNOSIS", "str"),
        ("HOSPITAL_EXPIRE_FLAG", "int"), ("HAS_CHARTEVENTS_DATA", "int"),
    ),
    "DIAGNOSES_ICD": _ICD,
    "PROCEDURES_ICD": _ICD,
    "NOTEEVENTS": (
        *_ID,
        ("CHARTDATE", "datetime"), ("CHARTTIME", "datetime"), ("STORETIME", "datetime"),
        ("CATEGORY", "str"), ("DESCRIPTION", "str"), ("CGID", "int"), ("ISERROR", "str"), ("TEXT", "str"),
    ),
    "CHARTEVENTS": (
        *_ID, ("ICUSTAY_ID", "int"), ("ITEMID", "int"),
        ("CHARTTIME", "datetime"), ("STORETIME", "datetime"), ("CGID", "int"),
        ("VALUE", "str"), ("VALUENUM", "float"), ("VALUEUOM", "str"), ("WARNING", "int"), ("ERROR", "int"),
        ("RESULTSTATUS", "str"), ("STOPPED", "str"),
    ),
    "LABEVENTS": (
        *_ID, ("ITEMID", "int"), ("CHARTTIME", "datetime"),
        ("VALUE", "str"), ("VALUENUM", "float"), ("VALUEUOM", "str"), ("FLAG", "str"),
    ),
    "D_ICD_DIAGNOSES": _D_ICD,
    "D_ICD_PROCEDURES": _D_ICD,
    "D_ITEMS": (
        ("ROW_ID", "int"), ("ITEMID", "int"), ("LABEL", "str"), ("ABBREVIATION", "str"), ("DBSOURCE", "str"),
        ("LINKSTO", "str"), ("CATEGORY", "str"), ("UNITNAME", "str"), ("PARAM_TYPE", "str"), ("CONCEPTID", "int"),
    ),
    "D_LABITEMS": (
        ("ROW_ID", "int"), ("ITEMID", "int"), ("LABEL", "str"), ("FLUID", "str"), ("CATEGORY", "str"),
        ("LOINC_CODE", "str"),
    ),
}


@dataclass
class TableReport:
    """What reading one table found.

    Attributes:
        path (str): the file read.
        rows (int, optional): data rows the CSV parser saw (malformed ones included). (default: ``0``)
        kept (int, optional): rows the loader kept after its filters. (default: ``0``)
        skipped (dict[str, int], optional): rows left out on purpose, by reason (e.g. ``{"no HADM_ID": 12}``): these are
            documented filters, not errors.
        malformed (int, optional): number of malformed rows (wrong number of fields, a value that does not
            parse as its column's kind). (default: ``0``)
        malformed_lines (list[tuple[int, str]], optional): ``(line, reason)`` of the first ``1000``
            of them; ``line`` is the physical line (1 = the header) on which the row starts.
    """

    path: str
    rows: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    malformed_lines: list[tuple[int, str]] = field(default_factory=list)

    def skip(self, reason: str, count: int) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(count)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "rows": self.rows, "kept": self.kept, "skipped": dict(self.skipped),
            "malformed": self.malformed, "malformed_lines": [list(x) for x in self.malformed_lines],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TableReport:
        return cls(data["path"], data["rows"], data["kept"], dict(data["skipped"]), data["malformed"],
                   [(int(a), str(b)) for a, b in data["malformed_lines"]])

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items()) or "none"
        return (f"{Path(self.path).name}: {self.rows} rows, {self.kept} kept, skipped: {skipped}, "
                f"malformed: {self.malformed}")


def resolve_mimic_dir(mimic_dir: str | os.PathLike) -> Path:
    """``mimic_dir`` as a path (``~`` expanded), checked: a TypeError for another type, a
    FileNotFoundError naming it when it is not a directory.

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory.
    """
    if not isinstance(mimic_dir, str | os.PathLike):
        raise TypeError(f"`mimic_dir` must be a str or path, got {type(mimic_dir).__name__}")
    path = Path(mimic_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"MIMIC-III directory {str(path)!r} does not exist (resolved: {path.resolve()})")
    return path


def _candidates(table: str) -> list[str]:
    return [f"{name}{ext}" for name in (table, table.lower()) for ext in (".csv", ".csv.gz")]


def find_table(mimic_dir: str | os.PathLike, table: str) -> Path:
    """The file of MIMIC-III ``table`` in ``mimic_dir``: ``TABLE.csv``, ``TABLE.csv.gz`` or the
    lower-case names. Raises ``FileNotFoundError`` naming the names tried and the directory.

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory.
        table (str): the table's name (e.g. ``"NOTEEVENTS"``).
    """
    return find_first(resolve_mimic_dir(mimic_dir), _candidates(table.upper()), f"MIMIC-III table {table.upper()}")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _header(path: Path) -> list[str]:
    with _open_text(path) as handle:
        for row in csv.reader(handle):
            if row:
                return row
    raise ValueError(f"{path}: the file is empty (no header line)")


def _resolve_columns(path: Path, table: str, header: list[str], columns: Sequence[str],
                     optional: Sequence[str]) -> dict[str, str]:
    """Upper-case column name -> the header's spelling; raises on a missing required column."""
    by_upper = {name.strip().upper(): name for name in header}
    missing = [c for c in columns if c not in by_upper and c not in optional]
    if missing:
        raise ValueError(
            f"{path}: the header lacks the column(s) {', '.join(missing)} needed to read {table} "
            f"(the header has: {', '.join(header)})"
        )
    return {c: by_upper[c] for c in columns if c in by_upper}


def _kinds(table: str, columns: Sequence[str]) -> dict[str, str]:
    if table not in SCHEMAS:
        raise ValueError(f"unknown MIMIC-III table {table!r}; known: {', '.join(SCHEMAS)}")
    schema = dict(SCHEMAS[table])
    unknown = [c for c in columns if c not in schema]
    if unknown:
        raise ValueError(f"{table} has no column(s) {', '.join(unknown)}; its columns: {', '.join(schema)}")
    return {c: schema[c] for c in columns}


def _check_and_convert(batch: pa.RecordBatch, names: dict[str, str], kinds: dict[str, str]) -> tuple[pa.Table, int]:
    """Validate every column's values, drop the rows that fail, convert; return (table, #bad)."""
    bad = None
    for upper, actual in names.items():
        pattern = _KINDS[kinds[upper]][0]
        if pattern is None:
            continue
        ok = pc.fill_null(pc.match_substring_regex(batch.column(actual), pattern), True)
        bad = pc.invert(ok) if bad is None else pc.or_(bad, pc.invert(ok))
    n_bad = 0
    if bad is not None:
        n_bad = int(pc.sum(bad).as_py() or 0)
        if n_bad:
            batch = batch.filter(pc.invert(bad))
    arrays = []
    for upper, actual in names.items():
        col = batch.column(actual)
        target = _KINDS[kinds[upper]][1]
        arrays.append(col if target == pa.string() else pc.cast(col, target))
    return pa.table(arrays, names=list(names)), n_bad


def _locate_malformed(path: Path, header: list[str], names: dict[str, str], kinds: dict[str, str],
                      limit: int) -> tuple[int, list[tuple[int, str]]]:
    """Scan the file with Python's csv module: (count, (line, reason) of the first ``limit``)."""
    index = {upper: header.index(actual) for upper, actual in names.items()}
    checks = [(upper, i, _PY_PATTERNS[kinds[upper]]) for upper, i in index.items() if kinds[upper] in _PY_PATTERNS]
    count, found, line = 0, [], 1
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            start, line = line + 1, reader.line_num
            if not row:
                continue
            reason = None
            if len(row) != len(header):
                reason = f"{len(row)} fields, expected {len(header)}"
            else:
                for upper, i, pattern in checks:
                    value = row[i]
                    if value != "" and not pattern.match(value):
                        reason = f"{upper}={value[:40]!r} is not a valid {kinds[upper]}"
                        break
            if reason is not None:
                count += 1
                if len(found) < limit:
                    found.append((start, reason))
    return count, found


def iter_table(
    mimic_dir: str | os.PathLike,
    table: str,
    columns: Sequence[str],
    *,
    optional: Sequence[str] = (),
    on_malformed: str = "raise",
    block_size: int = 4 << 20,
    report: TableReport | None = None,
) -> Iterator[pa.Table]:
    """Stream MIMIC-III ``table`` from ``mimic_dir`` as pyarrow tables of ``columns``.

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory.
        table (str): the table's name (a key of :data:`SCHEMAS`, e.g. ``"NOTEEVENTS"``).
        columns (Sequence[str]): upper-case column names to read; each must be in the header
            unless listed in ``optional``.
        optional (Sequence[str], optional): columns that may be absent (an absent optional column
            is left out of the batches). (default: ``()``)
        on_malformed (str, optional): ``"raise"`` (default) or ``"skip"`` (see the module docstring).
        block_size (int, optional): bytes of CSV parsed per block (default 4 MiB); memory grows with it.
        report (TableReport, optional): a :class:`TableReport` to fill (rows seen, malformed rows and their lines).
            (default: ``None``)

    Yields:
        ``pyarrow.Table`` chunks with the upper-case column names, integers as ``int64``,
        numbers as ``float64``, date-times as ``timestamp[s]``, codes and text as strings;
        empty fields are nulls.
    """
    if on_malformed not in ("raise", "skip"):
        raise ValueError(f"`on_malformed` must be 'raise' or 'skip', got {on_malformed!r}")
    if not isinstance(block_size, int) or block_size < 1 << 16:
        raise ValueError(f"`block_size` must be an int of at least 65536 bytes, got {block_size!r}")
    path = find_table(mimic_dir, table)
    kinds = _kinds(table, columns)
    header = _header(path)
    names = _resolve_columns(path, table, header, columns, optional)
    if report is None:
        report = TableReport(str(path))
    report.path = str(path)
    structural: list[str] = []

    def invalid_row(row: pa_csv.InvalidRow) -> str:
        structural.append(row.text[:80])
        return "skip"

    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=block_size, use_threads=True),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row),
        convert_options=pa_csv.ConvertOptions(
            include_columns=list(names.values()),
            column_types={actual: pa.string() for actual in names.values()},
            strings_can_be_null=True,
        ),
    )
    bad_values = 0
    try:
        for batch in reader:
            if batch.num_rows == 0:
                continue
            report.rows += batch.num_rows
            converted, n_bad = _check_and_convert(batch, names, kinds)
            bad_values += n_bad
            if converted.num_rows:
                yield converted
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path}: the CSV reader failed: {exc}") from exc
    report.rows += len(structural)
    malformed = bad_values + len(structural)
    if malformed:
        count, lines = _locate_malformed(path, header, names, kinds, _MAX_KEPT)
        report.malformed = max(count, malformed)
        report.malformed_lines = lines
        if on_malformed == "raise":
            shown = "; ".join(f"line {line}: {why}" for line, why in lines[:_MAX_REPORTED])
            more = f" (and {report.malformed - _MAX_REPORTED} more)" if report.malformed > _MAX_REPORTED else ""
            raise ValueError(
                f"{path}: {report.malformed} malformed row(s) out of {report.rows}: {shown}{more}. "
                "Pass on_malformed='skip' to leave them out (they are then listed in the report)."
            )


def read_table(
    mimic_dir: str | os.PathLike,
    table: str,
    columns: Sequence[str],
    *,
    optional: Sequence[str] = (),
    on_malformed: str = "raise",
    block_size: int = 4 << 20,
    report: TableReport | None = None,
) -> pa.Table:
    """All of :func:`iter_table`'s chunks as one table (for the small tables).

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory.
        table (str): the table's name (a key of :data:`SCHEMAS`).
        columns (Sequence[str]): upper-case column names to read.
        optional (Sequence[str], optional): columns that may be absent. (default: ``()``)
        on_malformed (str, optional): ``"raise"`` or ``"skip"``. (default: ``"raise"``)
        block_size (int, optional): bytes of CSV parsed per block. (default: ``4 << 20``)
        report (TableReport, optional): a report to fill. (default: ``None``)
    """
    kinds = _kinds(table, columns)
    chunks = list(iter_table(mimic_dir, table, columns, optional=optional, on_malformed=on_malformed,
                             block_size=block_size, report=report))
    if chunks:
        return pa.concat_tables(chunks)
    path = find_table(mimic_dir, table)
    present = _resolve_columns(path, table, _header(path), columns, optional)
    return pa.table({c: pa.array([], type=_KINDS[kinds[c]][1]) for c in present})
