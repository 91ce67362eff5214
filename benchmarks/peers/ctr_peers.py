"""DeepCTR-Torch's DIN and FuxiCTR's DIN, trained and timed the way their libraries do it.

Runs **inside the peer venv** (``bash benchmarks/peers/make_ctr_env.sh``), which has no gattn:
this file imports only torch, numpy, sklearn, the peers and ``benchmarks.peers.ctr_data``.
Run it from the repository root so ``benchmarks`` is importable.

Train on parquet splits (the behaviour loader's export: ``user_id, item_id, cate_id,
hist_item_id list<int64>, hist_cate_id list<int64>, label``, ids 1-based, 0 = padding) and
print the test AUC and log loss, and the per-sample predictions (for GAUC)::

    benchmarks/peers/.venv-ctr/bin/python -m benchmarks.peers.ctr_peers --peer deepctr \\
        --train train.parquet --test test.parquet --epochs 2 --embedding-dim 32 \\
        --predictions deepctr_test.csv

Both peers get the same configuration: embedding size, local activation unit (80, 40) with
Dice, unnormalised attention weights (the DIN paper), MLP (200, 80) with ReLU, Adam at 1e-3,
no regularisation, the same shuffled batches for the same number of epochs; the last
epoch's model is evaluated. Each trains with its library's own per-batch step: DeepCTR-Torch
the body of ``BaseModel.fit`` (input as one float tensor, summed BCE), FuxiCTR its
``train_step`` (mean BCE, gradient clipping at 10). Histories are padded the way each library
pads them: DeepCTR-Torch to a fixed ``--max-len`` after the behaviours, FuxiCTR to the longest
history of the batch (at most ``--max-len``) before them. FuxiCTR's DIN is its LongCTR model
zoo class (``model_zoo.LongCTR.DIN``, shipped in the fuxictr wheel).

``--child JSON`` runs one throughput measurement for ``benchmarks/ctr_attention.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks._common import median_time, peak_rss_mb, rss_mb
from benchmarks.peers import ctr_data

PEERS = ("deepctr", "fuxictr")
ATTENTION_HIDDEN = (80, 40)
HIDDEN = (200, 80)


class DeepCTRPeer:
    """DeepCTR-Torch's DIN: fixed-length post-padded histories, inputs as one float tensor."""

    def __init__(self, vocab: dict[str, int], dim: int, max_len: int, seed: int) -> None:
        from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
        from deepctr_torch.models import DIN

        columns = [
            SparseFeat("user_id", vocab["user_id"], embedding_dim=dim),
            SparseFeat("item_id", vocab["item_id"], embedding_dim=dim),
            SparseFeat("cate_id", vocab["cate_id"], embedding_dim=dim),
            VarLenSparseFeat(SparseFeat("hist_item_id", vocab["item_id"], embedding_dim=dim, embedding_name="item_id"),
                             maxlen=max_len, length_name="seq_length"),
            VarLenSparseFeat(SparseFeat("hist_cate_id", vocab["cate_id"], embedding_dim=dim, embedding_name="cate_id"),
                             maxlen=max_len, length_name="seq_length"),
        ]
        self.model = DIN(
            columns, ["item_id", "cate_id"], dnn_use_bn=False, dnn_hidden_units=HIDDEN, dnn_activation="relu",
            att_hidden_size=ATTENTION_HIDDEN, att_activation="Dice", att_weight_normalization=False,
            l2_reg_dnn=0.0, l2_reg_embedding=0.0, dnn_dropout=0.0, seed=seed, task="binary", device="cpu",
        )
        self.model.compile("adam", "binary_crossentropy")
        self.max_len = max_len

    def inputs(self, split: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = np.minimum(np.diff(split["hist_offsets"]), self.max_len)
        arrays = {name: split[name] for name in ctr_data.SCALARS}
        arrays.update({name: ctr_data.padded(split, name, self.max_len, "post") for name in ctr_data.SEQUENCES})
        arrays["seq_length"] = lengths
        # what BaseModel.fit does with a dict input: columns in feature_index order, one array
        columns = [arrays[name] for name in self.model.feature_index]
        columns = [c[:, None] if c.ndim == 1 else c for c in columns]
        return torch.from_numpy(np.concatenate(columns, axis=-1)).float(), torch.from_numpy(split["label"]).float()

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The body of DeepCTR-Torch's BaseModel.fit loop for one batch."""
        model, (x, y) = self.model, batch
        model.train()
        y_pred = model(x).squeeze()
        model.optim.zero_grad()
        loss = model.loss_func(y_pred, y.squeeze(), reduction="sum")
        total = loss + model.get_regularization_loss() + model.aux_loss
        total.backward()
        model.optim.step()
        return float(loss)

    def predict(self, batch: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return self.model(batch[0]).reshape(-1).numpy().astype(np.float64)


class FuxiCTRPeer:
    """FuxiCTR's LongCTR DIN: histories pre-padded to the batch's longest, a float mask."""

    def __init__(self, vocab: dict[str, int], dim: int, max_len: int, seed: int) -> None:
        from fuxictr.features import FeatureMap
        from model_zoo.LongCTR.DIN.DIN import DIN

        torch.manual_seed(seed)
        self.workdir = tempfile.mkdtemp(prefix="fuxictr-")
        feature_map = FeatureMap("ctr_peer", self.workdir)
        feature_map.features = OrderedDict(
            (name, {"type": "categorical", "source": source, "vocab_size": vocab[name], "padding_idx": 0})
            for name, source in (("user_id", "user"), ("item_id", "item"), ("cate_id", "item"))
        )
        feature_map.labels = ["label"]
        feature_map.default_emb_dim = dim
        feature_map.num_fields = 3
        self.model = DIN(
            feature_map, model_id="DIN", gpu=-1, dnn_hidden_units=list(HIDDEN), dnn_activations="ReLU",
            attention_hidden_units=list(ATTENTION_HIDDEN), attention_hidden_activations="Dice",
            attention_output_activation=None, attention_dropout=0, din_use_softmax=False, embedding_dim=dim,
            learning_rate=1e-3, net_dropout=0, batch_norm=False, embedding_regularizer=None, net_regularizer=None,
            optimizer="adam", loss="binary_crossentropy", verbose=0, model_root=self.workdir,
            metrics=["AUC", "logloss"],
        )
        # what BaseModel.fit sets before its first train_step
        self.model._max_gradient_norm = 10.0
        self.model._batch_index = 0
        self.max_len = max_len

    def inputs(self, split: dict[str, np.ndarray]) -> tuple[dict, dict, torch.Tensor]:
        """(batch_dict, item_dict, mask) as FuxiCTR's LongCTR BatchCollator builds them."""
        longest = int(min(np.diff(split["hist_offsets"]).max(initial=1), self.max_len))
        count = split["label"].size
        batch_dict = {"user_id": torch.from_numpy(split["user_id"]), "label": torch.from_numpy(split["label"])}
        item_dict, mask = {}, None
        for target, history in (("item_id", "hist_item_id"), ("cate_id", "hist_cate_id")):
            seqs = ctr_data.padded(split, history, longest, "pre")
            if mask is None:
                mask = torch.from_numpy(seqs > 0).float()
            items = np.hstack([seqs, split[target].reshape(count, 1)]).reshape(-1)
            item_dict[target] = torch.from_numpy(items)
        return batch_dict, item_dict, mask

    def train_step(self, batch) -> float:
        self.model.train()
        return float(self.model.train_step(batch))

    def predict(self, batch) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return self.model.forward(batch)["y_pred"].reshape(-1).numpy().astype(np.float64)


def make_peer(name: str, vocab: dict[str, int], dim: int, max_len: int, seed: int):
    if name == "deepctr":
        return DeepCTRPeer(vocab, dim, max_len, seed)
    if name == "fuxictr":
        return FuxiCTRPeer(vocab, dim, max_len, seed)
    raise ValueError(f"--peer must be one of {PEERS}, got {name!r}")


# --------------------------------------------------------------------------- training run
def train_and_predict(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    train = ctr_data.read_split(args.train)
    test = ctr_data.read_split(args.test)
    vocab = ctr_data.vocab_sizes(train, test)
    max_len = args.max_len or int(max(np.diff(train["hist_offsets"]).max(initial=1),
                                      np.diff(test["hist_offsets"]).max(initial=1)))
    peer = make_peer(args.peer, vocab, args.embedding_dim, max_len, args.seed)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        losses = [peer.train_step(peer.inputs(ctr_data.take(train, index)))
                  for index in ctr_data.batches(train["label"].size, args.batch_size, args.seed + epoch)]
        print(f"# {args.peer} epoch {epoch + 1}: mean batch loss {np.mean(losses):.5f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    predictions = np.concatenate([peer.predict(peer.inputs(ctr_data.take(test, index)))
                                  for index in ctr_data.batches(test["label"].size, args.batch_size, None)])
    from sklearn.metrics import log_loss, roc_auc_score

    labels = test["label"]
    return {
        "peer": args.peer, "auc": float(roc_auc_score(labels, predictions)),
        "logloss": float(log_loss(labels, np.clip(predictions, 1e-7, 1 - 1e-7))),
        "num_test": int(labels.size), "epochs": args.epochs, "embedding_dim": args.embedding_dim,
        "max_len": max_len, "train_seconds": seconds,
        "user_id": test["user_id"].tolist(), "label": labels.astype(int).tolist(), "prediction": predictions.tolist(),
    }


def print_result(result: dict, predictions_path: str | None) -> None:
    """The per-sample predictions as CSV (to a file, or stdout), then the metrics as JSON."""
    rows = zip(result.pop("user_id"), result.pop("label"), result.pop("prediction"))
    lines = ["user_id,label,prediction"] + [f"{u},{y},{p:.8g}" for u, y, p in rows]
    if predictions_path:
        with open(predictions_path, "w") as out:
            out.write("\n".join(lines) + "\n")
        result["predictions"] = predictions_path
    else:
        print("\n".join(lines))
    print(json.dumps(result))


# --------------------------------------------------------------------------- throughput child
def measure(spec: dict) -> dict:
    """One training-throughput measurement on synthetic histories (see benchmarks/ctr_attention.py)."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    vocab = {"user_id": spec["num_users"], "item_id": spec["num_items"], "cate_id": spec["num_cates"]}
    peer = make_peer(spec["method"], vocab, spec["dim"], spec["max_len"], seed=0)
    # warm-up (optimizer state, first-call allocations) on a tiny batch before the baseline
    tiny = ctr_data.synthetic_split(4, spec["max_len"], seed=99, num_users=vocab["user_id"],
                                    num_items=vocab["item_id"], num_cates=vocab["cate_id"])
    peer.train_step(peer.inputs(tiny))
    splits = [ctr_data.synthetic_split(spec["batch"], spec["max_len"], seed=spec["seed"] + i,
                                       num_users=vocab["user_id"], num_items=vocab["item_id"],
                                       num_cates=vocab["cate_id"], median_fraction=spec["median_fraction"])
              for i in range(spec["batches"])]
    inputs = [peer.inputs(split) for split in splits]
    base = rss_mb()
    counter = iter(range(10**9))
    step = lambda: peer.train_step(inputs[next(counter) % len(inputs)])
    step()
    peak = max(0.0, peak_rss_mb() - base)  # maxrss and statm count pages apart: no growth may read < 0
    seconds = median_time(step, spec["repeats"])
    return {"step_s": seconds, "samples_per_s": spec["batch"] / seconds, "peak_mb": peak,
            "rows": int(sum(s["hist_offsets"][-1] for s in splits) / len(splits))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--peer", choices=PEERS)
    parser.add_argument("--train", help="training split (parquet)")
    parser.add_argument("--test", help="test split (parquet)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--max-len", type=int, default=0, help="history length cap (0: the longest in the data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--predictions", help="write the per-sample predictions here (default: print them)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    if not (args.peer and args.train and args.test):
        parser.error("--peer, --train and --test are required")
    print_result(train_and_predict(args), args.predictions)


if __name__ == "__main__":
    main()
