r"""TransICD (Biswas, Pham and Zhang, AIME 2021): a transformer encoder over the tokens of a
discharge summary, code-wise attention, one logistic output per ICD code.

Train it with :class:`gattn.losses.LDAMLoss` (Cao et al.'s label-distribution-aware margin
loss, as the paper does); its explanations are the per-code token attentions
(:mod:`gattn.explain` turns them into a table and an HTML page).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from gattn.nn._ragged import check_segments, check_token_ids, pad_segments, position_in_segment
from gattn.nn.transicd import CodeWiseAttention, LabelWiseLinear, sinusoidal_position_encoding

from ._text import word_embedding

__all__ = ["TransICD"]


class TransICD(nn.Module):
    r"""TransICD: embeddings with positional encoding, a transformer encoder, code-wise
    attention and one output per code.

    .. math::
        e_j = \sqrt{d}\, E[w_j] + \mathrm{PE}(j),\qquad H = \mathrm{TransformerEncoder}(e),

    .. math::
        A = \mathrm{softmax}_{tokens}\!\left(W_2 \tanh(W_1 H)\right),\quad
        v_c = \sum_j A_{cj} h_j,\quad \hat y_c = w_c^\top v_c + b_c

    with :math:`j` the position of token :math:`w_j` **inside its document** (the authors'
    code adds the encoding of the batch index instead, see
    :func:`gattn.nn.transicd.sinusoidal_position_encoding`).

    Ragged input: the token ids of all documents of the batch concatenated, ``input_ids``
    [R], and a CSR row pointer ``ptr`` [B+1]. The transformer encoder is torch's
    ``nn.TransformerEncoder``, which needs a padded batch: the tokens are padded per batch
    to the longest document **of that batch** (with a key-padding mask) for the encoder only,
    and unpadded straight after; the code-wise attention and everything after it run on the
    ragged rows (:func:`gattn.kernels.segment_attention_pool`). Sort or bucket documents by
    length in the loader to keep the encoder's padding small. Truncating long notes (the
    paper keeps 2,500 tokens) is the loader's job.

    Args:
        num_codes (int): number of codes :math:`C` (outputs).
        vocab_size (int, optional): vocabulary size (may be omitted with ``pretrained_embeddings``).
            (default: ``None``)
        embedding_dim (int, optional): :math:`d`, the embedding and model size (paper: 128; may be omitted
            with ``pretrained_embeddings``). (default: ``None``)
        pretrained_embeddings (Tensor, optional): ``[V, d]`` initial word vectors (the paper: word2vec CBOW
            trained on the training notes); copied. (default: ``None``)
        freeze_embeddings (bool, optional): keep the pretrained vectors fixed (the authors' setting);
            needs ``pretrained_embeddings``. Default ``False``.
        num_layers (int, optional): transformer encoder layers (paper: 2). (default: ``2``)
        num_heads (int, optional): attention heads per layer (paper: 8); must divide :math:`d`.
            (default: ``8``)
        feedforward_channels (int, optional): hidden size of the encoder's feed-forward block; ``None``
            gives ``4 * d`` (the authors' forward expansion 4). (default: ``None``)
        attention_channels (int, optional): hidden size of :math:`W_1`; ``None`` gives ``2 * d``.
            (default: ``None``)
        dropout (float, optional): dropout on the embeddings and inside the encoder (paper: 0.1).
            (default: ``0.1``)
        scale_embeddings (bool, optional): multiply the embeddings by :math:`\sqrt d` before adding the
            encoding (Vaswani et al., and the authors' code). Default ``True``.

    Shapes:
        - **input:** ``input_ids`` :math:`(R)` int64, the tokens of all documents
          concatenated; ``ptr`` :math:`(B + 1)`.
        - **output:** the logits :math:`(B, C)`; with ``return_attention=True`` also the
          per-code token attention :math:`(R, C)` (column ``c`` sums to one over each
          document's tokens).

    A document without tokens gets zero code vectors, so its logits are the biases :math:`b_c`.
    """

    def __init__(
        self,
        num_codes: int,
        vocab_size: int | None = None,
        embedding_dim: int | None = None,
        *,
        pretrained_embeddings: Tensor | None = None,
        freeze_embeddings: bool = False,
        num_layers: int = 2,
        num_heads: int = 8,
        feedforward_channels: int | None = None,
        attention_channels: int | None = None,
        dropout: float = 0.1,
        scale_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = word_embedding(vocab_size, embedding_dim, pretrained_embeddings, freeze_embeddings)
        dim = self.embedding.embedding_dim
        for name, value in (("num_layers", num_layers), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"`num_heads`={num_heads} must divide the embedding size {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        feedforward_channels = 4 * dim if feedforward_channels is None else feedforward_channels
        self.num_codes, self.embedding_dim, self.num_layers = num_codes, dim, num_layers
        self.num_heads, self.scale_embeddings = num_heads, scale_embeddings
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=num_heads, dim_feedforward=feedforward_channels, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.attention = CodeWiseAttention(dim, num_codes, attention_channels)
        self.output = LabelWiseLinear(dim, num_codes)

    def reset_parameters(self) -> None:
        """Re-draw the encoder, attention and output weights (the embeddings are kept)."""
        for module in self.encoder.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
        # After the linear layers: MultiheadAttention's own initialisation also zeroes the
        # bias of its output projection.
        for module in self.encoder.modules():
            if isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
        self.attention.reset_parameters()
        self.output.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_codes={self.num_codes}, vocab_size={self.embedding.num_embeddings}, "
            f"embedding_dim={self.embedding_dim}, num_layers={self.num_layers}, num_heads={self.num_heads}, "
            f"attention={self.attention!r})"
        )

    def embed(self, input_ids: Tensor, ptr: Tensor) -> Tensor:
        """Token embeddings plus the encoding of each token's position in its document: [R, d]
        (before dropout)."""
        x = self.embedding(input_ids)
        if self.scale_embeddings:
            x = x * math.sqrt(self.embedding_dim)
        return x + sinusoidal_position_encoding(position_in_segment(ptr), self.embedding_dim, dtype=x.dtype)

    def encode(self, input_ids: Tensor, ptr: Tensor) -> Tensor:
        """The transformer's output for every token: [R, d] (padded per batch inside)."""
        x = self.dropout(self.embed(input_ids, ptr))
        if x.size(0) == 0:
            return x
        padded, valid = pad_segments(x, ptr, min_length=1)
        ignore = ~valid
        # A document without tokens would be a fully masked row; some torch versions give
        # NaN for it (softmax over all -inf), which would poison the gradients through
        # 0 * NaN. It attends to one zero pad instead; its rows are never read back.
        ignore[:, 0] = False
        return self.encoder(padded, src_key_padding_mask=ignore)[valid]

    def forward(
        self, input_ids: Tensor, ptr: Tensor, *, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        check_token_ids("input_ids", input_ids, self.embedding.num_embeddings)
        check_segments("ptr", ptr, input_ids.numel())
        pooled, attention = self.attention(self.encode(input_ids, ptr), ptr)
        logits = self.output(pooled)
        return (logits, attention) if return_attention else logits
