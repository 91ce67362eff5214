"""A PyG model written for PyG, made heterogeneous with ``to_hetero``, trained on ACM with
PyG's ``TransformerConv`` and with ``gattn.nn.TransformerConv`` swapped in (one import).

ACM (HeCo's layout, ``<root>/hetero/acm``): 4,019 papers in 3 classes, 7,167 authors, 60
subjects; paper-author and paper-subject edges in both directions; paper and author bag-of-
words features, one-hot subjects; the 20-per-class split (60 train, 1,000 val, 1,000 test).
Both runs use the same seeds, so they start from the same weights; test accuracy is taken
at the epoch of best validation accuracy. Prints accuracy (mean and standard deviation over
seeds) and the training time of both.

    python benchmarks/hetero_acm.py [--root ../shared/data] [--seeds 3] [--epochs 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData
from torch_geometric.nn import to_hetero

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table

ACM_FILES = ("pa.txt", "ps.txt", "p_feat.npz", "a_feat.npz", "labels.npy", "train_20.npy", "val_20.npy",
             "test_20.npy")


def _edges(path: Path) -> torch.Tensor:
    """A tab-separated `paper<TAB>other` edge list -> [2, E] (paper, other)."""
    pairs = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    if pairs.shape[1] != 2:
        raise ValueError(f"{path}: expected two tab-separated integer columns, got {pairs.shape[1]}")
    return torch.from_numpy(pairs.T.copy())


def load_acm(folder: str | Path, split: int = 20) -> HeteroData:
    """ACM in HeCo's layout as a HeteroData (a small local reader for this benchmark)."""
    folder = Path(folder)
    missing = [name for name in ACM_FILES if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"ACM files {missing} not found in {folder}")
    data = HeteroData()
    data["paper"].x = torch.from_numpy(sp.load_npz(folder / "p_feat.npz").toarray()).float()
    data["author"].x = torch.from_numpy(sp.load_npz(folder / "a_feat.npz").toarray()).float()
    writes, about = _edges(folder / "pa.txt"), _edges(folder / "ps.txt")
    data["subject"].x = torch.eye(int(about[1].max()) + 1)
    data["paper"].y = torch.from_numpy(np.load(folder / "labels.npy")).long()
    for part in ("train", "val", "test"):
        mask = torch.zeros(data["paper"].num_nodes, dtype=torch.bool)
        mask[torch.from_numpy(np.load(folder / f"{part}_{split}.npy"))] = True
        data["paper"][f"{part}_mask"] = mask
    data["paper", "written_by", "author"].edge_index = writes
    data["author", "writes", "paper"].edge_index = writes.flip(0)
    data["paper", "about", "subject"].edge_index = about
    data["subject", "covers", "paper"].edge_index = about.flip(0)
    return data


class GNN(torch.nn.Module):
    """Two attention layers and a linear head, written as for a homogeneous graph."""

    def __init__(self, conv: type, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = conv((-1, -1), hidden)
        self.conv2 = conv((-1, -1), hidden)
        self.head = torch.nn.Linear(hidden, classes)
        # a module, not F.dropout(training=self.training): to_hetero's tracing would freeze the flag
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.conv1(x, edge_index).relu())
        x = self.dropout(self.conv2(x, edge_index).relu())
        return self.head(x)


def conv_class(implementation: str) -> type:
    if implementation == "pyg":
        from torch_geometric.nn import TransformerConv
    else:
        from gattn.nn import TransformerConv
    return TransformerConv


def train(data: HeteroData, implementation: str, seed: int, epochs: int = 100, hidden: int = 64,
          lr: float = 0.005, weight_decay: float = 5e-4, dropout: float = 0.5) -> dict[str, float]:
    """Train one model; validation and test accuracy at the best validation epoch."""
    torch.manual_seed(seed)
    model = to_hetero(GNN(conv_class(implementation), hidden, 3, dropout), data.metadata(), aggr="sum")
    with torch.no_grad():
        model(data.x_dict, data.edge_index_dict)  # materialise the lazy sizes
    torch.manual_seed(seed)
    for module in model.modules():  # the same start for both implementations
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    paper = data["paper"]
    best = (-1.0, 0.0)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(data.x_dict, data.edge_index_dict)["paper"]
        F.cross_entropy(out[paper.train_mask], paper.y[paper.train_mask]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = model(data.x_dict, data.edge_index_dict)["paper"].argmax(-1)
        val = float((pred[paper.val_mask] == paper.y[paper.val_mask]).float().mean())
        test = float((pred[paper.test_mask] == paper.y[paper.test_mask]).float().mean())
        if val > best[0]:
            best = (val, test)
    return {"val_acc": best[0], "test_acc": best[1], "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("GATTN_DATA", "../shared/data"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_acm(Path(args.root) / "hetero" / "acm")
    results: dict[str, list[dict[str, float]]] = {"pyg": [], "gattn": []}
    for seed in range(args.seeds):  # interleaved, so that a change of machine load hits both alike
        for impl in results:
            results[impl].append(train(data, impl, seed, args.epochs))
            print(f"seed {seed} {impl}: {results[impl][-1]}", flush=True)

    def summary(impl: str, key: str, digits: int = 3) -> str:
        values = [r[key] for r in results[impl]]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

    rows = [[impl, summary(impl, "test_acc"), summary(impl, "val_acc"), summary(impl, "seconds", 1)]
            for impl in ("pyg", "gattn")]
    print_table(f"ACM, to_hetero(TransformerConv x2 + linear), {args.seeds} seeds, {args.epochs} epochs, "
                "test accuracy at the best validation epoch",
                ["TransformerConv", "test acc", "val acc", "train s"], rows)


if __name__ == "__main__":
    main()
