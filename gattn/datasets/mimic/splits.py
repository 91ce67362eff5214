"""The standard ICD-coding splits (CAML, Mullenbach et al. 2018) and the ADMISSIONS table.

CAML's split files list HADM_IDs, one per line, no header: ``train_full_hadm_ids.csv``,
``dev_full_hadm_ids.csv``, ``test_full_hadm_ids.csv`` (47,723 / 1,631 / 3,372 admissions in the
published files) and the same with ``_50`` for the top-50 setting (8,066 / 1,573 / 1,729: the
admissions among those with at least one of CAML's top-50 codes). Some copies prefix the names
with ``mimic3_``; both are found. The splits are by patient: no admission is in two of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .._paths import find_first
from .tables import TableReport, read_table

__all__ = ["SPLITS", "read_admissions", "read_caml_splits", "split_file"]

SPLITS = ("train", "dev", "test")
_SETTINGS = ("full", "50")


def split_file(splits_dir: str | os.PathLike, split: str, setting: str) -> Path:
    """The file of ``split`` (``train``/``dev``/``test``) in ``setting`` (``full``/``50``).

    Args:
        splits_dir (str or os.PathLike): the folder of CAML's split files.
        split (str): ``"train"``, ``"dev"`` or ``"test"``.
        setting (str): ``"full"`` or ``"50"``.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    if setting not in _SETTINGS:
        raise ValueError(f"`setting` must be one of {_SETTINGS}, got {setting!r}")
    directory = Path(splits_dir).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"CAML splits directory {str(directory)!r} does not exist")
    names = [f"{split}_{setting}_hadm_ids.csv", f"mimic3_{split}_{setting}_hadm_ids.csv"]
    return find_first(directory, names, f"CAML {split} split ({setting})")


def _read_ids(path: Path) -> np.ndarray:
    ids, bad = [], []
    with open(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            value = line.strip()
            if not value:
                continue
            if not value.isdigit():
                bad.append((line_no, value[:40]))
                continue
            ids.append(int(value))
    if bad:
        shown = "; ".join(f"line {n}: {v!r}" for n, v in bad[:5])
        raise ValueError(f"{path}: {len(bad)} line(s) are not a HADM_ID: {shown}")
    out = np.asarray(ids, dtype=np.int64)
    unique, counts = np.unique(out, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: HADM_ID(s) listed twice: {', '.join(map(str, unique[counts > 1][:5]))}")
    return out


def read_caml_splits(splits_dir: str | os.PathLike, setting: str = "50") -> dict[str, np.ndarray]:
    """``{"train", "dev", "test"}`` -> the HADM_IDs of that split, in file order (int64).

    Raises ``ValueError`` on a line that is not an integer (with its line number), an
    admission listed twice, or an admission in two splits.

    Args:
        splits_dir (str or os.PathLike): the folder of CAML's split files.
        setting (str, optional): ``"full"`` or ``"50"``. (default: ``"50"``)
    """
    out = {split: _read_ids(split_file(splits_dir, split, setting)) for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            both = np.intersect1d(out[a], out[b])
            if both.size:
                raise ValueError(f"CAML splits in {splits_dir}: {both.size} admission(s) are in both {a} and {b} "
                                 f"({', '.join(map(str, both[:5]))})")
    return out


_ADMISSION_COLUMNS = ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
                      "HOSPITAL_EXPIRE_FLAG"]


def read_admissions(mimic_dir: str | os.PathLike, on_malformed: str = "raise") -> pd.DataFrame:
    """``ADMISSIONS`` as a DataFrame indexed by ``HADM_ID``.

    Columns: ``SUBJECT_ID`` (int64), ``ADMITTIME``, ``DISCHTIME``, ``DEATHTIME``
    (datetime64[s]; NaT when absent), ``ADMISSION_TYPE`` (str), ``HOSPITAL_EXPIRE_FLAG`` (Int64).
    A row without ``HADM_ID`` or ``ADMITTIME``, or a ``HADM_ID`` seen twice, is malformed.
    ``df.attrs["report"]`` is the :class:`TableReport`.

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory.
        on_malformed (str, optional): ``"raise"`` or ``"skip"``. (default: ``"raise"``)
    """
    report = TableReport("")
    table = read_table(mimic_dir, "ADMISSIONS", _ADMISSION_COLUMNS, on_malformed=on_malformed, report=report)
    missing = pc.or_(pc.is_null(table.column("HADM_ID")), pc.is_null(table.column("ADMITTIME")))
    if pc.any(missing).as_py():
        raise ValueError(f"{report.path}: {int(pc.sum(missing).as_py())} row(s) lack HADM_ID or ADMITTIME")
    df = table.to_pandas(timestamp_as_object=False)
    dupes = df["HADM_ID"][df["HADM_ID"].duplicated()]
    if len(dupes):
        raise ValueError(f"{report.path}: HADM_ID(s) listed twice: {', '.join(map(str, dupes.head(5)))}")
    df["SUBJECT_ID"] = df["SUBJECT_ID"].astype("Int64")
    df["HOSPITAL_EXPIRE_FLAG"] = df["HOSPITAL_EXPIRE_FLAG"].astype("Int64")
    df = df.set_index(df["HADM_ID"].astype(np.int64)).drop(columns="HADM_ID")
    report.kept = len(df)
    df.attrs["report"] = report
    return df
