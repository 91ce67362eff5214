"""Hopfield pooling on the embedded digit-bags (no download), with an attention heatmap.

A bag is positive when it holds a 9; after training, the instance attention of a few test
bags is plotted (the 9s in red) to runs/mil_digit_bags_attention.png.

    python examples/mil_digit_bags.py
"""

import torch

from gattn.datasets.mil import BagLoader, cross_validation_folds, digit_bags
from gattn.nn.mil import HopfieldMIL
from gattn.pipelines.mil import plot_attention
from gattn.train import evaluate, fit, seed_everything

seed_everything(0)
bags = digit_bags(num_bags=300, target=9, seed=0)
train_idx, test_idx = cross_validation_folds(bags.labels, n_folds=5, seed=0)[0]
train, test = bags.subset(train_idx), bags.subset(test_idx)

model = HopfieldMIL(bags.num_features, hidden=(64, 32), num_heads=2, hopfield_hidden=16)
fit(model, BagLoader(train, batch_size=8, shuffle=True), loss_fn=torch.nn.BCEWithLogitsLoss(), lr=1e-3, epochs=30)


def rocauc(y_true, y_pred):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y_true.numpy(), y_pred.numpy())


print("test ROC-AUC:", evaluate(model, BagLoader(test, batch_size=64), {"rocauc": rocauc}))
print("plot:", plot_attention(model, test, "runs/mil_digit_bags_attention.png"))
