"""Helpers shared by the tabular CTR loaders (:mod:`.criteo`, :mod:`.behaviour`).

* :func:`iter_delimited`: a streaming, validating reader of delimited text files on pyarrow's
  CSV reader (no Python loop over lines). Every column is read as text and converted per
  batch with pyarrow compute; a row with the wrong number of fields or a value that does not
  convert is recorded in a :class:`MalformedRows` with its physical line number.
* :class:`MalformedRows`: the count of malformed rows and the first few line numbers, and the
  policy for them (``"warn"``: skip them and warn with the summary; ``"raise"``: raise).
* :class:`FieldInfo`: the metadata of one model input field.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

__all__ = ["FieldInfo", "MalformedRows", "hex_to_int", "iter_delimited", "to_float", "to_int"]

MALFORMED_POLICIES = ("warn", "raise")
#: how many line numbers a malformed-row summary shows
MAX_REPORTED = 5


@dataclass(frozen=True)
class FieldInfo:
    """One model input field.

    Attributes:
        name (str): the field's name (``"C7"``, ``"item_id"``, ``"hist_item_id"``, ...).
        kind (str): ``"categorical"`` (integer ids into an embedding table), ``"numeric"`` (float
            values) or ``"sequence"`` (a ragged list of ids per sample).
        cardinality (int, optional): rows of the field's embedding table, index 0 included (0 is reserved
            for padding / out-of-vocabulary); None for numeric fields.
        key (str): the key of the batch dictionary (and of the split's attribute) that holds it.
        column (int, optional): the column of ``key``'s [N, F] tensor that holds it; None when
            the tensor is the field's alone. (default: ``None``)
        shares (str, optional): for a sequence field, the categorical field whose embedding
            table it shares (``hist_item_id`` shares ``item_id``); None otherwise.
            (default: ``None``)
    """

    name: str
    kind: str
    cardinality: int | None
    key: str
    column: int | None = None
    shares: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "numeric", "sequence"):
            raise ValueError(f"`kind` must be 'categorical', 'numeric' or 'sequence', got {self.kind!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "kind", "cardinality", "key", "column", "shares")}


@dataclass
class MalformedRows:
    """Malformed rows of one file: how many, and the first few with their line numbers.

    ``policy="warn"`` skips the rows and :meth:`finish` warns with the summary;
    ``policy="raise"`` makes :meth:`finish` raise a ValueError with it. Line numbers are
    physical, 1-based, counting the header line.

    Attributes:
        path (Path): the file.
        policy (str, optional): ``"warn"`` or ``"raise"`` (the loaders' ``on_malformed``).
            (default: ``"warn"``)
        count (int, optional): malformed rows so far. (default: ``0``)
        first (list[tuple[int, str]], optional): the first :data:`MAX_REPORTED` of them, as
            (line number, reason). (default: ``[]``)
        rows_read (int, optional): data rows read so far. (default: ``0``)
    """

    path: Path
    policy: str = "warn"
    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)
    rows_read: int = 0

    def __post_init__(self) -> None:
        if self.policy not in MALFORMED_POLICIES:
            raise ValueError(f"`on_malformed` must be one of {MALFORMED_POLICIES}, got {self.policy!r}")

    def add(self, lines: Sequence[int] | np.ndarray, reason: str | Callable[[int], str]) -> None:
        """Record malformed rows at `lines` (sorted), with one reason, or the reason for the
        i-th of them (called only for the few that the summary shows)."""
        lines = np.asarray(lines, dtype=np.int64).reshape(-1)
        if lines.size == 0:
            return
        self.count += int(lines.size)
        why = reason if callable(reason) else (lambda i: reason)
        merged = self.first + [(int(lines[i]), why(i)) for i in range(min(lines.size, MAX_REPORTED))]
        self.first = sorted(merged)[:MAX_REPORTED]

    def summary(self) -> str:
        if not self.count:
            return f"{self.path}: no malformed rows"
        shown = "; ".join(f"line {line}: {why}" for line, why in self.first)
        more = f" (and {self.count - len(self.first)} more)" if self.count > len(self.first) else ""
        return f"{self.path}: {self.count} malformed row(s) out of {self.rows_read}: {shown}{more}"

    def finish(self) -> None:
        """Apply the policy: raise, or warn (when any row was malformed)."""
        if not self.count:
            return
        if self.policy == "raise":
            raise ValueError(self.summary())
        warnings.warn(f"skipped {self.summary()}", stacklevel=3)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "count": self.count, "rows_read": self.rows_read,
                "first": [list(item) for item in self.first]}


# ------------------------------------------------------------------------ conversions
def _first_failures(column: pa.Array, convert) -> np.ndarray:
    """Rows of `column` (a text array) whose non-null value `convert` rejects (the slow path,
    used only on a batch where the vectorised cast already failed)."""
    bad = []
    for row, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            convert(value)
        except ValueError:
            bad.append(row)
    return np.asarray(bad, dtype=np.int64)


def to_float(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Text -> float64 (nulls kept); returns the values and the rows that are not finite numbers.

    Args:
        column (pyarrow.Array): a text column.
    """
    unparsed = np.empty(0, dtype=np.int64)
    try:
        values = pc.cast(column, pa.float64())
    except pa.ArrowInvalid:
        unparsed = _first_failures(column, float)
        keep = np.ones(len(column), dtype=bool)
        keep[unparsed] = False
        values = pc.cast(pc.if_else(pa.array(keep), column, None), pa.float64())
    finite = pc.fill_null(pc.is_finite(values), True).to_numpy(zero_copy_only=False)
    bad_rows = np.union1d(unparsed, np.flatnonzero(~finite))
    if bad_rows.size:
        values = pc.if_else(pa.array(finite), values, None)
    return values, bad_rows


def to_int(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Text -> int64 (nulls kept); returns the values and the rows that are not integers.

    An integral float written as such (``"260.0"``, as in the Criteo CSV samples) is an
    integer; ``"2.5"``, ``"1e400"``, ``"nan"`` or ``"x"`` are not.

    Args:
        column (pyarrow.Array): a text column.
    """
    try:
        return pc.cast(column, pa.int64()), np.empty(0, dtype=np.int64)
    except pa.ArrowInvalid:
        pass
    values, bad = to_float(column)
    integral = pc.fill_null(pc.and_(pc.equal(pc.floor(values), values), pc.less(pc.abs(values), 2.0**63)), True)
    integral_np = integral.to_numpy(zero_copy_only=False)
    bad = np.union1d(bad, np.flatnonzero(~integral_np))
    values = pc.if_else(integral, values, None)
    return pc.cast(values, pa.int64()), bad


_NIBBLE = np.full(256, 255, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def hex_to_int(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Text of 1-16 hexadecimal digits -> int64 (the unsigned 64-bit pattern; nulls kept),
    vectorised over the string buffer; returns the values and the rows that are not hex.

    Args:
        column (pyarrow.Array): a text column.
    """
    n = len(column)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if column.null_count == n:
        return pa.nulls(n, pa.int64()), np.empty(0, dtype=np.int64)
    column = column.cast(pa.string())
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + n + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)
    lengths = np.diff(offsets)
    if (lengths[valid] == 8).all():  # the Criteo hashes: the digits are one contiguous block
        nibbles = _NIBBLE[data[offsets[0] : offsets[-1]]].reshape(-1, 8)
        if (nibbles != 255).all():
            packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])
            values = np.zeros(n, dtype=np.int64)
            values[valid] = packed.view(">u4").reshape(-1)
            return pa.array(values, mask=~valid), np.empty(0, dtype=np.int64)
    values = np.zeros(n, dtype=np.uint64)
    bad = valid & ((lengths < 1) | (lengths > 16))
    for length in np.unique(lengths[valid & ~bad]):
        rows = np.flatnonzero(valid & (lengths == length))
        nibbles = _NIBBLE[data[offsets[rows, None] + np.arange(length)]]
        bad[rows[(nibbles == 255).any(axis=1)]] = True
        shifts = np.arange(4 * (length - 1), -1, -4, dtype=np.uint64)
        values[rows] = np.bitwise_or.reduce(nibbles.astype(np.uint64) << shifts, axis=1)
    return pa.array(values.view(np.int64), mask=~valid | bad), np.flatnonzero(bad)


