"""DIN (or DARE) on MovieLens-100k histories, the README's configuration.

python examples/ctr_din_movielens.py              # DIN
python examples/ctr_din_movielens.py dare

The same as ``gattn train din --config configs/din_movielens-100k.yaml``: rating >= 4 is a
click, the last 5 targets of every user are the test set; test AUC, GAUC and log loss. The
data are read from the data root ($GATTN_DATA, the folder ``movielens/ml-100k`` in it).
"""

import sys
from pathlib import Path

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import read_config_file
from gattn.pipelines.results import format_results

name = sys.argv[1] if len(sys.argv) > 1 else "din"
values = read_config_file(Path(__file__).resolve().parents[1] / "configs" / f"{name}_movielens-100k.yaml")
pipeline = get_pipeline(values.pop("pipeline"))
config = make_config(pipeline, {**values, "threads": 1})
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
