"""GIN-Attention against plain multi-head attention of the same size on Cora (sparse form).

python examples/gin_attention_cora.py             # both, the README configuration
python examples/gin_attention_cora.py gin 3       # GIN-Attention only, seeds 0..2

The same as ``gattn train --config configs/gin_attention_cora.yaml --attention gin|mha``; the
raw files are read from the data root ($GATTN_DATA, the folder ``planetoid/Cora/raw`` in it).
"""

import sys
from pathlib import Path

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import read_config_file
from gattn.pipelines.results import format_results

attentions = [sys.argv[1]] if len(sys.argv) > 1 else ["gin", "mha"]
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
pipeline = get_pipeline("gin_attention")
values = read_config_file(Path(__file__).resolve().parents[1] / "configs" / "gin_attention_cora.yaml")
values.pop("pipeline")
for attention in attentions:
    for seed in range(seeds):
        config = make_config(pipeline, {**values, "attention": attention, "seed": seed})
        print(pipeline.describe(config), f"seed {seed}")
        result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
        print(format_results(result.metrics, result.chance))
