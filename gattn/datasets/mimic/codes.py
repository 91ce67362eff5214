"""ICD-9 codes of MIMIC-III admissions: reading, the dot, label sets, descriptions.

MIMIC-III stores ICD-9 codes without their dot (``DIAGNOSES_ICD.ICD9_CODE = "4019"``,
``PROCEDURES_ICD.ICD9_CODE = "3893"``). :func:`format_icd9` puts it back by the standard rules:

* diagnoses: after the third character (``4019 -> 401.9``, ``V3000 -> V30.00``), E-codes after
  the fourth (``E8790 -> E879.0``); a code of 3 characters (4 for E-codes) has no dot (``486``);
* procedures: after the second character (``3893 -> 38.93``, ``0040 -> 00.40``).

Codes are read as strings and never as numbers: reading ``PROCEDURES_ICD`` with numeric types
turns ``0040`` into ``40`` and merges distinct codes (``01.17`` and ``11.7`` both become ``117``);
the widely used CAML top-50 set was built with that bug (icd-coding-benchmark calls its
corrected sets "mimic3_50" and the CAML ones "mimic3_50_old").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .._paths import require_file
from .tables import TableReport, find_table, read_table

__all__ = [
    "CODE_KINDS",
    "code_lists",
    "format_icd9",
    "read_code_descriptions",
    "read_icd_codes",
    "top_codes",
]

#: code kind -> the MIMIC-III table holding it
CODE_KINDS = {"diagnosis": "DIAGNOSES_ICD", "procedure": "PROCEDURES_ICD"}


def _check_kind(kind: str, allow_both: bool = False) -> None:
    allowed = (*CODE_KINDS, "both") if allow_both else tuple(CODE_KINDS)
    if kind not in allowed:
        raise ValueError(f"`kind` must be one of {', '.join(map(repr, allowed))}, got {kind!r}")


def _dot_after(codes: pa.Array, position: int) -> pa.Array:
    """Insert a dot after ``position`` characters where the code is longer than that."""
    dotted = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(codes, 0, position), pc.utf8_slice_codeunits(codes, position), "."
    )
    return pc.if_else(pc.greater(pc.utf8_length(codes), position), dotted, codes)


def format_icd9(codes: str | Iterable[str] | pa.Array, kind: str) -> str | pa.Array:
    """Insert the dot into undotted MIMIC-III ICD-9 codes (module docstring for the rules).

    Args:
        codes (str or Iterable[str] or pa.Array): one code or many (a sequence or a pyarrow string
            array); nulls stay null.
        kind (str): ``"diagnosis"`` or ``"procedure"``.

    Returns:
        The dotted code (a ``str`` for a ``str`` input, else a pyarrow string array).
    """
    _check_kind(kind)
    single = isinstance(codes, str)
    array = pa.array([codes] if single else codes, type=pa.string()) if not isinstance(codes, pa.Array) else codes
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = pc.utf8_trim_whitespace(array)
    if kind == "procedure":
        out = _dot_after(array, 2)
    else:
        is_e = pc.fill_null(pc.starts_with(array, "E"), False)
        out = pc.if_else(is_e, _dot_after(array, 4), _dot_after(array, 3))
    return out[0].as_py() if single else out


def read_icd_codes(
    mimic_dir: str | os.PathLike,
    kind: str = "both",
    hadm_ids: Sequence[int] | np.ndarray | None = None,
    on_malformed: str = "raise",
) -> pd.DataFrame:
    """The ICD-9 codes of every admission, dotted, from ``DIAGNOSES_ICD`` / ``PROCEDURES_ICD``.

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory.
        kind (str, optional): ``"diagnosis"``, ``"procedure"`` or ``"both"`` (default).
        hadm_ids (Sequence[int] or np.ndarray, optional): keep only these admissions (default: all).
        on_malformed (str, optional): ``"raise"`` or ``"skip"`` (see :mod:`gattn.datasets.mimic.tables`).
            (default: ``"raise"``)

    Returns:
        A DataFrame with one row per code row of the source: ``HADM_ID`` (int64),
        ``SUBJECT_ID`` (int64), ``SEQ_NUM`` (Int64), ``ICD9_CODE`` (dotted str), ``KIND``
        (``"diagnosis"`` / ``"procedure"``), diagnoses first, each in file order. Rows without a
        code (MIMIC-III has a few) are skipped and counted: ``df.attrs["reports"]`` holds one
        :class:`TableReport` per table read.
    """
    _check_kind(kind, allow_both=True)
    kinds = list(CODE_KINDS) if kind == "both" else [kind]
    wanted = None if hadm_ids is None else pa.array(np.asarray(hadm_ids, dtype=np.int64))
    frames, reports = [], []
    for code_kind in kinds:
        report = TableReport("")
        table = read_table(mimic_dir, CODE_KINDS[code_kind], ["HADM_ID", "SUBJECT_ID", "SEQ_NUM", "ICD9_CODE"],
                           on_malformed=on_malformed, report=report)
        no_hadm = pc.is_null(table.column("HADM_ID"))
        report.skip("no HADM_ID", int(pc.sum(no_hadm).as_py() or 0))
        no_code = pc.is_null(table.column("ICD9_CODE"))
        report.skip("no ICD9_CODE", int(pc.sum(no_code).as_py() or 0))
        keep = pc.invert(pc.or_(no_hadm, no_code))
        if wanted is not None:
            inside = pc.is_in(table.column("HADM_ID"), value_set=wanted)
            report.skip("HADM_ID not requested", int(pc.sum(pc.and_(keep, pc.invert(inside))).as_py() or 0))
            keep = pc.and_(keep, inside)
        table = table.filter(keep)
        report.kept = table.num_rows
        reports.append(report)
        codes = format_icd9(table.column("ICD9_CODE").combine_chunks(), code_kind)
        frames.append(pd.DataFrame({
            "HADM_ID": table.column("HADM_ID").to_numpy().astype(np.int64),
            "SUBJECT_ID": table.column("SUBJECT_ID").to_pandas().astype("Int64"),
            "SEQ_NUM": table.column("SEQ_NUM").to_pandas().astype("Int64"),
            "ICD9_CODE": codes.to_pandas().astype(object),
            "KIND": code_kind,
        }))
    df = pd.concat(frames, ignore_index=True)
    df.attrs["reports"] = reports
    return df


def top_codes(codes: pd.DataFrame, k: int, hadm_ids: Sequence[int] | np.ndarray | None = None) -> list[str]:
    """The ``k`` codes assigned to the most admissions (each admission counts a code once).

    CAML's rule: counts over every admission with a discharge summary (its train, dev and test
    sets together); pass those admissions as ``hadm_ids``. Ties are broken by the code string,
    so the set is deterministic.

    Args:
        codes (pandas.DataFrame): the code assignments (``HADM_ID``, ``ICD9_CODE``).
        k (int): the number of codes.
        hadm_ids (Sequence[int], optional): count only these admissions (``None``: all).
            (default: ``None``)
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}")
    if hadm_ids is not None:
        codes = codes[codes["HADM_ID"].isin(np.asarray(hadm_ids, dtype=np.int64))]
    pairs = codes[["HADM_ID", "ICD9_CODE"]].drop_duplicates()
    counts = pairs["ICD9_CODE"].value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) < k:
        raise ValueError(f"only {len(ranked)} distinct codes among these admissions; cannot take the top {k}")
    return [code for code, _ in ranked[:k]]


