"""MIMIC-III tables, codes, splits and admissions: files the tests write in the exact schema."""

from __future__ import annotations

import csv
import gzip
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gattn.datasets.mimic import (
    SCHEMAS,
    TableReport,
    code_lists,
    find_table,
    format_icd9,
    iter_table,
    read_admissions,
    read_caml_splits,
    read_code_descriptions,
    read_icd_codes,
    read_table,
    top_codes,
    write_mimic_fixture,
)

DEMO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mimic3" / "demo-1.4"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_mimic_fixture(tmp_path_factory.mktemp("mimic"), num_admissions=30, seed=1)


# ---------------------------------------------------------------------------- ICD-9 dots
@pytest.mark.parametrize(
    ("code", "kind", "expected"),
    [
        ("4019", "diagnosis", "401.9"), ("V3000", "diagnosis", "V30.00"), ("V053", "diagnosis", "V05.3"),
        ("E8790", "diagnosis", "E879.0"), ("E849", "diagnosis", "E849"), ("486", "diagnosis", "486"),
        ("0389", "diagnosis", "038.9"), ("25000", "diagnosis", "250.00"),
        ("3893", "procedure", "38.93"), ("0040", "procedure", "00.40"), ("966", "procedure", "96.6"),
        ("4019", "procedure", "40.19"), ("00", "procedure", "00"),
    ],
)
def test_format_icd9_rules(code, kind, expected):
    assert format_icd9(code, kind) == expected


def test_format_icd9_array_keeps_nulls_and_rejects_unknown_kind():
    assert format_icd9(["4019", None, " 5849"], "diagnosis").to_pylist() == ["401.9", None, "584.9"]
    with pytest.raises(ValueError, match="`kind`"):
        format_icd9("4019", "diag")


# ------------------------------------------------------------------------- reading codes
def reference_codes(fx) -> set[tuple[int, str, str]]:
    return {(h, kind, dotted) for h, kind, _, dotted in fx.codes}


def test_read_icd_codes_matches_what_was_written(fx):
    df = read_icd_codes(fx.mimic_dir)
    got = set(zip(df["HADM_ID"], df["KIND"], df["ICD9_CODE"]))
    assert got == reference_codes(fx)
    assert len(df) == len(fx.codes)  # one row per written row with a code
    assert df["ICD9_CODE"].map(type).eq(str).all()
    diag_report, proc_report = df.attrs["reports"]
    assert diag_report.skipped == {"no ICD9_CODE": 1} and diag_report.malformed == 0
    assert proc_report.kept == sum(1 for c in fx.codes if c[1] == "procedure")


def test_read_icd_codes_kind_and_hadm_filter(fx):
    some = sorted({c[0] for c in fx.codes})[:5]
    df = read_icd_codes(fx.mimic_dir, "procedure", hadm_ids=some)
    expected = {(h, d) for h, k, _, d in fx.codes if k == "procedure" and h in some}
    assert set(zip(df["HADM_ID"], df["ICD9_CODE"])) == expected
    assert (df["KIND"] == "procedure").all()
    with pytest.raises(ValueError, match="`kind`"):
        read_icd_codes(fx.mimic_dir, "diagnoses")


def test_codes_stay_strings_leading_zeros_and_shared_digits(tmp_path):
    header = ",".join(f'"{n}"' for n, _ in SCHEMAS["DIAGNOSES_ICD"])
    (tmp_path / "DIAGNOSES_ICD.csv").write_text(f'{header}\n1,7,100,1,"4019"\n2,7,100,2,"0389"\n3,7,100,3,"V053"\n')
    (tmp_path / "PROCEDURES_ICD.csv").write_text(f'{header}\n1,7,100,1,"4019"\n2,7,100,2,"0040"\n3,7,100,3,"117"\n'
                                                 f'4,7,100,4,"0117"\n')
    df = read_icd_codes(tmp_path)
    assert list(zip(df["KIND"], df["ICD9_CODE"])) == [
        ("diagnosis", "401.9"), ("diagnosis", "038.9"), ("diagnosis", "V05.3"),
        ("procedure", "40.19"), ("procedure", "00.40"), ("procedure", "11.7"), ("procedure", "01.17"),
    ]


@pytest.mark.parametrize(("case", "compress"), [("lower", False), ("upper", True), ("lower", True)])
def test_header_case_and_gzip_read_the_same(tmp_path, fx, case, compress):
    other = write_mimic_fixture(tmp_path, num_admissions=30, seed=1, header_case=case, compress=compress)
    a = read_icd_codes(fx.mimic_dir)
    b = read_icd_codes(other.mimic_dir)
    pd.testing.assert_frame_equal(a, b)
    suffix = ".csv.gz" if compress else ".csv"
    assert find_table(other.mimic_dir, "DIAGNOSES_ICD").name == f"DIAGNOSES_ICD{suffix}"


