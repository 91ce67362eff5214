"""Criteo display-advertising data: raw files -> cached, id-mapped tensors for CTR models.

Formats read (detected from the first line):

* the original files, tab separated, no header: ``label``, 13 integer columns ``I1``-``I13``,
  26 hashed categorical columns ``C1``-``C26`` (8 hex digits each, read as 64-bit integers:
  1-16 hex digits are accepted, anything else is malformed); the Kaggle challenge's 45M-row
  ``train.txt`` and the 1 TB click logs' ``day_0`` ... ``day_23``;
* CSV samples with a header naming those 40 columns (in any order), such as
  ``criteo/criteo_sample.txt``; integer columns may be written as integral floats (``260.0``).

An empty field is a missing value. No quoting: the files have none.

Processing, in three streaming passes (pyarrow's CSV reader in blocks, never the whole file
in memory; no Python loop over lines):

1. **Parse** the text into a parsed-rows parquet file. Malformed lines are counted and
   reported with their line numbers, never dropped silently: a wrong number of fields, a
   label that is not 0 or 1, a value of an integer column that is not an integer (``2.5``,
   ``abc``), a categorical value that is not hexadecimal. ``on_malformed="warn"`` (default)
   leaves them out and warns with the count and the first few line numbers (also in
   ``info["malformed"]``); ``"raise"`` raises instead.
2. **Count** the values of every field in the training split and build one vocabulary per
   field: the values seen at least ``min_count`` times, ordered by descending count (ties by
   value), get ids 1, 2, ...; every other value gets id 0, the out-of-vocabulary index
   (which is also the padding index). A missing value is a value like any other (it has its
   own id when it is frequent enough).
3. **Map** every row to ids and write one parquet file per split.

Integer features (``numeric=``):

* ``"bucket"`` (default), the common Criteo protocol's bucketing: a value ``x > 2`` becomes
  the token ``floor(ln(x)^2)``; a value ``x <= 2`` (0, 1, 2 and every negative value,
  e.g. ``I2``'s -1, -2, -3) is its own token; a missing value is a token of its own. The
  tokens then get ids through the field's vocabulary exactly as categorical values do
  (``dense`` holds these int64 ids). The common protocol writes both kinds of token as the
  same string, so that ``x = 2`` and ``x = 5`` (``floor(ln(5)^2) = 2``) share a token; here
  they are kept apart.
* ``"log"``: ``log(1 + max(x, 0))`` as float32, a missing value as 0 (negative values, which
  occur only in ``I2``, count as 0).

Split (the Criteo_x4 style, 8:1:1 by default, ``split=(train, val, test)`` fractions): every
row is assigned by a seeded hash of its index among the valid rows, so the assignment does
not depend on the block size or on how many rows follow, and needs no shuffle of the file;
the split sizes are the fractions up to sampling noise (about ``sqrt(N)`` rows).

Caching: the parsed rows are cached under ``cache_dir`` (``$GATTN_CACHE``, else
``~/.cache/gattn``) keyed by the file's path, size and modification time; the processed
splits keyed by that and every processing option (``min_count``, ``numeric``, ``split``,
``seed``). A second run with the same options reads the processed parquet files and parses
nothing; a changed processing option re-processes from the parsed rows; a changed file
re-parses. ``info["cache"]`` says which happened (``"hit"``, ``"processed"``, ``"parsed"``).

Memory: the parse and map passes hold a few blocks (``block_size`` bytes of text, 16 MB by
default, and their columns); the count pass also holds the distinct values of each field
with their counts (tens of millions for the Kaggle file's largest fields). Loading a split
into tensors (:meth:`CriteoProcessed.load`) needs ``N x 39 x 8`` bytes;
:meth:`CriteoProcessed.iter_batches` streams a split in bounded memory instead. Measured by
``benchmarks/criteo_loader.py`` on a synthetic 5M-row, 1.13 GiB Kaggle-format file: the
first run peaks at 856 MB above the imports when the splits are then streamed (2,230 MB
when they are loaded as tensors), against 3,162 MB for ``pandas.read_csv`` of the file; a
cache hit streamed peaks at 309 MB.

Public API: :func:`prepare_criteo` (parse/cache, returns a :class:`CriteoProcessed` handle),
:func:`load_criteo` (prepare and load all splits: a :class:`CriteoData`), :class:`CriteoSplit`
(``sparse`` [N, 26] int64, ``dense`` [N, 13], ``label`` [N] float32; a torch Dataset with
a vectorised :meth:`CriteoSplit.batches`), :func:`available`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._paths import default_cache_dir, find_first, require_file, resolve_root
from ._tables import FieldInfo, MalformedRows, iter_delimited
from .root import register_source

__all__ = [
    "CATEGORICAL",
    "INTEGER",
    "CriteoData",
    "CriteoProcessed",
    "CriteoSplit",
    "available",
    "load_criteo",
    "locate_criteo",
    "prepare_criteo",
]

INTEGER = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *INTEGER, *CATEGORICAL]
SPLITS = ("train", "val", "test")
NUMERIC_MODES = ("bucket", "log")
# bump when the parsed or processed layout changes, so that old caches are not reused
PARSE_VERSION = 1
PROCESS_VERSION = 1

#: named files under the data root (``<root>/<candidate>``, first found)
CRITEO_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "criteo-sample": ("200-row CSV sample with a header", ("criteo/criteo_sample.txt",)),
    "criteo-kaggle": (
        "Kaggle display advertising challenge train.txt, 45,840,617 rows",
        ("criteo/train.txt", "criteo/dac/train.txt", "criteo/kaggle/train.txt"),
    ),
}


# ------------------------------------------------------------------------------ containers
@dataclass
class CriteoSplit(Dataset):
    """One split in memory.

    Attributes:
        sparse (Tensor): [N, 26] int64 vocabulary ids of ``C1``-``C26`` (0 = out of vocabulary).
        dense (Tensor): [N, 13] ``I1``-``I13``: int64 bucket ids (``numeric="bucket"``, 0 = out of
            vocabulary) or float32 ``log(1 + x)`` (``numeric="log"``).
        label (Tensor): [N] float32 clicks (0 or 1).

    As a torch Dataset, item ``i`` is ``{"sparse": [26], "dense": [13], "label": []}`` (the
    default collate stacks them); :meth:`batches` slices whole batches at once.
    """

    sparse: Tensor
    dense: Tensor
    label: Tensor

    def __post_init__(self) -> None:
        n = self.label.numel()
        if self.sparse.shape != (n, len(CATEGORICAL)) or self.dense.shape != (n, len(INTEGER)):
            raise ValueError(
                f"expected sparse [{n}, 26] and dense [{n}, 13], got {tuple(self.sparse.shape)} and "
                f"{tuple(self.dense.shape)}"
            )

    def __len__(self) -> int:
        return self.label.numel()

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"sparse": self.sparse[index], "dense": self.dense[index], "label": self.label[index]}

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, Tensor]]:
        """``{"sparse": [b, 26], "dense": [b, 13], "label": [b]}`` for ``batch_size`` rows at a time
        (in order, or shuffled with ``generator``)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            yield {"sparse": self.sparse[rows], "dense": self.dense[rows], "label": self.label[rows]}

    def __repr__(self) -> str:
        return f"CriteoSplit({len(self)} rows, dense {self.dense.dtype})"