def code_lists(codes: pd.DataFrame, hadm_ids: Sequence[int] | np.ndarray,
               label_codes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each admission's labels as a ragged index list over ``label_codes``.

    Args:
        codes (pandas.DataFrame): the code assignments (``HADM_ID``, ``ICD9_CODE``).
        hadm_ids (Sequence[int]): the admissions, in output order.
        label_codes (Sequence[str]): the label set; other codes are left out.

    Returns:
        ``(ptr [B+1] int64, index [nnz] int64)``: admission ``b`` (``hadm_ids[b]``) has the
        labels ``index[ptr[b]:ptr[b+1]]`` (ascending, each once); codes outside ``label_codes``
        are ignored.
    """
    hadm = np.asarray(hadm_ids, dtype=np.int64)
    position = pd.Series(np.arange(hadm.size), index=hadm)
    if position.index.has_duplicates:
        raise ValueError("`hadm_ids` contains duplicates")
    label_pos = pd.Series(np.arange(len(label_codes)), index=pd.Index(list(label_codes), dtype=object))
    if label_pos.index.has_duplicates:
        raise ValueError("`label_codes` contains duplicates")
    rows = codes[codes["HADM_ID"].isin(hadm) & codes["ICD9_CODE"].isin(label_pos.index)]
    doc = position.loc[rows["HADM_ID"].to_numpy()].to_numpy()
    lab = label_pos.loc[rows["ICD9_CODE"].to_numpy()].to_numpy()
    pairs = np.unique(np.stack([doc, lab], axis=1), axis=0) if doc.size else np.zeros((0, 2), np.int64)
    counts = np.bincount(pairs[:, 0], minlength=hadm.size)
    ptr = np.zeros(hadm.size + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, pairs[:, 1].astype(np.int64)


def _read_description_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    bad = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                bad.append((line_no, f"{len(parts)} tab-separated fields, expected 2"))
                continue
            out.setdefault(parts[0].strip(), parts[1].strip())
    if bad:
        shown = "; ".join(f"line {n}: {why}" for n, why in bad[:5])
        raise ValueError(f"{path}: {len(bad)} malformed line(s): {shown}")
    return out


def read_code_descriptions(
    mimic_dir: str | os.PathLike | None = None,
    descriptions_file: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Dotted ICD-9 code -> description, for label initialisation.

    Sources, in order of preference (a code takes the first description found):
    ``D_ICD_DIAGNOSES`` and ``D_ICD_PROCEDURES`` in ``mimic_dir`` (their ``LONG_TITLE``; the
    tables are used only when present), then ``descriptions_file``: CAML's ``ICD9_descriptions``
    (``code<TAB>description`` per line, codes dotted; it also lists ranges such as
    ``401-405.99``, kept as they are). At least one source must be given.

    Args:
        mimic_dir (str or os.PathLike, optional): the MIMIC-III directory. (default: ``None``)
        descriptions_file (str or os.PathLike, optional): CAML's ``ICD9_descriptions``.
            (default: ``None``)
    """
    if mimic_dir is None and descriptions_file is None:
        raise ValueError("give `mimic_dir` (D_ICD_* tables) and/or `descriptions_file` (ICD9_descriptions)")
    out: dict[str, str] = {}
    if mimic_dir is not None:
        for kind, table in (("diagnosis", "D_ICD_DIAGNOSES"), ("procedure", "D_ICD_PROCEDURES")):
            try:
                find_table(mimic_dir, table)
            except FileNotFoundError:
                continue
            data = read_table(mimic_dir, table, ["ICD9_CODE", "LONG_TITLE"])
            data = data.filter(pc.invert(pc.is_null(data.column("ICD9_CODE"))))
            codes = format_icd9(data.column("ICD9_CODE").combine_chunks(), kind).to_pylist()
            for code, title in zip(codes, data.column("LONG_TITLE").to_pylist()):
                if title:
                    out.setdefault(code, title)
    if descriptions_file is not None:
        path = require_file(descriptions_file, "ICD-9 descriptions")
        for code, text in _read_description_file(path).items():
            out.setdefault(code, text)
    return out
