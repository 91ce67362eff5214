"""Criteo loader: rows per second and peak memory against ``pandas.read_csv`` of the same file.

The input is SYNTHETIC (no Criteo file is big enough here): ``--rows`` rows (5,000,000 by
default, about 1.2 GB) in the original Kaggle format (tab separated, no header, label,
I1-I13, C1-C26), generated with a seed and value distributions modelled on the Kaggle
``train.txt``: click rate 0.25; per-column missing rates of the Kaggle file (I1 45%, I12 77%,
C22 76%, ...); integers log-normal around per-column medians (I5 in the thousands, I12
mostly 0), ``I2`` sometimes -1 to -3; categoricals Zipf-distributed over the Kaggle
cardinalities (C3 10M values, C9 3 values, ...) hashed to 8 hex digits. Five malformed lines
are inserted (a truncated row, a row with an extra field, ``abc`` and ``1.5`` in integer
columns, a label 2), which our loader reports and skips.

Methods, each in its own process (so each peak RSS is its own), medians over ``--repeats``:

* ``gattn parse+cache``: :func:`gattn.datasets.criteo.load_criteo` on an empty cache: parse,
  count, map, write the parquet cache, and load the three splits as tensors;
* ``gattn parse+cache, streamed``: the same on an empty cache, but iterating every split in
  batches of 65,536 rows (:meth:`CriteoProcessed.iter_batches`) instead of holding all
  tensors: the memory of the streaming passes themselves;
* ``gattn from cache``: the ``load_criteo`` call again (the cache is hit: parquet -> tensors);
* ``gattn from cache, streamed``: the cache hit, iterating the splits in batches;
* ``pandas.read_csv``: ``pd.read_csv(path, sep="\\t", header=None, names=..., on_bad_lines="warn")``
  (parsing only: no vocabularies, ids, split or cache; it reads short lines as rows with
  missing values and keeps ``abc`` as text in an otherwise integer column).

Rows/s is valid rows over wall time; peak RSS is the process's maximum resident set size
(``getrusage``), shown in full and above the RSS after the imports (torch costs about 270
MB, pandas about 120 MB). Ratios: speed = our rows/s over pandas', memory = pandas' peak over
ours (above imports); above 1 is better for us. A PNG chart of the ratios is written.

    python benchmarks/criteo_loader.py                      # 5M rows, 3 repeats
    python benchmarks/criteo_loader.py --rows 500000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import fmt, peak_rss_mb, print_table, rss_mb, run_child, write_ratio_chart

COLUMNS = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
# Kaggle train.txt: missing rate and a typical value (median of the present values) per integer column
INT_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22]
INT_MEDIAN = [1, 3, 7, 6, 2800, 30, 3, 8, 40, 1, 1, 0.3, 4]
# Kaggle train.txt: distinct values and missing rate per categorical column
CAT_CARDINALITY = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                   5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
CAT_MISSING = [0, 0, 0.03, 0.03, 0, 0.12, 0, 0, 0, 0, 0, 0.03, 0, 0, 0, 0.03, 0, 0, 0.44, 0.44, 0.03, 0.76, 0, 0.03,
               0.44, 0.44]
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# the two parse+cache methods start from an empty cache, the two after them hit the cache they leave
METHODS = ("gattn parse+cache, streamed", "gattn parse+cache", "gattn from cache", "gattn from cache, streamed",
           "pandas.read_csv")


def _hex_strings(values: np.ndarray) -> pa.Array:
    """uint32 -> 8 lower-case hex digits, vectorised (a string array over one buffer)."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    digits = HEX[(values[:, None] >> shifts) & 15]
    offsets = np.arange(0, 8 * len(values) + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(digits.tobytes()))


def _chunk(rng: np.random.Generator, n: int) -> pa.Table:
    arrays = [pa.array((rng.random(n) < 0.25).astype(np.int8))]
    for j in range(13):
        values = np.floor(INT_MEDIAN[j] * rng.lognormal(0.0, 1.4, n)).astype(np.int64)
        if j == 1:  # I2 has a few negative values, -1 to -3
            negative = rng.random(n) < 0.05
            values[negative] = -rng.integers(1, 4, size=int(negative.sum()))
        arrays.append(pa.array(values, mask=rng.random(n) < INT_MISSING[j]))
    for j in range(26):
        rank = (rng.zipf(1.15, n) - 1) % CAT_CARDINALITY[j]
        hashed = ((rank.astype(np.uint64) * np.uint64(2654435761) + np.uint64(j * 7919)) % np.uint64(2**32))
        text = _hex_strings(hashed.astype(np.uint32))
        arrays.append(pc.if_else(pa.array(rng.random(n) < CAT_MISSING[j]), pa.scalar(None, pa.string()), text))
    return pa.Table.from_arrays(arrays, names=COLUMNS)


def malformed_lines() -> list[bytes]:
    """The lines inserted into the generated file (one between chunks)."""
    good = ["0", *["1"] * 13, *["0a1b2c3d"] * 26]
    extra = "\t".join(good + ["extra"])
    abc = "\t".join(good[:5] + ["abc"] + good[6:])
    frac = "\t".join(good[:3] + ["1.5"] + good[4:])
    label = "\t".join(["2"] + good[1:])
    return [("\t".join(good[:20])).encode(), extra.encode(), abc.encode(), frac.encode(), label.encode()]


