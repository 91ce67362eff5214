"""Hopfield pooling on the embedded digit-bags (no download), with an attention heatmap.

A bag is positive when it holds a 9; after 5-fold cross-validation the instance attention of
a few test bags of the last fold is plotted (the 9s in red) in the run folder.

    python examples/mil_digit_bags.py
"""

from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.results import format_results

pipeline = get_pipeline("mil")
config = make_config(pipeline, dict(dataset="digit-bags", pooling="hopfield", folds=5, repeats=1, hidden=(64, 32),
                                    heads=2, attention=16, batch_size=8, lr=1e-3, epochs=30))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
print("attention plot:", result.files["attention plot"])
