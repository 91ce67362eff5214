"""GIN-Attention vs plain multi-head attention of the same size, and the Sparse GIN adapter vs
LoRA-style low-rank fine-tuning. The Cora experiment runs ``configs/gin_attention_cora.yaml``
through the ``gin_attention`` pipeline (``gattn train gin_attention``); the two sequence
experiments keep a plain training loop here (model construction is separate, in
``gattn.models`` and :func:`lora_model` / :func:`adapter_model`): the pipeline covers the
graph form only.

Three experiments (``--experiments``), each over ``--seeds`` seeds, mean +- std:

* ``cora``: the sparse form on Cora node classification (Planetoid split: 140 / 500 / 1,000
  nodes), :class:`gattn.models.GraphAttentionClassifier` with GIN-Attention or plain
  multi-head attention (same width, heads and parameter count), test accuracy and Macro-F1 at
  the best validation accuracy (the pipeline's ``val_f1_micro``, which equals it here).
* ``sequence``: the dense form on a small sequence task, *token counting*: sequences of
  ``L=32`` tokens drawn uniformly from 16 symbols; each token's label is how often its symbol
  occurs in the sequence (1..8, capped at 8). The answer is a relation between tokens, not a
  property of one, and 1,000 training sequences are few enough to over-fit. Train and
  validation curves (accuracy and loss per epoch) go to ``sequence_curves.png``; the table gives
  the final train and validation accuracy and their gap, and the best validation accuracy.
* ``adapter``: a small plain Transformer (2 layers, D=64, ``torch.nn.MultiheadAttention``) is
  first trained on token counting (4,000 sequences) and frozen; it is then fine-tuned to
  *group counting* (each token's label: how many tokens share its symbol's residue mod 4,
  1..16: other tokens than the frozen attention links) and to *count parity* (whether the
  token's symbol occurs an odd number of times: the frozen attention already links the tokens
  that matter) with (a) a new linear head only, (b) LoRA of rank r on the attention's query,
  key, value and output projections plus the head, (c) a Sparse GIN adapter on every attention
  layer (top-k graph of the frozen attention) plus the head; r and the adapter's MLP width are
  chosen so (b) and (c) train about the same number of parameters (both printed).

    python benchmarks/gin_attention_results.py --root ../shared/data    # all three, 5 seeds
    python benchmarks/gin_attention_results.py --root ../shared/data --experiments cora --seeds 2
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
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import print_table

CORA_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gin_attention_cora.yaml"
EXPERIMENTS = ("cora", "sequence", "adapter")
VOCAB, LENGTH, COUNT_CLASSES, GROUPS = 16, 32, 8, 4


def mean_std(values: list[float], scale: float = 100.0) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.2f} +- {scale * std:.2f}"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ------------------------------------------------------------------------------------- Cora
def run_cora(args) -> dict:
    """``configs/gin_attention_cora.yaml`` through the ``gin_attention`` pipeline, once per
    attention and seed (``gattn train gin_attention --attention gin|mha --seed N``)."""
    from gattn.pipelines import get_pipeline, make_config
    from gattn.pipelines.config import read_config_file

    pipeline = get_pipeline("gin_attention")
    base = read_config_file(args.cora_config)
    base.pop("pipeline", None)
    results = {}
    for attention in ("gin", "mha"):
        runs = []
        for seed in range(args.seeds):
            values = {**base, "attention": attention, "seed": seed, "progress": False}
            if args.root is not None:
                values["root"] = str(args.root)
            if args.threads:
                values["threads"] = args.threads
            config = make_config(pipeline, values)
            start = time.perf_counter()
            metrics = pipeline.run(config, Path(args.out) / f"cora-{attention}-seed{seed}").metrics
            runs.append(dict(val=metrics["val_accuracy"], test=metrics["test_accuracy"],
                             test_f1_macro=metrics["test_f1_macro"], epoch=metrics["best_epoch"],
                             seconds=time.perf_counter() - start, parameters=metrics["num_params"]))
            print(f"cora {attention} seed {seed}: test {runs[-1]['test']:.4f} (val {runs[-1]['val']:.4f}, "
                  f"epoch {runs[-1]['epoch']})", flush=True)
        results[attention] = runs
    print_table(
        f"{config.dataset} (Planetoid split), test accuracy (= Micro-F1) and Macro-F1 (%) at the best validation "
        f"accuracy, {args.seeds} seed(s), {config.layers} layers, hidden {config.hidden}, {config.heads} heads, "
        f"{config.epochs} epochs",
        ["attention", "test accuracy", "test Macro-F1", "val accuracy", "parameters", "s / run"],
        [[a, mean_std([r["test"] for r in rs]), mean_std([r["test_f1_macro"] for r in rs]),
          mean_std([r["val"] for r in rs]), f"{rs[0]['parameters']:,}",
          f"{statistics.mean(r['seconds'] for r in rs):.0f}"] for a, rs in results.items()],
    )
    return results


# ---------------------------------------------------------------------------- token tasks
TASKS = ("count", "group", "parity")


def token_task(num: int, seed: int, task: str = "count") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token labels of random sequences. ``count``: occurrences of the token's symbol in its
    sequence (1..8, capped), class 0..7; ``group``: occurrences of the symbol's residue mod 4
    (1..16), class 0..15; ``parity``: whether the symbol occurs an odd or even number of times."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (num, LENGTH), generator=gen)
    keys = tokens % GROUPS if task == "group" else tokens
    counts = (keys.unsqueeze(2) == keys.unsqueeze(1)).sum(-1)
    if task == "parity":
        return tokens, counts % 2
    return tokens, counts.clamp(max=task_classes(task)) - 1


def task_classes(task: str) -> int:
    return {"count": COUNT_CLASSES, "group": LENGTH // 2, "parity": 2}[task]


def evaluate(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> tuple[float, float]:
    model.eval()
    losses, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens), batch):
            logits = model(tokens[start:start + batch])
            target = labels[start:start + batch]
            losses += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
            correct += (logits.argmax(-1) == target).sum().item()
    return losses / labels.numel(), correct / labels.numel()


def fit(model: nn.Module, train: tuple, val: tuple, epochs: int, seed: int, lr: float = 1e-3,
        batch: int = 64) -> list[dict]:
    """Mini-batch training; per epoch the train and validation loss and accuracy."""
    tokens, labels = train
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for epoch in range(1, epochs + 1):
        model.train()
        for index in torch.randperm(len(tokens), generator=gen).split(batch):
            optimizer.zero_grad()
            logits = model(tokens[index])
            F.cross_entropy(logits.flatten(0, 1), labels[index].flatten()).backward()
            optimizer.step()
        train_loss, train_acc = evaluate(model, *train)
        val_loss, val_acc = evaluate(model, *val)
        curve.append(dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc))
    return curve


def build_sequence_model(attention: str, classes: int, channels: int, dropout: float) -> nn.Module:
    from gattn.models import SequenceTransformer

    return SequenceTransformer(VOCAB, LENGTH, channels, classes, num_layers=2, heads=4, attention=attention,
                               dropout=dropout)


def plot_curves(curves: dict[str, list[list[dict]]], path: str) -> str:
    """Mean train/validation accuracy and loss per epoch of each model (one line per model and
    split; the shaded band is +- one std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"gin": "tab:blue", "mha": "tab:orange"}
    for name, runs in curves.items():
        epochs = [row["epoch"] for row in runs[0]]
        for split, style in (("train", "-"), ("val", "--")):
            for ax, metric in zip(axes, ("acc", "loss")):
                values = torch.tensor([[row[f"{split}_{metric}"] for row in run] for run in runs])
                mean, std = values.mean(0), values.std(0) if len(runs) > 1 else torch.zeros(len(epochs))
                ax.plot(epochs, mean, style, color=colors.get(name), label=f"{name} {split}")
                ax.fill_between(epochs, mean - std, mean + std, color=colors.get(name), alpha=0.15)
    axes[0].set_ylabel("accuracy")
    axes[1].set_ylabel("cross-entropy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle("Token counting, 1,000 training sequences: GIN-Attention vs multi-head attention "
                 "(train solid, validation dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_sequence(args, out: Path) -> dict:
    train = token_task(args.train_sequences, seed=1)
    val = token_task(1000, seed=2)
    curves, rows = {}, []
    for attention in ("gin", "mha"):
        curves[attention] = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build_sequence_model(attention, COUNT_CLASSES, args.seq_channels, args.seq_dropout)
            start = time.perf_counter()
            curve = fit(model, train, val, args.seq_epochs, seed)
            curves[attention].append(curve)
            print(f"sequence {attention} seed {seed}: train {curve[-1]['train_acc']:.4f} "
                  f"val {curve[-1]['val_acc']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        runs = curves[attention]
        rows.append([attention, mean_std([c[-1]["train_acc"] for c in runs]),
                     mean_std([c[-1]["val_acc"] for c in runs]),
                     mean_std([c[-1]["train_acc"] - c[-1]["val_acc"] for c in runs]),
                     mean_std([max(r["val_acc"] for r in c) for c in runs]),
                     mean_std([c[-1]["val_loss"] - c[-1]["train_loss"] for c in runs], scale=1.0),
                     f"{count_parameters(model):,}"])
    print_table(
        f"Token counting (L={LENGTH}, {VOCAB} symbols, {args.train_sequences} training sequences), per-token accuracy "
        f"(%) after {args.seq_epochs} epochs, {args.seeds} seeds; gap = train - validation",
        ["attention", "train acc", "val acc", "gap (acc)", "best val acc", "gap (loss)", "parameters"], rows,
    )
    path = plot_curves(curves, str(out / "sequence_curves.png"))
    print(f"curves: {path}")
    return curves


# ------------------------------------------------------------------------- adapter vs LoRA
class LowRankUpdate(nn.Module):
    """A parametrization ``W -> W + (alpha / r) B A`` (LoRA): ``A`` [r, cols] random, ``B``
    [rows, r] zero, so the weight is unchanged at the start."""

    def __init__(self, rows: int, cols: int, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, cols) / rank)
        self.up = nn.Parameter(torch.zeros(rows, rank))
        self.scaling = (alpha if alpha is not None else rank) / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scaling * (self.up @ self.down)


def lora_model(model: nn.Module, rank: int) -> nn.Module:
    """Freeze ``model`` and add LoRA updates of rank ``rank`` to every MultiheadAttention's
    query/key/value projection (``in_proj_weight``: one update per projection) and output
    projection."""
    from torch.nn.utils import parametrize

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in list(model.modules()):
        if isinstance(module, nn.MultiheadAttention):
            dim = module.embed_dim
            parametrize.register_parametrization(module, "in_proj_weight", _StackedLowRank(dim, rank))
            parametrize.register_parametrization(module.out_proj, "weight", LowRankUpdate(dim, dim, rank))
    return model


class _StackedLowRank(nn.Module):
    """LoRA on a stacked [3 D, D] query/key/value weight: one rank-r update per projection."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.parts = nn.ModuleList(LowRankUpdate(dim, dim, rank) for _ in range(3))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(w) for part, w in zip(self.parts, weight.chunk(3))])


def adapter_model(model: nn.Module, top_k: int, mlp_ratio: float) -> nn.Module:
    """Freeze ``model`` and put a Sparse GIN adapter on every attention block."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in model.blocks:
        block.adapt(top_k=top_k, mlp_ratio=mlp_ratio)
    return model


def with_new_head(model: nn.Module, classes: int) -> nn.Module:
    model.head = nn.Linear(model.head.in_features, classes)
    return model


def run_adapter(args, out: Path) -> dict:
    import copy

    torch.manual_seed(0)
    pretrained = build_sequence_model("mha", COUNT_CLASSES, args.seq_channels, 0.0)
    start = time.perf_counter()
    pretrain_curve = fit(pretrained, token_task(4000, seed=11), token_task(1000, seed=12), args.pretrain_epochs,
                         seed=0)
    pretrained_acc = pretrain_curve[-1]["val_acc"]
    print(f"pretrained on token counting: val accuracy {pretrained_acc:.4f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    variants = {
        "head only": lambda m: m,
        f"LoRA r={args.lora_rank}": lambda m: lora_model(m, args.lora_rank),
        f"Sparse GIN top-{args.adapter_top_k}": lambda m: adapter_model(m, args.adapter_top_k, args.adapter_ratio),
    }
    results = {}
    for task in args.finetune_tasks.split(","):
        train, val = token_task(args.train_sequences, seed=21, task=task), token_task(1000, seed=22, task=task)
        results[task], rows = {}, []
        for name, make in variants.items():
            runs = []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = copy.deepcopy(pretrained)
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
                model = with_new_head(make(model), task_classes(task))
                trainable = count_parameters(model, trainable_only=True)
                start = time.perf_counter()
                curve = fit(model, train, val, args.finetune_epochs, seed)
                runs.append(dict(curve=curve, trainable=trainable, seconds=time.perf_counter() - start))
                print(f"adapter experiment, {task}, {name} seed {seed}: val {curve[-1]['val_acc']:.4f} "
                      f"({trainable:,} trainable, {runs[-1]['seconds']:.0f} s)", flush=True)
            results[task][name] = [dict(trainable=r["trainable"], curve=r["curve"]) for r in runs]
            rows.append([name, f"{runs[0]['trainable']:,}", mean_std([r["curve"][-1]["val_acc"] for r in runs]),
                         mean_std([max(c["val_acc"] for c in r["curve"]) for r in runs]),
                         mean_std([r["curve"][-1]["train_acc"] for r in runs]),
                         f"{statistics.mean(r['seconds'] for r in runs):.0f}"])
        print_table(
            f"Fine-tuning a frozen 2-layer Transformer (pretrained on token counting, val acc {pretrained_acc:.3f}) "
            f"to {task} ({args.train_sequences} sequences, {args.finetune_epochs} epochs, {args.seeds} seeds), "
            "per-token accuracy (%)",
            ["method", "trainable parameters", "val acc (final)", "val acc (best)", "train acc", "s / run"], rows,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=None, help="data root holding planetoid/Cora/raw "
                        "(default: $GATTN_DATA)")
    parser.add_argument("--cora-config", type=Path, default=CORA_CONFIG, help="the cora experiment's config file")
    parser.add_argument("--train-sequences", type=int, default=1000)
    parser.add_argument("--seq-channels", type=int, default=64)
    parser.add_argument("--seq-dropout", type=float, default=0.0)
    parser.add_argument("--seq-epochs", type=int, default=30)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--finetune-tasks", default="group,parity", help="comma-separated: group, parity")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--adapter-top-k", type=int, default=8)
    parser.add_argument("--adapter-ratio", type=float, default=1.0, help="MLP ratio of the adapter's GIN")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/gin_attention_results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for experiment in args.experiments.split(","):
        if experiment not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {experiment!r}; choose from {EXPERIMENTS}")
        runner = {"cora": lambda: run_cora(args), "sequence": lambda: run_sequence(args, out),
                  "adapter": lambda: run_adapter(args, out)}[experiment]
        results[experiment] = runner()
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
