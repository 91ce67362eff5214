"""The MIMIC-III ICD-coding pipelines (``transicd``, ``label_attention``) side by side with
TransICD's published top-50 figures, on one of three inputs:

* ``--mimic-dir DIR`` (the credentialed MIMIC-III v1.4 with NOTEEVENTS): the configurations
  ``configs/transicd_mimic3-50.yaml`` and ``configs/label_attention_mimic3-50.yaml`` as they
  are (the paper's settings; hours on a GPU, ``--accelerator gpu``);
* ``--fixture``: the invented MIMIC-III of :func:`gattn.datasets.mimic.write_mimic_fixture`
  (invented notes in which each code plants two invented words: the numbers show that it learns,
  not how well it codes real notes), with ``--top-codes 20`` (the fixture has 34 codes) and
  the time series for ``label_attention``;
* ``--demo DIR`` (the public MIMIC-III demo, no note text, no CHARTEVENTS / LABEVENTS): the
  label statistics of its admissions in the CAML splits, and the exact message each pipeline
  stops with.

Options after the script's own (``--epochs 5 --accelerator gpu``, any option of ``gattn
train transicd``) override the config files, for every pipeline that has them.
Published (TransICD, Biswas et al. 2021, MIMIC-III top-50, CAML splits, test, %): macro
ROC-AUC 89.4, micro ROC-AUC 92.3, macro F1 56.2, micro F1 64.4, P@5 61.7.

    python benchmarks/mimic_results.py --mimic-dir /data/mimic-iii-clinical-database-1.4 \\
        --splits-dir ../shared/data/mimic3/caml-splits --accelerator gpu         # the paper's table
    python benchmarks/mimic_results.py --fixture --threads 1                    # README, invented notes
    python benchmarks/mimic_results.py --demo ../shared/data/mimic3/demo-1.4 \\
        --splits-dir ../shared/data/mimic3/caml-splits                          # README, the demo
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
FAMILIES = ("transicd", "label_attention")
#: (column, metric) in the paper's order; TransICD's macro F1 is the mean of per-label F1
#: (``f1_macro``, scikit-learn's in the authors' code), CAML's the F1 of macro P and R
COLUMNS = [("macro AUC", "rocauc_macro"), ("micro AUC", "rocauc_micro"), ("macro F1", "f1_macro"),
           ("micro F1", "f1_micro"), ("P@5", "precision_at_5"), ("P@8", "precision_at_8"),
           ("CAML macro F1", "f1_macro_pr")]
#: TransICD, Biswas et al. 2021, Table 2 (MIMIC-III top-50), as fractions
PUBLISHED = {"rocauc_macro": 0.894, "rocauc_micro": 0.923, "f1_macro": 0.562, "f1_micro": 0.644,
             "precision_at_5": 0.617}
#: the fixture's run: its 20 most frequent codes, the series for the label-dependent model
FIXTURE = {"transicd": {"top_codes": 20, "min_count": 1, "selection": "best"},
           "label_attention": {"top_codes": 20, "min_count": 1, "time_series": True}}


def row(label: str, values: dict, prefix: str = "test_") -> list[str]:
    def cell(name: str) -> str:
        value = values.get(prefix + name)
        return "-" if value is None or value != value else f"{100 * value:.1f}"

    return [label, *(cell(name) for _, name in COLUMNS)]


def demo_statistics(mimic_dir: str, splits_dir: str, cache_dir: str | None, top_codes: int | None = None) -> None:
    """What the demo's structured tables give: its admissions in each CAML split, with codes
    (``top_codes``: another label set than the top 50 for the 50 setting)."""
    import torch

    from gattn.datasets.mimic import DEFAULT_FEATURES, load_icd_coding, read_admissions

    admissions = torch.tensor(read_admissions(mimic_dir).index.to_numpy().tolist())
    print(f"\n{mimic_dir}: {admissions.numel()} admissions")
    for setting in ("50", "full"):
        icd = load_icd_coding(mimic_dir, splits_dir, setting=setting, missing_notes="empty", embedding_dim=None,
                              cache_dir=cache_dir, labels=top_codes if setting == "50" else None)
        rows = []
        for name, documents in icd.splits.items():
            present = torch.isin(documents.hadm_ids, admissions)
            labels = documents.multi_hot()[present]
            rows.append([name, len(documents), int(present.sum()), int(labels.sum()), int((labels.sum(0) > 0).sum()),
                         int(documents.lengths.sum())])
        print_table(f"the demo's admissions in the CAML {setting} splits ({icd.num_labels} labels)",
                    ["split", "split admissions", "in the demo", "code assignments", "labels seen", "note tokens"],
                    rows)
    print("codes read:", "; ".join(icd.report["codes"]))
    try:
        load_icd_coding(mimic_dir, splits_dir, missing_notes="empty", embedding_dim=None, labels=top_codes,
                        time_series=DEFAULT_FEATURES, cache_dir=cache_dir)
    except FileNotFoundError as exc:
        print(f"\ntime series: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mimic-dir", help="MIMIC-III v1.4 directory (with NOTEEVENTS)")
    source.add_argument("--fixture", action="store_true", help="the invented MIMIC-III, written to a temp folder")
    source.add_argument("--demo", metavar="DIR", help="the MIMIC-III demo directory")
    parser.add_argument("--admissions", type=int, default=600, help="--fixture: admissions (default 600)")
    parser.add_argument("--pipelines", default=",".join(FAMILIES))
    parser.add_argument("--runs-dir", default=None, help="keep the run folders here (default: a temp folder)")
    parser.add_argument("--json", default=None)
    args, extra = parser.parse_known_args()
    families = args.pipelines.split(",")
    with tempfile.TemporaryDirectory(prefix="gattn-mimic-") as folder:
        common: dict = {}
        if args.fixture:
            from gattn.datasets.mimic import write_mimic_fixture

            fx = write_mimic_fixture(Path(folder) / "fixture", num_admissions=args.admissions, seed=0)
            common = {"mimic_dir": str(fx.mimic_dir), "splits_dir": str(fx.splits_dir),
                      "cache_dir": str(Path(folder) / "cache")}
            print(f"invented MIMIC-III ({args.admissions} admissions) in {fx.mimic_dir.parent}")
        elif args.demo:
            common = {"mimic_dir": args.demo}
        else:
            common = {"mimic_dir": args.mimic_dir}
        rows, records, failures, baseline = [], [], [], None
        for family in families:
            pipeline = get_pipeline(family)
            sub = argparse.ArgumentParser(prog=f"{family} options")
            add_options(sub, pipeline.Config)
            overrides, _ = sub.parse_known_args(extra)  # the options this pipeline has
            base = read_config_file(CONFIGS / f"{family}_mimic3-50.yaml")
            base.pop("pipeline", None)
            values = {**base, "progress": False, **(FIXTURE[family] if args.fixture else {}), **common,
                      **vars(overrides)}
            config = make_config(pipeline, values)
            print(pipeline.describe(config), flush=True)
            runs = Path(args.runs_dir) if args.runs_dir else Path(folder) / "runs"
            start = time.perf_counter()
            try:
                result = pipeline.run(config, runs / family)
            except (ValueError, FileNotFoundError) as exc:
                failures.append((family, f"{type(exc).__name__}: {exc}"))
                print(f"{family}: {failures[-1][1]}", flush=True)
                continue
            seconds = time.perf_counter() - start
            rows.append(row(family, result.metrics) + [f"{result.metrics['best_epoch']}", f"{seconds:.0f}"])
            baseline = baseline or row("label frequency", result.chance) + ["-", "-"]
            records.append({"pipeline": family, "config": values, **result.metrics, "seconds": seconds,
                            "chance": result.chance, "files": result.files})
        if args.demo:
            for family, message in failures:
                print(f"\n{family} stops with: {message}")
            from gattn.pipelines._mimic import mimic_paths

            mimic_dir, splits_dir = mimic_paths(config)
            demo_statistics(str(mimic_dir), str(splits_dir), config.cache_dir, config.top_codes)
        if rows:
            rows += [baseline, row("TransICD (published)", PUBLISHED, prefix="") + ["-", "-"]]
            title = "MIMIC-III ICD coding, test split (%)" + (" - INVENTED notes (fixture)" if args.fixture else "")
            print_table(title, ["model", *(c for c, _ in COLUMNS), "best epoch", "s"], rows)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as out:
                json.dump({"runs": records, "failures": failures}, out, indent=2, default=str)


if __name__ == "__main__":
    main()
