"""LATTE (or HAN, HGT, R-GCN of the same width) on a heterogeneous graph in the HeCo layout,
with the relation-attention (beta) plot.

python examples/latte_acm.py                      # LATTE on ACM (<data root>/hetero/acm)
python examples/latte_acm.py acm hgt
python examples/latte_acm.py path/to/heco/folder latte

The same as ``gattn train --config configs/latte_acm.yaml`` (``--model``, ``--dataset`` to
change); the data are read from the data root ($GATTN_DATA, the folder ``hetero`` in it).
"""

import sys
from pathlib import Path

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import read_config_file
from gattn.pipelines.results import format_results

dataset = sys.argv[1] if len(sys.argv) > 1 else "acm"
model = sys.argv[2] if len(sys.argv) > 2 else "latte"
pipeline = get_pipeline("latte")
values = read_config_file(Path(__file__).resolve().parents[1] / "configs" / "latte_acm.yaml")
values.pop("pipeline")
config = make_config(pipeline, {**values, "dataset": dataset, "model": model})
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
print("beta plot:", result.files.get("beta plot"))
