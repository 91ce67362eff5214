"""Word embeddings for the clinical text models: random or from a pretrained matrix."""

from __future__ import annotations

from torch import Tensor, nn

from gattn.kernels._validate import check_floating


def word_embedding(
    vocab_size: int | None, embedding_dim: int | None, pretrained: Tensor | None, freeze: bool
) -> nn.Embedding:
    """An ``nn.Embedding``: ``vocab_size x embedding_dim`` random, or initialised from
    ``pretrained`` [V, D] (then the sizes may be omitted, and must agree when given).

    ``freeze`` keeps the pretrained vectors fixed; it needs a pretrained matrix, since frozen
    random vectors carry no information.
    """
    if pretrained is None:
        if freeze:
            raise ValueError("`freeze_embeddings=True` needs `pretrained_embeddings` (frozen random vectors are noise)")
        for name, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive int when no `pretrained_embeddings` are given, got {value!r}"
                )
        return nn.Embedding(vocab_size, embedding_dim)
    check_floating("pretrained_embeddings", pretrained, (2,))
    for name, value, axis in (("vocab_size", vocab_size, 0), ("embedding_dim", embedding_dim, 1)):
        if value is not None and value != pretrained.size(axis):
            raise ValueError(
                f"`{name}`={value} disagrees with `pretrained_embeddings` of shape {tuple(pretrained.shape)}"
            )
    if pretrained.size(0) < 1 or pretrained.size(1) < 1:
        raise ValueError(f"`pretrained_embeddings` must be a non-empty [V, D] matrix, got {tuple(pretrained.shape)}")
    return nn.Embedding.from_pretrained(pretrained.detach().clone(), freeze=freeze)
