r"""The label dependent attention model of Niu et al. (arXiv:2201.06779, 2022) over clinical
notes and hourly time series, one output per risk label.

Niu et al. call their model LDAM; here it is :class:`LabelDependentAttention`, to keep it
apart from the label-distribution-aware margin loss :class:`gattn.losses.LDAMLoss` (Cao et al.).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from gattn.kernels import ptr_from_index
from gattn.kernels._validate import check_floating, check_integer
from gattn.nn._ragged import check_segments, check_token_ids, segment_ids
from gattn.nn.label_attention import LABEL_POOLINGS, LabelCompatibilityAttention
from gattn.nn.transicd import LabelWiseLinear

from ._text import word_embedding

__all__ = ["FUSIONS", "LabelDependentAttention", "LabelDependentAttentionOutput"]

FUSIONS = ("mean", "concat")


class LabelDependentAttentionOutput(NamedTuple):
    """What :class:`LabelDependentAttention` returns with ``return_attention=True``.

    ``logits`` [B, K]; ``word_attention`` [R, K] (``[R, 1]`` with ``label_pooling="max"``),
    the attention of every word of every note to each label; ``step_attention`` [S, K]
    (or ``[S, 1]``) over the ``S`` valid time steps of all patients and ``step_ptr`` [B+1]
    delimiting them (both ``None`` without time series). Step ``i`` of patient ``b`` is row
    ``step_ptr[b] + i``.

    Attributes:
        logits (Tensor): :math:`(B, K)`.
        word_attention (Tensor): every word's attention to each label :math:`(R, K)` (``(R, 1)`` with
            ``label_pooling="max"``).
        step_attention (Tensor, optional): attention over the valid time steps :math:`(S, K)` (or
            :math:`(S, 1)`; ``None`` without time series).
        step_ptr (Tensor, optional): the patients over the steps :math:`(B + 1)` (``None`` without
            time series).
    """

    logits: Tensor
    word_attention: Tensor
    step_attention: Tensor | None
    step_ptr: Tensor | None


def _descriptions_to_ragged(descriptions: Sequence[Sequence[int] | Tensor], num_labels: int) -> tuple[Tensor, Tensor]:
    """Token ids of the label descriptions, concatenated, and their row pointer [K+1]."""
    if len(descriptions) != num_labels:
        raise ValueError(
            f"`label_descriptions` must hold one token list per label ({num_labels}), got {len(descriptions)}"
        )
    parts = []
    for label, tokens in enumerate(descriptions):
        tokens = torch.as_tensor(tokens)
        if tokens.dim() != 1 or tokens.numel() == 0:
            raise ValueError(f"`label_descriptions[{label}]` must be a non-empty 1-D list of token ids")
        check_integer(f"label_descriptions[{label}]", tokens)
        parts.append(tokens.long())
    lengths = torch.tensor([p.numel() for p in parts])
    ptr = torch.zeros(num_labels + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(lengths, 0)
    return torch.cat(parts), ptr


def _segment_mean(rows: Tensor, ptr: Tensor) -> Tensor:
    """The mean of the rows of each segment (all segments non-empty): [S, D]."""
    sums = rows.new_zeros(ptr.numel() - 1, rows.size(1)).index_add(0, segment_ids(ptr), rows)
    return sums / (ptr[1:] - ptr[:-1]).unsqueeze(1).to(rows.dtype)


class LabelDependentAttention(nn.Module):
    r"""Label dependent attention model (Niu et al. 2022): words of the notes and steps of the
    time series attend to each risk label, the two views are fused, one output per label.

    Label names live in the same space as the words: the label vectors :math:`c_k` are
    trainable and initialised from the mean word vector of each label's description
    (``label_descriptions``), or given (``label_embeddings``); with a frozen ``text_encoder``
    they are its mean output over each description, as the words are its output over the
    notes. A shared projection :math:`P` maps words and labels to the attention space of
    size :math:`H`; a GRU maps each hourly step :math:`(x_t \odot m_t, m_t)` (values and
    observation mask) to the same space:

    .. math::
        h_r = \mathrm{LN}(P\,e(w_r)),\qquad \tilde c_k = \mathrm{LN}(P c_k),\qquad
        s_t = \mathrm{GRU}(x_t \odot m_t, m_t),

    .. math::
        z^{text}_{k} = \mathrm{Att}_{words}(h, \tilde c)_k,\qquad
        z^{ts}_{k} = \mathrm{Att}_{steps}(s, \tilde c)_k,\qquad
        \hat y_k = w_k^\top \mathrm{fuse}(z^{text}_k, z^{ts}_k) + b_k

    with :math:`\mathrm{Att}` the :class:`~gattn.nn.label_attention.LabelCompatibilityAttention`
    (compatibility, phrase filter, ReLU, softmax over the rows of each note / patient), and
    ``fuse`` the mean of the two views (``fusion="mean"``, the authors' average pooling of
    the two modality vectors) or their concatenation (``"concat"``).

    Where this differs from the paper and the authors' code, and why:

    * Attention per label by default (``label_pooling="per_label"``): every label gets its
      own distribution over the words and the steps and its own output, as the task asks
      (attention to each label, and the per-label explanations need it). The authors'
      LEAM-style pooling, the maximum over labels followed by one distribution, is
      ``label_pooling="max"``; its output is then one linear layer over the fused vector.
    * Time series: the steps attend to the labels. The authors' code instead runs a GRU per
      variable and weights the *variables* by the similarity of their names to the labels;
      attention over hours needs no variable names and shows *when* the evidence appeared.
      Missing values are handled by feeding the observation mask with the values.
    * Layer normalisation of the shared space (ours): :math:`h_r = \mathrm{LN}(P\,e(w_r))` and
      :math:`\tilde c_k = \mathrm{LN}(P c_k)` (``LayerNorm(H)``, with its affine parameters).
      The paper's words and labels are Clinical-BERT outputs, which end in a LayerNorm:
      zero-mean, unit-variance features. Word2vec vectors are not: their entries are small
      (about 0.2 at D = 32) and they share a common direction, which the projection's bias adds
      to. Without the normalisation every word's compatibility with a label is about the same,
      the attention stays uniform (its entropy is that of the uniform distribution), the
      pooled vector is the mean of the note, where a few telling words weigh 1/L, and
      training stops at the label-prior loss (issue 14). ``layer_norm=False`` drops it.
    * Text encoder: the paper encodes words and label names with a frozen Clinical-BERT.
      None is available here, so the default is a trainable word embedding (optionally
      initialised from pretrained vectors); ``text_encoder`` plugs in a frozen one when it
      exists locally. Label vectors from it are mean-pooled over the description tokens
      (the authors use BERT's pooler output).

    Args:
        num_labels (int): number of risk labels :math:`K`.
        vocab_size (int, optional): vocabulary size (may be omitted with ``pretrained_embeddings``; with a
            ``text_encoder`` it only bounds the ids). (default: ``None``)
        embedding_dim (int, optional): word vector size :math:`D` (the ``text_encoder``'s output size when
            one is given). (default: ``None``)
        pretrained_embeddings (Tensor, optional): ``[V, D]`` initial word vectors; copied. (default: ``None``)
        freeze_embeddings (bool, optional): keep them fixed. Default ``False``.
        label_descriptions (Sequence[Sequence[int] | Tensor], optional): one list of token ids per
            label (its description, tokenised with the notes' vocabulary); initialises the label
            vectors as the mean of their word vectors. Needed with a ``text_encoder``. (default:
            ``None``)
        label_embeddings (Tensor, optional): ``[K, D]`` initial label vectors instead (conflicts with
            ``label_descriptions``). Neither: random N(0, 1) like the word vectors. (default: ``None``)
        text_encoder (nn.Module, optional): a frozen pretrained encoder, called as
            ``text_encoder(input_ids [R], ptr [S+1]) -> [R, D]`` on the tokens of S
            sequences. It runs in eval mode under ``torch.no_grad()``; its parameters get
            no gradient. Conflicts with ``pretrained_embeddings`` and ``label_embeddings``.
            (default: ``None``)
        time_series_channels (int, optional): variables :math:`F` per hourly step; 0 (default) builds a
            notes-only model.
        hidden_channels (int, optional): :math:`H`, the attention space. Default 128.
        ngram (int, optional): window of the phrase filter (odd). Default 3.
        label_pooling (str, optional): ``"per_label"`` (default) or ``"max"``.
        fusion (str, optional): ``"mean"`` (default) or ``"concat"``; used only with time series.
        time_series_layers (int, optional): GRU layers. Default 1.
        dropout (float, optional): dropout on the word vectors, the attention scores and the fused vectors.
            Default 0.1.
        layer_norm (bool, optional): normalise the projected words and labels (see above). Default ``True``.

    Shapes:
        - **input:** ``input_ids`` :math:`(R)` the note tokens of all patients concatenated,
          ``ptr`` :math:`(B + 1)`; ``time_series`` *(optional)* :math:`(B, T, F)` float
          (standardised values; anything at unobserved entries is ignored, NaN included),
          ``time_series_mask`` *(optional)* :math:`(B, T, F)` bool (True = observed; default
          all observed) and ``time_series_lengths`` *(optional)* :math:`(B)` int (valid hours;
          steps beyond are padding; default T).
        - **output:** the logits :math:`(B, K)`, or with ``return_attention=True`` a
          :class:`LabelDependentAttentionOutput`.

    A patient without words (or without steps) pools that view to zeros.
    """

    def __init__(
        self,
        num_labels: int,
        vocab_size: int | None = None,
        embedding_dim: int | None = None,
        *,
        pretrained_embeddings: Tensor | None = None,
        freeze_embeddings: bool = False,
        label_descriptions: Sequence[Sequence[int] | Tensor] | None = None,
        label_embeddings: Tensor | None = None,
        text_encoder: nn.Module | None = None,
        time_series_channels: int = 0,
        hidden_channels: int = 128,
        ngram: int = 3,
        label_pooling: str = "per_label",
        fusion: str = "mean",
        time_series_layers: int = 1,
        dropout: float = 0.1,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("num_labels", num_labels, 1),
            ("hidden_channels", hidden_channels, 1),
            ("time_series_channels", time_series_channels, 0),
            ("time_series_layers", time_series_layers, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"`fusion` must be one of {FUSIONS}, got {fusion!r}")
        if label_pooling not in LABEL_POOLINGS:
            raise ValueError(f"`label_pooling` must be one of {LABEL_POOLINGS}, got {label_pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        if not isinstance(layer_norm, bool):
            raise ValueError(f"`layer_norm` must be a bool, got {layer_norm!r}")
        if label_descriptions is not None and label_embeddings is not None:
            raise ValueError("give at most one of `label_descriptions` and `label_embeddings` to initialise the labels")
        self.num_labels, self.hidden_channels = num_labels, hidden_channels
        self.time_series_channels, self.label_pooling, self.fusion = time_series_channels, label_pooling, fusion
        self.vocab_size = vocab_size

        self.text_encoder = text_encoder
        if text_encoder is not None:
            for name, value in (
                ("pretrained_embeddings", pretrained_embeddings),
                ("label_embeddings", label_embeddings),
            ):
                if value is not None:
                    raise ValueError(f"`{name}` conflicts with `text_encoder` (the encoder embeds words and labels)")
            if freeze_embeddings:
                raise ValueError("`freeze_embeddings` conflicts with `text_encoder` (the encoder is always frozen)")
            if label_descriptions is None:
                raise ValueError("a `text_encoder` needs `label_descriptions` to embed the label names")
            if not isinstance(embedding_dim, int) or embedding_dim < 1:
                raise ValueError(
                    f"with a `text_encoder`, `embedding_dim` must be its output size, got {embedding_dim!r}"
                )
            self.embedding = None
            self.embedding_dim = embedding_dim
            label_ids, label_ptr = _descriptions_to_ragged(label_descriptions, num_labels)
            check_token_ids("label_descriptions", label_ids, vocab_size)
            self.register_buffer("label_token_ids", label_ids)
            self.register_buffer("label_ptr", label_ptr)
            self.label_embedding = None
        else:
            self.embedding = word_embedding(vocab_size, embedding_dim, pretrained_embeddings, freeze_embeddings)
            self.embedding_dim = self.embedding.embedding_dim
            self.vocab_size = self.embedding.num_embeddings
            self.label_embedding = nn.Parameter(self._initial_labels(label_descriptions, label_embeddings))

        self.projection = nn.Linear(self.embedding_dim, hidden_channels)
        self.norm = nn.LayerNorm(hidden_channels) if layer_norm else None
        self.word_attention = LabelCompatibilityAttention(hidden_channels, ngram, label_pooling, dropout)
        self.dropout = nn.Dropout(dropout)
        fused = hidden_channels
        if time_series_channels:
            self.step_encoder = nn.GRU(2 * time_series_channels, hidden_channels, time_series_layers, batch_first=True)
            self.step_attention = LabelCompatibilityAttention(hidden_channels, ngram, label_pooling, dropout)
            fused = 2 * hidden_channels if fusion == "concat" else hidden_channels
        else:
            self.step_encoder = self.step_attention = None
        if label_pooling == "per_label":
            self.output = LabelWiseLinear(fused, num_labels)
        else:
            self.output = nn.Linear(fused, num_labels)
        self.train()

    def _initial_labels(
        self, descriptions: Sequence[Sequence[int] | Tensor] | None, given: Tensor | None
    ) -> Tensor:
        shape = (self.num_labels, self.embedding_dim)
        if given is not None:
            check_floating("label_embeddings", given, (2,))
            if tuple(given.shape) != shape:
                raise ValueError(f"`label_embeddings` must be [K, D] = {shape}, got {tuple(given.shape)}")
            return given.detach().clone().to(self.embedding.weight.dtype)
        if descriptions is not None:
            ids, ptr = _descriptions_to_ragged(descriptions, self.num_labels)
            check_token_ids("label_descriptions", ids, self.vocab_size)
            with torch.no_grad():
                return _segment_mean(self.embedding.weight[ids.to(self.embedding.weight.device)], ptr)
        return torch.randn(shape, dtype=self.embedding.weight.dtype)

    def reset_parameters(self) -> None:
        """Re-draw the projection, attention, GRU and output weights (word and label vectors kept)."""
        modules = (self.projection, self.norm, self.word_attention, self.step_encoder, self.step_attention, self.output)
        for module in modules:
            if module is not None:
                module.reset_parameters()

    def train(self, mode: bool = True) -> LabelDependentAttention:
        super().train(mode)
        if self.text_encoder is not None:
            self.text_encoder.eval()  # frozen: its dropout and norms stay in inference mode
        return self

    def __repr__(self) -> str:
        encoder = "frozen text_encoder" if self.text_encoder is not None else f"vocab_size={self.vocab_size}"
        return (
            f"{type(self).__name__}(num_labels={self.num_labels}, {encoder}, embedding_dim={self.embedding_dim}, "
            f"hidden_channels={self.hidden_channels}, time_series_channels={self.time_series_channels}, "
            f"label_pooling={self.label_pooling!r}, fusion={self.fusion!r}, layer_norm={self.norm is not None})"
        )

    # ------------------------------------------------------------------ embeddings
    def _encode_frozen(self, ids: Tensor, ptr: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.text_encoder(ids, ptr)
        if not isinstance(out, Tensor) or tuple(out.shape) != (ids.numel(), self.embedding_dim):
            raise ValueError(
                f"`text_encoder` must return [R, {self.embedding_dim}] for R={ids.numel()} tokens, "
                f"got {tuple(getattr(out, 'shape', ()))}"
            )
        return out

    def word_vectors(self, input_ids: Tensor, ptr: Tensor) -> Tensor:
        """The words in the shared word-label space, before the projection: [R, D]."""
        if self.text_encoder is not None:
            return self._encode_frozen(input_ids, ptr)
        return self.embedding(input_ids)

    def label_vectors(self) -> Tensor:
        """The label vectors in the shared word-label space, before the projection: [K, D]."""
        if self.text_encoder is not None:
            return _segment_mean(self._encode_frozen(self.label_token_ids, self.label_ptr), self.label_ptr)
        return self.label_embedding

    def _project(self, vectors: Tensor) -> Tensor:
        """Words or labels from the word-label space into the attention space: [*, H]."""
        out = self.projection(vectors)
        return out if self.norm is None else self.norm(out)

    # ------------------------------------------------------------------ time series
    def _check_time_series(
        self, batch: int, values: Tensor | None, mask: Tensor | None, lengths: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        if self.step_encoder is None:
            for name, value in (("time_series", values), ("time_series_mask", mask), ("time_series_lengths", lengths)):
                if value is not None:
                    raise ValueError(
                        f"`{name}` given, but the model was built without time series (time_series_channels=0)"
                    )
            return None
        if values is None:
            raise ValueError(
                f"the model was built with time_series_channels={self.time_series_channels}: "
                "pass `time_series` [B, T, F]"
            )
        check_floating("time_series", values, (3,))
        if values.size(0) != batch or values.size(2) != self.time_series_channels:
            raise ValueError(
                f"`time_series` must be [B={batch}, T, F={self.time_series_channels}], got {tuple(values.shape)}"
            )
        if mask is None:
            mask = torch.ones(values.shape, dtype=torch.bool, device=values.device)
        elif not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != values.shape:
            raise ValueError(
                f"`time_series_mask` must be a bool tensor of the shape of time_series {tuple(values.shape)} "
                f"(True = observed), got {getattr(mask, 'dtype', type(mask).__name__)} "
                f"{tuple(getattr(mask, 'shape', ()))}"
            )
        steps = values.size(1)
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=values.device)
        else:
            check_integer("time_series_lengths", lengths)
            if lengths.shape != (batch,):
                raise ValueError(f"`time_series_lengths` must be [B={batch}], got {tuple(lengths.shape)}")
            if batch and (int(lengths.min()) < 0 or int(lengths.max()) > steps):
                raise ValueError(f"`time_series_lengths` must lie in [0, T={steps}], got {lengths.tolist()}")
        valid = torch.arange(steps, device=values.device).unsqueeze(0) < lengths.unsqueeze(1)
        if not bool(torch.isfinite(values[mask & valid.unsqueeze(2)]).all()):
            raise ValueError(
                "`time_series` has non-finite values at observed entries (mark them unobserved in the mask)"
            )
        return values, mask & valid.unsqueeze(2), lengths.long()

    def _encode_steps(self, values: Tensor, observed: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The valid steps of all patients, concatenated, [S, H], and their row pointer [B+1]."""
        batch, steps = values.shape[:2]
        step_ptr = ptr_from_index(torch.repeat_interleave(torch.arange(batch, device=values.device), lengths), batch)
        if steps == 0 or int(lengths.sum()) == 0:
            return values.new_zeros(0, self.hidden_channels), step_ptr
        inputs = torch.cat([torch.where(observed, values, torch.zeros_like(values)), observed.to(values.dtype)], dim=2)
        packed = nn.utils.rnn.pack_padded_sequence(
            inputs, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.step_encoder(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=steps)
        valid = torch.arange(steps, device=values.device).unsqueeze(0) < lengths.unsqueeze(1)
        return out[valid], step_ptr

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: Tensor,
        ptr: Tensor,
        time_series: Tensor | None = None,
        time_series_mask: Tensor | None = None,
        time_series_lengths: Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> Tensor | LabelDependentAttentionOutput:
        check_token_ids("input_ids", input_ids, self.vocab_size)
        check_segments("ptr", ptr, input_ids.numel())
        batch = ptr.numel() - 1
        series = self._check_time_series(batch, time_series, time_series_mask, time_series_lengths)

        labels = self._project(self.label_vectors())
        words = self._project(self.dropout(self.word_vectors(input_ids, ptr)))
        fused, word_attention = self.word_attention(words, labels, ptr)
        step_attention = step_ptr = None
        if series is not None:
            steps, step_ptr = self._encode_steps(*series)
            pooled_steps, step_attention = self.step_attention(steps, labels, step_ptr)
            if self.fusion == "concat":
                fused = torch.cat([fused, pooled_steps], dim=2)
            else:
                fused = (fused + pooled_steps) / 2
        fused = self.dropout(fused)
        logits = self.output(fused) if self.label_pooling == "per_label" else self.output(fused.squeeze(1))
        if not return_attention:
            return logits
        return LabelDependentAttentionOutput(logits, word_attention, step_attention, step_ptr)
