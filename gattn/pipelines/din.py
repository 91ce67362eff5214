"""Target attention over behaviour histories: DIN (Zhou et al., KDD 2018) and DARE (ICLR 2025).

``gattn train din --dataset movielens-100k`` / ``gattn train dare --dataset movielens-100k``

Data sets (``--dataset``): ``movielens-100k``, ``movielens-1m``, ``movielens-20m``,
``amazon``, ``taobao`` or a path (see :mod:`gattn.pipelines._ctr` for the formats, labels and
splits). Every sample is a target item with the user's earlier interactions as its ragged
history (no padding); the models see the user, the target item and its category, and the
item and category histories.

Models: :class:`gattn.models.DIN` (local activation unit ``--attention-hidden`` with
``--attention-activation``, Dice by default; unnormalised weights unless ``--softmax``; MLP
``--hidden`` with ``--activation``, Dice by default, ``prelu`` is the paper's baseline) and
:class:`gattn.models.DARE` (separate attention and representation tables, ``--top-k``
behaviours retrieved per user, then softmax attention over them). Options of both:
``--decoupled`` (DARE's two tables; default on for DARE, off for DIN), ``--attention-embedding-dim``,
``--interest-product`` (feed ``target * interest`` to the MLP) and ``--mba-lambda``: DIN's
mini-batch aware L2 regularisation (:meth:`~gattn.models.DIN.minibatch_aware_penalty`: the
embedding rows of the user, item and category ids in a batch, histories included, each divided
by its number of occurrences in the training split; ``lambda * penalty`` is added to the
batch's loss; 0 = off).

Metrics: test and validation ROC-AUC, log loss and GAUC (per-user AUC weighted by the user's
samples, users with one class skipped; :func:`gattn.metrics.gauc`). **Selection metric: the
validation GAUC** (best epoch, early stopping with ``--patience``, and ``gattn tune``);
``--no-validation`` instead trains ``--epochs`` and evaluates the last epoch, the protocol of
the DeepCTR-Torch / FuxiCTR comparison (``benchmarks/ctr_results.py``). Beside the results:
AUC 0.5 and the log loss of predicting the training click rate for every test sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from gattn.pipelines._ctr import CTRConfig, CTRData, CTRPipeline, model_features
from gattn.pipelines.base import Split
from gattn.pipelines.config import option
from gattn.pipelines.registry import register_pipeline

ACTIVATIONS = ("dice", "prelu", "relu", "sigmoid")


@dataclass
class TargetAttentionConfig(CTRConfig):
    """Options of DIN and DARE (DARE redeclares the defaults that differ)."""

    embedding_dim: int = option(32, "embedding size of every feature", low=1, group="model")
    hidden: tuple[int, ...] = option((200, 80), "MLP sizes", low=1, group="model")
    activation: str = option("dice", "MLP activation", choices=ACTIVATIONS, group="model")
    dropout: float = option(0.0, "MLP dropout", low=0, high=1, high_open=True, group="model")
    softmax: bool = option(False, "normalise the attention weights over each history", group="model")
    decoupled: bool = option(False, "separate attention embedding tables (DARE)", group="model")
    attention_embedding_dim: int | None = option(None, "attention table size with --decoupled (default: "
                                                 "--embedding-dim)", low=1, group="model")
    interest_product: bool = option(False, "also feed target * interest to the MLP", group="model")
    mba_lambda: float = option(0.0, "DIN's mini-batch aware L2 regularisation strength (0: off)", low=0,
                               group="training")


@dataclass
class DINConfig(TargetAttentionConfig):
    """Options of the DIN pipeline."""

    attention_hidden: tuple[int, ...] = option((80, 40), "local activation unit sizes", low=1, group="model")
    attention_activation: str = option("dice", "local activation unit activation", choices=ACTIVATIONS,
                                       group="model")


@dataclass
class DAREConfig(TargetAttentionConfig):
    """Options of the DARE pipeline."""

    top_k: int | None = option(20, "behaviours retrieved per user (none: attend over all)", low=1, group="model")
    activation: str = option("prelu", "MLP activation", choices=ACTIVATIONS, group="model")
    softmax: bool = option(True, "normalise the attention weights over the retrieved behaviours", group="model")
    decoupled: bool = option(True, "separate attention and representation tables (--no-decoupled: one "
                             "table, the paper's ablation)", group="model")
    interest_product: bool = option(True, "also feed target * interest to the MLP (the paper's "
                                    "target-aware representation)", group="model")


def minibatch_aware_penalty(frequencies: dict[str, Tensor]):
    """DIN's mini-batch aware penalty of a batch, for the task module."""

    def penalty(model: nn.Module, batch: Any) -> Tensor:
        return model.minibatch_aware_penalty(frequencies, batch["features"], batch["history"], ptr=batch["ptr"])

    return penalty


class _TargetAttentionPipeline(CTRPipeline):
    metric = "gauc"
    history = True
    file_format = "taobao"

    def penalty(self, config: Any, data: CTRData) -> tuple[Any, float]:
        if config.mba_lambda <= 0:
            return None, 0.0
        return minibatch_aware_penalty(data.frequencies), config.mba_lambda

    def common_search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        self.check_tunable(config)
        return {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "mba_lambda": trial.suggest_categorical("mba_lambda", [0.0, 1e-3, 1e-2, 1e-1, 1.0]),
        }


@register_pipeline("din")
class DINPipeline(_TargetAttentionPipeline):
    """DIN: target attention with the local activation unit over ragged behaviour histories."""

    Config = DINConfig

    def build_model(self, config: Any, data: CTRData, split: Split) -> nn.Module:
        from gattn.models.ctr import DIN

        features, sequences = model_features(data)
        return DIN(features, sequences, embedding_dim=config.embedding_dim,
                   attention_hidden_channels=tuple(config.attention_hidden),
                   attention_activation=config.attention_activation, softmax=config.softmax,
                   hidden_channels=tuple(config.hidden), activation=config.activation, dropout=config.dropout,
                   decoupled=config.decoupled, attention_embedding_dim=config.attention_embedding_dim,
                   interest_product=config.interest_product)

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, dropout, mini-batch aware regularisation, MLP activation (Dice or PReLU)."""
        params = self.common_search_space(trial, config)
        params["activation"] = trial.suggest_categorical("activation", ["dice", "prelu"])
        return params


@register_pipeline("dare")
class DAREPipeline(_TargetAttentionPipeline):
    """DARE: decoupled attention/representation embeddings, top-K retrieval, then target attention."""

    Config = DAREConfig

    def build_model(self, config: Any, data: CTRData, split: Split) -> nn.Module:
        from gattn.models.ctr import DARE

        features, sequences = model_features(data)
        return DARE(features, sequences, embedding_dim=config.embedding_dim, top_k=config.top_k,
                    softmax=config.softmax, hidden_channels=tuple(config.hidden), activation=config.activation,
                    dropout=config.dropout, decoupled=config.decoupled,
                    attention_embedding_dim=config.attention_embedding_dim,
                    interest_product=config.interest_product)

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, dropout, mini-batch aware regularisation, K, and the attention table size."""
        params = self.common_search_space(trial, config)
        params["top_k"] = trial.suggest_categorical("top_k", [10, 20, 50])
        if config.decoupled:
            params["attention_embedding_dim"] = trial.suggest_categorical("attention_embedding_dim", [8, 16, 32])
        return params
