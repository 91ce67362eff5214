"""The Graph Transformer and its two baselines on an OGB molecule set, in one harness.

python examples/graph_transformer_ogb.py                              # ogbg-molbace, ROC-AUC
python examples/graph_transformer_ogb.py --dataset ogbg-molesol       # RMSE
python examples/graph_transformer_ogb.py --models gattn --epochs 100

Reads the OGB raw files under the data root (``--root``, ``$GATTN_DATA``, ``../shared/data``
or ``./data``; the folder ``ogb/ogbg_molbace`` inside it) and scores with OGB's Evaluator on
the scaffold split. benchmarks/graph_transformer_results.py runs several seeds.
"""

import argparse

from gattn.pipelines import graph_transformer as gt
from gattn.tune.report import format_table

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
gt.add_arguments(parser)
parser.add_argument("--root", default=None, help="data root")
parser.add_argument("--models", default=",".join(gt.MODELS),
                    help="comma-separated models to compare (default: all three)")
parser.set_defaults(dataset="ogbg-molbace", epochs=30)
config = vars(parser.parse_args())
config["progress"] = False

rows = []
for model in config["models"].split(","):
    run_config = {**config, "model": model}
    result = gt.run(run_config)
    name = gt.metric(run_config)
    rows.append((model, result[f"val_{name}"], result[f"test_{name}"],
                 int(result["best_epoch"]), int(result["num_params"]), result["time_s"]))
    print(gt.describe(run_config))
print(format_table(rows, header=("model", "val", "test", "best epoch", "params", "seconds")))
