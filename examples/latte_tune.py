"""An Optuna search of LATTE's hyperparameters on ACM, then the best configuration trained.

python examples/latte_tune.py                     # 10 trials of at most 50 epochs
python examples/latte_tune.py 30

The same as ``gattn tune latte --dataset acm --trials 10 --epochs 50``.
"""

import sys

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import config_dict
from gattn.pipelines.results import format_results
from gattn.tune import optimize

trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
pipeline = get_pipeline("latte")
config = make_config(pipeline, {"dataset": "acm", "epochs": 50, "patience": 20, "plot": False})
study = optimize(pipeline, config, trials, runs_dir="runs/examples")
config = make_config(pipeline, {**config_dict(config), **study.best_params, "plot": True})
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
