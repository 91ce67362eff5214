"""MIL benchmarks side by side with the published numbers, on the papers' protocol.

Every (data set, pooling) pair runs the configuration ``configs/mil_<dataset>.yaml`` through
the ``mil`` pipeline with ``--pooling`` set: stratified, seeded cross-validation; the table
gives the mean and standard deviation over the folds of the test accuracy and ROC-AUC.
Options after the script's own (``--epochs 100 --val-fraction 0.1``, any option of
``gattn train mil``) override the config files.

Published (the same protocol): Ilse et al. 2018, ABMIL accuracy Musk1 0.892, Musk2 0.858,
Elephant 0.868; gated ABMIL 0.900 / 0.863 / 0.857. Ramsauer et al. 2021, Hopfield pooling
ROC-AUC Elephant 94.9 (%).

    python benchmarks/mil_results.py --root ../shared/data                  # the README table
    python benchmarks/mil_results.py --datasets musk1 --poolings abmil --repeats 5
    python benchmarks/mil_results.py --root ../shared/data --json runs/mil_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table
from gattn.pipelines import get_pipeline, make_config
from gattn.pipelines.config import add_options, read_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: (data set, pooling) -> (published accuracy, published ROC-AUC); None: not published there
PUBLISHED: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("musk1", "abmil"): (0.892, None),
    ("musk2", "abmil"): (0.858, None),
    ("elephant", "abmil"): (0.868, None),
    ("musk1", "gated"): (0.900, None),
    ("musk2", "gated"): (0.863, None),
    ("elephant", "gated"): (0.857, None),
    ("elephant", "hopfield"): (None, 0.949),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="musk1,musk2,elephant")
    parser.add_argument("--poolings", default="abmil,gated,hopfield,acmil")
    parser.add_argument("--json", default=None)
    args, extra = parser.parse_known_args()
    pipeline = get_pipeline("mil")
    sub = argparse.ArgumentParser(prog="mil options")
    add_options(sub, pipeline.Config)
    overrides = vars(sub.parse_args(extra))  # only the options given
    rows, records = [], []
    for dataset in args.datasets.split(","):
        base = read_config_file(CONFIGS / f"mil_{dataset}.yaml")
        base.pop("pipeline", None)
        for pooling in args.poolings.split(","):
            config = make_config(pipeline, {**base, "pooling": pooling, "plot": False, "progress": False,
                                            **overrides})
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="gattn-mil-") as folder:
                result = pipeline.run(config, Path(folder) / "run").metrics
            seconds = time.perf_counter() - start
            acc_pub, auc_pub = PUBLISHED.get((dataset, pooling), (None, None))
            rows.append([
                dataset, pooling,
                f"{result['test_accuracy']:.3f} +- {result['test_accuracy_std']:.3f}",
                "-" if acc_pub is None else f"{acc_pub:.3f}",
                f"{result['test_rocauc']:.3f} +- {result['test_rocauc_std']:.3f}",
                "-" if auc_pub is None else f"{auc_pub:.3f}",
                f"{seconds:.0f}",
            ])
            records.append({"dataset": dataset, "pooling": pooling, **result, "seconds": seconds,
                            "published_accuracy": acc_pub, "published_rocauc": auc_pub})
            print(f"{dataset} {pooling}: {rows[-1][2]} acc, {rows[-1][4]} AUC ({seconds:.0f}s)", flush=True)
    print_table(
        f"{config.folds}-fold CV x {config.repeats} (mean +- std over folds), test folds",
        ["dataset", "pooling", "accuracy", "published", "ROC-AUC", "published", "s"],
        rows,
    )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as out:
            json.dump(records, out, indent=2)


if __name__ == "__main__":
    main()