@dataclass
class CriteoData:
    """The three splits in memory, the field metadata and the processing report.

    ``fields``: :class:`~gattn.datasets._tables.FieldInfo` of ``I1``-``I13`` (key ``"dense"``, column j; categorical
    with their bucket-id cardinality, or numeric when log-scaled) and ``C1``-``C26`` (key
    ``"sparse"``, column j, categorical). ``info``: options, split sizes, vocabulary sizes,
    the malformed-row report, the cache outcome.

    Attributes:
        train (CriteoSplit): the training split.
        val (CriteoSplit): the validation split.
        test (CriteoSplit): the test split.
        fields (list[gattn.datasets._tables.FieldInfo]): the fields' metadata.
        info (dict, optional): the processing report (rows read, malformed rows, ...).
    """

    train: CriteoSplit
    val: CriteoSplit
    test: CriteoSplit
    fields: list[FieldInfo]
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CriteoData(train={len(self.train)}, val={len(self.val)}, test={len(self.test)})"


@dataclass
class CriteoProcessed:
    """A processed Criteo file on disk: one parquet file per split (``paths``), the fields and
    the processing report (``info``). Columns: ``label`` (int8), ``I1``-``I13`` (int32 bucket ids
    or float32), ``C1``-``C26`` (int32 ids).

    Attributes:
        paths (dict[str, Path]): the parquet file of each split.
        fields (list[gattn.datasets._tables.FieldInfo]): the fields' metadata.
        info (dict): the processing report.
    """

    paths: dict[str, Path]
    fields: list[FieldInfo]
    info: dict

    def num_rows(self, split: str) -> int:
        return pq.ParquetFile(self._path(split)).metadata.num_rows

    def _path(self, split: str) -> Path:
        if split not in self.paths:
            raise ValueError(f"`split` must be one of {list(self.paths)}, got {split!r}")
        return self.paths[split]

    def _tensors(self, table: pa.Table | pa.RecordBatch) -> dict[str, Tensor]:
        def stack(names: list[str], dtype: np.dtype) -> np.ndarray:
            out = np.empty((table.num_rows, len(names)), dtype=dtype)
            for j, name in enumerate(names):
                out[:, j] = table.column(name).to_numpy()
            return out

        dense_dtype = np.int64 if self.info["options"]["numeric"] == "bucket" else np.float32
        return {
            "sparse": torch.from_numpy(stack(CATEGORICAL, np.int64)),
            "dense": torch.from_numpy(stack(INTEGER, dense_dtype)),
            "label": torch.from_numpy(table.column("label").to_numpy().astype(np.float32)),
        }

    def load(self, split: str) -> CriteoSplit:
        """The split as tensors in memory."""
        return CriteoSplit(**self._tensors(pq.read_table(self._path(split))))

    def iter_batches(self, split: str, batch_size: int) -> Iterator[dict[str, Tensor]]:
        """Stream the split in file order, ``batch_size`` rows at a time, in bounded memory."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        for batch in pq.ParquetFile(self._path(split)).iter_batches(batch_size=batch_size):
            yield self._tensors(batch)


# ----------------------------------------------------------------------------- the format
def _sniff(path: Path) -> tuple[str, list[str] | None]:
    """(delimiter, header names or None) from the first line."""
    with open(path, "rb") as handle:
        first = handle.readline(1 << 16).decode("utf-8", errors="replace").rstrip("\r\n")
    if not first:
        raise ValueError(f"{path}: the first line is empty; expected a Criteo row or a header")
    delimiter = "\t" if "\t" in first else ","
    fields = first.split(delimiter)
    try:
        float(fields[0])
        return delimiter, None
    except ValueError:
        pass
    names = [f.strip() for f in fields]
    if sorted(names) != sorted(COLUMNS):
        raise ValueError(
            f"{path}: line 1 is a header {names[:5]}... but not the Criteo columns; expected label, I1-I13, "
            f"C1-C26 (any order)"
        )
    return delimiter, names


def _split_of_rows(rows: np.ndarray, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each row index, by a seeded splitmix64 hash."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((seed * 0xD1B54A32D192ED03) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    cuts = np.cumsum(fractions)[:-1]
    return np.searchsorted(cuts, uniform, side="right").astype(np.int8)


def bucket_tokens(values: pa.Array) -> pa.Array:
    """Integer feature -> bucket token (int64, null for missing): ``x`` for ``x <= 2``,
    ``3 + floor(ln(x)^2)`` for ``x > 2`` (offset by 3 so that the two kinds never coincide)."""
    x = values.to_numpy(zero_copy_only=False)  # float64 with NaN for nulls
    missing = np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        logged = np.floor(np.log(np.where(x > 2, x, 3.0)) ** 2) + 3
    tokens = np.where(x > 2, logged, x)
    tokens[missing] = 0
    return pa.array(tokens.astype(np.int64), mask=missing)


def _log_scaled(values: pa.Array) -> np.ndarray:
    x = values.to_numpy(zero_copy_only=False)
    return np.log1p(np.clip(np.nan_to_num(x, nan=0.0), 0.0, None)).astype(np.float32)


# --------------------------------------------------------------------------------- passes
def _parse(path: Path, target: Path, block_size: int) -> dict:
    """Pass 1: text -> parsed-rows parquet (label int8, I int64, C int64 from hex; nulls for missing)."""
    delimiter, header = _sniff(path)
    names = header or COLUMNS
    kinds = {name: "hex" if name.startswith("C") else "binary" if name == "label" else "int" for name in names}
    report = MalformedRows(path)
    schema = pa.schema(
        [("label", pa.int8())] + [(n, pa.int64()) for n in [*INTEGER, *CATEGORICAL]]
    )
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        batches = iter_delimited(path, kinds, report, delimiter=delimiter, skip_rows=int(header is not None),
                                 required=["label"], block_size=block_size)
        for batch, _ in batches:
            table = pa.Table.from_batches([batch]).select(COLUMNS).cast(schema)
            writer.write_table(table)
            rows += table.num_rows
    if rows == 0:
        raise ValueError(f"{path}: no valid rows ({report.summary()})")
    return {"rows": rows, "delimiter": delimiter, "header": header is not None, "malformed": report.to_dict(),
            "summary": report.summary()}


def _field_tokens(batch: pa.RecordBatch, name: str, numeric: str) -> pa.Array:
    column = batch.column(name)
    return bucket_tokens(column) if name in INTEGER and numeric == "bucket" else column


def _vocab_fields(numeric: str) -> list[str]:
    return (INTEGER if numeric == "bucket" else []) + CATEGORICAL


def _count(parsed: Path, numeric: str, split: Sequence[float], seed: int, min_count: int) -> dict[str, pa.Array]:
    """Pass 2: per-field vocabularies over the training split."""
    names = _vocab_fields(numeric)
    partial: dict[str, list[pa.Table]] = {name: [] for name in names}
    pending = {name: 0 for name in names}
    offset = 0
    for batch in pq.ParquetFile(parsed).iter_batches(batch_size=1 << 18):
        rows = np.arange(offset, offset + batch.num_rows)
        offset += batch.num_rows
        train = batch.filter(pa.array(_split_of_rows(rows, seed, split) == 0))
        for name in names:
            counts = pc.value_counts(_field_tokens(train, name, numeric))
            partial[name].append(pa.table({"value": counts.field("values"), "count": counts.field("counts")}))
            pending[name] += len(counts)
            if pending[name] > 1 << 22:  # bound the memory of the partial counts
                partial[name] = [_reduce(partial[name])]
                pending[name] = partial[name][0].num_rows
    vocab = {}
    for name in names:
        counts = _reduce(partial[name]) if partial[name] else pa.table({"value": pa.array([], pa.int64()),
                                                                         "count": pa.array([], pa.int64())})
        counts = counts.filter(pc.greater_equal(counts.column("count"), min_count))
        counts = counts.sort_by([("count", "descending"), ("value", "ascending")])
        vocab[name] = counts.column("value").combine_chunks()
    return vocab


def _reduce(tables: list[pa.Table]) -> pa.Table:
    merged = pa.concat_tables(tables).group_by("value", use_threads=False).aggregate([("count", "sum")])
    return merged.rename_columns(["value", "count"]).select(["value", "count"])


def _map(parsed: Path, folder: Path, vocab: dict[str, pa.Array], numeric: str, split: Sequence[float],
         seed: int) -> dict[str, int]:
    """Pass 3: rows -> ids, one parquet file per split."""
    dense_type = pa.int32() if numeric == "bucket" else pa.float32()
    schema = pa.schema(
        [("label", pa.int8())] + [(n, dense_type) for n in INTEGER] + [(n, pa.int32()) for n in CATEGORICAL]
    )
    writers = {name: pq.ParquetWriter(folder / f"{name}.parquet", schema) for name in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    offset = 0
    try:
        for batch in pq.ParquetFile(parsed).iter_batches(batch_size=1 << 18):
            rows = np.arange(offset, offset + batch.num_rows)
            offset += batch.num_rows
            arrays = [batch.column("label")]
            for name in [*INTEGER, *CATEGORICAL]:
                if name in vocab:
                    index = pc.index_in(_field_tokens(batch, name, numeric), value_set=vocab[name], skip_nulls=False)
                    arrays.append(pc.cast(pc.add(pc.fill_null(index, -1), 1), pa.int32()))
                else:
                    arrays.append(pa.array(_log_scaled(batch.column(name))))
            table = pa.Table.from_arrays(arrays, schema=schema)
            which = _split_of_rows(rows, seed, split)
            for index, name in enumerate(SPLITS):
                part = table.filter(pa.array(which == index))
                if part.num_rows:
                    writers[name].write_table(part)
                    sizes[name] += part.num_rows
    finally:
        for writer in writers.values():
            writer.close()
    return sizes


def _process(parsed: Path, folder: Path, source: Path, options: dict, parse_info: dict) -> dict:
    """Passes 2 and 3 into `folder`; returns the processed data's metadata."""
    numeric, fractions, seed = options["numeric"], options["split"], options["seed"]
    vocab = _count(parsed, numeric, fractions, seed, options["min_count"])
    return {
        "source": str(source.resolve()),
        "options": options,
        "rows": parse_info["rows"],
        "split_sizes": _map(parsed, folder, vocab, numeric, fractions, seed),
        "vocab_sizes": {name: len(values) for name, values in vocab.items()},
        "format": {"delimiter": parse_info["delimiter"], "header": parse_info["header"]},
        "malformed": parse_info["malformed"],
        "summary": parse_info["summary"],
    }


