"""MIMIC-III notes loader: throughput and peak memory against a plain ``pandas.read_csv``.

The input is a synthetic ``NOTEEVENTS.csv`` in the MIMIC-III schema, generated here (seeded)
by :func:`gattn.datasets.mimic.write_noteevents`: upper-case quoted header, quoted multi-line
note text, the category mix of MIMIC-III v1.4 (2.9 % discharge summaries) and invented
log-normal note lengths (about 1.9 KB a note on average, as the real 3.9 GB / 2.08 M notes).
Nothing in it comes from MIMIC. It is written to a temporary folder (``--tmp``, default
``/tmp``) and deleted at the end, whatever happens (``--keep`` keeps it).

Methods, each run in a fresh process (``--repeats`` times, interleaved; medians reported), on
the same file, after one read of the file to warm the page cache for all of them:

* ``gattn first run``: :func:`gattn.datasets.mimic.load_notes` with an empty cache: stream the
  CSV in 4 MiB blocks, keep the discharge summaries, clean and tokenise them, join them per
  admission, write the parquet cache;
* ``gattn cached run``: the same call once the cache exists, plus reading the whole result
  (every admission's cleaned text) into memory;
* ``pandas.read_csv`` (the peer): ``pd.read_csv(path)`` of the whole file, default options,
  which only parses (no filter, no cleaning);
* ``pandas + re`` (a like-for-like reference): what CAML's preprocessing does with pandas, giving
  the same result as ``load_notes``: ``pd.read_csv`` of the whole file, the same filters, the
  cleaning rule applied note by note with Python's ``re`` (:func:`gattn.datasets.mimic.clean_text`),
  the notes joined per admission in the same order (:func:`pandas_reference`).

Throughput is the file's size (MB) and its number of notes over the wall time. Memory is the
process's peak RSS (``VmHWM``) above its RSS once everything is imported (``base MB``: pandas,
pyarrow, torch and gattn, the same for every method; numba's kernel is loaded before the clock
starts), i.e. the memory the reading itself takes; the ratios use that. pyarrow parses with
all cores (``cores`` in the header line); pandas' parser uses one. The file is generated in a
child process too, so no process inherits another's memory.

    python benchmarks/mimic_loader.py                    # ~2.5 GB file, 3 repeats
    python benchmarks/mimic_loader.py --size-gb 0.3 --repeats 1
    python benchmarks/mimic_loader.py --quick            # ~40 MB, one repeat (a smoke run)
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

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import fmt, print_table, rss_mb, run_child, write_ratio_chart

METHODS = ("gattn first run", "gattn cached run", "pandas.read_csv", "pandas + re")
PEER = "pandas.read_csv"
#: average bytes per note of the default category mix (measured on the generator's output)
_BYTES_PER_NOTE = 1_900


def peak_rss_mb() -> float:
    """Peak RSS of this process since it started (VmHWM: unlike getrusage's ru_maxrss, not
    inherited from the parent across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def pandas_reference(directory: str):
    """Discharge summaries cleaned and joined per admission with pandas and ``re``: the same
    result as ``load_notes(directory)`` (a Series HADM_ID -> cleaned text, and notes per HADM_ID)."""
    import pandas as pd

    from gattn.datasets.mimic import clean_text

    frame = pd.read_csv(os.path.join(directory, "NOTEEVENTS.csv"),
                        usecols=["ROW_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "DESCRIPTION", "ISERROR", "TEXT"],
                        dtype={"ISERROR": str, "DESCRIPTION": str, "CHARTDATE": str})
    keep = (frame["CATEGORY"] == "Discharge summary") & frame["HADM_ID"].notna()
    keep &= frame["ISERROR"].fillna("").str.strip() != "1"
    notes = frame[keep].copy()
    del frame
    notes["ADDENDUM"] = notes["DESCRIPTION"].fillna("").str.strip().str.lower() == "addendum"
    notes = notes.sort_values(["HADM_ID", "ADDENDUM", "CHARTDATE", "ROW_ID"], kind="stable")
    notes["TEXT"] = notes["TEXT"].fillna("").map(clean_text)
    grouped = notes.groupby(notes["HADM_ID"].astype("int64"), sort=True)["TEXT"]
    return grouped.agg(lambda texts: " ".join(t for t in texts if t)), grouped.size()


def measure(spec: dict) -> dict:
    """Run one method once in this process: wall time, peak RSS above the imports, what it read."""
    import pandas as pd

    from gattn.datasets.mimic import clean_texts, load_notes, write_noteevents

    if spec["method"] == "generate":
        return write_noteevents(os.path.join(spec["dir"], "NOTEEVENTS.csv"), spec["notes"], seed=spec["seed"])
    clean_texts(["load the compiled kernel before the clock starts"])
    base = rss_mb()
    start = time.perf_counter()
    if spec["method"] == "pandas.read_csv":
        frame = pd.read_csv(os.path.join(spec["dir"], "NOTEEVENTS.csv"))
        out = {"rows": len(frame)}
    elif spec["method"] == "pandas + re":
        texts, _ = pandas_reference(spec["dir"])
        out = {"rows": None, "admissions": len(texts)}
    elif spec["method"] == "gattn first run":
        notes = load_notes(spec["dir"], cache_dir=spec["cache"], refresh=True)
        out = {"rows": notes.report.rows, "admissions": len(notes), "from_cache": notes.from_cache}
    elif spec["method"] == "gattn cached run":
        notes = load_notes(spec["dir"], cache_dir=spec["cache"])
        table = notes.read()
        out = {"rows": notes.report.rows, "admissions": table.num_rows, "from_cache": notes.from_cache}
    else:
        raise ValueError(f"unknown method {spec['method']!r}")
    # the kernel updates VmHWM lazily (on unmapping, not when a heap is trimmed with
    # MADV_DONTNEED), so it can read below an RSS seen earlier in the run: the peak is at least that
    out.update(s=time.perf_counter() - start, peak_mb=max(peak_rss_mb(), base), base_mb=base)
    out["above_mb"] = out["peak_mb"] - base
    return out


def _warm_page_cache(path: str) -> None:
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.5, help="size of the generated NOTEEVENTS.csv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where the file is written (then deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and cache")
    parser.add_argument("--quick", action="store_true", help="~40 MB, one repeat")
    parser.add_argument("--chart", default="runs/mimic_loader.png", help="PNG of the ratios")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    if args.quick:
        args.size_gb, args.repeats = 0.04, 1
    work = tempfile.mkdtemp(prefix="gattn-mimic-bench-", dir=args.tmp)
    try:
        path = os.path.join(work, "NOTEEVENTS.csv")
        num_notes = int(args.size_gb * 1e9 / _BYTES_PER_NOTE)
        start = time.perf_counter()
        stats = run_child("benchmarks.mimic_loader", {"method": "generate", "dir": work, "notes": num_notes,
                                                       "seed": args.seed}, timeout=7200)
        if "error" in stats:
            raise RuntimeError(f"generating the file failed: {stats['error']}")
        mb = stats["bytes"] / 1e6
        print(f"synthetic NOTEEVENTS.csv: {mb:,.0f} MB, {stats['notes']:,} notes "
              f"({stats['discharge_notes']:,} discharge summaries of {stats['discharge_admissions']:,} admissions), "
              f"written in {time.perf_counter() - start:.0f} s; cores {os.cpu_count()}; load average "
              f"{os.getloadavg()[0]:.1f}")
        _warm_page_cache(path)
        cache = os.path.join(work, "cache")
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:  # the first run fills the cache the cached run reads
                result = run_child("benchmarks.mimic_loader", {"method": method, "dir": work, "cache": cache},
                                   timeout=7200)
                runs[method].append(result)
        medians = {}
        for method, results in runs.items():
            ok = [r for r in results if "error" not in r]
            if not ok:
                medians[method] = {"error": " ".join(results[0]["error"])}
                continue
            medians[method] = {k: statistics.median(r[k] for r in ok) for k in ("s", "peak_mb", "base_mb", "above_mb")}
            medians[method]["rows"] = ok[0]["rows"]
        peer, same = medians[PEER], medians["pandas + re"]
        rows, cases, speed, memory = [], [], [], []
        for method in METHODS:
            res = medians[method]
            if "error" in res:
                rows.append([method, *["-"] * 9, res["error"]])
                continue
            ratio_s = peer["s"] / res["s"] if "s" in peer else None
            ratio_m = peer["above_mb"] / res["above_mb"] if "above_mb" in peer else None
            ratio_same = same["s"] / res["s"] if "s" in same else None
            rows.append([method, fmt(res["s"], 1), fmt(mb / res["s"], 0), f"{stats['notes'] / res['s']:,.0f}",
                         fmt(res["above_mb"], 0), fmt(res["peak_mb"], 0), fmt(res["base_mb"], 0), fmt(ratio_s, 2),
                         fmt(ratio_m, 2), fmt(ratio_same, 2), ""])
            if method != PEER:
                cases.append(method)
                speed.append(ratio_s)
                memory.append(ratio_m)
        print_table(
            f"NOTEEVENTS.csv {mb:,.0f} MB, {stats['notes']:,} notes: median of {args.repeats}, each in a fresh process",
            ["method", "time s", "MB/s", "notes/s", "memory MB", "peak RSS MB", "base MB", "speed vs pandas",
             "memory vs pandas", "speed vs pandas + re", "note"],
            rows,
        )
        if cases and args.chart:
            os.makedirs(os.path.dirname(args.chart) or ".", exist_ok=True)
            write_ratio_chart(args.chart, f"MIMIC-III NOTEEVENTS loader vs pandas.read_csv ({mb:,.0f} MB synthetic)",
                              cases, {"speed vs pandas.read_csv": speed, "memory vs pandas.read_csv": memory})
            print(f"chart: {args.chart}")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"file_mb": mb, **stats, "runs": runs, "medians": medians}, out, indent=1)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
