"""Invented MIMIC-III data in the exact schema, for tests, examples and benchmarks.

Nothing here comes from MIMIC: the notes are invented words, the admissions and measurements
random draws. Only the *format* is MIMIC-III's: the tables, column names and kinds of
:data:`.tables.SCHEMAS`, quoted multi-line note text, undotted ICD-9 codes read as strings (a
pool of real codes chosen to exercise the dot rules: V- and E-codes, leading zeros, 3-character
codes, and ``4019`` as both diagnosis 401.9 and procedure 40.19), the CAML split files and an
``ICD9_descriptions`` file.

* :func:`write_mimic_fixture`: a small, complete directory plus its ground truth
  (:class:`MimicFixture`), so a test can rebuild every expected output by hand.
* :func:`write_noteevents`: a large ``NOTEEVENTS`` file (gigabytes) with a realistic mix of note
  categories and lengths, streamed to disk, for the loader benchmark.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .tables import SCHEMAS

__all__ = ["CATEGORY_MIX", "MimicFixture", "write_mimic_fixture", "write_noteevents"]

# (undotted code, kind, dotted, long title or None when only ICD9_descriptions has it)
_CODES = [
    ("4019", "diagnosis", "401.9", "Unspecified essential hypertension"),
    ("4280", "diagnosis", "428.0", "Congestive heart failure, unspecified"),
    ("42731", "diagnosis", "427.31", "Atrial fibrillation"),
    ("41401", "diagnosis", "414.01", "Coronary atherosclerosis of native coronary artery"),
    ("5849", "diagnosis", "584.9", "Acute kidney failure, unspecified"),
    ("25000", "diagnosis", "250.00", "Diabetes mellitus without mention of complication"),
    ("2724", "diagnosis", "272.4", "Other and unspecified hyperlipidemia"),
    ("51881", "diagnosis", "518.81", "Acute respiratory failure"),
    ("5990", "diagnosis", "599.0", "Urinary tract infection, site not specified"),
    ("53081", "diagnosis", "530.81", "Esophageal reflux"),
    ("486", "diagnosis", "486", "Pneumonia, organism unspecified"),
    ("0389", "diagnosis", "038.9", "Unspecified septicemia"),
    ("99592", "diagnosis", "995.92", "Severe sepsis"),
    ("2449", "diagnosis", "244.9", "Unspecified acquired hypothyroidism"),
    ("V3000", "diagnosis", "V30.00", "Single liveborn, born in hospital, delivered without cesarean section"),
    ("V053", "diagnosis", "V05.3", "Need for prophylactic vaccination against viral hepatitis"),
    ("V5861", "diagnosis", "V58.61", "Long-term (current) use of anticoagulants"),
    ("E8790", "diagnosis", "E879.0", "Cardiac catheterization as the cause of abnormal reaction"),
    ("E8497", "diagnosis", "E849.7", "Accidents occurring in residential institution"),
    ("E849", "diagnosis", "E849", None),
    ("2859", "diagnosis", "285.9", "Anemia, unspecified"),
    ("2762", "diagnosis", "276.2", "Acidosis"),
    ("496", "diagnosis", "496", None),
    ("3893", "procedure", "38.93", "Venous catheterization, not elsewhere classified"),
    ("9604", "procedure", "96.04", "Insertion of endotracheal tube"),
    ("966", "procedure", "96.6", "Enteral infusion of concentrated nutritional substances"),
    ("9671", "procedure", "96.71", "Continuous invasive mechanical ventilation for less than 96 consecutive hours"),
    ("3961", "procedure", "39.61", "Extracorporeal circulation auxiliary to open heart surgery"),
    ("8856", "procedure", "88.56", "Coronary arteriography using two catheters"),
    ("0040", "procedure", "00.40", "Procedure on single vessel"),
    ("0066", "procedure", "00.66", "Percutaneous transluminal coronary angioplasty"),
    ("0093", "procedure", "00.93", None),
    ("4019", "procedure", "40.19", "Other diagnostic procedures on lymphatic structures"),
    ("3995", "procedure", "39.95", "Hemodialysis"),
]

#: NOTEEVENTS categories: (CATEGORY, share of notes, median length in characters, spread of the
#: log-normal length). The shares follow MIMIC-III v1.4's published category counts (2,083,180
#: notes; 59,652 discharge summaries); the lengths are invented approximations chosen so the mean
#: note is about 1.9 KB, the full file's 3.9 GB over 2.08 M notes.
CATEGORY_MIX = [
    ("Nursing/other", 822_497, 900, 0.6),
    ("Radiology", 522_279, 1_300, 0.7),
    ("Nursing", 223_556, 1_600, 0.6),
    ("ECG", 209_051, 220, 0.4),
    ("Physician ", 141_624, 5_500, 0.5),
    ("Discharge summary", 59_652, 9_000, 0.5),
    ("Echo", 45_794, 2_200, 0.3),
    ("Respiratory ", 31_739, 900, 0.4),
    ("Nutrition", 9_418, 2_000, 0.5),
    ("General", 8_301, 1_200, 0.7),
    ("Rehab Services", 5_431, 2_600, 0.5),
    ("Social Work", 2_670, 1_800, 0.5),
    ("Case Management ", 967, 1_000, 0.6),
    ("Pharmacy", 103, 2_500, 0.5),
    ("Consult", 98, 4_500, 0.5),
]

_SYLLABLES = ["pa", "ti", "ent", "ad", "mit", "car", "di", "ac", "pul", "mo", "nar", "re", "nal", "hep", "at", "ic",
              "neu", "ro", "gas", "tro", "in", "tes", "ti", "nal", "sep", "sis", "hy", "per", "ten", "sion", "ane",
              "mia", "bra", "dy", "ta", "chy", "ox", "y", "gen", "cath", "eter", "stent", "val", "ve", "lung"]


def _quote(value: object) -> str:
    return '"' + str(value).replace('"', '""') + '"'


class _Writer:
    """Writes one MIMIC table in either style: ``"upper"`` (full database: upper-case quoted
    header, quoted strings) or ``"lower"`` (the demo: lower-case header, minimal quoting)."""

    def __init__(self, path: Path, table: str, header_case: str, compress: bool):
        self.kinds = [kind for _, kind in SCHEMAS[table]]
        names = [name for name, _ in SCHEMAS[table]]
        self.upper = header_case == "upper"
        raw = gzip.open(path, "wt", encoding="utf-8", newline="") if compress else open(
            path, "w", encoding="utf-8", newline="")
        self.handle: io.TextIOBase = raw
        self.minimal = csv.writer(io.StringIO())
        if self.upper:
            self.handle.write(",".join(_quote(n) for n in names) + "\n")
        else:
            self.handle.write(",".join(n.lower() for n in names) + "\n")

    def _field(self, value: object, kind: str) -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%d %H:%M:%S")
        text = str(value)
        if kind in ("str", "code") and (self.upper or any(c in text for c in ',"\n\r')):
            return _quote(text)
        return text

    def row(self, values: list[object]) -> None:
        self.handle.write(",".join(self._field(v, k) for v, k in zip(values, self.kinds)) + "\n")

    def close(self) -> None:
        self.handle.close()


def _word_pool(rng: np.random.Generator, size: int) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4)))))
    return sorted(words)


def _code_words(code: str, kind: str) -> list[str]:
    """Two invented words that the fixture's notes use for this code: a learnable signal."""
    tag = code.lower().replace(".", "")
    return [f"{kind[:4]}{tag}", f"sign{tag}x"]


