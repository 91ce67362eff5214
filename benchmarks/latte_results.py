"""LATTE vs HAN, HGT and R-GCN on ACM node classification (HeCo layout, 20 labelled papers per
class), Micro-F1 and Macro-F1 on the test papers, mean +- std over seeds. A plain full-batch
training loop, the same for every model (model construction is separate: :func:`build_model`);
it will move onto the pipeline platform (``gattn train latte``).

Protocol: Adam, ``--epochs`` at most, the checkpoint with the best validation Macro-F1 is
evaluated on the test split (1,000 papers), early stop after ``--patience`` epochs without
improvement. All models are 2 layers wide ``--hidden`` (HAN: one HANConv layer, as in the
paper) on the same input encoder (a linear projection per featured node type, a learned
embedding for subjects, which have no features). Every model reads the same first-order
relations (paper-author, paper-subject and their reverses); HAN also a self-loop relation per
node type, since HANConv has no root/self term (its meta-path graphs carry the diagonal).
Extra models (``--models``):
``latte-prox`` (with the proximity loss), ``latte-structure`` (meta-relations weighted by path
counts instead of attention, composed once), ``han-metapath`` (HAN on the meta-path graphs PAP
and PSP of ``pap.npz`` / ``psp.npz``, as in the HAN paper; PSP has 4.3M edges, over a minute an
epoch on a 2-core CPU, so each paper keeps ``--psp-neighbours`` of its PSP neighbours, drawn
once with a fixed seed; 0 keeps all).

    python benchmarks/latte_results.py                       # latte, han, hgt, rgcn; 5 seeds
    python benchmarks/latte_results.py --models latte,latte-prox,hgt --seeds 2 --epochs 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table

ACM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "hetero" / "acm"
MODELS = ("latte", "han", "hgt", "rgcn")  # the default comparison
EXTRA_MODELS = ("latte-prox", "latte-structure", "han-metapath")
META_PATHS = ("pap", "psp")


def load(folder: Path, split: int):
    from gattn.datasets import load_heco

    return load_heco(folder, split=split, metapaths=True)


def sample_per_destination(edge_index: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """At most ``k`` incoming edges per destination, drawn uniformly (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.argsort(torch.rand(edge_index.size(1), generator=gen))
    order = order[torch.argsort(edge_index[1][order], stable=True)]
    dst = edge_index[1][order]
    rank = torch.arange(dst.numel()) - torch.searchsorted(dst, dst)
    return edge_index[:, order[rank < k]]


def graph_for(name: str, data, psp_neighbours: int | None = 32) -> tuple[list, dict]:
    """(metadata, edge_index_dict) a model reads: the first-order relations; for ``han`` also a
    self-loop relation per node type (HANConv has no root term: without it a paper would never
    see its own features); for ``han-metapath`` the meta-path graphs, PSP (4.3M edges) sampled
    to ``psp_neighbours`` per paper (``None``: all)."""
    relations = [e for e in data.edge_types if e[1] not in META_PATHS]
    edge_types = [e for e in data.edge_types if e[1] in META_PATHS] if name == "han-metapath" else relations
    edges = {e: data[e].edge_index for e in edge_types}
    if name == "han-metapath" and psp_neighbours:
        psp = next(e for e in edges if e[1] == "psp")
        edges[psp] = sample_per_destination(edges[psp], psp_neighbours, seed=0)
    if name == "han":
        for node_type in data.node_types:
            loop = torch.arange(data[node_type].num_nodes)
            edges[(node_type, "self", node_type)] = torch.stack([loop, loop])
    node_types = sorted({t for e in edges for t in (e[0], e[2])})
    return (node_types, list(edges)), edges


def build_model(name: str, data, hidden: int, dropout: float) -> torch.nn.Module:
    """One model of the comparison (all of width ``hidden``)."""
    from gattn.models import HAN, HGT, LATTE, RGCN

    metadata, _ = graph_for(name, data)
    in_channels = {t: data[t].x.size(1) for t in metadata[0] if "x" in data[t]}
    num_nodes = {t: data[t].num_nodes for t in metadata[0]}
    common = dict(hidden_channels=hidden, dropout=dropout, num_nodes_dict=num_nodes)
    target, classes = data.target_type, data.num_classes
    if name in ("latte", "latte-prox", "latte-structure"):
        weights = "structure" if name == "latte-structure" else "attention"
        return LATTE(metadata, in_channels, classes, target, num_layers=2, heads=4, meta_weights=weights, **common)
    if name in ("han", "han-metapath"):
        return HAN(metadata, in_channels, classes, target, heads=8, **common)
    if name == "hgt":
        return HGT(metadata, in_channels, classes, target, num_layers=2, heads=4, **common)
    if name == "rgcn":
        return RGCN(metadata, in_channels, classes, target, num_layers=2, **common)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS + EXTRA_MODELS}")


