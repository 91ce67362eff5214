"""The label dependent attention model of Niu et al. (2022) on MIMIC-III: words of the discharge
summary, and optionally the hourly vital signs and labs, attend to each label.

``gattn train label_attention --mimic-dir DIR [--splits-dir DIR] [--setting 50|full] [--time-series]``

Niu et al. call the model LDAM; it is :class:`gattn.models.LabelDependentAttention` here, apart
from the LDAM *loss* (:class:`gattn.losses.LDAMLoss`, Cao et al.), which this pipeline does not
use by default (``--loss bce``, the paper's binary cross-entropy; ``--loss ldam`` adds the
margins). The labels are the admission's ICD codes of the CAML splits (the same data set as
``transicd``), each label's vector initialised from the word vectors of its description
(``description_tokens(empty="unk")``: a code without a description starts from ``<unk>``).
With ``--time-series``, hourly means of :data:`gattn.datasets.mimic.DEFAULT_FEATURES`
(``CHARTEVENTS`` / ``LABEVENTS``, the first ``--max-hours`` hours of the admission, with their
observation masks) are standardised with the training split's mean and std per feature and
fused with the text (``--fusion``). ``configs/label_attention_mimic3-50.yaml`` holds the
configuration. Data, batching, metrics and explanations: :mod:`gattn.pipelines._mimic`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from gattn.pipelines._mimic import MimicConfig, MimicData, MimicPipeline
from gattn.pipelines.base import Split
from gattn.pipelines.config import ConfigError, option
from gattn.pipelines.registry import register_pipeline

__all__ = ["LabelAttentionConfig", "LabelAttentionPipeline"]

_DEFAULT_HOURS = 48


@dataclass
class LabelAttentionConfig(MimicConfig):
    """Options of the label dependent attention pipeline (data and output options are shared)."""

    loss: str = option("bce", "loss: bce (the paper's) or ldam (label-distribution-aware margins)",
                       choices=("ldam", "bce"), group="training")
    hidden: int = option(128, "attention space H (words, labels and time steps)", low=1, group="model")
    ngram: int = option(3, "phrase filter window (odd)", low=1, group="model")
    label_pooling: str = option("per_label", "per_label: one attention per label; max: the authors' LEAM-style "
                                "maximum over labels", choices=("per_label", "max"), group="model")
    fusion: str = option("mean", "text and time-series fusion", choices=("mean", "concat"), group="model")
    dropout: float = option(0.1, "dropout", low=0, high=1, high_open=True, group="model")
    freeze_embeddings: bool = option(False, "keep the word2vec vectors fixed", group="model")
    time_series: bool = option(False, "add the hourly vital signs and labs (CHARTEVENTS / LABEVENTS)",
                               group="data")
    max_hours: int | None = option(None, f"hours of series from admission (default {_DEFAULT_HOURS} with "
                                   "--time-series)", low=1, group="data")
    series_layers: int = option(1, "GRU layers over the hourly steps", low=1, group="model")


@register_pipeline("label_attention")
class LabelAttentionPipeline(MimicPipeline):
    """Label dependent attention (Niu et al. 2022): notes (and hourly series) attend to each label."""

    Config = LabelAttentionConfig

    def resolve(self, config: Any) -> Any:
        if config.max_hours is not None and not config.time_series:
            raise ConfigError("--max-hours needs --time-series")
        if config.time_series and config.max_hours is None:
            return dataclasses.replace(config, max_hours=_DEFAULT_HOURS)
        return config

    def wants_series(self, config: Any) -> bool:
        return bool(config.time_series)

    def describe(self, config: Any) -> str:
        series = f" + {config.max_hours} h of series ({config.fusion} fusion)" if config.time_series else ""
        return (f"{super().describe(config)}; notes{series}, hidden {config.hidden}, ngram {config.ngram}, "
                f"{config.label_pooling} attention")

    def build_model(self, config: Any, data: MimicData, split: Split) -> nn.Module:
        from gattn.models import LabelDependentAttention

        icd = data.icd
        channels = 0 if icd.train.series is None else int(icd.train.series.size(2))
        return LabelDependentAttention(
            icd.num_labels, len(icd.vocab), config.embedding_dim, pretrained_embeddings=self.word_vectors(config, data),
            freeze_embeddings=config.freeze_embeddings, label_descriptions=icd.description_tokens(empty="unk"),
            time_series_channels=channels, hidden_channels=config.hidden, ngram=config.ngram,
            label_pooling=config.label_pooling, fusion=config.fusion, time_series_layers=config.series_layers,
            dropout=config.dropout,
        )

    def token_attention(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = model(**inputs, return_attention=True)
        return out.logits, out.word_attention

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, weight decay, dropout, attention size and phrase window."""
        self.check_tunable(config)
        params: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
            "ngram": trial.suggest_categorical("ngram", [1, 3, 5]),
        }
        if config.time_series:
            params["fusion"] = trial.suggest_categorical("fusion", ["mean", "concat"])
        return params