def test_top_codes_and_code_lists_match_a_plain_count(fx):
    df = read_icd_codes(fx.mimic_dir)
    hadm = sorted({c[0] for c in fx.codes})
    counts = Counter(d for _, _, d in {(h, k, d) for h, k, _, d in fx.codes})
    # the same code of one admission counts once
    per_admission = Counter(d for h, d in {(h, d) for h, _, _, d in fx.codes})
    ranked = sorted(per_admission.items(), key=lambda kv: (-kv[1], kv[0]))
    assert top_codes(df, 7, hadm) == [c for c, _ in ranked[:7]]
    assert sum(counts.values()) >= sum(per_admission.values())
    labels = [c for c, _ in ranked[:7]]
    ptr, index = code_lists(df, hadm, labels)
    for row, h in enumerate(hadm):
        expected = sorted({labels.index(d) for hh, _, _, d in fx.codes if hh == h and d in labels})
        assert index[ptr[row]:ptr[row + 1]].tolist() == expected
    with pytest.raises(ValueError, match="top 1000"):
        top_codes(df, 1000, hadm)
    with pytest.raises(ValueError, match="duplicates"):
        code_lists(df, [hadm[0], hadm[0]], labels)


def test_code_descriptions_prefer_d_icd_then_the_file(fx):
    out = read_code_descriptions(fx.mimic_dir, fx.splits_dir / "ICD9_descriptions")
    for code, text in fx.descriptions.items():
        assert out[code] == text
    assert out["E849"].startswith("Invented")  # not in D_ICD_DIAGNOSES: from the file
    assert out["401.9"] == "Unspecified essential hypertension"  # D_ICD wins over the file's text
    only_file = read_code_descriptions(None, fx.splits_dir / "ICD9_descriptions")
    assert only_file["401.9"].endswith("(file)")
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_code_descriptions(None, fx.splits_dir / "nothere")


# --------------------------------------------------------------------- errors, reports
def test_missing_directory_and_table_name_what_was_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_table(tmp_path / "absent", "NOTEEVENTS")
    with pytest.raises(FileNotFoundError) as err:
        find_table(tmp_path, "NOTEEVENTS")
    message = str(err.value)
    assert "NOTEEVENTS.csv" in message and "NOTEEVENTS.csv.gz" in message and str(tmp_path.resolve()) in message


def test_header_without_a_required_column_names_it(tmp_path):
    (tmp_path / "DIAGNOSES_ICD.csv").write_text("ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM\n1,2,3,1\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) ICD9_CODE.*DIAGNOSES_ICD") as err:
        read_icd_codes(tmp_path, "diagnosis")
    assert "DIAGNOSES_ICD.csv" in str(err.value)


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def test_malformed_rows_are_counted_with_their_line_numbers(tmp_path):
    header = [n for n, _ in SCHEMAS["NOTEEVENTS"]]
    good = ["1", "10", "100", "2150-01-01", "", "", "Discharge summary", "Report", "", "", "line one\nline two"]
    rows = [
        good,                                                            # lines 2-3
        ["2", "10", "1x0", *good[3:]],                                   # lines 4-5: HADM_ID not an integer
        [*good[:10], "three\nline\nnote"],                               # lines 6-8
        ["4", "10", "100", "2150-13", *good[4:]],                        # lines 9-10: bad date
        [*good, "an extra field"],                                       # lines 11-12: 12 fields
        good,                                                            # lines 13-14
    ]
    write_rows(tmp_path / "NOTEEVENTS.csv", header, rows)
    columns = ["ROW_ID", "HADM_ID", "CHARTDATE", "TEXT"]
    with pytest.raises(ValueError) as err:
        read_table(tmp_path, "NOTEEVENTS", columns)
    message = str(err.value)
    assert "3 malformed row(s) out of 6" in message
    assert "line 4: HADM_ID='1x0'" in message and "line 9: CHARTDATE" in message and "line 11: 12 fields" in message
    report = TableReport("")
    table = read_table(tmp_path, "NOTEEVENTS", columns, on_malformed="skip", report=report)
    assert table.num_rows == 3 and table.column("TEXT").to_pylist()[1] == "three\nline\nnote"
    assert report.malformed == 3 and [line for line, _ in report.malformed_lines] == [4, 9, 11]
    with pytest.raises(ValueError, match="on_malformed"):
        read_table(tmp_path, "NOTEEVENTS", columns, on_malformed="ignore")


