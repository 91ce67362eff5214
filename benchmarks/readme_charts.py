"""The charts the README and the documentation show, drawn from the README's own tables.

The figures of a benchmark are measured by its script (which writes its own chart beside its
table, ``--chart``); the README keeps the published figures in tables marked
``<!-- docs:bench:NAME:begin -->`` ... ``<!-- docs:bench:NAME:end -->``. This script reads
those tables and draws ``docs/charts/NAME.png`` from them with the benchmarks' chart helper,
so a chart always shows the table beside it: the ratios are computed from the table's
absolute figures (times, throughputs, peak memory) and stored in the PNG's metadata, and
``tests/test_docs.py`` fails when a committed chart no longer matches its table.

    python benchmarks/readme_charts.py            # redraw docs/charts/*.png (make charts)
    python benchmarks/readme_charts.py --check    # exit 1 if a chart is stale
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import read_chart_data, write_ratio_chart

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHARTS = ROOT / "docs" / "charts"


def marked_table(text: str, name: str) -> list[dict[str, str]]:
    """The first Markdown table between the README markers of ``name``, as rows of
    ``{column header: cell}``."""
    begin, end = f"<!-- docs:{name}:begin -->", f"<!-- docs:{name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"README.md has no section marked {begin} ... {end}")
    block = text[text.index(begin) + len(begin):text.index(end)]
    lines = []
    for line in block.splitlines():  # the first table only: its contiguous "|" lines
        if line.strip().startswith("|"):
            lines.append(line.strip())
        elif lines:
            break
    if len(lines) < 3:
        raise ValueError(f"the README section {name!r} holds no Markdown table")
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"README table {name!r}: row {line!r} has {len(cells)} cells, the header {len(header)}")
        rows.append(dict(zip(header, cells)))
    return rows


def numbers(cell: str) -> list[float]:
    """The numbers in a table cell, in order (thousands separators allowed: ``1,534``)."""
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?|\.\d+", cell)]


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


def edge_attention(text: str) -> tuple[list[str], dict[str, list[float | None]]]:
    """The section's first table: its current figures, one row per setting (graph, threads,
    batch, load) with the ratios to PyG already computed (``fwd x``, ``step x`` and the
    memory ratio of the whole process)."""
    rows = marked_table(text, "bench:edge-attention")
    setting = next(key for key in rows[0] if key.startswith("graph"))
    memory = next(key for key in rows[0] if key.startswith("memory x"))
    series: dict[str, list[float | None]] = {"speed vs PyG, forward": [], "speed vs PyG, training step": [],
                                             "memory vs PyG (whole process)": []}
    for row in rows:
        series["speed vs PyG, forward"].append(numbers(row["fwd x"])[0])
        series["speed vs PyG, training step"].append(numbers(row["step x"])[0])
        series["memory vs PyG (whole process)"].append(numbers(row[memory])[0])
    return [row[setting] for row in rows], series


def mil_torchmil(text: str) -> tuple[list[str], dict[str, list[float | None]]]:
    rows = marked_table(text, "bench:mil-torchmil")
    cases = [f"{r['data set']}, batch {r['batch']}" for r in rows]
    speed = [_ratio(numbers(r["ms/epoch torchmil"])[0], numbers(r["ms/epoch gattn"])[0]) for r in rows]
    return cases, {"training speed vs torchmil": speed}


def ctr_attention(text: str) -> tuple[list[str], dict[str, list[float | None]]]:
    rows = marked_table(text, "bench:ctr-attention")
    series: dict[str, list[float | None]] = {}
    for peer in ("DeepCTR-Torch", "FuxiCTR"):
        speed, memory = [], []
        for row in rows:
            ours, theirs = numbers(row["gattn"]), numbers(row[peer])  # samples/s, peak MB
            speed.append(_ratio(ours[0], theirs[0]))
            memory.append(_ratio(theirs[1], ours[1]))
        series[f"speed vs {peer}"] = speed
        series[f"memory vs {peer}"] = memory
    return [r["case"] for r in rows], series


#: chart name -> (title, reader of the README table)
CHART_SPECS: dict[str, tuple[str, Callable[[str], tuple[list[str], dict[str, list[float | None]]]]]] = {
    "edge_attention": ("Edge attention layer vs PyG TransformerConv (CPU; 50k = N=50k, E=1M random; "
                       "arxiv = N=169k, E=1.17M random)", edge_attention),
    "mil_torchmil": ("ABMIL training epoch vs torchmil (10-fold CV)", mil_torchmil),
    "ctr_attention": ("DIN training step vs DeepCTR-Torch and FuxiCTR (batch 1,024)", ctr_attention),
}


def chart_data(name: str, text: str | None = None) -> tuple[str, list[str], dict[str, list[float | None]]]:
    title, reader = CHART_SPECS[name]
    cases, series = reader(README.read_text() if text is None else text)
    return title, cases, series


def draw(out_dir: Path = CHARTS) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CHART_SPECS:
        title, cases, series = chart_data(name)
        path = out_dir / f"{name}.png"
        write_ratio_chart(str(path), title, cases, series, source=f"README.md, table docs:bench:{name}")
        written.append(path)
    return written


def stale(out_dir: Path = CHARTS) -> list[str]:
    """The charts that are missing or no longer show their README table (with why)."""
    problems = []
    for name in CHART_SPECS:
        path = out_dir / f"{name}.png"
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        _, cases, series = chart_data(name)
        drawn = read_chart_data(str(path))
        if drawn["cases"] != cases or any(
            len(drawn["series"].get(k, [])) != len(v)
            or any(not math.isclose(a, b, rel_tol=1e-6) for a, b in zip(drawn["series"][k], v))
            for k, v in series.items()
        ):
            problems.append(f"{path} does not show the README table any more")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CHARTS, help="folder of the charts (default docs/charts)")
    parser.add_argument("--check", action="store_true", help="only check that the charts match the README")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        for problem in problems:
            print(f"stale chart: {problem} (run: python benchmarks/readme_charts.py)")
        return 1 if problems else 0
    for path in draw(args.out):
        print("chart:", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
