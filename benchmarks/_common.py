"""Helpers shared by the benchmarks: medians, peak memory in a fresh process, tables."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of `fn` over `repeats` calls, after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_mb() -> float:
    """Current resident set size of this process (MB), from /proc."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, args: dict, timeout: float = 1800, python: str | None = None,
              env: dict[str, str] | None = None) -> dict:
    """Run `python -m module --child JSON` and return the JSON it prints on its last line.

    `python`: the interpreter (default this one; a peer's environment for a peer method). The
    child runs in the repository root, so `module` (`benchmarks.<name>`) is importable there.
    `env`: variables set for the child on top of this process's environment.
    """
    proc = subprocess.run(
        [python or sys.executable, "-m", module, "--child", json.dumps(args)],
        capture_output=True, text=True, timeout=timeout,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, **env} if env else None,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join("-" * w for w in widths)
    print(line)
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print(line)
    print(line)


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def write_ratio_chart(
    path: str,
    title: str,
    cases: list[str],
    series: dict[str, list[float | None]],
    ylabel: str = "x peer (higher is better)",
    source: str | None = None,
) -> str:
    """A grouped bar chart of ratios against a peer (1.0 = the peer), written as a PNG.

    ``cases`` label the groups on the x axis (one per benchmark case); ``series`` maps a bar
    name (e.g. ``"speed vs PyG"``, ``"memory vs PyG"``) to one ratio per case (None: no bar).
    The cases and ratios are also stored in the PNG's text metadata (``gattn-chart``, JSON:
    :func:`read_chart_data`), with ``source``, where the figures come from. Returns the path
    written. Needs matplotlib (the ``pipelines`` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(cases) + 2), 3.6))
    for n, (name, values) in enumerate(series.items()):
        xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(cases))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=name)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(f"{value:.2g}x" if value < 1 else f"{value:.1f}x",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    top = max([v for values in series.values() for v in values if v is not None] + [1.0])
    ax.set_ylim(0, top * 1.35)  # room for the legend above the bars
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, fontsize=7, rotation=15, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)  # long titles wrap, never clip
    ax.legend(fontsize=7, loc="upper left", ncol=2 if len(series) > 2 else 1)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    data = {"title": title, "cases": list(cases), "series": {k: list(v) for k, v in series.items()}, "source": source}
    fig.savefig(tmp, dpi=110, metadata={"gattn-chart": json.dumps(data), "Software": None})
    plt.close(fig)
    os.replace(tmp, path)
    return path


def read_chart_data(path: str) -> dict:
    """The cases and ratios a chart of :func:`write_ratio_chart` was drawn from."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text["gattn-chart"])


def measure_forward_backward(
    forward: Callable[[], object], forward_backward: Callable[[], object], repeats: int, device: torch.device
) -> dict:
    """Median times of ``forward`` and ``forward_backward`` and the peak memory of the latter.

    CUDA: ``peak_mb`` is the peak allocated above what was allocated before a warmed-up
    forward+backward. CPU: ``peak_mb`` is the process's peak RSS and ``above_inputs_mb`` that
    peak minus the RSS on entry (the inputs and the model already built).
    """
    sync = cuda_sync if device.type == "cuda" else (lambda: None)
    base_rss = rss_mb()
    result = {}
    if device.type == "cuda":
        forward_backward()  # warm-up: kernel compilation, CSR build
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward()
        sync()
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    result["fwd_s"] = median_time(forward, repeats, sync)
    result["fwdbwd_s"] = median_time(forward_backward, repeats, sync)
    if device.type == "cpu":
        result["peak_mb"] = peak_rss_mb()
        result["above_inputs_mb"] = peak_rss_mb() - base_rss
    return result


def set_threads(threads: int, numba_too: bool = True) -> None:
    """This process's torch threads and, with `numba_too`, numba's (at most the pool numba was
    started with, ``NUMBA_NUM_THREADS``, which numba would otherwise refuse). A peer's process
    passes ``numba_too=False`` so that it never imports numba."""
    torch.set_num_threads(threads)
    if numba_too:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def prepare_child_environment(threads: int | None) -> None:
    """What every child process of a benchmark inherits, all methods alike: a passive OpenMP
    wait policy (numba's OpenMP threads otherwise spin after each parallel region and slow
    every torch op that follows on a busy machine) and, given ``threads``, numba's thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)


@contextmanager
def background_load(processes: int) -> Iterator[None]:
    """`processes` busy-loop Python processes spinning while the block runs (0: none): a
    machine with other work on it, made the same way for every method measured."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def load_average() -> float:
    """The 1-minute load average of the machine (what else is running)."""
    return os.getloadavg()[0]


def machine() -> str:
    """The CPU this runs on, for the record beside a benchmark's figures: its model, last-level
    cache and the cores this process may use (ratios against a peer move with the host: a
    memory-bound kernel gains from a larger cache where a compute-bound peer does not)."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    caches = []
    for level in ("index3", "index2"):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/{level}/size") as size:
                caches.append(f"L{level[-1]} {size.read().strip()}")
        except OSError:
            continue
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ", ".join([model, *caches, f"{cores} cores"])


def huge_pages() -> str:
    """Whether torch's large allocations get transparent huge pages: the kernel's THP mode and
    torch's ``THP_MEM_ALLOC_ENABLE``. It moves PyG's step more than gattn's (PyG's per-edge
    tensors are fresh memory every step: a page fault per 4 KB without huge pages)."""
    from gattn.kernels._workspace import _thp_mode  # here: peers' environments import this module without gattn

    system = _thp_mode() or "unknown"
    return f"transparent huge pages: {system}; THP_MEM_ALLOC_ENABLE {os.environ.get('THP_MEM_ALLOC_ENABLE', 'not set')}"
