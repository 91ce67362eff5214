"""The Graph Transformer on a small generated PATTERN or CLUSTER set, optionally tuned first.

python examples/graph_transformer_sbm.py                  # CLUSTER, 200 graphs, 4 layers
python examples/graph_transformer_sbm.py PATTERN
python examples/graph_transformer_sbm.py CLUSTER 8        # an 8-trial Optuna search first

A CPU-sized version of the paper's configuration, which
``gattn train graph_transformer --dataset CLUSTER`` runs in full.
"""

import sys

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import config_dict
from gattn.pipelines.results import format_results
from gattn.tune import optimize

dataset = sys.argv[1] if len(sys.argv) > 1 else "CLUSTER"
trials = int(sys.argv[2]) if len(sys.argv) > 2 else 0
pipeline = get_pipeline("graph_transformer")
config = make_config(pipeline, dict(dataset=dataset, num_graphs=200, layers=4, hidden=32, heads=4, epochs=20,
                                    lr=2e-3, search_hidden=(16, 32), search_max_layers=4))
if trials:
    study = optimize(pipeline, config, trials, runs_dir="runs/examples")
    config = make_config(pipeline, {**config_dict(config), **study.best_params})
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
