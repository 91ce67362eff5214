"""Hourly time series from ``CHARTEVENTS`` / ``LABEVENTS``, with masks for missing hours.

:func:`load_time_series` streams each table block by block (``CHARTEVENTS`` is about 33 GB)
and keeps only the rows of the selected ``ITEMID`` s, right after parsing. A row then counts
for hour ``h = floor((CHARTTIME - ADMITTIME) / 1 hour)`` of its admission (``ADMITTIME`` from
``ADMISSIONS``) when ``0 <= h < max_hours``. Several ITEMIDs can form one feature (the same
measurement in CareVue and MetaVision, e.g. heart rate 211 and 220045); a feature's value in an
hour is the mean of that hour's values (``VALUENUM``). Left out, and counted per reason in the
report: other ITEMIDs, rows without ``HADM_ID``, ``CHARTTIME`` or ``VALUENUM`` (text-only
values), admissions not in ``ADMISSIONS`` (or not requested), rows flagged ``ERROR = 1``
(CHARTEVENTS, when ``drop_error_rows``), hours before admission or past ``max_hours``.

The hourly sums and counts are cached as parquet (:mod:`.cache`); :class:`TimeSeries` holds
``values [B, T, F]`` (float32, 0 where nothing was measured) and ``mask [B, T, F]`` (True
where a value was measured), ``T = max_hours``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from .cache import CacheEntry, file_identity
from .splits import read_admissions
from .tables import TableReport, find_table, iter_table

__all__ = ["DEFAULT_FEATURES", "SeriesFeature", "TimeSeries", "load_time_series"]


@dataclass(frozen=True)
class SeriesFeature:
    """One time-series feature: the ``itemids`` of ``table`` whose values it averages.

    Attributes:
        name (str): the feature's name.
        table (str): the MIMIC-III table of its values (``CHARTEVENTS``, ``LABEVENTS``).
        itemids (tuple[int, ...]): the ``ITEMID`` values averaged into it.
    """

    name: str
    table: str
    itemids: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.table not in ("CHARTEVENTS", "LABEVENTS"):
            raise ValueError(f"feature {self.name!r}: `table` must be 'CHARTEVENTS' or 'LABEVENTS', got {self.table!r}")
        if not self.itemids or not all(isinstance(i, int) for i in self.itemids):
            raise ValueError(f"feature {self.name!r}: `itemids` must be a non-empty tuple of ints")


#: Vital signs (CareVue and MetaVision ITEMIDs of the same measurement together) and common
#: labs; the ITEMIDs and their labels were checked against the demo's D_ITEMS / D_LABITEMS.
#: Temperatures stay in their own unit (two features) rather than being converted.
DEFAULT_FEATURES: tuple[SeriesFeature, ...] = (
    SeriesFeature("heart_rate", "CHARTEVENTS", (211, 220045)),
    SeriesFeature("systolic_bp", "CHARTEVENTS", (51, 442, 455, 6701, 220179, 220050)),
    SeriesFeature("diastolic_bp", "CHARTEVENTS", (8368, 8440, 8441, 8555, 220180, 220051)),
    SeriesFeature("mean_bp", "CHARTEVENTS", (52, 443, 456, 6702, 220052, 220181, 225312)),
    SeriesFeature("respiratory_rate", "CHARTEVENTS", (615, 618, 220210, 224690)),
    SeriesFeature("spo2", "CHARTEVENTS", (646, 220277)),
    SeriesFeature("temperature_c", "CHARTEVENTS", (676, 223762)),
    SeriesFeature("temperature_f", "CHARTEVENTS", (678, 223761)),
    SeriesFeature("glucose_chart", "CHARTEVENTS", (807, 811, 1529, 220621, 225664, 226537)),
    SeriesFeature("creatinine", "LABEVENTS", (50912,)),
    SeriesFeature("potassium", "LABEVENTS", (50971,)),
    SeriesFeature("sodium", "LABEVENTS", (50983,)),
    SeriesFeature("chloride", "LABEVENTS", (50902,)),
    SeriesFeature("bicarbonate", "LABEVENTS", (50882,)),
    SeriesFeature("urea_nitrogen", "LABEVENTS", (51006,)),
    SeriesFeature("glucose_lab", "LABEVENTS", (50931,)),
    SeriesFeature("hematocrit", "LABEVENTS", (51221,)),
    SeriesFeature("hemoglobin", "LABEVENTS", (51222,)),
    SeriesFeature("platelets", "LABEVENTS", (51265,)),
    SeriesFeature("white_blood_cells", "LABEVENTS", (51301,)),
    SeriesFeature("lactate", "LABEVENTS", (50813,)),
    SeriesFeature("ph", "LABEVENTS", (50820,)),
)

_LONG_SCHEMA = pa.schema([("HADM_ID", pa.int64()), ("HOUR", pa.int32()), ("FEATURE", pa.int32()),
                          ("SUM", pa.float64()), ("COUNT", pa.int64())])
_KEYS = ["HADM_ID", "HOUR", "FEATURE"]


@dataclass
class TimeSeries:
    """Hourly series of admissions.

    Attributes:
        hadm_ids (Tensor): [B] int64, the admissions, in the order asked for.
        values (Tensor): [B, T, F] float32, the hour's mean value; 0 where ``mask`` is False.
        mask (Tensor): [B, T, F] bool, True where the feature was measured in that hour.
        features (list[str]): the F feature names.
        reports (dict[str, TableReport], optional): ``{"CHARTEVENTS": TableReport, "LABEVENTS":
            ...}`` for the tables read.
        from_cache (bool, optional): whether the hourly table came from the cache. (default: ``False``)
    """

    hadm_ids: Tensor
    values: Tensor
    mask: Tensor
    features: list[str]
    reports: dict[str, TableReport] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def max_hours(self) -> int:
        return self.values.size(1)


def _aggregate(table: pa.Table) -> pa.Table:
    grouped = table.group_by(_KEYS).aggregate([("SUM", "sum"), ("COUNT", "sum")])
    return grouped.rename_columns({"SUM_sum": "SUM", "COUNT_sum": "COUNT"}).select(_LONG_SCHEMA.names).cast(
        _LONG_SCHEMA)


def _hourly(mimic_dir, table: str, features: Sequence[SeriesFeature], admit_ids: pa.Array, admit_times: pa.Array,
            max_hours: int, drop_error_rows: bool, on_malformed: str, block_size: int, report: TableReport) -> pa.Table:
    item_to_feature = {item: n for n, f in enumerate(features) if f.table == table for item in f.itemids}
    items = pa.array(sorted(item_to_feature), type=pa.int64())
    feature_of = pa.array([item_to_feature[i] for i in sorted(item_to_feature)], type=pa.int32())
    columns = ["HADM_ID", "ITEMID", "CHARTTIME", "VALUENUM"] + (["ERROR"] if table == "CHARTEVENTS" else [])
    parts: list[pa.Table] = []
    for batch in iter_table(mimic_dir, table, columns, optional=["ERROR"], on_malformed=on_malformed,
                            block_size=block_size, report=report):
        keep = pc.fill_null(pc.is_in(batch.column("ITEMID"), value_set=items), False)
        report.skip("other ITEMID", batch.num_rows - int(pc.sum(keep).as_py() or 0))
        batch = batch.filter(keep)
        checks = [("no HADM_ID", pc.is_null(batch.column("HADM_ID"))),
                  ("no CHARTTIME", pc.is_null(batch.column("CHARTTIME"))),
                  ("no VALUENUM", pc.is_null(batch.column("VALUENUM")))]
        if drop_error_rows and "ERROR" in batch.column_names:
            checks.append(("ERROR = 1", pc.fill_null(pc.equal(batch.column("ERROR"), 1), False)))
        drop = pa.array(np.zeros(batch.num_rows, dtype=bool))
        for reason, mask in checks:
            fresh = pc.and_(mask, pc.invert(drop))
            report.skip(reason, int(pc.sum(fresh).as_py() or 0))
            drop = pc.or_(drop, mask)
        batch = batch.filter(pc.invert(drop))
        position = pc.index_in(batch.column("HADM_ID"), value_set=admit_ids)
        unknown = pc.is_null(position)
        report.skip("HADM_ID not in ADMISSIONS or not requested", int(pc.sum(unknown).as_py() or 0))
        batch, position = batch.filter(pc.invert(unknown)), position.filter(pc.invert(unknown))
        if batch.num_rows == 0:
            continue
        seconds = pc.subtract(pc.cast(batch.column("CHARTTIME"), pa.int64()),
                              pc.cast(admit_times.take(position), pa.int64()))
        hour = np.floor_divide(np.asarray(seconds), 3600)
        before, after = hour < 0, hour >= max_hours
        report.skip("before admission", int(before.sum()))
        report.skip(f"{max_hours} hours or more after admission", int(after.sum()))
        inside = ~(before | after)
        if not inside.any():
            continue
        batch = batch.filter(pa.array(inside))
        report.kept += batch.num_rows
        feature = pc.index_in(batch.column("ITEMID"), value_set=items)
        parts.append(_aggregate(pa.table({
            "HADM_ID": batch.column("HADM_ID"), "HOUR": pa.array(hour[inside].astype(np.int32)),
            "FEATURE": feature_of.take(feature), "SUM": pc.cast(batch.column("VALUENUM"), pa.float64()),
            "COUNT": pa.array(np.ones(batch.num_rows, dtype=np.int64)),
        })))
        if len(parts) > 64:  # keep the partial aggregates small
            parts = [_aggregate(pa.concat_tables(parts))]
    if not parts:
        return _LONG_SCHEMA.empty_table()
    return _aggregate(pa.concat_tables(parts))


def load_time_series(
    mimic_dir: str | os.PathLike,
    hadm_ids: Sequence[int] | np.ndarray | None = None,
    *,
    features: Sequence[SeriesFeature] = DEFAULT_FEATURES,
    max_hours: int = 48,
    drop_error_rows: bool = True,
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
    on_malformed: str = "raise",
    block_size: int = 4 << 20,
) -> TimeSeries:
    """Hourly series of ``features`` over the first ``max_hours`` of each admission (module
    docstring).

    Args:
        mimic_dir (str or os.PathLike): the MIMIC-III directory (``ADMISSIONS`` and the tables the features name).
        hadm_ids (Sequence[int] or np.ndarray, optional): the admissions, in the order of the
            result's rows (default: every admission of ``ADMISSIONS``, ascending). An admission with
            no measurement has an all-False mask.
        features (Sequence[SeriesFeature], optional): the features (default
            :data:`DEFAULT_FEATURES`); the tables they name must exist.
        max_hours (int, optional): hours from admission kept (default 48).
        drop_error_rows (bool, optional): leave out CHARTEVENTS rows flagged ``ERROR = 1`` (default True).
        cache_dir (str or os.PathLike, optional): as in :func:`.notes.load_notes`. (default: ``None``)
        refresh (bool, optional): as in :func:`.notes.load_notes`. (default: ``False``)
        on_malformed (str, optional): as in :func:`.notes.load_notes`. (default: ``"raise"``)
        block_size (int, optional): as in :func:`.notes.load_notes`. (default: ``1 << 22``)
    """
    if not isinstance(max_hours, int) or max_hours < 1:
        raise ValueError(f"`max_hours` must be a positive int, got {max_hours!r}")
    features = list(features)
    if not features or not all(isinstance(f, SeriesFeature) for f in features):
        raise ValueError("`features` must be a non-empty sequence of SeriesFeature")
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    tables = sorted({f.table for f in features})
    sources = {t: find_table(mimic_dir, t) for t in ("ADMISSIONS", *tables)}
    admissions = read_admissions(mimic_dir, on_malformed=on_malformed)
    wanted = admissions.index.to_numpy(np.int64) if hadm_ids is None else np.asarray(hadm_ids, dtype=np.int64)
    if np.unique(wanted).size != wanted.size:
        raise ValueError("`hadm_ids` contains duplicates")
    unknown = np.setdiff1d(wanted, admissions.index.to_numpy(np.int64))
    if unknown.size:
        raise KeyError(f"{unknown.size} admission(s) are not in ADMISSIONS: {', '.join(map(str, unknown[:5]))}")
    options = {
        "sources": {t: file_identity(p) for t, p in sources.items()},
        "features": [(f.name, f.table, list(f.itemids)) for f in features], "max_hours": max_hours,
        "drop_error_rows": bool(drop_error_rows), "on_malformed": on_malformed,
        "hadm_ids": hashlib.sha256(np.sort(wanted).tobytes()).hexdigest(),
    }
    entry = CacheEntry(cache_dir, "series", options)
    if entry.exists(".parquet") and not refresh:
        long = pq.read_table(entry.file(".parquet"))
        reports = {t: TableReport.from_dict(r) for t, r in entry.read_meta()["reports"].items()}
        from_cache = True
    else:
        admit_ids = pa.array(np.sort(wanted))
        admit_times = pa.array(admissions.loc[np.sort(wanted), "ADMITTIME"].to_numpy().astype("datetime64[s]"))
        reports, parts = {}, []
        for table in tables:
            reports[table] = TableReport(str(sources[table]))
            parts.append(_hourly(mimic_dir, table, features, admit_ids, admit_times, max_hours, drop_error_rows,
                                 on_malformed, block_size, reports[table]))
        long = pa.concat_tables(parts)
        tmp = entry.temporary(".parquet")
        pq.write_table(long, tmp)
        entry.commit([".parquet"], {"reports": {t: r.to_dict() for t, r in reports.items()}})
        from_cache = False
    values = np.zeros((wanted.size, max_hours, len(features)), dtype=np.float32)
    mask = np.zeros(values.shape, dtype=bool)
    row = pc.fill_null(pc.index_in(long.column("HADM_ID"), value_set=pa.array(wanted)), -1).to_numpy()
    inside = row >= 0
    hour, feat = long.column("HOUR").to_numpy(), long.column("FEATURE").to_numpy()
    mean = long.column("SUM").to_numpy() / long.column("COUNT").to_numpy()
    values[row[inside], hour[inside], feat[inside]] = mean[inside]
    mask[row[inside], hour[inside], feat[inside]] = True
    return TimeSeries(torch.from_numpy(wanted.copy()), torch.from_numpy(values), torch.from_numpy(mask), names,
                      reports, from_cache)
