"""The Graph Transformer on a small generated PATTERN or CLUSTER set, optionally tuned.

python examples/graph_transformer_sbm.py                         # CLUSTER, 200 graphs, 4 layers
python examples/graph_transformer_sbm.py --dataset PATTERN --model gine
python examples/graph_transformer_sbm.py --tune 8                 # a short Optuna search first

Every option of the pipeline is accepted (``--layers``, ``--hidden``, ``--pe-dim``, ...); the
defaults below are a CPU-sized version of the paper's configuration, which
``gattn train graph_transformer --dataset CLUSTER`` runs in full.
"""

import argparse

from gattn.pipelines import graph_transformer as gt
from gattn.tune import optimize, summary_table, write_report
from gattn.tune.report import format_table

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
gt.add_arguments(parser)
parser.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="run an Optuna search of this many trials before the final run")
parser.add_argument("--runs-dir", default="runs")
parser.set_defaults(dataset="CLUSTER", num_graphs=200, layers=4, hidden=32, heads=4, epochs=20,
                    lr=2e-3, verbose=True)
config = vars(parser.parse_args())
config["progress"] = False

if config["tune"]:
    study = optimize(gt, {**config, "verbose": False}, config["tune"],
                     runs_dir=config["runs_dir"], study_name=f"example-{config['dataset']}")
    print(summary_table(write_report(study, f"{config['runs_dir']}/example-{config['dataset']}")))
    config.update(study.best_params)

print(gt.describe(config))
print(format_table(gt.run(config), header=("metric", "value")))
