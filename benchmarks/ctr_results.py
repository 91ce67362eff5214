"""CTR results: DIN and DARE side by side with DeepCTR-Torch's and FuxiCTR's DIN, and Hiformer.

``--part movielens``: DIN and DARE (``configs/din_movielens-100k.yaml``,
``configs/dare_movielens-100k.yaml``) through their pipelines, and DeepCTR-Torch's DIN and
FuxiCTR's DIN (``benchmarks/peers/ctr_peers.py`` in the peer venv, ``bash
benchmarks/peers/make_ctr_env.sh``) on the same split, exported with
:func:`gattn.datasets.behaviour.export_din_parquet`: MovieLens-100k, rating >= 4 a click, the
last 5 targets of every user the test set, histories of the 50 most recent earlier ratings.
The same budget for all: embedding size 32, batch 1024, Adam 1e-3, ``--epochs`` on the
training split, the last epoch's model evaluated (no validation split). Test ROC-AUC, GAUC (by
user, :func:`gattn.metrics.gauc` on every method's per-sample predictions) and log loss, mean
and standard deviation over ``--seeds``; the training time per epoch and its ratio to
DeepCTR-Torch's. Every run is its own process, all on one thread.

``--part hiformer``: ``configs/hiformer_criteo-sample.yaml`` on the 200-row Criteo sample and
on a **synthetic** Criteo-format file of ``--rows`` rows written here (feature marginals of
``benchmarks/criteo_loader.py``'s generator; the click is drawn from a planted logistic model
of a few categorical columns, their pairwise interactions and two integer features, so there
is something to learn). Variants: full-rank composite projections with and without last-layer
pruning, and low-rank (``--rank``) with pruning. Test ROC-AUC and log loss (best epoch by
validation AUC; mean over ``--seeds``) and the inference latency of a batch of
``--latency-batch`` test rows (median of repeats, one thread) with its ratio to the unpruned
full-rank model.

    python benchmarks/ctr_results.py --root ../shared/data                   # both tables
    python benchmarks/ctr_results.py --part movielens --seeds 0,1,2 --epochs 2
    python benchmarks/ctr_results.py --part hiformer --rows 100000 --chart runs/hiformer.png

Writes ``--chart`` (AUC and GAUC per method, PNG) and, with ``--json``, every run's numbers;
``--from-json FILE`` prints the MovieLens table and redraws the chart from such a file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table, run_child

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PEER_PYTHON = REPO / "benchmarks" / "peers" / ".venv-ctr" / "bin" / "python"
PEERS = {"deepctr": "DeepCTR-Torch DIN", "fuxictr": "FuxiCTR DIN"}
GATTN = {"din": "gattn DIN", "dare": "gattn DARE"}
HIFORMER_VARIANTS = {  # name -> (rank, prune_last_layer); the rank None is replaced by --rank below
    "full rank": (None, False),
    "full rank, pruned": (None, True),
    "low rank, pruned": ("rank", True),
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _config(name: str, **overrides) -> tuple[object, object]:
    from gattn.pipelines import get_pipeline, make_config
    from gattn.pipelines.config import read_config_file

    values = read_config_file(CONFIGS / f"{name}.yaml")
    pipeline = get_pipeline(values.pop("pipeline"))
    return pipeline, make_config(pipeline, {**values, "progress": False, "threads": 1, **overrides})


# ------------------------------------------------------------------------------ children
def child(spec: dict) -> dict:
    """One gattn run in this process: train, evaluate, and (Hiformer) time the inference."""
    import torch

    from gattn.pipelines import load_checkpoint

    torch.set_num_threads(1)
    pipeline, config = _config(spec["config"], **spec["overrides"])
    with tempfile.TemporaryDirectory(prefix="gattn-ctr-") as folder:
        result = pipeline.run(config, Path(folder) / "run")
        out = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        if spec.get("latency_batch"):
            data = pipeline.prepare(config)
            model = pipeline.build_model(config, data, None)
            state = load_checkpoint(Path(folder) / "run" / "checkpoints" / "best.ckpt")["state_dict"]
            model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
            model.eval()
            loader = pipeline.datamodule(replace_batch(config, spec["latency_batch"]), data, None).test_loader
            features = next(iter(loader))["features"]
            out["latency_ms"] = 1e3 * _median_forward(model, features, spec.get("repeats", 20))
            out["latency_rows"] = int(next(iter(features.values())).numel())
    return out


def replace_batch(config, size: int):
    from dataclasses import replace

    return replace(config, eval_batch_size=size)


def _median_forward(model, features: dict, repeats: int) -> float:
    import torch

    from benchmarks._common import median_time

    with torch.inference_mode():
        return median_time(lambda: model(features), repeats)


def peer_run(peer: str, folder: Path, seed: int, epochs: int, dim: int, batch: int) -> dict:
    from gattn.metrics import gauc

    predictions = folder / f"{peer}-{seed}.csv"
    proc = subprocess.run(
        [str(PEER_PYTHON), "-m", "benchmarks.peers.ctr_peers", "--peer", peer, "--train",
         str(folder / "train.parquet"), "--test", str(folder / "test.parquet"), "--epochs", str(epochs),
         "--embedding-dim", str(dim), "--batch-size", str(batch), "--seed", str(seed), "--threads", "1",
         "--predictions", str(predictions)],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=7200,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{peer} failed: {proc.stderr.strip().splitlines()[-3:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = np.genfromtxt(predictions, delimiter=",", names=True)
    return {"test_rocauc": result["auc"], "test_logloss": result["logloss"],
            "test_gauc": gauc(rows["label"], rows["prediction"], rows["user_id"]),
            "time_s": result["train_seconds"], "epochs": epochs}


# ------------------------------------------------------------------------------ movielens
def movielens(args: argparse.Namespace, records: list[dict]) -> dict[str, dict[str, list[float]]]:
    from gattn.datasets.behaviour import export_din_parquet, load_movielens

    if not PEER_PYTHON.is_file():
        raise SystemExit(f"no peer venv at {PEER_PYTHON}: run bash benchmarks/peers/make_ctr_env.sh")
    pipeline, config = _config("din_movielens-100k", root=args.root)
    data = load_movielens(config.dataset, config.root, label=config.label, positive_rating=config.positive_rating,
                          split=config.split, holdout=config.holdout, max_history=config.max_history,
                          category=config.category, seed=config.data_seed)
    # the peers' test rows are the pipeline's, in the same order
    test = pipeline.prepare(config).splits["test"]
    assert np.array_equal(test.user_id.numpy(), data.test.user_id.numpy())
    assert np.array_equal(test.label.numpy(), data.test.label.numpy())
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="gattn-ctr-peers-") as tmp:
        folder = Path(tmp)
        export_din_parquet(data, folder)
        print(f"MovieLens-100k: {data.info['samples']} samples; {args.epochs} epochs, seeds {args.seeds}", flush=True)
        for seed in args.seeds:
            for method in [*GATTN, *PEERS]:
                if method in args.skip:
                    continue
                start = time.perf_counter()
                if method in GATTN:
                    out = run_child("benchmarks.ctr_results", {
                        "config": f"{method}_movielens-100k",
                        "overrides": {"root": args.root, "seed": seed, "epochs": args.epochs}}, timeout=7200)
                    if "error" in out:
                        raise RuntimeError(f"{method}: {out['error']}")
                else:
                    out = peer_run(method, folder, seed, args.epochs, config.embedding_dim, config.batch_size)
                name = GATTN.get(method) or PEERS[method]
                records.append({"part": "movielens", "method": name, "seed": seed, **out,
                                "wall_s": time.perf_counter() - start})
                for key in ("test_rocauc", "test_gauc", "test_logloss", "time_s"):
                    results.setdefault(name, {}).setdefault(key, []).append(out[key])
                print(f"  seed {seed} {name}: AUC {out['test_rocauc']:.4f} GAUC {out['test_gauc']:.4f} "
                      f"logloss {out['test_logloss']:.4f} train {out['time_s']:.0f}s", flush=True)
    movielens_table(results, args.epochs, args.seeds)
    return results


def movielens_table(results: dict[str, dict[str, list[float]]], epochs: int, seeds: list[int]) -> None:
    reference = results.get(PEERS["deepctr"], {}).get("time_s")
    rows = []
    for name, values in results.items():
        per_epoch = float(np.median(values["time_s"])) / epochs
        ratio = (float(np.median(reference)) / epochs / per_epoch) if reference else None
        rows.append([name, *(f"{np.mean(values[k]):.4f} +- {np.std(values[k]):.4f}"
                             for k in ("test_rocauc", "test_gauc", "test_logloss")),
                     f"{per_epoch:.1f}", "-" if ratio is None else f"{ratio:.2f}x"])
    print_table(f"MovieLens-100k (rating >= 4, last 5 per user as test, history <= 50), d=32, batch 1024, "
                f"{epochs} epochs, mean +- std over seeds {','.join(map(str, seeds))}, one thread",
                ["method", "test AUC", "test GAUC", "test log loss", "train s/epoch", "speed vs DeepCTR"], rows)


def from_records(records: list[dict]) -> tuple[dict[str, dict[str, list[float]]], int, list[int]]:
    """The MovieLens results of a ``--json`` file, as :func:`movielens` returns them."""
    results: dict[str, dict[str, list[float]]] = {}
    rows = [r for r in records if r["part"] == "movielens"]
    for r in rows:
        for key in ("test_rocauc", "test_gauc", "test_logloss", "time_s"):
            results.setdefault(r["method"], {}).setdefault(key, []).append(r[key])
    return results, int(rows[0]["epochs"]), sorted({r["seed"] for r in rows})


# ------------------------------------------------------------------------------ hiformer
def planted_criteo(path: Path, rows: int, seed: int, chunk: int = 100_000) -> float:
    """Write a Criteo-format tab file whose clicks follow a planted logistic model; returns the
    click rate. Integer and categorical marginals as in benchmarks/criteo_loader.py."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pa_csv

    from benchmarks.criteo_loader import CAT_CARDINALITY, CAT_MISSING, COLUMNS, INT_MEDIAN, INT_MISSING, _hex_strings

    rng = np.random.default_rng(seed)
    signal = [0, 1, 5, 8, 13, 16]  # the categorical columns the click depends on
    main_effect = rng.normal(0, 0.7, size=(len(signal), 64))
    pair_effect = rng.normal(0, 0.7, size=(len(signal), len(signal), 64))
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    clicks = written = 0
    with open(path, "wb") as sink:
        while written < rows:
            n = min(chunk, rows - written)
            ints = [np.floor(INT_MEDIAN[j] * rng.lognormal(0.0, 1.4, n)).astype(np.int64) for j in range(13)]
            ranks = [(rng.zipf(1.15, n) - 1) % CAT_CARDINALITY[j] for j in range(26)]
            logit = -1.6 + 0.3 * (np.log1p(ints[0]) - 1) - 0.2 * (np.log1p(ints[5]) - 3.4)
            buckets = [ranks[j] % 64 for j in signal]
            for a in range(len(signal)):
                logit += main_effect[a, buckets[a]]
                for b in range(a + 1, len(signal)):
                    logit += pair_effect[a, b, (buckets[a] * 7 + buckets[b]) % 64]
            label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
            clicks += int(label.sum())
            arrays = [pa.array(label)]
            arrays += [pa.array(ints[j], mask=rng.random(n) < INT_MISSING[j]) for j in range(13)]
            for j in range(26):
                hashed = (ranks[j].astype(np.uint64) * np.uint64(2654435761) + np.uint64(j * 7919)) % np.uint64(2**32)
                text = _hex_strings(hashed.astype(np.uint32))
                arrays.append(pc.if_else(pa.array(rng.random(n) < CAT_MISSING[j]), pa.scalar(None, pa.string()),
                                         text))
            pa_csv.write_csv(pa.Table.from_arrays(arrays, names=COLUMNS), sink, write_options=options)
            written += n
    return clicks / rows