def f1_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    predicted = logits.argmax(1).numpy()
    truth = labels.numpy()
    return (float(f1_score(truth, predicted, average="micro")), float(f1_score(truth, predicted, average="macro")))


def train_one(name: str, data, seed: int, args) -> dict:
    """Train one model with one seed; the test scores at the best validation Macro-F1."""
    torch.manual_seed(seed)
    model = build_model(name, data, args.hidden, args.dropout)
    _, edges = graph_for(name, data, args.psp_neighbours or None)
    x = {t: data[t].x for t in data.node_types if "x" in data[t]}
    store = data[data.target_type]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    best = {"val_macro": -1.0}
    stale, start = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        optimizer.zero_grad()
        if name == "latte-prox":
            output = model.encode(x, edges, proximity=True)
            logits = model.classify(output)
            loss = F.cross_entropy(logits[store.train_mask], store.y[store.train_mask])
            loss = loss + args.proximity_weight * output.proximity_loss
        else:
            logits = model(x, edges)
            loss = F.cross_entropy(logits[store.train_mask], store.y[store.train_mask])
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x, edges)
        val_micro, val_macro = f1_scores(logits[store.val_mask], store.y[store.val_mask])
        if val_macro > best["val_macro"]:
            test_micro, test_macro = f1_scores(logits[store.test_mask], store.y[store.test_mask])
            best = dict(epoch=epoch, val_micro=val_micro, val_macro=val_macro, test_micro=test_micro,
                        test_macro=test_macro)
            stale = 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    best["epochs_run"] = epoch
    best["seconds"] = time.perf_counter() - start
    best["parameters"] = sum(p.numel() for p in model.parameters())
    if name.startswith("latte"):
        model.eval()
        with torch.no_grad():
            output = model.encode(x, edges)
        best["beta"] = [{t: dict(zip(slots[t], b[t].mean(0).tolist())) for t in b}
                        for b, slots in zip(output.betas, output.relation_slots)]
    return best


def plot_betas(beta_layers: list[dict], path: str, title: str) -> str:
    """Bar chart of the mean relation attention (beta) per node type and layer: one panel per
    layer, one group of bars per node type, one bar per relation slot. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(beta_layers), figsize=(5.5 * len(beta_layers), 3.6), squeeze=False)
    for layer, (ax, betas) in enumerate(zip(axes[0], beta_layers), start=1):
        x = 0.0
        ticks, labels = [], []
        for node_type, slots in betas.items():
            for slot, value in slots.items():
                ax.bar(x, value, color="tab:gray" if slot == "self" else "tab:blue")
                ticks.append(x)
                labels.append(f"{node_type}: {slot}")
                x += 1
            x += 0.8
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {layer} (order-{layer} relations)", fontsize=9)
        ax.set_ylabel("mean beta")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ACM_DIR)
    parser.add_argument("--split", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--proximity-weight", type=float, default=0.1)
    parser.add_argument("--psp-neighbours", type=int, default=32, help="han-metapath: PSP neighbours per paper")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/latte_results", help="folder for results.json and the beta plot")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args.data, args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    for name in args.models.split(","):
        runs[name] = []
        for seed in range(args.seeds):
            result = train_one(name, data, seed, args)
            runs[name].append(result)
            print(f"{name} seed {seed}: test Micro-F1 {result['test_micro']:.4f} Macro-F1 {result['test_macro']:.4f} "
                  f"(best epoch {result['epoch']}, {result['epochs_run']} epochs, {result['seconds']:.0f} s)",
                  flush=True)
    (out / "results.json").write_text(json.dumps(runs, indent=1))
    rows = []
    for name, results in runs.items():
        rows.append([name, mean_std([r["test_micro"] for r in results]), mean_std([r["test_macro"] for r in results]),
                     f"{results[0]['parameters']:,}", f"{statistics.mean(r['seconds'] for r in results):.0f}",
                     f"{statistics.mean(r['epochs_run'] for r in results):.0f}"])
    print_table(
        f"ACM (HeCo, {args.split} labelled papers per class), test Micro-F1 / Macro-F1 (%) at the best validation "
        f"Macro-F1, mean +- std over {args.seeds} seeds; hidden {args.hidden}, at most {args.epochs} epochs, "
        f"patience {args.patience}",
        ["model", "Micro-F1", "Macro-F1", "parameters", "s / run", "epochs / run"], rows,
    )
    for name in ("latte", "latte-prox", "latte-structure"):
        if name in runs:
            path = plot_betas(runs[name][0]["beta"], str(out / f"{name}_beta.png"),
                              f"{name} on ACM: mean relation attention per node type (seed 0)")
            print(f"beta plot: {path}")


if __name__ == "__main__":
    main()