# ----------------------------------------------------------------------------- reader
def iter_delimited(
    path: Path,
    columns: dict[str, str],
    report: MalformedRows,
    delimiter: str = "\t",
    skip_rows: int = 0,
    required: Sequence[str] = (),
    block_size: int = 1 << 24,
    encoding: str = "utf8",
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Stream a delimited text file as validated record batches.

    Args:
        path (Path): the file (no quoting: a quote character is an ordinary character).
        columns (dict[str, str]): column name -> ``"int"`` (int64), ``"binary"`` (int64, 0 or 1), ``"float"``
            (float64), ``"hex"`` (1-16 hex digits -> int64) or ``"str"``, in the file's order;
            an empty field is null.
        report (MalformedRows): where malformed rows (wrong number of fields, a value that does not convert,
            a null in a ``required`` column) are recorded; they are left out of the batches.
        delimiter (str, optional): one character. (default: ``"\\t"``)
        skip_rows (int, optional): header lines to skip. (default: ``0``)
        required (Sequence[str], optional): columns that may not be empty. (default: ``()``)
        block_size (int, optional): bytes per parsed block (memory is bounded by a few blocks).
            (default: ``1 << 24``)
        encoding (str, optional): the file's text encoding (MovieLens' item files are latin-1).
            (default: ``"utf8"``)

    Yields:
        ``(batch, lines)``: the valid rows converted, and their physical line numbers (int64).
    """
    names = list(columns)
    expected = len(names)
    invalid: list[int] = []  # line numbers of rows with the wrong number of fields

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append(row.number)
        report.rows_read += 1
        report.add([row.number], f"{row.actual_columns} field(s), expected {expected}")
        return "skip"

    # use_threads=False: the reader then knows each invalid row's line number and reports
    # invalid rows in file order, which the line numbers of the valid rows are derived from
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=skip_rows, block_size=block_size,
                                        use_threads=False, encoding=encoding),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False, ignore_empty_lines=False,
                                          invalid_row_handler=on_invalid),
        convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                              strings_can_be_null=True, quoted_strings_can_be_null=True),
    )
    next_line = skip_rows + 1  # no row before this line is still to be numbered
    for batch in reader:
        n = batch.num_rows
        lines = _fill_lines(next_line, n, np.asarray(invalid, dtype=np.int64))
        if n:
            next_line = int(lines[-1]) + 1
        # invalid lines behind us are numbered for good; later ones stay pending
        invalid[:] = [line for line in invalid if line >= next_line]
        report.rows_read += n
        if n == 0:
            continue
        keep = np.ones(n, dtype=bool)
        converted = []
        for name in names:
            text = batch.column(name)
            kind = columns[name]
            if kind in ("int", "binary"):
                values, bad = to_int(text)
                reason = f"{name} is not an integer"
                if kind == "binary":
                    binary = pc.fill_null(pc.is_in(values, value_set=pa.array([0, 1])), True)
                    bad = np.union1d(bad, np.flatnonzero(~binary.to_numpy(zero_copy_only=False)))
                    reason = f"{name} is not 0 or 1"
            elif kind == "float":
                values, bad = to_float(text)
                reason = f"{name} is not a finite number"
            elif kind == "hex":
                values, bad = hex_to_int(text)
                reason = f"{name} is not a hexadecimal hash"
            elif kind == "str":
                values, bad = text, np.empty(0, dtype=np.int64)
                reason = ""
            else:
                raise ValueError(f"column kind must be int, binary, float, hex or str, got {kind!r} for {name!r}")
            if name in required:
                missing = np.flatnonzero(text.is_null().to_numpy(zero_copy_only=False))
                report.add(lines[missing[keep[missing]]], f"{name} is empty")
                keep[missing] = False
            bad = bad[keep[bad]]
            if bad.size:
                report.add(lines[bad], _reason_with_value(reason, text, bad))
                keep[bad] = False
            converted.append(values)
        out = pa.RecordBatch.from_arrays(converted, names=names)
        if not keep.all():
            out, lines = out.filter(pa.array(keep)), lines[keep]
        yield out, lines


def _reason_with_value(reason: str, text: pa.Array, rows: np.ndarray) -> Callable[[int], str]:
    def why(i: int) -> str:
        value = text[int(rows[i])].as_py()
        return f"{reason}: {value[:20]!r}"

    return why


def _fill_lines(start: int, count: int, taken: np.ndarray) -> np.ndarray:
    """The first `count` line numbers >= `start` that are not in `taken` (sorted)."""
    if taken.size == 0:
        return np.arange(start, start + count, dtype=np.int64)
    span = np.arange(start, start + count + taken.size, dtype=np.int64)
    return span[~np.isin(span, taken)][:count]
