"""TransICD (Biswas, Pham and Zhang, AIME 2021) on MIMIC-III: ICD coding of discharge summaries
with code-wise attention, trained with the LDAM loss (Cao et al.).

``gattn train transicd --mimic-dir DIR [--splits-dir DIR] [--setting 50|full]``

The defaults are the paper's: word2vec (CBOW) vectors of size d = 128 trained on the training
notes and kept frozen, 2 encoder layers, 8 heads, dropout 0.1, learning rate 1e-3, batch 8, 30
epochs, the LDAM loss with the authors' margins ``3 * n^(-1/4)``, notes cut at 2,500 tokens.
``configs/transicd_mimic3-50.yaml`` adds what only the authors' code says (AdamW with weight
decay 0.01, the last epoch evaluated). Published on the top-50 setting (MIMIC-III, CAML
splits): macro ROC-AUC 89.4, micro ROC-AUC 92.3, macro F1 56.2 (the mean of per-label F1,
``f1_macro``), micro F1 64.4, P@5 61.7 (%). Data, batching, loss, metrics and the
explanation output are described in :mod:`gattn.pipelines._mimic`; the model is
:class:`gattn.models.TransICD`, whose per-code token attention is the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from gattn.pipelines._mimic import MimicConfig, MimicData, MimicPipeline
from gattn.pipelines.base import Split
from gattn.pipelines.config import option
from gattn.pipelines.registry import register_pipeline

__all__ = ["TransICDConfig", "TransICDPipeline"]


@dataclass
class TransICDConfig(MimicConfig):
    """Options of the TransICD pipeline (the data, loss and output options are shared)."""

    layers: int = option(2, "transformer encoder layers", low=1, group="model")
    heads: int = option(8, "attention heads (divide --embedding-dim)", low=1, group="model")
    dropout: float = option(0.1, "dropout on the embeddings and in the encoder", low=0, high=1, high_open=True,
                            group="model")
    feedforward: int | None = option(None, "encoder feed-forward size (default 4 x --embedding-dim)", low=1,
                                     group="model")
    attention: int | None = option(None, "code-wise attention size of W1 (default 2 x --embedding-dim)", low=1,
                                   group="model")
    freeze_embeddings: bool = option(True, "keep the word2vec vectors fixed (the authors' setting)",
                                     group="model")


@register_pipeline("transicd")
class TransICDPipeline(MimicPipeline):
    """TransICD: a transformer over the note, code-wise attention, one output per ICD code."""

    Config = TransICDConfig

    def describe(self, config: Any) -> str:
        return (f"{super().describe(config)}; d={config.embedding_dim} layers={config.layers} heads={config.heads} "
                f"dropout={config.dropout:g}{' frozen' if config.freeze_embeddings else ''} embeddings")

    def build_model(self, config: Any, data: MimicData, split: Split) -> nn.Module:
        from gattn.models import TransICD

        icd = data.icd
        return TransICD(
            icd.num_labels, len(icd.vocab), config.embedding_dim, pretrained_embeddings=self.word_vectors(config, data),
            freeze_embeddings=config.freeze_embeddings, num_layers=config.layers, num_heads=config.heads,
            feedforward_channels=config.feedforward, attention_channels=config.attention, dropout=config.dropout,
        )

    def token_attention(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return model(inputs["input_ids"], inputs["ptr"], return_attention=True)

    def search_space(self, trial: Any, config: Any) -> dict[str, Any]:
        """Learning rate, dropout, depth, heads and the LDAM constant."""
        self.check_tunable(config)
        heads = [h for h in (2, 4, 8) if config.embedding_dim % h == 0] or [1]
        return {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "layers": trial.suggest_int("layers", 1, 4),
            "heads": trial.suggest_categorical("heads", heads),
            "ldam_c": trial.suggest_float("ldam_c", 0.5, 5.0, log=True),
        }