def hiformer(args: argparse.Namespace, records: list[dict]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="gattn-hiformer-") as tmp:
        synthetic = Path(tmp) / f"criteo_synthetic_{args.rows}.txt"
        rate = planted_criteo(synthetic, args.rows, seed=0)
        print(f"synthetic Criteo file: {args.rows} rows, click rate {rate:.3f}", flush=True)
        sets = {"criteo-sample": {"root": args.root},
                f"synthetic {args.rows // 1000}k": {"dataset": str(synthetic), "epochs": args.hiformer_epochs,
                                                    "batch_size": 1024, "min_count": 10}}
        for label, data_overrides in sets.items():
            for variant, (rank, prune) in HIFORMER_VARIANTS.items():
                for seed in args.seeds:
                    overrides = {**data_overrides, "seed": seed, "cache_dir": str(Path(tmp) / "cache"),
                                 "rank": args.rank if rank == "rank" else None, "prune_last_layer": prune}
                    out = run_child("benchmarks.ctr_results", {"config": "hiformer_criteo-sample",
                                                               "overrides": overrides,
                                                               "latency_batch": args.latency_batch}, timeout=7200)
                    if "error" in out:
                        raise RuntimeError(f"hiformer {label} {variant}: {out['error']}")
                    name = f"{label} | {variant}"
                    records.append({"part": "hiformer", "data": label, "variant": variant, "seed": seed, **out})
                    for key in ("test_rocauc", "test_logloss", "latency_ms", "time_s", "num_params"):
                        results.setdefault(name, {}).setdefault(key, []).append(out[key])
                    print(f"  {name} seed {seed}: AUC {out['test_rocauc']:.4f} logloss {out['test_logloss']:.4f} "
                          f"latency {out['latency_ms']:.2f} ms / {out['latency_rows']} rows", flush=True)
    rows = []
    for name, values in results.items():
        base = results[name.split(" | ")[0] + " | full rank"]["latency_ms"]
        latency = float(np.median(values["latency_ms"]))
        rows.append([*name.split(" | "), f"{np.mean(values['test_rocauc']):.4f} +- {np.std(values['test_rocauc']):.4f}",
                     f"{np.mean(values['test_logloss']):.4f}", f"{latency:.2f}",
                     f"{float(np.median(base)) / latency:.2f}x", int(values["num_params"][0])])
    print_table(f"Hiformer (d=16, 2 layers, 2 heads, low rank = {args.rank}), best epoch by validation AUC, "
                f"mean over seeds {','.join(map(str, args.seeds))}; latency: {args.latency_batch} test rows, "
                f"one thread, median",
                ["data", "variant", "test AUC", "test log loss", "latency ms", "speed vs full rank", "params"], rows)
    return results


