"""Hiformer on a Criteo file: the 200-row sample by default, or any Criteo-format file.

python examples/ctr_hiformer_criteo.py                          # criteo-sample
python examples/ctr_hiformer_criteo.py path/to/train.txt 8      # a file, low-rank 8

The same as ``gattn train hiformer --config configs/hiformer_criteo-sample.yaml
[--dataset FILE] [--rank R]``: the seeded 8:1:1 split, the processed splits cached under
$GATTN_CACHE; test ROC-AUC and log loss of the epoch with the best validation AUC.
"""

import sys
from pathlib import Path

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import read_config_file
from gattn.pipelines.results import format_results

values = read_config_file(Path(__file__).resolve().parents[1] / "configs" / "hiformer_criteo-sample.yaml")
pipeline = get_pipeline(values.pop("pipeline"))
if len(sys.argv) > 1:
    values["dataset"] = sys.argv[1]
if len(sys.argv) > 2:
    values["rank"] = int(sys.argv[2])
config = make_config(pipeline, {**values, "threads": 1})
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