@dataclass
class MimicFixture:
    """A fixture directory and what was written into it.

    Attributes:
        mimic_dir (Path): the MIMIC tables.
        splits_dir (Path): the CAML split files and ``ICD9_descriptions``.
        admissions (list[dict], optional): one dict per ADMISSIONS row (``HADM_ID``, ``SUBJECT_ID``,
            ``ADMITTIME``, ...).
        codes (list[tuple[int, str, str, str]], optional): one ``(HADM_ID, kind, undotted, dotted)``
            per DIAGNOSES_ICD / PROCEDURES_ICD row with a code (the row without a code is not
            listed).
        notes (list[dict], optional): one dict per NOTEEVENTS row, every column (upper-case keys;
            datetimes as datetime).
        chartevents (list[dict], optional): one dict per ``CHARTEVENTS`` row. (default: ``[]``)
        labevents (list[dict], optional): one dict per ``LABEVENTS`` row. (default: ``[]``)
        splits (dict[str, list[int]], optional): ``{"train_full": [...], "dev_50": [...], ...}`` HADM_IDs in file order.
        descriptions (dict[str, str], optional): dotted code -> the description the fixture wrote
            (D_ICD_* or ICD9_descriptions).
        d_icd_codes (set[str], optional): dotted codes that have a D_ICD_DIAGNOSES / D_ICD_PROCEDURES row.
    """

    mimic_dir: Path
    splits_dir: Path
    admissions: list[dict] = field(default_factory=list)
    codes: list[tuple[int, str, str, str]] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    chartevents: list[dict] = field(default_factory=list)
    labevents: list[dict] = field(default_factory=list)
    splits: dict[str, list[int]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    d_icd_codes: set[str] = field(default_factory=set)


def _note_text(rng: np.random.Generator, pool: list[str], words: list[str], length: int) -> str:
    """An invented note: pool words, the given signal words, numbers, de-identified dates,
    punctuation, quotes, commas, blank lines and the odd non-ASCII word."""
    tokens = list(rng.choice(pool, size=length))
    for word in words:
        tokens.insert(int(rng.integers(0, len(tokens) + 1)), word)
    extras = ["[**2151-7-16**]", "2", "123.5", "s/p", "x3", '"quoted"', "a,b", "\n\n", "-", "Dr.", "q.d.", "__",
              "[**Hospital1 18**]", "café", "N\u00b0", "mg/dL"]
    for extra in rng.choice(extras, size=max(1, length // 6)):
        tokens.insert(int(rng.integers(0, len(tokens) + 1)), str(extra))
    text = " ".join(tokens)
    return text[0].upper() + text[1:] if text else text


def write_mimic_fixture(
    directory: str | os.PathLike,
    *,
    num_admissions: int = 40,
    seed: int = 0,
    header_case: str = "upper",
    compress: bool = False,
    tables: tuple[str, ...] = ("ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "NOTEEVENTS", "CHARTEVENTS",
                               "LABEVENTS", "D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"),
) -> MimicFixture:
    """Write a small invented MIMIC-III directory (module docstring) and return its ground truth.

    Args:
        directory (str or os.PathLike): created if needed; the tables go to ``directory/mimic``, the CAML split files
            and ``ICD9_descriptions`` to ``directory/splits``.
        num_admissions (int, optional): admissions (default 40; at least 10), of about ``num_admissions / 1.5``
            patients.
        seed (int, optional): everything is drawn from this seed. (default: ``0``)
        header_case (str, optional): ``"upper"`` (full database style) or ``"lower"`` (demo style).
            (default: ``"upper"``)
        compress (bool, optional): write ``.csv.gz`` instead of ``.csv``. (default: ``False``)
        tables (tuple[str, ...], optional): which tables to write (default: all the loaders read).
    """
    if header_case not in ("upper", "lower"):
        raise ValueError(f"`header_case` must be 'upper' or 'lower', got {header_case!r}")
    if not isinstance(num_admissions, int) or num_admissions < 10:
        raise ValueError(f"`num_admissions` must be an int of at least 10, got {num_admissions!r}")
    rng = np.random.default_rng(seed)
    root = Path(directory)
    mimic_dir, splits_dir = root / "mimic", root / "splits"
    mimic_dir.mkdir(parents=True, exist_ok=True)
    splits_dir.mkdir(parents=True, exist_ok=True)
    fx = MimicFixture(mimic_dir, splits_dir)
    suffix = ".csv.gz" if compress else ".csv"

    def writer(table: str) -> _Writer | None:
        return _Writer(mimic_dir / f"{table}{suffix}", table, header_case, compress) if table in tables else None

    # admissions: patients with one to three stays
    hadm_ids = sorted(rng.choice(np.arange(100_000, 200_000), size=num_admissions, replace=False).tolist())
    subject = 10_000
    w = writer("ADMISSIONS")
    for i, hadm in enumerate(hadm_ids):
        if i == 0 or rng.random() < 0.65:
            subject += int(rng.integers(1, 50))
        admit = datetime(2100, 1, 1) + timedelta(days=int(rng.integers(0, 36_000)), minutes=int(rng.integers(0, 1440)))
        disch = admit + timedelta(hours=int(rng.integers(30, 400)))
        died = rng.random() < 0.1
        row = {"ROW_ID": i + 1, "SUBJECT_ID": subject, "HADM_ID": hadm, "ADMITTIME": admit, "DISCHTIME": disch,
               "DEATHTIME": disch if died else None,
               "ADMISSION_TYPE": str(rng.choice(["EMERGENCY", "ELECTIVE", "URGENT"])),
               "ADMISSION_LOCATION": "EMERGENCY ROOM ADMIT", "DISCHARGE_LOCATION": "DEAD/EXPIRED" if died else "HOME",
               "INSURANCE": str(rng.choice(["Medicare", "Private", "Medicaid"])), "LANGUAGE": None,
               "RELIGION": "CATHOLIC", "MARITAL_STATUS": "SINGLE", "ETHNICITY": "WHITE", "EDREGTIME": None,
               "EDOUTTIME": None, "DIAGNOSIS": "CHEST PAIN, \"RULE OUT\" MI", "HOSPITAL_EXPIRE_FLAG": int(died),
               "HAS_CHARTEVENTS_DATA": 1}
        fx.admissions.append(row)
        if w:
            w.row([row[name] for name, _ in SCHEMAS["ADMISSIONS"]])
    if w:
        w.close()

    # codes: frequent codes more often, so a top-k set is well defined
    weights = 1.0 / np.arange(1, len(_CODES) + 1) ** 0.7
    diag = [i for i, c in enumerate(_CODES) if c[1] == "diagnosis"]
    proc = [i for i, c in enumerate(_CODES) if c[1] == "procedure"]
    per_admission: dict[int, list[int]] = {}
    row_ids = {"diagnosis": 0, "procedure": 0}
    writers = {"diagnosis": writer("DIAGNOSES_ICD"), "procedure": writer("PROCEDURES_ICD")}
    for hadm, adm in zip(hadm_ids, fx.admissions):
        chosen = []
        for pool_idx, low, high in ((diag, 2, 9), (proc, 0, 5)):
            p = weights[pool_idx] / weights[pool_idx].sum()
            chosen += rng.choice(pool_idx, size=int(rng.integers(low, high)), replace=False, p=p).tolist()
        per_admission[hadm] = chosen
        seq = {"diagnosis": 0, "procedure": 0}
        for idx in chosen:
            code, kind, dotted, _ = _CODES[idx]
            seq[kind] += 1
            row_ids[kind] += 1
            fx.codes.append((hadm, kind, code, dotted))
            if writers[kind]:
                writers[kind].row([row_ids[kind], adm["SUBJECT_ID"], hadm, seq[kind], code])
    if writers["diagnosis"]:  # MIMIC-III has diagnosis rows without a code
        writers["diagnosis"].row([row_ids["diagnosis"] + 1, fx.admissions[0]["SUBJECT_ID"], hadm_ids[0], None, None])
    for wr in writers.values():
        if wr:
            wr.close()

    # descriptions: the D_ICD tables miss some codes, which ICD9_descriptions then provides
    for table, kind in (("D_ICD_DIAGNOSES", "diagnosis"), ("D_ICD_PROCEDURES", "procedure")):
        w = writer(table)
        for n, (code, code_kind, dotted, title) in enumerate(_CODES):
            if code_kind == kind and title is not None:
                fx.descriptions.setdefault(dotted, title)
                fx.d_icd_codes.add(dotted)
                if w:
                    w.row([n + 1, code, title[:24], title])
        if w:
            w.close()
    with open(splits_dir / "ICD9_descriptions", "w") as handle:
        handle.write("@\tICD9 Hierarchy Root\n")
        for _, _, dotted, title in _CODES:
            text = f"{title} (file)" if title else f"Invented description of {dotted}"
            handle.write(f"{dotted}\t{text}\n")
            fx.descriptions.setdefault(dotted, text)
        handle.write("401-405.99\tHYPERTENSIVE DISEASE\n")
        fx.descriptions.setdefault("401-405.99", "HYPERTENSIVE DISEASE")

    # notes: a discharge report per admission (a few without), addenda, other categories
    pool = _word_pool(rng, 300)
    w = writer("NOTEEVENTS")
    row_id = 0
    for hadm, adm in zip(hadm_ids, fx.admissions):
        signal = [word for idx in per_admission[hadm] if rng.random() < 0.9
                  for word in _code_words(_CODES[idx][2], _CODES[idx][1])]
        notes = []
        if rng.random() > 0.05 or hadm == hadm_ids[0]:
            notes.append(("Discharge summary", "Report", 0, signal, None))
        for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.3 else 0):
            notes.append(("Discharge summary", "Addendum", int(rng.integers(-2, 4)), [], None))
        notes.append(("Nursing/other", "Report", 0, signal[:1], None))
        notes.append(("Radiology", "CHEST (PORTABLE AP)", 1, [], None))
        if rng.random() < 0.15:
            notes.append(("Discharge summary", "Report", 1, ["erroneous"], "1"))
        order = rng.permutation(len(notes))
        for j in order:
            category, description, day, words, iserror = notes[j]
            row_id += int(rng.integers(1, 5))
            discharge = category == "Discharge summary"
            chartdate = (adm["DISCHTIME"] + timedelta(days=day)).replace(hour=0, minute=0, second=0)
            row = {"ROW_ID": row_id, "SUBJECT_ID": adm["SUBJECT_ID"], "HADM_ID": hadm, "CHARTDATE": chartdate,
                   "CHARTTIME": None if discharge else chartdate + timedelta(hours=10),
                   "STORETIME": None if discharge else chartdate + timedelta(hours=11),
                   "CATEGORY": category, "DESCRIPTION": description, "CGID": None if discharge else 14_000 + j,
                   "ISERROR": iserror,
                   "TEXT": _note_text(rng, pool, words, int(rng.integers(40, 160)) if discharge else 30)}
            fx.notes.append(row)
            if w:
                w.row([row[name] for name, _ in SCHEMAS["NOTEEVENTS"]])
    # an outpatient radiology note (no HADM_ID)
    row_id += 1
    outpatient = {name: None for name, _ in SCHEMAS["NOTEEVENTS"]}
    outpatient.update({"ROW_ID": row_id, "SUBJECT_ID": fx.admissions[0]["SUBJECT_ID"], "CATEGORY": "Radiology",
                       "CHARTDATE": datetime(2101, 1, 1), "DESCRIPTION": "CT HEAD", "TEXT": "Outpatient CT, normal."})
    fx.notes.append(outpatient)
    if w:
        w.row([outpatient[name] for name, _ in SCHEMAS["NOTEEVENTS"]])
        w.close()

    # time series: vitals in CHARTEVENTS (CareVue and MetaVision ITEMIDs), labs in LABEVENTS
    chart_items = [(211, 60.0, 120.0), (220045, 60.0, 120.0), (618, 10.0, 30.0), (646, 88.0, 100.0),
                   (220179, 90.0, 160.0), (1234, 0.0, 1.0)]
    lab_items = [(50912, 0.5, 3.0), (50971, 3.0, 5.5), (50983, 130.0, 150.0)]
    w = writer("CHARTEVENTS")
    for adm in fx.admissions:
        for _ in range(int(rng.integers(5, 40))):
            itemid, low, high = chart_items[int(rng.integers(0, len(chart_items)))]
            minutes = int(rng.integers(-120, 60 * 60))
            value = round(float(rng.uniform(low, high)), 1)
            text_only = rng.random() < 0.05
            row = {"ROW_ID": len(fx.chartevents) + 1, "SUBJECT_ID": adm["SUBJECT_ID"], "HADM_ID": adm["HADM_ID"],
                   "ICUSTAY_ID": 200_000 + adm["ROW_ID"], "ITEMID": itemid,
                   "CHARTTIME": adm["ADMITTIME"] + timedelta(minutes=minutes),
                   "STORETIME": adm["ADMITTIME"] + timedelta(minutes=minutes + 5), "CGID": 15_000,
                   "VALUE": "Comment" if text_only else f"{value:g}", "VALUENUM": None if text_only else value,
                   "VALUEUOM": "bpm", "WARNING": 0, "ERROR": 1 if rng.random() < 0.05 else 0,
                   "RESULTSTATUS": None, "STOPPED": None}
            fx.chartevents.append(row)
            if w:
                w.row([row[name] for name, _ in SCHEMAS["CHARTEVENTS"]])
    if w:
        w.close()
    w = writer("LABEVENTS")
    for adm in fx.admissions:
        for _ in range(int(rng.integers(2, 12))):
            itemid, low, high = lab_items[int(rng.integers(0, len(lab_items)))]
            minutes = int(rng.integers(-300, 60 * 60))
            value = round(float(rng.uniform(low, high)), 2)
            row = {"ROW_ID": len(fx.labevents) + 1, "SUBJECT_ID": adm["SUBJECT_ID"],
                   "HADM_ID": None if rng.random() < 0.1 else adm["HADM_ID"], "ITEMID": itemid,
                   "CHARTTIME": adm["ADMITTIME"] + timedelta(minutes=minutes), "VALUE": f"{value:g}",
                   "VALUENUM": value, "VALUEUOM": "mg/dL", "FLAG": None}
            fx.labevents.append(row)
            if w:
                w.row([row[name] for name, _ in SCHEMAS["LABEVENTS"]])
    if w:
        w.close()

    # CAML splits: 60/20/20 by patient; the "50" files keep admissions with one of the top codes
    subjects = sorted({a["SUBJECT_ID"] for a in fx.admissions})
    order = rng.permutation(len(subjects))
    part = {subjects[i]: ("train" if r < 0.6 * len(subjects) else "dev" if r < 0.8 * len(subjects) else "test")
            for r, i in enumerate(order)}
    with_note = {n["HADM_ID"] for n in fx.notes
                 if n["CATEGORY"] == "Discharge summary" and n["HADM_ID"] is not None and n["ISERROR"] != "1"}
    counts: dict[str, int] = {}
    for _, _, _, dotted in {(h, k, c, d) for h, k, c, d in fx.codes if h in with_note}:
        counts[dotted] = counts.get(dotted, 0) + 1
    top = {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]}
    for split in ("train", "dev", "test"):
        full = [a["HADM_ID"] for a in fx.admissions if part[a["SUBJECT_ID"]] == split and a["HADM_ID"] in with_note]
        full = [full[i] for i in rng.permutation(len(full))]
        top_set = [h for h in full if any(d in top for hh, _, _, d in fx.codes if hh == h)]
        for setting, ids in (("full", full), ("50", top_set)):
            fx.splits[f"{split}_{setting}"] = ids
            (splits_dir / f"{split}_{setting}_hadm_ids.csv").write_text("".join(f"{h}\n" for h in ids))
    return fx


def write_noteevents(
    path: str | os.PathLike,
    num_notes: int,
    *,
    seed: int = 0,
    num_admissions: int | None = None,
    mix: list[tuple[str, int, int, float]] | None = None,
) -> dict:
    """Stream a large invented ``NOTEEVENTS.csv`` (upper-case, quoted: the full database's style).

    Categories and note lengths follow ``mix`` (default :data:`CATEGORY_MIX`); 10 % of the
    radiology, ECG and echo notes have no ``HADM_ID`` (outpatient), 8 % of discharge summaries
    are addenda. Text is drawn from a pool (up to 32 MB) of invented words, numbers, de-identification
    brackets, punctuation and line breaks, so that a multi-GB file takes minutes to write.

    Args:
        path (str or os.PathLike): the file to write (``.csv``).
        num_notes (int): how many notes (about 1.9 KB each with the default mix).
        seed (int, optional): the random seed. (default: ``0``)
        num_admissions (int, optional): distinct ``HADM_ID`` values (default: ``num_notes // 35``, MIMIC's ratio).
        mix (list[tuple[str, int, int, float]], optional): ``(category, weight, median characters,
            log-normal spread)`` per category. (default: ``None``)

    Returns:
        ``{"bytes", "notes", "discharge_notes", "discharge_admissions"}``.
    """
    rng = np.random.default_rng(seed)
    mix = CATEGORY_MIX if mix is None else mix
    num_admissions = num_admissions or max(1, num_notes // 35)
    names = [m[0] for m in mix]
    share = np.array([m[1] for m in mix], dtype=np.float64)
    share /= share.sum()
    pool = _word_pool(rng, 3_000)
    zipf = 1.0 / np.arange(1, len(pool) + 1)
    vocabulary = np.array(pool + ["[**2151-7-16**]", "[**Hospital1 18**]", "2", "10", "125", "0.5", "mg", "q.d.",
                                  "s/p", "x3", "\n", "\n\n", '"', ",", ".", ":", "-", "(", ")"])
    weights = np.r_[zipf / zipf.sum() * 0.8, np.full(len(vocabulary) - len(pool), 0.2 / (len(vocabulary) - len(pool)))]
    words = vocabulary.tolist()
    corpus_words = min(6_000_000, max(300_000, 50 * num_notes))  # ~32 MB of text for a large file
    corpus = " ".join([words[i] for i in rng.choice(len(words), size=corpus_words, p=weights / weights.sum())])
    stats = {"bytes": 0, "notes": 0, "discharge_notes": 0}
    discharge_hadm = set()
    chunk = 50_000
    header = ",".join(_quote(name) for name, _ in SCHEMAS["NOTEEVENTS"]) + "\n"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(header)
        for start in range(0, num_notes, chunk):
            n = min(chunk, num_notes - start)
            category = rng.choice(len(mix), size=n, p=share)
            median = np.array([m[2] for m in mix])[category]
            spread = np.array([m[3] for m in mix])[category]
            length = np.minimum(rng.lognormal(np.log(median), spread).astype(np.int64) + 20, len(corpus) // 2)
            offset = rng.integers(0, len(corpus) - length)
            hadm = rng.integers(100_000, 100_000 + num_admissions, size=n)
            outpatient = rng.random(n) < 0.1
            addendum = rng.random(n) < 0.08
            day = rng.integers(0, 36_000, size=n)
            lines = []
            for i in range(n):
                name = names[category[i]]
                discharge = name == "Discharge summary"
                no_hadm = outpatient[i] and name in ("Radiology", "ECG", "Echo")
                date = (datetime(2100, 1, 1) + timedelta(days=int(day[i]))).strftime("%Y-%m-%d")
                time = "" if discharge or name in ("ECG", "Echo") else f"{date} 10:{i % 60:02d}:00"
                text = corpus[offset[i]: offset[i] + length[i]].replace('"', '""')
                description = ("Addendum" if addendum[i] else "Report") if discharge else "Report"
                lines.append(f'{start + i + 1},{20_000 + int(hadm[i]) % 40_000},{"" if no_hadm else int(hadm[i])},'
                             f'{date},{time},{time},"{name}","{description}",,,"{text}"\n')
                if discharge:
                    stats["discharge_notes"] += 1
                    discharge_hadm.add(int(hadm[i]))
            block = "".join(lines)
            handle.write(block)
            stats["notes"] += n
    stats["bytes"] = Path(path).stat().st_size
    stats["discharge_admissions"] = len(discharge_hadm)
    return stats
