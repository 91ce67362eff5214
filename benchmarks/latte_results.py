"""LATTE vs HAN, HGT and R-GCN on ACM node classification (HeCo layout, 20 labelled papers per
class), Micro-F1 and Macro-F1 on the test papers, mean +- std over seeds.

Every (model, seed) runs the configuration ``configs/latte_acm.yaml`` through the ``latte``
pipeline (``gattn train latte``) with ``--model`` and ``--seed`` set: one full-batch Adam step
per epoch, at most ``epochs``, the epoch with the best validation Macro-F1 is evaluated on the
test split (1,000 papers), early stop after ``patience`` epochs without improvement. All models
are 2 layers wide ``hidden`` (HAN: one HANConv layer, as in its paper) on the same input encoder
(a linear projection per featured node type, a learned embedding for subjects, which have no
features). Every model reads the same first-order relations (paper-author, paper-subject and
their reverses); HAN also a self-loop relation per node type, since HANConv has no root/self
term. Extra models (``--models``): ``latte-prox`` (``--proximity-weight 0.1``),
``latte-structure`` (``--meta-weights structure``: meta-relations weighted by path counts),
``han-metapath`` (HAN on the meta-path graphs PAP and PSP; PSP has 4.3M edges, so each paper
keeps 32 sampled PSP neighbours). Options after the script's own (any option of
``gattn train latte``, e.g. ``--epochs 50``) override the config file.

    python benchmarks/latte_results.py --root ../shared/data            # the README table, 5 seeds
    python benchmarks/latte_results.py --root ../shared/data --models latte,hgt --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table
from gattn.pipelines import get_pipeline, make_config
from gattn.pipelines.config import add_options, read_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("latte", "han", "hgt", "rgcn")  # the default comparison
#: the extra rows: pipeline options on top of the config file
VARIANTS = {
    "latte": {"model": "latte"},
    "han": {"model": "han"},
    "hgt": {"model": "hgt"},
    "rgcn": {"model": "rgcn"},
    "latte-prox": {"model": "latte", "proximity_weight": 0.1},
    "latte-structure": {"model": "latte", "meta_weights": "structure"},
    "han-metapath": {"model": "han-metapath"},
}


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIGS / "latte_acm.yaml")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="runs/latte_results", help="folder of the runs and results.json")
    args, extra = parser.parse_known_args()
    unknown = [m for m in args.models.split(",") if m not in VARIANTS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    pipeline = get_pipeline("latte")
    sub = argparse.ArgumentParser(prog="latte options")
    add_options(sub, pipeline.Config)
    overrides = vars(sub.parse_args(extra))  # only the options given
    base = read_config_file(args.config)
    base.pop("pipeline", None)
    out = Path(args.out)
    runs: dict[str, list[dict]] = {}
    files: dict[str, dict] = {}
    for name in args.models.split(","):
        runs[name] = []
        for seed in range(args.seeds):
            config = make_config(pipeline, {**base, **VARIANTS[name], "seed": seed, "progress": False,
                                            "plot": seed == 0, **overrides})
            start = time.perf_counter()
            result = pipeline.run(config, out / f"{name}-seed{seed}")
            metrics = {**result.metrics, "seconds": time.perf_counter() - start}
            runs[name].append(metrics)
            if seed == 0:
                files[name] = result.files
            print(f"{name} seed {seed}: test Micro-F1 {metrics['test_f1_micro']:.4f} Macro-F1 "
                  f"{metrics['test_f1_macro']:.4f} (best epoch {metrics['best_epoch']}, {metrics['epochs']} epochs, "
                  f"{metrics['seconds']:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"runs": runs, "files": files}, indent=1))
    rows = [[name, mean_std([r["test_f1_micro"] for r in results]), mean_std([r["test_f1_macro"] for r in results]),
             f"{results[0]['num_params']:,}", f"{statistics.mean(r['seconds'] for r in results):.0f}",
             f"{statistics.mean(r['epochs'] for r in results):.0f}"] for name, results in runs.items()]
    print_table(
        f"{config.dataset} (HeCo, {config.split} labelled per class), test Micro-F1 / Macro-F1 (%) at the best "
        f"validation Macro-F1, mean +- std over {args.seeds} seed(s); hidden {config.hidden}, at most {config.epochs} "
        f"epochs, patience {config.patience}",
        ["model", "Micro-F1", "Macro-F1", "parameters", "s / run", "epochs / run"], rows,
    )
    for name, written in files.items():
        if "beta plot" in written:
            print(f"{name} beta plot: {written['beta plot']}")


if __name__ == "__main__":
    main()
