"""ABMIL (or any pooling) on Musk1 with the papers' 10-fold cross-validation.

python examples/mil_musk.py                      # gated attention on musk1
python examples/mil_musk.py --pooling hopfield --dataset elephant
"""

import argparse

from gattn.pipelines import mil

parser = argparse.ArgumentParser(description=__doc__)
mil.add_arguments(parser)
parser.add_argument("--root", default=None, help="data root (default: $GATTN_DATA, ../shared/data)")
parser.add_argument("--runs-dir", default="runs")
parser.set_defaults(pooling="gated", verbose=True)
config = vars(parser.parse_args())

result = mil.run(config)
print(
    f"{config['dataset']} / {config['pooling']}: "
    f"accuracy {result['test_accuracy']:.3f} +- {result['test_accuracy_std']:.3f}, "
    f"ROC-AUC {result['test_rocauc']:.3f} +- {result['test_rocauc_std']:.3f} "
    f"over {int(result['folds'])} folds; attention plot in {config['runs_dir']}/"
)
