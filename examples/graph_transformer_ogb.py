"""The Graph Transformer and its two baselines on an OGB molecule set, in one harness.

python examples/graph_transformer_ogb.py                              # ogbg-molbace, ROC-AUC
python examples/graph_transformer_ogb.py ogbg-molesol                 # RMSE
python examples/graph_transformer_ogb.py ogbg-molbace 100              # 100 epochs

Reads the OGB raw files under the data root ($GATTN_DATA, the folder ``ogb/ogbg_molbace`` in
it) and scores with OGB's Evaluator on the scaffold split; the same as
``gattn train graph_transformer --dataset ogbg-molbace --model MODEL``, once per model.
benchmarks/graph_transformer_results.py runs several seeds.
"""

import sys

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.results import format_results

dataset = sys.argv[1] if len(sys.argv) > 1 else "ogbg-molbace"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
pipeline = get_pipeline("graph_transformer")
for model in ("gattn", "gine", "pyg_transformer"):
    config = make_config(pipeline, {"dataset": dataset, "model": model, "epochs": epochs})
    print(pipeline.describe(config))
    result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
    print(format_results(result.metrics, result.chance), "\n")