def chart(path: str, results: dict[str, dict[str, list[float]]]) -> str:
    """Test AUC and GAUC per method (mean over seeds, the standard deviation as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for n, (label, key) in enumerate((("test AUC", "test_rocauc"), ("test GAUC", "test_gauc"))):
        xs = np.arange(len(names)) + (n - 0.5) * 0.4
        means = [float(np.mean(results[m][key])) for m in names]
        bars = ax.bar(xs, means, 0.4, yerr=[float(np.std(results[m][key])) for m in names], label=label, capsize=3)
        for bar, value in zip(bars, means):
            ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                        fontsize=7)
    low = min(float(np.mean(v[k])) for v in results.values() for k in ("test_rocauc", "test_gauc"))
    ax.set_ylim(max(0.0, low - 0.05), None)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("test AUC / GAUC")
    ax.set_title("MovieLens-100k, same split and budget (mean +- std over seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print("chart:", path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("movielens", "hiformer", "all"), default="all")
    parser.add_argument("--root", default=None, help="the data root (default $GATTN_DATA)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=2, help="movielens: epochs of every method")
    parser.add_argument("--skip", default="", help="movielens: methods left out (din,dare,deepctr,fuxictr)")
    parser.add_argument("--rows", type=int, default=100_000, help="hiformer: rows of the synthetic file")
    parser.add_argument("--hiformer-epochs", type=int, default=3, help="hiformer: epochs on the synthetic file")
    parser.add_argument("--rank", type=int, default=8, help="hiformer: rank of the low-rank variant")
    parser.add_argument("--latency-batch", type=int, default=1024)
    parser.add_argument("--chart", default="runs/ctr_results.png")
    parser.add_argument("--json", default=None)
    parser.add_argument("--from-json", default=None, help="print the MovieLens table and chart of a --json file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.from_json:
        results, epochs, seeds = from_records(json.loads(Path(args.from_json).read_text()))
        movielens_table(results, epochs, seeds)
        chart(args.chart, results)
        return
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.skip = set(filter(None, args.skip.split(",")))
    records: list[dict] = []
    if args.part in ("movielens", "all"):
        chart(args.chart, movielens(args, records))
    if args.part in ("hiformer", "all"):
        hiformer(args, records)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