# -------------------------------------------------------------------------------- caching
def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _build_folder(final: Path, build: Callable[[Path], dict]) -> None:
    """Fill a cache folder: `build(tmp)` writes its files into a temporary folder and returns
    the metadata; ``meta.json`` is written last and the folder moved into place, so a
    crashed or concurrent run never leaves a half-written folder behind `final`."""
    tmp = Path(f"{final}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = build(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, final)
    except OSError:
        if not (final / "meta.json").is_file():  # not another process winning the race
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _check_options(min_count: int, numeric: str, split: Sequence[float], seed: int, block_size: int) -> tuple:
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"`min_count` must be an int >= 1, got {min_count!r}")
    if numeric not in NUMERIC_MODES:
        raise ValueError(f"`numeric` must be one of {NUMERIC_MODES}, got {numeric!r}")
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"`split` must be three non-negative fractions (train, val, test) summing to 1, got {split!r}")
    if not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int, got {seed!r}")
    if not isinstance(block_size, int) or block_size < 1 << 12:
        raise ValueError(f"`block_size` must be an int of at least 4096 bytes, got {block_size!r}")
    return fractions


def prepare_criteo(
    path: str | os.PathLike,
    *,
    min_count: int = 10,
    numeric: str = "bucket",
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2018,
    cache_dir: str | os.PathLike | None = None,
    on_malformed: str = "warn",
    keep_parsed: bool = True,
    block_size: int = 1 << 24,
) -> CriteoProcessed:
    """Parse, count and map a Criteo file into per-split parquet files, or reuse the cache.

    Args:
        path (str or os.PathLike): a Criteo file (tab separated without header, or CSV with a header).
        min_count (int, optional): a value needs this many occurrences in the training split for its own id
            (default 10, the Criteo_x4 setting); rarer values get id 0.
        numeric (str, optional): ``"bucket"`` (default; ``floor(ln(x)^2)`` bucket ids) or ``"log"``
            (``log(1 + x)`` floats); see the module docstring for ``x <= 2``, negatives and
            missing values.
        split (Sequence[float], optional): (train, val, test) fractions, default (0.8, 0.1, 0.1).
        seed (int, optional): the split's seed (default 2018).
        cache_dir (str or os.PathLike, optional): the cache folder (default ``$GATTN_CACHE``, else ``~/.cache/gattn``).
        on_malformed (str, optional): ``"warn"`` (default: leave malformed lines out, warn with their count and
            first line numbers) or ``"raise"`` (a ValueError with that summary).
        keep_parsed (bool, optional): keep the parsed-rows parquet so that a changed processing option does not
            re-parse the text (default True).
        block_size (int, optional): bytes of text parsed per block (default 16 MB).

    Returns:
        A :class:`CriteoProcessed`: per-split parquet paths, fields, ``info``.
    """
    fractions = _check_options(min_count, numeric, split, seed, block_size)
    if on_malformed not in ("warn", "raise"):
        raise ValueError(f"`on_malformed` must be 'warn' or 'raise', got {on_malformed!r}")
    path = require_file(path, "Criteo")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    stat = path.stat()
    parse_key = _digest({"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                         "version": PARSE_VERSION})
    options = {"min_count": min_count, "numeric": numeric, "split": list(fractions), "seed": seed}
    folder = cache / f"criteo-{_digest({'parsed': parse_key, **options, 'version': PROCESS_VERSION})}"
    parsed_dir = cache / f"criteo-parsed-{parse_key}"

    outcome = "hit"
    if not (folder / "meta.json").is_file():
        outcome = "processed"
        if not (parsed_dir / "meta.json").is_file():
            outcome = "parsed"
            # the malformed-row report is stored and applied below, the same way for every outcome
            _build_folder(parsed_dir, lambda tmp: _parse(path, tmp / "rows.parquet", block_size))
        parse_info = json.loads((parsed_dir / "meta.json").read_text())
        _raise_or_warn(parse_info, on_malformed)
        _build_folder(folder, lambda tmp: _process(parsed_dir / "rows.parquet", tmp, path, options, parse_info))
        if not keep_parsed:
            shutil.rmtree(parsed_dir, ignore_errors=True)
    meta = json.loads((folder / "meta.json").read_text())
    if outcome == "hit":
        _raise_or_warn(meta, on_malformed)
    info = {**meta, "cache": outcome, "folder": str(folder)}
    return CriteoProcessed({name: folder / f"{name}.parquet" for name in SPLITS}, _fields(meta), info)


def _raise_or_warn(meta: dict, on_malformed: str) -> None:
    if meta["malformed"]["count"]:
        if on_malformed == "raise":
            raise ValueError(meta["summary"])
        warnings.warn(f"skipped {meta['summary']}", stacklevel=3)


def _fields(meta: dict) -> list[FieldInfo]:
    numeric = meta["options"]["numeric"]
    sizes = meta["vocab_sizes"]
    fields = [
        FieldInfo(name, "categorical", sizes[name] + 1, "dense", j) if numeric == "bucket"
        else FieldInfo(name, "numeric", None, "dense", j)
        for j, name in enumerate(INTEGER)
    ]
    fields += [FieldInfo(name, "categorical", sizes[name] + 1, "sparse", j) for j, name in enumerate(CATEGORICAL)]
    return fields


# -------------------------------------------------------------------------------- loading
def locate_criteo(source: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The file of ``source``: a name of ``CRITEO_DATASETS`` under the data root, or a path
    (a FileNotFoundError names what was looked for and where).

    Args:
        source (str or os.PathLike): a name of ``CRITEO_DATASETS`` or a file path.
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
    """
    if isinstance(source, str) and source.lower() in CRITEO_DATASETS:
        base = resolve_root(root)
        return find_first(base, CRITEO_DATASETS[source.lower()][1], f"Criteo data set {source!r}")
    return require_file(source, "Criteo")


def load_criteo(
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    **options,
) -> CriteoData:
    """Prepare a Criteo file (:func:`prepare_criteo`, cached) and load its three splits.

    Args:
        source (str or os.PathLike): a file path, or a name under the data root: ``"criteo-sample"``
            (``criteo/criteo_sample.txt``) or ``"criteo-kaggle"`` (``criteo/train.txt``).
        root (str or os.PathLike, optional): the data root for a name (default ``$GATTN_DATA``, else
            ``../shared/data``).
        **options: :func:`prepare_criteo`'s keyword options.
    """
    processed = prepare_criteo(locate_criteo(source, root), **options)
    return CriteoData(*(processed.load(name) for name in SPLITS), processed.fields, processed.info)


@register_source("criteo")
def available(root: str | os.PathLike | None = None) -> list[tuple[str, bool, str]]:
    """``(name, present, where or what is missing)`` for the named Criteo files.

    Args:
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
    """
    base = resolve_root(root)
    found = []
    for name, (description, candidates) in CRITEO_DATASETS.items():
        path = next((base / c for c in candidates if (base / c).is_file()), None)
        where = str(path) if path else f"missing (looked for {', '.join(candidates)} under {base})"
        found.append((name, path is not None, f"{description}: {where}"))
    return found
