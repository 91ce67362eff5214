"""Heterogeneous feature interactions: Hiformer (Gui et al. 2023) on Criteo-format data.

``gattn train hiformer --dataset criteo-sample`` (or ``criteo-kaggle``, a Criteo file, or
behaviour data)

Data sets (``--dataset``): ``criteo-sample`` (``<root>/criteo/criteo_sample.txt``),
``criteo-kaggle`` (``<root>/criteo/train.txt``), a path to a Criteo file (tab separated
without header, or CSV with a header; :mod:`gattn.datasets.criteo`): 13 integer features
bucketed (``floor(ln(x)^2)``) and 26 categorical ones, each with its vocabulary of the
training split (values seen fewer than ``--min-count`` times share the out-of-vocabulary id),
the seeded 8:1:1 split ``--criteo-split`` / ``--criteo-seed``, the processed splits cached as
parquet under ``--cache-dir``. ``--stream`` reads every split batch by batch from that cache
(bounded memory: the Kaggle file's 45M rows do not fit as tensors), shuffling the training
rows within blocks of ``--shuffle-buffer``. Behaviour data (``movielens-100k``, ...; see
:mod:`gattn.pipelines._ctr`) work too: the tokens are then the user, the target item and its
category (no history: a feature-interaction baseline for DIN/DARE).

Model: :class:`gattn.models.Hiformer`: one token per feature plus a task token, ``--layers``
Hiformer layers with ``--heads`` heads, composite key/value projections (``--no-composite``:
per-token ones), low-rank composite projections of rank ``--rank`` (none: full rank), and
``--prune-last-layer`` (default; ``--no-prune-last-layer`` computes every token): the last
layer computes the task token alone (the same output, cheaper; in training and inference
alike).

Metrics: ROC-AUC and log loss (and GAUC on behaviour data, by user). **Selection metric: the
validation ROC-AUC** (best epoch, early stopping, ``gattn tune``). Beside the results: AUC 0.5
and the log loss of predicting the training click rate for every test row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from gattn.pipelines._ctr import CTRConfig, CTRData, CTRPipeline, model_features
from gattn.pipelines.base import Split
from gattn.pipelines.config import ConfigError, option
from gattn.pipelines.registry import register_pipeline


@dataclass
class HiformerConfig(CTRConfig):
    """Options of the Hiformer pipeline."""

    dataset: str = option("criteo-sample", "a data set (criteo-sample, criteo-kaggle, movielens-100k, ...) or a "
                          "path", group="data", metavar="NAME|PATH")
    min_count: int = option(10, "Criteo: a value needs this many training occurrences for its own id", low=1,
                            group="data")
    criteo_split: tuple[float, ...] = option((0.8, 0.1, 0.1), "Criteo: train, validation and test fractions",
                                             low=0, high=1, group="data")
    criteo_seed: int = option(2018, "Criteo: seed of the split", group="data")
    cache_dir: str | None = option(None, "Criteo: where the processed splits are cached (default: $GATTN_CACHE, "
                                   "else ~/.cache/gattn)", group="data", run_control=True, metavar="DIR")
    stream: bool = option(False, "Criteo: read the splits batch by batch from the parquet cache instead of "
                          "loading them", group="data")
    shuffle_buffer: int = option(1_000_000, "--stream: training rows shuffled together", low=1, group="data")
    embedding_dim: int = option(16, "token size", low=1, group="model")
    layers: int = option(2, "Hiformer layers", low=1, group="model")
    heads: int = option(2, "attention heads", low=1, group="model")
    head_channels: int | None = option(None, "size per head (default: --embedding-dim / --heads)", low=1,
                                       group="model")
    composite: bool = option(True, "composite key/value projections over all tokens", group="model")
    rank: int | None = option(None, "rank of the low-rank composite projections (none: full rank)", low=1,
                              group="model")
    ffn: int | None = option(None, "feed-forward size (default: 4 x --embedding-dim)", low=1, group="model")
    hidden: tuple[int, ...] = option((256,), "sizes of the MLP on the task token", low=1, group="model")
    activation: str = option("relu", "MLP activation", choices=("relu", "prelu", "dice", "sigmoid"),
                             group="model")
    dropout: float = option(0.0, "dropout in the layers and the MLP", low=0, high=1, high_open=True,
                            group="model")
    prune_last_layer: bool = option(True, "the last layer computes only the task token (same output, cheaper)",
                                    group="model")


@register_pipeline("hiformer")
class HiformerPipeline(CTRPipeline):
    """Hiformer: heterogeneous self-attention over feature tokens (Criteo, or behaviour data)."""

    Config = HiformerConfig
    metric = "rocauc"
    history = False
    file_format = "criteo"

    def resolve(self, config: Any) -> Any:
        config = super().resolve(config)
        if config.data_format == "criteo" and (len(config.criteo_split) != 3 or abs(sum(config.criteo_split) - 1)
                                               > 1e-9):
            raise ConfigError(f"--criteo-split must be three fractions summing to 1, got {config.criteo_split}")
        if config.stream and config.data_format != "criteo":
            raise ConfigError(f"--stream reads Criteo files; --dataset {config.dataset} is {config.data_format} data")
        return config

    def build_model(self, config: Any, data: CTRData, split: Split) -> nn.Module:
        from gattn.models.ctr import Hiformer

        features, _ = model_features(data)
        return Hiformer(features, embedding_dim=config.embedding_dim, num_layers=config.layers, heads=config.heads,
                        head_channels=config.head_channels, composite=config.composite, rank=config.rank,
                        ffn_channels=config.ffn, hidden_channels=tuple(config.hidden),
                        activation=config.activation, dropout=config.dropout, prune=config.prune_last_layer)

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, dropout, token size, layers and heads."""
        self.check_tunable(config)
        return {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "embedding_dim": trial.suggest_categorical("embedding_dim", [8, 16, 32]),
            "layers": trial.suggest_int("layers", 1, 3),
            "heads": trial.suggest_categorical("heads", [1, 2, 4]),
        }
