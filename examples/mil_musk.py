"""Gated attention MIL (or any pooling) with the papers' 10-fold cross-validation.

python examples/mil_musk.py                       # gated attention on musk1
python examples/mil_musk.py elephant hopfield

The same as ``gattn train mil --dataset musk1 --pooling gated``; the data are read from the
data root ($GATTN_DATA, the folder ``mil`` in it). The defaults are the paper's protocol: 10-fold
cross-validation repeated 5 times, one bag per step, 100 epochs per fold (50 x 7,400 steps on
Musk1: about 40 minutes of one core); ``gattn train mil --repeats 1`` is a fifth of it.
"""

import sys

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.results import format_results

dataset = sys.argv[1] if len(sys.argv) > 1 else "musk1"
pooling = sys.argv[2] if len(sys.argv) > 2 else "gated"
pipeline = get_pipeline("mil")
config = make_config(pipeline, {"dataset": dataset, "pooling": pooling})
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
print("attention plot:", result.files.get("attention plot"))
