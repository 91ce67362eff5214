"""LATTE node classifier (Tran & Gao, "Layer-stacked Attention for Heterogeneous Network
Embedding", 2020): layer t attends over the order-t meta-relations, the embeddings of all
layers are concatenated, and a linear head classifies the target node type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.nn._checks import check_positive_int
from gattn.nn.latte import LATTEConv, compose_meta_relations, inverse_in_degree, meta_relations

from .hetero import _HeteroClassifier

__all__ = ["LATTE", "LATTEOutput"]

EdgeType = tuple[str, str, str]
Metadata = tuple[Sequence[str], Sequence[EdgeType]]
META_WEIGHTS = ("attention", "structure")


class LATTEOutput(NamedTuple):
    """What :meth:`LATTE.encode` returns.

    Attributes:
        embeddings (dict[str, Tensor]): {node type: [N_m, num_layers *
            hidden_channels]}, the layers concatenated.
        betas (list[dict[str, Tensor]]): per layer, {node type: [N_m, slots]} relation
            attention (rows sum to one).
        relation_slots (list[dict[str, list[str]]]): per layer, {node type: slot
            names} (meta-relation names, then "self").
        graphs (list[dict[EdgeType, Tensor]]): per layer, the {edge type: edge_index}
            it attended over (layer 1: the input).
        proximity_loss (Tensor, optional): the layers' proximity losses averaged
            (``None`` unless asked for).
    """

    embeddings: dict[str, Tensor]
    betas: list[dict[str, Tensor]]
    relation_slots: list[dict[str, list[str]]]
    graphs: list[dict[EdgeType, Tensor]]
    proximity_loss: Tensor | None


class LATTE(_HeteroClassifier):
    r"""LATTE node classifier: input encoder, ``num_layers`` :class:`gattn.nn.LATTEConv`
    layers, embeddings of all layers concatenated, linear head on the target type.

    Layer 1 attends over the first-order relations (``metadata[1]``); layer :math:`t > 1` over
    the order-t meta-relations (:func:`gattn.nn.meta_relations`), whose graphs are composed
    from layer :math:`t-1`'s graphs by :func:`gattn.nn.compose_meta_relations` and pruned by
    ``threshold`` / ``top_k`` (so each has at most ``N * min(top_k, 1/threshold)`` edges).

    Args:
        metadata (Metadata): ``(node_types, edge_types)`` of the first-order relations.
        in_channels (Mapping[str, int]): feature size per node type that has features.
        out_channels (int): number of classes.
        target_type (str): the node type to classify.
        hidden_channels (int, optional): width of every layer (``heads`` must divide it). (default: ``64``)
        num_layers (int, optional): layers, i.e. the highest meta-relation order. (default: ``2``)
        heads (int, optional): attention heads. (default: ``4``)
        num_nodes_dict (Mapping[str, int], optional): node count per featureless node type (learned embeddings).
            (default: ``None``)
        dropout (float, optional): on the input projections, between layers and before the head.
            (default: ``0.2``)
        meta_weights (str, optional): weights of the composed meta-relations: ``"attention"`` (the paper: the
            previous layer's node-level attention, averaged over heads, times the row-normalised
            relation; recomputed every forward, without gradient) or ``"structure"``
            (row-normalised path counts, computed once per input graph and cached). (default: ``"attention"``)
        threshold (float, optional): prune composed entries below this weight (default 0.01); ``None``: no
            threshold.
        top_k (int, optional): keep at most this many composed entries per destination node; ``None`` (default):
            no limit.
        max_product_nnz (int, optional): chunk budget of the sparse products (peak memory, see
            :func:`gattn.nn.compose_meta_relations`). (default: ``1 << 24``)
        sharpening (bool, optional): learnable sharpening scale per relation and head. (default: ``True``)
        layer_norm (bool, optional): LayerNorm per node type in every layer. (default: ``True``)
        backend (str, optional): kernel backend (``None``: by device). (default: ``None``)

    ``forward(x_dict, edge_index_dict)`` returns the logits [N_target, out_channels];
    :meth:`encode` returns a :class:`LATTEOutput` (embeddings, beta per layer, graphs and the
    optional proximity loss).

    Shapes:
        - **input:** ``x_dict`` {node type: :math:`(N_t, F_t)`} (featureless types: none),
          ``edge_index_dict`` {edge type: :math:`(2, E_r)`}.
        - **output:** logits of the ``target_type`` nodes :math:`(N_{\text{target}}, \text{out\_channels})`.
    """

    def __init__(
        self,
        metadata: Metadata,
        in_channels: Mapping[str, int],
        out_channels: int,
        target_type: str,
        hidden_channels: int = 64,
        num_layers: int = 2,
        heads: int = 4,
        num_nodes_dict: Mapping[str, int] | None = None,
        dropout: float = 0.2,
        meta_weights: str = "attention",
        threshold: float | None = 0.01,
        top_k: int | None = None,
        max_product_nnz: int = 1 << 24,
        sharpening: bool = True,
        layer_norm: bool = True,
        backend: str | None = None,
    ) -> None:
        if meta_weights not in META_WEIGHTS:
            raise ValueError(f"`meta_weights` must be one of {META_WEIGHTS}, got {meta_weights!r}")
        super().__init__(metadata, in_channels, out_channels, target_type, hidden_channels, num_layers, dropout,
                         num_nodes_dict, head_channels=check_positive_int("num_layers", num_layers) * hidden_channels)
        self.hidden_channels = hidden_channels
        self.meta_weights = meta_weights
        self.threshold, self.top_k, self.max_product_nnz = threshold, top_k, max_product_nnz
        if num_layers > 1:  # validate the pruning options now rather than at the first forward
            compose_meta_relations({}, {}, {}, threshold=threshold, top_k=top_k, max_product_nnz=max_product_nnz)
        self.convs = nn.ModuleList(
            LATTEConv(hidden_channels, hidden_channels, (self.node_types, meta_relations(self.edge_types, order)),
                      heads=heads, sharpening=sharpening, layer_norm=layer_norm, backend=backend)
            for order in range(1, num_layers + 1)
        )
        self._structure_cache: tuple[tuple, list] | None = None

    def _structure_graphs(self, edge_index_dict: Mapping[EdgeType, Tensor], num_nodes: dict[str, int]) -> list:
        """Layer graphs of ``meta_weights="structure"``, cached per input graph."""
        key = tuple((e, t.data_ptr(), t.size(1), t._version) for e, t in edge_index_dict.items())
        if self._structure_cache is not None and self._structure_cache[0] == key:
            return self._structure_cache[1]
        first = dict(edge_index_dict)
        current = {e: (t, inverse_in_degree(t, num_nodes[e[2]])) for e, t in first.items()}
        graphs = [first]
        with torch.no_grad():
            for _ in range(1, self.num_layers):
                current = compose_meta_relations(current, first, num_nodes, threshold=self.threshold,
                                                 top_k=self.top_k, max_product_nnz=self.max_product_nnz)
                graphs.append({e: t for e, (t, _) in current.items()})
        self._structure_cache = (key, graphs)
        return graphs

    def encode(
        self,
        x_dict: Mapping[str, Tensor],
        edge_index_dict: Mapping[EdgeType, Tensor],
        proximity: bool = False,
        num_neg_per_edge: float = 1.0,
        n_id_dict: Mapping[str, Tensor] | None = None,
    ) -> LATTEOutput:
        """Embeddings of every node type and what the layers attended to (see
        :class:`LATTEOutput`); ``proximity=True`` adds the proximity loss of every layer;
        ``n_id_dict``: the global node ids of a sampled subgraph (featureless types' embeddings,
        see :meth:`gattn.models.HeteroInput.forward`)."""
        return self._stack(self.input(x_dict, n_id_dict), edge_index_dict, proximity, num_neg_per_edge)

    def convolve(self, h_dict: dict[str, Tensor], edge_index_dict: Mapping[EdgeType, Tensor]) -> Tensor:
        return self._stack(h_dict, edge_index_dict).embeddings[self.target_type]

    def _stack(
        self, h_dict: dict[str, Tensor], edge_index_dict: Mapping[EdgeType, Tensor], proximity: bool = False,
        num_neg_per_edge: float = 1.0,
    ) -> LATTEOutput:
        num_nodes = {t: h.size(0) for t, h in h_dict.items()}
        first = dict(edge_index_dict)
        structure = self._structure_graphs(first, num_nodes) if self.meta_weights == "structure" else None
        graph = first
        layers, betas, slots, graphs, losses = [], [], [], [], []
        attention: dict[EdgeType, Tensor] = {}  # the previous layer's, for composing the next graph
        for order, conv in enumerate(self.convs, start=1):
            if structure is not None:
                graph = structure[order - 1]
            elif order > 1:
                with torch.no_grad():
                    previous = {e: (graph[e], attention[e].mean(-1)) for e in attention}
                    composed = compose_meta_relations(previous, first, num_nodes, threshold=self.threshold,
                                                      top_k=self.top_k, max_product_nnz=self.max_product_nnz)
                graph = {e: t for e, (t, _) in composed.items()}
            if proximity:
                losses.append(conv.proximity_loss(h_dict, graph, num_neg_per_edge))
            want_attention = structure is None and order < self.num_layers
            result = conv(h_dict, graph, return_beta=True, return_attention_weights=want_attention)
            h_dict, beta = result[0], result[1]
            if want_attention:
                attention = {e: a.detach() for e, a in result[2].items()}
            layers.append(h_dict)
            betas.append(beta)
            slots.append({t: conv.relation_slots(t) for t in self.node_types})
            graphs.append(graph)
            h_dict = {t: F.dropout(h, p=self.dropout, training=self.training) for t, h in h_dict.items()}
        embeddings = {t: torch.cat([layer[t] for layer in layers], dim=-1) for t in self.node_types}
        loss = torch.stack(losses).mean() if losses else None
        return LATTEOutput(embeddings, betas, slots, graphs, loss)

    def classify(self, output: LATTEOutput) -> Tensor:
        """Logits of the target type from an :meth:`encode` result (what ``forward`` does)."""
        embedding = output.embeddings[self.target_type]
        return self.head(F.dropout(embedding, p=self.dropout, training=self.training))