def test_streaming_in_small_blocks_gives_the_same_table(fx):
    columns = [n for n, _ in SCHEMAS["NOTEEVENTS"]]
    whole = read_table(fx.mimic_dir, "NOTEEVENTS", columns)
    chunks = list(iter_table(fx.mimic_dir, "NOTEEVENTS", columns, block_size=1 << 16))
    assert len(chunks) > 1
    assert sum(c.num_rows for c in chunks) == whole.num_rows == len(fx.notes)
    texts = [t for c in chunks for t in c.column("TEXT").to_pylist()]
    assert texts == [n["TEXT"] for n in fx.notes]
    assert whole.column("HADM_ID").to_pylist() == [n["HADM_ID"] for n in fx.notes]


# ------------------------------------------------------------------ splits, admissions
def test_caml_splits(fx, tmp_path):
    for setting in ("full", "50"):
        got = read_caml_splits(fx.splits_dir, setting)
        for split in ("train", "dev", "test"):
            assert got[split].tolist() == fx.splits[f"{split}_{setting}"]
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    for f in fx.splits_dir.glob("*_hadm_ids.csv"):
        shutil.copy(f, prefixed / f"mimic3_{f.name}")
    assert read_caml_splits(prefixed, "50")["train"].tolist() == fx.splits["train_50"]
    with pytest.raises(FileNotFoundError, match="train_full_hadm_ids.csv"):
        read_caml_splits(tmp_path, "full")
    (prefixed / "mimic3_dev_50_hadm_ids.csv").write_text(f"{fx.splits['train_50'][0]}\nabc\n")
    with pytest.raises(ValueError, match="line 2: 'abc'"):
        read_caml_splits(prefixed, "50")
    (prefixed / "mimic3_dev_50_hadm_ids.csv").write_text(f"{fx.splits['train_50'][0]}\n")
    with pytest.raises(ValueError, match="both train and dev"):
        read_caml_splits(prefixed, "50")


def test_admissions(fx):
    df = read_admissions(fx.mimic_dir)
    assert df.index.tolist() == [a["HADM_ID"] for a in fx.admissions]
    first = fx.admissions[0]
    assert df.loc[first["HADM_ID"], "ADMITTIME"] == pd.Timestamp(first["ADMITTIME"])
    assert df["HOSPITAL_EXPIRE_FLAG"].tolist() == [a["HOSPITAL_EXPIRE_FLAG"] for a in fx.admissions]
    assert df["DEATHTIME"].isna().sum() == sum(a["DEATHTIME"] is None for a in fx.admissions)


def test_gzip_table_with_embedded_newlines(tmp_path, fx):
    src = find_table(fx.mimic_dir, "NOTEEVENTS")
    with open(src, "rb") as raw, gzip.open(tmp_path / "NOTEEVENTS.csv.gz", "wb") as out:
        shutil.copyfileobj(raw, out)
    texts = read_table(tmp_path, "NOTEEVENTS", ["TEXT"]).column("TEXT").to_pylist()
    assert texts == [n["TEXT"] for n in fx.notes]


# --------------------------------------------------------------------- the real schema
@pytest.mark.skipif(not DEMO.is_dir(), reason="the MIMIC-III demo is not present")
def test_schemas_match_the_demo_headers():
    checked = 0
    for table, columns in SCHEMAS.items():
        try:
            path = find_table(DEMO, table)
        except FileNotFoundError:
            continue  # CHARTEVENTS and LABEVENTS are not in the demo
        with open(path, newline="") as handle:
            header = next(csv.reader(handle))
        assert [h.upper() for h in header] == [name for name, _ in columns], table
        checked += 1
    assert checked >= 7


@pytest.mark.skipif(not DEMO.is_dir(), reason="the MIMIC-III demo is not present")
def test_demo_codes_and_admissions():
    df = read_icd_codes(DEMO)
    assert (df["KIND"] == "diagnosis").sum() == 1761 and (df["KIND"] == "procedure").sum() == 506
    assert df["ICD9_CODE"].str.fullmatch(r"(\d{3}|V\d{2}|E\d{3})(\.\d{1,2})?|\d{2}(\.\d{1,2})?").all()
    admissions = read_admissions(DEMO)
    assert len(admissions) == 129 and admissions.index.is_unique
    assert np.isin(df["HADM_ID"].unique(), admissions.index).all()


def test_available_lists_table_and_split_folders(fx):
    from gattn.datasets.mimic import available

    rows = {name: (present, detail) for name, present, detail in available(fx.mimic_dir.parent)}
    assert rows["mimic"][0] and "NOTEEVENTS" in rows["mimic"][1] and "missing" not in rows["mimic"][1]
    assert rows["splits"][0] and "6 CAML split files" in rows["splits"][1]
    assert available(fx.mimic_dir.parent / "absent") == []
