"""CTR attention: gattn's DIN against DeepCTR-Torch's and FuxiCTR's, DARE's top-K retrieval
against full DIN attention, and Hiformer's serving options. One run, one table of ratios.

* **DIN training throughput** (samples/s of a full training step: embeddings, attention,
  MLP, BCE, backward, Adam) at history lengths ``--lengths`` (50, 200, 1,000), batch 1,024,
  embedding 32, two history features (item, category), the same model everywhere: local
  activation unit (80, 40) with Dice, unnormalised weights, MLP (200, 80) with ReLU. gattn
  takes the ragged histories; DeepCTR-Torch pads to the fixed maximum length, FuxiCTR to
  the longest history of the batch (each as its library does; see benchmarks/peers/ctr_peers.py).
* **DARE vs DIN** at L = 1,000 (batch 1,024) and 10,000 (batch ``--long-batch``, 256): the
  gattn DARE model retrieving K = 20 behaviours against the gattn DIN model attending over
  all of them, training throughput and memory.
* **Hiformer inference** on 39 Criteo-like features (26 categorical, 13 bucketed numeric),
  batch 1,024: full composite projections without pruning, against low-rank (rank
  ``--rank``), last-layer pruning, and both.

History lengths are log-normal (median L/8, sigma such that the expected longest of 1,024
draws is L; clipped to [1, L]), the same synthetic samples for every method (seeded, built by
benchmarks/peers/ctr_data.py). Each method runs in its own process: the median over
``--repeats`` steps after a warm-up, and the peak RSS above the RSS once the model and its
inputs are built (getrusage). The peers run with the peer venv's python
(``bash benchmarks/peers/make_ctr_env.sh``); without it their rows say so and are skipped.

    python benchmarks/ctr_attention.py                    # everything (~15 min on 2 cores)
    python benchmarks/ctr_attention.py --sections din --lengths 1000
    python benchmarks/ctr_attention.py --quick            # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from subprocess import TimeoutExpired

import numba
import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import fmt, median_time, peak_rss_mb, print_table, rss_mb, run_child, write_ratio_chart
from benchmarks.peers import ctr_data
from gattn.models.ctr import DARE, DIN, CategoricalFeature, Hiformer, NumericFeature, SequenceFeature

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PYTHON = os.path.join(ROOT, "benchmarks", "peers", ".venv-ctr", "bin", "python")
PEER_NAMES = {"deepctr": "DeepCTR-Torch", "fuxictr": "FuxiCTR"}
VOCAB = {"user_id": 50_000, "item_id": 100_000, "cate_id": 1_000}
ATTENTION_HIDDEN, HIDDEN = (80, 40), (200, 80)
CRITEO_CATEGORICAL, CRITEO_NUMERIC = 26, 13


# ------------------------------------------------------------------------------ gattn side
def din_model(method: str, dim: int, top_k: int) -> torch.nn.Module:
    features = [CategoricalFeature(name, size) for name, size in VOCAB.items()]
    sequences = [SequenceFeature("hist_item_id", "item_id"), SequenceFeature("hist_cate_id", "cate_id")]
    if method == "gattn-din":
        return DIN(features, sequences, embedding_dim=dim, attention_hidden_channels=ATTENTION_HIDDEN,
                   attention_activation="dice", hidden_channels=HIDDEN, activation="relu")
    return DARE(features, sequences, embedding_dim=dim, top_k=top_k, hidden_channels=HIDDEN, activation="relu")


def din_inputs(split: dict[str, np.ndarray]) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
    features = {name: torch.from_numpy(split[name]) for name in ctr_data.SCALARS}
    history = {name: torch.from_numpy(split[name]) for name in ctr_data.SEQUENCES}
    lengths = torch.from_numpy(np.diff(split["hist_offsets"]))
    return features, history, lengths, torch.from_numpy(split["label"])


def hiformer_model(variant: str, dim: int, rank: int) -> Hiformer:
    features = [CategoricalFeature(f"C{i}", 1_000 * (1 + i % 50)) for i in range(CRITEO_CATEGORICAL)]
    edges = tuple(float(b) for b in np.unique(np.floor(np.exp(np.sqrt(np.arange(60))))))
    features += [NumericFeature(f"I{i}", edges) for i in range(CRITEO_NUMERIC)]
    low_rank, pruned = "lowrank" in variant, "pruned" in variant
    return Hiformer(features, embedding_dim=dim, num_layers=2, heads=2, composite=True,
                    rank=rank if low_rank else None, prune=pruned).eval()


def hiformer_inputs(model: Hiformer, batch: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for feature in model.embedding.features:
        if isinstance(feature, CategoricalFeature):
            out[feature.name] = torch.randint(0, feature.num_embeddings, (batch,), generator=gen)
        else:
            out[feature.name] = torch.exp(torch.randn(batch, generator=gen) * 2)
    return out


def measure(spec: dict) -> dict:
    """One gattn measurement in this process (time and peak memory above the inputs)."""
    torch.set_num_threads(spec["threads"])
    numba.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    method = spec["method"]
    if method.startswith("hiformer"):
        model = hiformer_model(method, spec["dim"], spec["rank"])
        with torch.inference_mode():
            model(hiformer_inputs(model, 8, seed=99))
            inputs = hiformer_inputs(model, spec["batch"], spec["seed"])
            base = rss_mb()
            run = lambda: model(inputs)
            run()
            peak = max(0.0, peak_rss_mb() - base)  # maxrss and statm count pages apart: no growth may read < 0
            seconds = median_time(run, spec["repeats"])
        return {"step_s": seconds, "ms": seconds * 1e3, "peak_mb": peak}
    model = din_model(method, spec["dim"], spec["top_k"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(batch):
        features, history, lengths, labels = batch
        optimizer.zero_grad()
        loss = model.loss(model(features, history, lengths=lengths), labels)
        loss.backward()
        optimizer.step()

    # warm-up (numba's cache, optimizer state) on a tiny batch before the baseline
    train_step(din_inputs(ctr_data.synthetic_split(4, spec["max_len"], seed=99, num_users=VOCAB["user_id"],
                                                   num_items=VOCAB["item_id"], num_cates=VOCAB["cate_id"])))
    splits = [ctr_data.synthetic_split(spec["batch"], spec["max_len"], seed=spec["seed"] + i,
                                       num_users=VOCAB["user_id"], num_items=VOCAB["item_id"],
                                       num_cates=VOCAB["cate_id"], median_fraction=spec["median_fraction"])
              for i in range(spec["batches"])]
    inputs = [din_inputs(split) for split in splits]
    base = rss_mb()
    counter = iter(range(10**9))
    step = lambda: train_step(inputs[next(counter) % len(inputs)])
    step()
    peak = max(0.0, peak_rss_mb() - base)  # maxrss and statm count pages apart: no growth may read < 0
    seconds = median_time(step, spec["repeats"])
    return {"step_s": seconds, "samples_per_s": spec["batch"] / seconds, "peak_mb": peak,
            "rows": int(sum(s["hist_offsets"][-1] for s in splits) / len(splits))}


# ------------------------------------------------------------------------------ driver
def run(spec: dict, timeout: float) -> dict:
    peer = spec["method"] in PEER_NAMES
    if peer and not os.path.exists(PEER_PYTHON):
        return {"error": "peer venv absent: run `bash benchmarks/peers/make_ctr_env.sh`"}
    module = "benchmarks.peers.ctr_peers" if peer else "benchmarks.ctr_attention"
    try:
        return run_child(module, spec, timeout=timeout, python=PEER_PYTHON if peer else None)
    except TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}


def run_rounds(specs: dict[str, dict], rounds: int, timeout: float) -> dict[str, dict]:
    """Each spec ``rounds`` times, interleaved (A B C A B C ...), so a change in the machine's
    load hits every method alike; the median of each number over the rounds."""
    runs: dict[str, list[dict]] = {name: [] for name in specs}
    for _ in range(rounds):
        for name, spec in specs.items():
            runs[name].append(run(spec, timeout))
    out = {}
    for name, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            out[name] = results[0]
            continue
        out[name] = {key: statistics.median(r[key] for r in good) for key in good[0] if key != "rounds"}
        out[name]["rounds"] = len(good)
    return out


def note(result: dict) -> str:
    error = result.get("error")
    return "" if error is None else (error if isinstance(error, str) else " ".join(error))


def ratio(ours: dict, theirs: dict, key: str, higher_is_better: bool) -> float | None:
    if key not in ours or key not in theirs:
        return None
    return ours[key] / theirs[key] if higher_is_better else theirs[key] / max(ours[key], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="din,dare,hiformer")
    parser.add_argument("--lengths", default="50,200,1000", help="DIN history lengths L")
    parser.add_argument("--dare-lengths", default="1000,10000")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--long-batch", type=int, default=256, help="batch for the DARE/DIN rows at L >= 5,000")
    parser.add_argument("--dim", type=int, default=32, help="embedding size")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--median-fraction", type=float, default=0.125, help="median history length / L")
    parser.add_argument("--hiformer-dim", type=int, default=16)
    parser.add_argument("--rank", type=int, default=32, help="Hiformer low-rank size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="distinct batches cycled through")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch (and numba) threads, every method")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--peers", default="deepctr,fuxictr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chart", default="runs/ctr_attention.png")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    if args.quick:
        args.lengths, args.dare_lengths, args.batch, args.long_batch = "20", "50", 64, 32
        args.repeats, args.batches, args.hiformer_dim, args.rank = 1, 1, 8, 8
    common = dict(dim=args.dim, threads=args.threads, seed=args.seed, repeats=args.repeats, batches=args.batches,
                  median_fraction=args.median_fraction, top_k=args.top_k, num_users=VOCAB["user_id"],
                  num_items=VOCAB["item_id"], num_cates=VOCAB["cate_id"])
    sections = args.sections.split(",")
    raw, table, cases, speed, memory = [], [], [], [], []

    def record(case: str, method: str, baseline: str, ours: dict, theirs: dict, unit: str) -> None:
        higher = unit == "samples/s"
        key = "samples_per_s" if higher else "ms"
        s, m = ratio(ours, theirs, key, higher), ratio(ours, theirs, "peak_mb", False)
        table.append([case, method, baseline, fmt(ours.get(key), 1), fmt(theirs.get(key), 1), unit,
                      fmt(ours.get("peak_mb"), 0), fmt(theirs.get("peak_mb"), 0),
                      "-" if s is None else f"{s:.2f}x", "-" if m is None else f"{m:.2f}x",
                      note(ours) or note(theirs)])
        cases.append(f"{case}\n{method} vs {baseline}")
        speed.append(s)
        memory.append(m)

    if "din" in sections:
        for length in (int(v) for v in args.lengths.split(",")):
            spec = dict(common, batch=args.batch, max_len=length)
            methods = ["gattn-din", *args.peers.split(",")]
            results = run_rounds({m: dict(spec, method=m) for m in methods}, args.rounds, args.timeout)
            raw += [{"section": "din", "max_len": length, "method": m, **r} for m, r in results.items()]
            for peer in args.peers.split(","):
                record(f"DIN train L={length:,}", "gattn", PEER_NAMES[peer], results["gattn-din"], results[peer],
                       "samples/s")
    if "dare" in sections:
        for length in (int(v) for v in args.dare_lengths.split(",")):
            batch = args.batch if length < 5_000 else args.long_batch
            spec = dict(common, batch=batch, max_len=length)
            methods = ("gattn-dare", "gattn-din")
            results = run_rounds({m: dict(spec, method=m) for m in methods}, args.rounds, args.timeout)
            raw += [{"section": "dare", "max_len": length, "batch": batch, "method": m, **r}
                    for m, r in results.items()]
            record(f"train L={length:,} B={batch}", f"DARE K={args.top_k}", "DIN (all)", results["gattn-dare"],
                   results["gattn-din"], "samples/s")
    if "hiformer" in sections:
        spec = dict(common, batch=args.batch, dim=args.hiformer_dim, rank=args.rank)
        variants = ("hiformer-full", "hiformer-lowrank", "hiformer-pruned", "hiformer-lowrank-pruned")
        results = run_rounds({v: dict(spec, method=v) for v in variants}, args.rounds, args.timeout)
        raw += [{"section": "hiformer", "method": v, **r} for v, r in results.items()]
        for variant in variants[1:]:
            name = variant.removeprefix("hiformer-").replace("lowrank", f"low-rank r={args.rank}")
            record(f"Hiformer inference B={args.batch}", name, "full", results[variant], results["hiformer-full"], "ms")

    print(f"\nthreads {args.threads}, embedding {args.dim}, history lengths log-normal with median "
          f"{args.median_fraction:g} L; peak = max RSS above the inputs")
    print_table(
        "CTR attention: ratios against the baseline (speed: higher is better; memory: baseline / ours)",
        ["case", "method", "baseline", "ours", "baseline", "unit", "ours MB", "base MB", "speed", "memory", "note"],
        table,
    )
    if args.chart and cases:
        os.makedirs(os.path.dirname(args.chart) or ".", exist_ok=True)
        write_ratio_chart(args.chart, "CTR attention: gattn against the baseline of each case", cases,
                          {"speed ratio": speed, "memory ratio (baseline / ours)": memory})
        print(f"chart: {args.chart}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "results": raw}, out, indent=2)


if __name__ == "__main__":
    main()
