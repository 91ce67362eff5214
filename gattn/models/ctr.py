r"""Click-through-rate models: DIN and DARE over ragged behaviour histories, Hiformer over
feature tokens.

A model is described by its features:

* :class:`CategoricalFeature` - an id per sample (user, target item, category, a hashed
  Criteo column), embedded by its own table;
* :class:`NumericFeature` - a number per sample, bucketed by fixed boundaries and embedded
  (Criteo's integer columns; a loader that already bucketed them gives categorical ids);
* :class:`SequenceFeature` - a behaviour history of ids (e.g. ``hist_item_id``) that shares the
  table of a categorical *target* feature (``item_id``): the target is the attention query,
  the history the keys and values.

Inputs: ``features`` maps each categorical / numeric feature name to a [B] tensor;
``history`` maps each sequence feature name to its ids, ragged ``[R]`` with ``ptr`` [B+1] or
``lengths`` [B] (the concatenated histories, oldest first: a pyarrow ``list<int64>`` column's
values and offsets), or padded ``[B, L]`` with ``padding_mask`` [B, L] (True = padding) or
``lengths``. All sequences of a batch share one segmentation. Outputs are logits;
:meth:`~_TargetAttentionCTR.loss` is binary cross-entropy on them.

**Decoupled embeddings** (DARE's idea) are an option of every target-attention model here:
``decoupled=True`` gives each history's target feature a second table (size
``attention_embedding_dim``) used only to compute attention weights, while the values and the
MLP input come from the representation table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.kernels.din import gather_rows
from gattn.kernels.topk import segment_lookup_scores, segment_topk
from gattn.nn._history import History, resolve_history
from gattn.nn.dare import DAREAttention
from gattn.nn.din import DINAttention, make_activation, minibatch_aware_l2
from gattn.nn.hiformer import HiformerLayer

__all__ = [
    "DARE",
    "DIN",
    "CategoricalFeature",
    "Hiformer",
    "NumericFeature",
    "SequenceFeature",
]


@dataclass(frozen=True)
class CategoricalFeature:
    """An id feature with ids in ``[0, num_embeddings)``; ``embedding_dim`` None = the model's.

    Args:
        name (str): the feature's column name.
        num_embeddings (int): the number of ids.
        embedding_dim (int, optional): its embedding size (``None``: the model's). (default: ``None``)
    """

    name: str
    num_embeddings: int
    embedding_dim: int | None = None


@dataclass(frozen=True)
class NumericFeature:
    """A numeric feature bucketed by sorted ``boundaries``: bucket ``i`` holds
    ``boundaries[i-1] <= x < boundaries[i]`` (``len(boundaries) + 1`` buckets).

    Args:
        name (str): the feature's column name.
        boundaries (tuple[float, ...]): the sorted bucket boundaries.
        embedding_dim (int, optional): its embedding size (``None``: the model's). (default: ``None``)
    """

    name: str
    boundaries: tuple[float, ...]
    embedding_dim: int | None = None


@dataclass(frozen=True)
class SequenceFeature:
    """A history of ids of the categorical feature ``target`` (sharing its table).

    Args:
        name (str): the feature's column name (a ragged history).
        target (str): the name of the :class:`CategoricalFeature` whose table it shares.
    """

    name: str
    target: str


Feature = CategoricalFeature | NumericFeature


class FeatureEmbedding(nn.Module):
    """One table per categorical or numeric feature; validates and embeds a batch.

    Args:
        features: the features, in the order their embeddings are concatenated.
        embedding_dim: default embedding size.
    """

    def __init__(self, features: Sequence[Feature], embedding_dim: int) -> None:
        super().__init__()
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be a positive int, got {embedding_dim!r}")
        self.features = tuple(features)
        if not self.features:
            raise ValueError("`features` must name at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"`features` has duplicate names: {names}")
        self.tables = nn.ModuleDict()
        for feature in self.features:
            dim = feature.embedding_dim or embedding_dim
            if isinstance(feature, CategoricalFeature):
                if feature.num_embeddings < 1:
                    raise ValueError(f"feature {feature.name!r}: `num_embeddings` must be positive")
                rows = feature.num_embeddings
            elif isinstance(feature, NumericFeature):
                edges = torch.tensor(feature.boundaries, dtype=torch.float64)
                if edges.dim() != 1 or (edges.numel() > 1 and bool((edges[1:] <= edges[:-1]).any())):
                    raise ValueError(f"feature {feature.name!r}: `boundaries` must be strictly increasing")
                self.register_buffer(f"_boundaries_{feature.name}", edges, persistent=False)
                rows = edges.numel() + 1
            else:
                raise TypeError(f"a feature must be a CategoricalFeature or NumericFeature, got {feature!r}")
            self.tables[feature.name] = nn.Embedding(rows, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=1e-2)

    @property
    def output_size(self) -> int:
        return sum(table.embedding_dim for table in self.tables.values())

    def ids(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The validated table row of every feature of a batch ([B] each)."""
        if not isinstance(features, Mapping):
            raise TypeError(f"`features` must map feature names to tensors, got {type(features).__name__}")
        missing = [f.name for f in self.features if f.name not in features]
        if missing:
            raise ValueError(f"`features` lacks {missing} (expected {[f.name for f in self.features]})")
        batch = None
        out = {}
        for feature in self.features:
            value = features[feature.name]
            where = f"`features[{feature.name!r}]`"
            if not isinstance(value, Tensor) or value.dim() != 1:
                got = getattr(value, "shape", type(value).__name__)
                raise ValueError(f"{where} must be a 1-D tensor [B], got {got}")
            if batch is not None and value.numel() != batch:
                raise ValueError(f"{where} has {value.numel()} rows, other features have {batch}")
            batch = value.numel()
            if isinstance(feature, NumericFeature):
                if not value.is_floating_point():
                    raise TypeError(f"{where} is numeric: it must be floating point, got {value.dtype}")
                if bool(torch.isnan(value).any()):
                    raise ValueError(f"{where} contains NaN (fill missing values before bucketing)")
                edges = getattr(self, f"_boundaries_{feature.name}")
                out[feature.name] = torch.bucketize(value.double(), edges, right=True)
            else:
                out[feature.name] = check_ids(where, value, self.tables[feature.name].num_embeddings)
        return out

    def forward(self, ids: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Embeddings [B, d] of validated ids (from :meth:`ids`)."""
        return {name: self.tables[name](value) for name, value in ids.items()}


def check_ids(where: str, ids: Tensor, num_embeddings: int) -> Tensor:
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{where} must hold integer ids, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_embeddings):
        raise ValueError(
            f"{where} has ids in [{int(ids.min())}, {int(ids.max())}], outside the table's "
            f"[0, {num_embeddings})"
        )
    return ids.long()


def mlp_head(in_channels: int, hidden_channels: Sequence[int], activation: str, dropout: float) -> nn.Sequential:
    """(Linear, activation, dropout) per hidden size, then one output logit."""
    layers: list[nn.Module] = []
    size = in_channels
    for width in hidden_channels:
        layers += [nn.Linear(size, width), make_activation(activation, width)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        size = width
    layers.append(nn.Linear(size, 1))
    return nn.Sequential(*layers)


class _TargetAttentionCTR(nn.Module):
    """Embeddings, the interest of each history towards its target, the MLP head, the loss.

    Subclasses give :meth:`interest`: the pooled representation [B, D_seq] of each user's
    history and the weight of every behaviour [R].
    """

    def __init__(
        self,
        features: Sequence[Feature],
        sequences: Sequence[SequenceFeature],
        embedding_dim: int,
        decoupled: bool,
        attention_embedding_dim: int | None,
        hidden_channels: Sequence[int],
        activation: str,
        dropout: float,
        interest_product: bool,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(features, embedding_dim)
        self.sequences = tuple(sequences)
        if not self.sequences:
            raise ValueError("`sequences` must name at least one history feature")
        categorical = {f.name: f for f in self.embedding.features if isinstance(f, CategoricalFeature)}
        for seq in self.sequences:
            if seq.target not in categorical:
                raise ValueError(
                    f"sequence {seq.name!r} targets {seq.target!r}, which is not a categorical feature "
                    f"(have {sorted(categorical)})"
                )
        if len({s.name for s in self.sequences}) != len(self.sequences):
            raise ValueError("`sequences` has duplicate names")
        if not decoupled and attention_embedding_dim is not None:
            raise ValueError("`attention_embedding_dim` sizes a separate attention table: it needs `decoupled=True`")
        self.decoupled = bool(decoupled)
        self.targets = tuple(dict.fromkeys(s.target for s in self.sequences))
        self.attention_tables = nn.ModuleDict()
        if self.decoupled:
            for target in self.targets:
                dim = attention_embedding_dim or self.embedding.tables[target].embedding_dim
                self.attention_tables[target] = nn.Embedding(categorical[target].num_embeddings, dim)
        self.query_channels = sum(self._attention_table(s.target).embedding_dim for s in self.sequences)
        self.value_channels = sum(self.embedding.tables[s.target].embedding_dim for s in self.sequences)
        self.interest_product = bool(interest_product)
        head_in = self.embedding.output_size + self.value_channels * (2 if interest_product else 1)
        self.hidden_channels, self.activation = tuple(hidden_channels), activation
        self.head = mlp_head(head_in, hidden_channels, activation, dropout)
        self._reset_own()

    def _reset_own(self) -> None:
        for table in self.attention_tables.values():
            nn.init.normal_(table.weight, std=1e-2)

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        self._reset_own()
        for module in self.head.modules():
            if module is not self.head and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(features={[f.name for f in self.embedding.features]}, "
            f"sequences={[s.name for s in self.sequences]}, attention={self.attention!r}, "
            f"hidden_channels={self.hidden_channels}, decoupled={self.decoupled})"
        )

    def _attention_table(self, target: str) -> nn.Embedding:
        return self.attention_tables[target] if self.decoupled else self.embedding.tables[target]

    # ------------------------------------------------------------------ inputs
    def _inputs(
        self,
        features: Mapping[str, Tensor],
        history: Mapping[str, Tensor],
        ptr: Tensor | None,
        lengths: Tensor | None,
        padding_mask: Tensor | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], History]:
        """Validated feature ids [B], packed history ids [R] per sequence, and the segments."""
        ids = self.embedding.ids(features)
        if not isinstance(history, Mapping):
            raise TypeError(f"`history` must map sequence names to id tensors, got {type(history).__name__}")
        missing = [s.name for s in self.sequences if s.name not in history]
        if missing:
            raise ValueError(f"`history` lacks {missing} (expected {[s.name for s in self.sequences]})")
        batch = next(iter(ids.values())).numel()
        first = history[self.sequences[0].name]
        if not isinstance(first, Tensor) or first.dim() not in (1, 2):
            raise ValueError(
                f"`history[{self.sequences[0].name!r}]` must be ragged ids [R] or padded [B, L], "
                f"got {getattr(first, 'shape', type(first).__name__)}"
            )
        # the ids are scalars per row: view them as [R, 1] / [B, L, 1] for the segment check
        segments = resolve_history(
            first.unsqueeze(-1), ptr, lengths, padding_mask, batch_size=batch,
            name=f"history[{self.sequences[0].name!r}]",
        )
        rows = {}
        for seq in self.sequences:
            where = f"`history[{seq.name!r}]`"
            value = history[seq.name]
            if not isinstance(value, Tensor):
                raise TypeError(f"{where} must be a tensor, got {type(value).__name__}")
            packed = segments.pack(f"history[{seq.name!r}]", value.unsqueeze(-1)).squeeze(-1)
            rows[seq.name] = check_ids(where, packed, self.embedding.tables[seq.target].num_embeddings)
        return ids, rows, segments

    def _history_embedding(self, rows: Mapping[str, Tensor], attention: bool, kept: Tensor | None = None) -> Tensor:
        """[R, D] concatenated embeddings of the history rows (only ``kept`` rows if given)."""
        parts = []
        for seq in self.sequences:
            ids = rows[seq.name] if kept is None else rows[seq.name][kept]
            table = self._attention_table(seq.target) if attention else self.embedding.tables[seq.target]
            parts.append(gather_rows(table.weight, ids))
        return torch.cat(parts, dim=1)

    def _query(self, ids: Mapping[str, Tensor], embedded: Mapping[str, Tensor], attention: bool) -> Tensor:
        if attention and self.decoupled:
            return torch.cat([self.attention_tables[s.target](ids[s.target]) for s in self.sequences], dim=1)
        return torch.cat([embedded[s.target] for s in self.sequences], dim=1)

    # ------------------------------------------------------------------ model
    def interest(
        self, query: Tensor, rows: Mapping[str, Tensor], segments: History
    ) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        features: Mapping[str, Tensor],
        history: Mapping[str, Tensor],
        ptr: Tensor | None = None,
        lengths: Tensor | None = None,
        padding_mask: Tensor | None = None,
        *,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        ids, rows, segments = self._inputs(features, history, ptr, lengths, padding_mask)
        embedded = self.embedding(ids)
        interest, weights = self.interest(self._query(ids, embedded, attention=True), rows, segments)
        parts = [embedded[f.name] for f in self.embedding.features] + [interest]
        if self.interest_product:
            parts.append(self._query(ids, embedded, attention=False) * interest)
        logits = self.head(torch.cat(parts, dim=1)).squeeze(1)
        if return_attention_weights:
            return logits, segments.unpack(weights)
        return logits

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        """Mean binary cross-entropy of ``logits`` [B] against 0/1 ``labels`` [B]."""
        if labels.shape != logits.shape:
            raise ValueError(
                f"`labels` must have the shape of the logits {tuple(logits.shape)}, got {tuple(labels.shape)}"
            )
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def minibatch_aware_penalty(
        self,
        frequencies: Mapping[str, Tensor],
        features: Mapping[str, Tensor],
        history: Mapping[str, Tensor],
        ptr: Tensor | None = None,
        lengths: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        r"""DIN's mini-batch aware L2 penalty of the batch (see :func:`~gattn.nn.din.minibatch_aware_l2`).

        ``frequencies`` maps a feature name to the occurrence count of each of its ids in the
        training data ([num_embeddings]); the tables of those features are regularised (the
        attention table too when decoupled) over the ids of the batch, its histories' ids
        included. Tables without an entry are not regularised. Add ``lambda * penalty`` to
        the loss.
        """
        known = set(self.embedding.tables)
        unknown = [name for name in frequencies if name not in known]
        if unknown:
            raise ValueError(f"`frequencies` names {unknown}, which are not features of this model ({sorted(known)})")
        ids, rows, _ = self._inputs(features, history, ptr, lengths, padding_mask)
        penalty = None
        for name, frequency in frequencies.items():
            batch_ids = torch.cat([ids[name]] + [rows[s.name] for s in self.sequences if s.target == name])
            tables = [self.embedding.tables[name]]
            if name in self.attention_tables:
                tables.append(self.attention_tables[name])
            for table in tables:
                term = minibatch_aware_l2(table.weight, batch_ids, frequency)
                penalty = term if penalty is None else penalty + term
        return penalty if penalty is not None else self.head[0].weight.new_zeros(())


class DIN(_TargetAttentionCTR):
    r"""Deep Interest Network (Zhou et al., KDD 2018): target attention with the local
    activation unit over each user's ragged history, then an MLP.

    .. math::
        \hat y = \sigma\Big(\mathrm{MLP}\big([e_{f_1}, \dots, e_{f_n},\
        \textstyle\sum_j a(e_A, e_j)\, e_j]\big)\Big)

    Args:
        features (Sequence[CategoricalFeature or NumericFeature]): the categorical and numeric
            features (their embeddings enter the MLP).
        sequences (Sequence[SequenceFeature]): the history features, each sharing its target feature's table.
        embedding_dim (int, optional): default embedding size (default ``32``).
        attention_hidden_channels (Sequence[int], optional): local activation unit sizes (default ``(80, 40)``).
        attention_activation (str, optional): its activation (default ``"dice"``).
        softmax (bool, optional): normalise the attention weights per user (default ``False``, the paper).
        hidden_channels (Sequence[int], optional): MLP sizes (default ``(200, 80)``, the paper's).
        activation (str, optional): MLP activation (default ``"dice"``; ``"prelu"`` is the paper's baseline).
        dropout (float, optional): MLP dropout (default ``0.0``).
        decoupled (bool, optional): separate attention embedding tables (default ``False``, the paper).
        attention_embedding_dim (int, optional): their size (default: the representation size); needs
            ``decoupled=True``.
        interest_product (bool, optional): also feed ``target * interest`` to the MLP (default ``False``).

    Shapes:
        - **input:** ``features`` {name: :math:`(B)`}, ``history`` {name: ids :math:`(R)` with
          ``ptr`` :math:`(B + 1)` or ``lengths`` :math:`(B)`, or padded :math:`(B, L)` with
          ``padding_mask`` or ``lengths``}.
        - **output:** logits :math:`(B)`; with ``return_attention_weights=True`` also the
          weight of every behaviour (:math:`(R)` or :math:`(B, L)`).
    """

    def __init__(
        self,
        features: Sequence[Feature],
        sequences: Sequence[SequenceFeature],
        embedding_dim: int = 32,
        attention_hidden_channels: Sequence[int] = (80, 40),
        attention_activation: str = "dice",
        softmax: bool = False,
        hidden_channels: Sequence[int] = (200, 80),
        activation: str = "dice",
        dropout: float = 0.0,
        decoupled: bool = False,
        attention_embedding_dim: int | None = None,
        interest_product: bool = False,
    ) -> None:
        super().__init__(
            features, sequences, embedding_dim, decoupled, attention_embedding_dim,
            hidden_channels, activation, dropout, interest_product,
        )
        self.attention = DINAttention(self.query_channels, attention_hidden_channels, attention_activation, softmax)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.attention.reset_parameters()

    def interest(self, query: Tensor, rows: Mapping[str, Tensor], segments: History) -> tuple[Tensor, Tensor]:
        keys = self._history_embedding(rows, attention=True)
        value = self._history_embedding(rows, attention=False) if self.decoupled else None
        return self.attention(query, keys, segments.ptr, value=value, return_attention_weights=True)


class DARE(_TargetAttentionCTR):
    r"""DARE (ICLR 2025): decoupled attention and representation embeddings, top-K retrieval
    of the long history by attention score, target attention over the K, then an MLP.

    .. math::
        \hat y = \sigma\Big(\mathrm{MLP}\big([e_{f_1}, \dots, e_{f_n},\ v_U,\
        e^{rep}_A \odot v_U]\big)\Big),\qquad
        v_U = \mathrm{DARE}(e^{att}_A, \{e^{att}_j\}, \{e^{rep}_j\})

    (:class:`~gattn.nn.dare.DAREAttention`). The retrieval scores every behaviour straight from
    the attention tables (:func:`gattn.kernels.topk.segment_lookup_scores`, no ``[R, d]``
    gather, no gradients); only the K kept behaviours are embedded with gradients.

    Args:
        features (Sequence[CategoricalFeature or NumericFeature]): as :class:`DIN`.
        sequences (Sequence[SequenceFeature]): as :class:`DIN`.
        embedding_dim (int, optional): as :class:`DIN`. (default: ``32``)
        hidden_channels (Sequence[int], optional): as :class:`DIN`. (default: ``(200, 80)``)
        activation (str, optional): as :class:`DIN`. (default: ``"prelu"``)
        dropout (float, optional): as :class:`DIN`. (default: ``0.0``)
        top_k (int, optional): behaviours kept per user (default ``20``; ``None``: attend over all).
        softmax (bool, optional): normalise the weights over the kept behaviours (default ``True``).
        decoupled (bool, optional): separate attention tables (default ``True``, DARE; ``False`` is the paper's
            shared-embedding ablation, TWIN-like).
        attention_embedding_dim (int, optional): attention table size (default: the representation size).
        interest_product (bool, optional): feed ``target * interest`` to the MLP (default ``True``, the paper's
            target-aware representation).

    Shapes:
        - **input:** as :class:`DIN`.
        - **output:** as :class:`DIN`; the weights are zero for behaviours not retrieved.
    """

    def __init__(
        self,
        features: Sequence[Feature],
        sequences: Sequence[SequenceFeature],
        embedding_dim: int = 32,
        top_k: int | None = 20,
        softmax: bool = True,
        hidden_channels: Sequence[int] = (200, 80),
        activation: str = "prelu",
        dropout: float = 0.0,
        decoupled: bool = True,
        attention_embedding_dim: int | None = None,
        interest_product: bool = True,
    ) -> None:
        super().__init__(
            features, sequences, embedding_dim, decoupled, attention_embedding_dim,
            hidden_channels, activation, dropout, interest_product,
        )
        self.attention = DAREAttention(self.query_channels, top_k=top_k, softmax=softmax)

    def interest(self, query: Tensor, rows: Mapping[str, Tensor], segments: History) -> tuple[Tensor, Tensor]:
        attention = self.attention
        num_rows = segments.num_rows
        if attention.top_k is None:
            kept, kept_ptr = None, segments.ptr
        else:
            with torch.no_grad():
                scores, offset = None, 0
                for seq in self.sequences:
                    table = self._attention_table(seq.target)
                    width = table.embedding_dim
                    part = segment_lookup_scores(
                        table.weight, rows[seq.name], query[:, offset:offset + width], segments.ptr,
                        scale=attention.scale,
                    )
                    scores = part if scores is None else scores + part
                    offset += width
                kept, kept_ptr = segment_topk(scores, segments.ptr, attention.top_k)
        keys = self._history_embedding(rows, attention=True, kept=kept)
        value = self._history_embedding(rows, attention=False, kept=kept) if self.decoupled else keys
        out, weights = attention.attend(query, keys, value, kept_ptr)
        if kept is not None:
            weights = weights.new_zeros(num_rows).index_copy(0, kept, weights)
        return out, weights


class Hiformer(nn.Module):
    r"""Hiformer (Gui et al. 2023): feature tokens and task tokens through Hiformer layers,
    the task tokens' outputs through an MLP.

    .. math::
        X^{(0)} = [e_{f_1}, \dots, e_{f_n}, t_1, \dots, t_m],\quad
        X^{(l)} = \mathrm{HiformerLayer}(X^{(l-1)}),\quad
        \hat y_i = \sigma\big(\mathrm{MLP}(X^{(L)}_{t_i})\big)

    With ``prune=True`` the last layer computes the task tokens alone (the paper's serving-time
    pruning; the output is the same, only cheaper), in training and inference alike.

    Args:
        features (Sequence[CategoricalFeature or NumericFeature]): categorical and numeric features
            (one token each; all of one embedding size).
        embedding_dim (int, optional): token size d (default ``16``).
        num_layers (int, optional): Hiformer layers (default ``2``).
        heads (int, optional): attention heads (default ``2``).
        head_channels (int, optional): size per head (default ``d // heads``).
        composite (bool, optional): composite key/value projections (default ``True``).
        rank (int, optional): low-rank composite projections (default ``None``: full rank).
        ffn_channels (int, optional): feed-forward size (default ``4 * d``).
        num_tasks (int, optional): task tokens / outputs (default ``1``).
        hidden_channels (Sequence[int], optional): sizes of the MLP applied to each task token (default ``(256,)``).
        activation (str, optional): MLP activation (default ``"relu"``).
        dropout (float, optional): dropout in the layers and the MLP (default ``0.0``).
        prune (bool, optional): compute only the task tokens in the last layer (default ``True``).

    Shapes:
        - **input:** ``features`` {name: :math:`(B)`}.
        - **output:** logits :math:`(B)` (one task) or :math:`(B, \text{num\_tasks})`.
    """

    def __init__(
        self,
        features: Sequence[Feature],
        embedding_dim: int = 16,
        num_layers: int = 2,
        heads: int = 2,
        head_channels: int | None = None,
        composite: bool = True,
        rank: int | None = None,
        ffn_channels: int | None = None,
        num_tasks: int = 1,
        hidden_channels: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.0,
        prune: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("num_layers", num_layers), ("num_tasks", num_tasks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        self.embedding = FeatureEmbedding(features, embedding_dim)
        sizes = {table.embedding_dim for table in self.embedding.tables.values()}
        if sizes != {embedding_dim}:
            raise ValueError(
                f"Hiformer tokens share one size: every feature must embed to {embedding_dim}, got {sizes}"
            )
        self.num_features, self.num_tasks, self.prune = len(self.embedding.features), num_tasks, bool(prune)
        self.task_tokens = nn.Parameter(torch.empty(num_tasks, embedding_dim))
        num_tokens = self.num_features + num_tasks
        self.layers = nn.ModuleList(
            HiformerLayer(num_tokens, embedding_dim, heads, head_channels, composite, rank, ffn_channels, dropout)
            for _ in range(num_layers)
        )
        self.register_buffer("task_index", torch.arange(self.num_features, num_tokens), persistent=False)
        # one MLP reads every task token: the tokens, not the heads, carry the task
        self.head = mlp_head(embedding_dim, hidden_channels, activation, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        nn.init.normal_(self.task_tokens, std=1e-2)
        for layer in self.layers:
            layer.reset_parameters()
        for module in self.head.modules():
            if module is not self.head and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def __repr__(self) -> str:
        att = self.layers[0].attention
        return (
            f"{type(self).__name__}(features={self.num_features}, num_tasks={self.num_tasks}, "
            f"layers={len(self.layers)}, heads={att.heads}, composite={att.composite}, rank={att.rank}, "
            f"prune={self.prune})"
        )

    def tokens(self, features: Mapping[str, Tensor]) -> Tensor:
        """The input tokens [B, n + m, d] of a batch."""
        embedded = self.embedding(self.embedding.ids(features))
        x = torch.stack([embedded[f.name] for f in self.embedding.features], dim=1)
        return torch.cat([x, self.task_tokens.expand(x.size(0), -1, -1)], dim=1)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        x = self.tokens(features)
        for layer in self.layers[:-1]:
            x = layer(x)
        last = self.layers[-1]
        x = last(x, self.task_index) if self.prune else last(x)[:, self.task_index]
        logits = self.head(x).squeeze(2)
        return logits.squeeze(1) if self.num_tasks == 1 else logits

    loss = staticmethod(_TargetAttentionCTR.loss)