def generate(path: str | os.PathLike, rows: int, seed: int = 0, chunk: int = 250_000) -> int:
    """Write `rows` synthetic valid rows plus the malformed lines; returns the valid rows."""
    rng = np.random.default_rng(seed)
    bad = malformed_lines()
    chunks = max(1, -(-rows // chunk))
    slot = np.linspace(0, chunks - 1, len(bad)).round().astype(int)  # the chunk each bad line follows
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    written = 0
    with open(path, "wb") as sink:
        for k in range(chunks):
            n = min(chunk, rows - written)
            pa_csv.write_csv(_chunk(rng, n), sink, write_options=options)
            written += n
            for line in (b for b, s in zip(bad, slot) if s == k):
                sink.write(line + b"\n")
    return written


# -------------------------------------------------------------------------------- children
def measure(spec: dict) -> dict:
    """One method on one file, in this process: wall time, rows, peak RSS."""
    method, path = spec["method"], spec["path"]
    if method == "pandas.read_csv":
        import pandas as pd

        base = rss_mb()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pd.read_csv(path, sep="\t", header=None, names=COLUMNS, on_bad_lines="warn")
        elapsed = time.perf_counter() - start
        rows = len(frame)
    else:
        from gattn.datasets.criteo import SPLITS, load_criteo, prepare_criteo

        base = rss_mb()
        fresh = method.startswith("gattn parse+cache")
        if fresh:
            shutil.rmtree(spec["cache_dir"], ignore_errors=True)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the malformed-line warning (its count is returned)
            if method.endswith("streamed"):
                processed = prepare_criteo(path, cache_dir=spec["cache_dir"])
                rows = 0
                for split in SPLITS:
                    for batch in processed.iter_batches(split, 65536):
                        rows += batch["label"].numel()
                info = processed.info
            else:
                data = load_criteo(path, cache_dir=spec["cache_dir"])
                rows = len(data.train) + len(data.val) + len(data.test)
                info = data.info
        elapsed = time.perf_counter() - start
        expected = "parsed" if fresh else "hit"
        if info["cache"] != expected:
            raise RuntimeError(f"{method}: cache outcome {info['cache']!r}, expected {expected!r}")
    return {"seconds": elapsed, "rows": rows, "peak_mb": peak_rss_mb(), "base_mb": base,
            "malformed": info["malformed"]["count"] if method != "pandas.read_csv" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the file and caches go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and caches")
    parser.add_argument("--chart", default="runs/criteo_loader.png")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="criteo-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "criteo_synthetic.txt"
    try:
        start = time.perf_counter()
        valid = generate(path, args.rows, args.seed)
        size = path.stat().st_size
        print(f"synthetic Criteo-format file: {valid:,} valid rows + {len(malformed_lines())} malformed lines, "
              f"{size / 2**30:.2f} GiB, generated in {time.perf_counter() - start:.0f} s ({path})")
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:
                result = run_child("benchmarks.criteo_loader",
                                   {"method": method, "path": str(path), "cache_dir": str(workdir / "cache")},
                                   timeout=3600)
                if "error" in result:
                    raise RuntimeError(f"{method}: {result['error']}")
                runs[method].append(result)
        summary = {}
        for method, results in runs.items():
            seconds = statistics.median(r["seconds"] for r in results)
            peak = statistics.median(r["peak_mb"] for r in results)
            base = statistics.median(r["base_mb"] for r in results)
            rows = results[0]["rows"]
            summary[method] = {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds, "peak_mb": peak,
                               "above_mb": peak - base, "malformed": results[0]["malformed"]}
        peer = summary["pandas.read_csv"]
        table, cases, speed, memory = [], [], [], []
        for method, s in summary.items():
            ours = method != "pandas.read_csv"
            speed_ratio = s["rows_per_s"] / peer["rows_per_s"]
            memory_ratio = peer["above_mb"] / max(s["above_mb"], 1.0)
            table.append([method, f"{s['rows']:,}", fmt(s["seconds"], 1), f"{s['rows_per_s']:,.0f}",
                          fmt(s["peak_mb"], 0), fmt(s["above_mb"], 0), "-" if s["malformed"] is None else
                          s["malformed"], f"{speed_ratio:.2f}x" if ours else "1",
                          f"{memory_ratio:.2f}x" if ours else "1"])
            if ours:
                cases.append(method)
                speed.append(speed_ratio)
                memory.append(memory_ratio)
        print_table(
            f"Criteo loader vs pandas.read_csv: {valid:,} synthetic rows, {size / 2**30:.2f} GiB, median of "
            f"{args.repeats}, each method in its own process",
            ["method", "rows", "seconds", "rows/s", "peak RSS MB", "above imports MB", "malformed reported",
             "speed vs pandas", "memory vs pandas"],
            table,
        )
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        written = write_ratio_chart(args.chart, f"Criteo loader vs pandas.read_csv ({valid:,} synthetic rows)", cases,
                                    {"rows/s vs pandas": speed, "memory vs pandas (pandas / ours)": memory})
        print(f"chart: {written}")
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": valid, "bytes": size, "summary": summary, "runs": runs},
                                                  indent=1))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not args.keep:
            path.unlink(missing_ok=True)
            shutil.rmtree(workdir / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
