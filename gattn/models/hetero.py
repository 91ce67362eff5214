"""Heterogeneous node classifiers used as baselines for LATTE, all of one width and one input
encoder: HAN (PyG's ``HANConv``), HGT (PyG's ``HGTConv``) and R-GCN (PyG's ``RGCNConv`` on the
homogeneous view of the graph).

Every model takes ``forward(x_dict, edge_index_dict)`` and returns the logits of the target
node type [N_target, out_channels]. Node types without features (no entry in
``in_channels``) get a learned embedding per node (``num_nodes_dict``); ``x_dict`` then needs
no entry for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import HANConv, HGTConv, RGCNConv

from gattn.nn._checks import check_positive_int, check_probability

__all__ = ["HAN", "HGT", "RGCN", "HeteroInput"]

EdgeType = tuple[str, str, str]
Metadata = tuple[Sequence[str], Sequence[EdgeType]]


class HeteroInput(nn.Module):
    r"""Brings every node type to one width: :math:`\mathrm{Dropout}(\mathrm{ReLU}(W_m x))` for
    node types with features, a learned embedding per node for the others.

    Args:
        node_types (Sequence[str]): all node types the model sees.
        in_channels (Mapping[str, int]): feature size per node type that has features.
        hidden_channels (int): the common width.
        num_nodes_dict (Mapping[str, int], optional): node count per featureless node type (those absent from
            ``in_channels``); required for each of them. (default: ``None``)
        dropout (float, optional): dropout on the projected features. (default: ``0.0``)

    Shapes:
        - **input:** ``x_dict`` {node type: :math:`(N_t, F_t)`}.
        - **output:** {node type: :math:`(N_t, \text{hidden\_channels})`} (featureless types:
          their learned embeddings).
    """

    def __init__(
        self,
        node_types: Sequence[str],
        in_channels: Mapping[str, int],
        hidden_channels: int,
        num_nodes_dict: Mapping[str, int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.dropout = check_probability("dropout", dropout)
        unknown = [t for t in in_channels if t not in node_types]
        if unknown:
            raise ValueError(f"`in_channels` names node types {unknown} that are not in the metadata")
        num_nodes_dict = dict(num_nodes_dict or {})
        featureless = [t for t in node_types if t not in in_channels]
        missing = [t for t in featureless if t not in num_nodes_dict]
        if missing:
            raise ValueError(
                f"node type(s) {missing} have no features (`in_channels`) and no node count "
                "(`num_nodes_dict`) for a learned embedding"
            )
        self.proj = nn.ModuleDict({t: nn.Linear(check_positive_int(f"in_channels[{t!r}]", c), hidden_channels)
                                   for t, c in in_channels.items()})
        self.embedding = nn.ModuleDict({
            t: nn.Embedding(check_positive_int(f"num_nodes_dict[{t!r}]", num_nodes_dict[t]), hidden_channels)
            for t in featureless
        })

    def reset_parameters(self) -> None:
        for module in [*self.proj.values(), *self.embedding.values()]:
            module.reset_parameters()

    def forward(self, x_dict: Mapping[str, Tensor], n_id_dict: Mapping[str, Tensor] | None = None
                ) -> dict[str, Tensor]:
        """Every node type at the common width.

        Args:
            x_dict: features per node type that has them.
            n_id_dict: the global ids of the nodes of a sampled subgraph per node type (the
                ``n_id`` of a neighbour-sampled batch): a featureless type's rows are those
                nodes' embeddings. ``None`` or a type left out: every node of the type.
        """
        out = {}
        for node_type, lin in self.proj.items():
            if node_type not in x_dict:
                raise ValueError(f"`x_dict` has no features for node type {node_type!r}")
            x = F.relu(lin(x_dict[node_type]))
            out[node_type] = F.dropout(x, p=self.dropout, training=self.training)
        for node_type, embedding in self.embedding.items():
            ids = None if n_id_dict is None else n_id_dict.get(node_type)
            out[node_type] = embedding.weight if ids is None else embedding(ids)
        return out


class _HeteroClassifier(nn.Module):
    """Input encoder, a stack of convolutions (subclasses: :meth:`convolve` returns the target
    type's embeddings, ``head_channels`` wide, by default ``hidden_channels``), a linear head."""

    def __init__(
        self,
        metadata: Metadata,
        in_channels: Mapping[str, int],
        out_channels: int,
        target_type: str,
        hidden_channels: int,
        num_layers: int,
        dropout: float,
        num_nodes_dict: Mapping[str, int] | None,
        head_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.node_types = list(metadata[0])
        self.edge_types = [tuple(e) for e in metadata[1]]
        if target_type not in self.node_types:
            raise ValueError(f"`target_type`={target_type!r} is not a node type of the metadata {self.node_types}")
        self.target_type = target_type
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.dropout = check_probability("dropout", dropout)
        self.input = HeteroInput(self.node_types, in_channels, hidden_channels, num_nodes_dict, dropout)
        self.head = nn.Linear(head_channels or hidden_channels, check_positive_int("out_channels", out_channels))

    def reset_parameters(self) -> None:
        self.input.reset_parameters()
        for conv in self.convs:  # every subclass keeps its layers in `convs`
            conv.reset_parameters()
        self.head.reset_parameters()

    def convolve(self, h_dict: dict[str, Tensor], edge_index_dict: Mapping[EdgeType, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, x_dict: Mapping[str, Tensor], edge_index_dict: Mapping[EdgeType, Tensor],
                n_id_dict: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits of the target type's nodes; ``n_id_dict``: see :meth:`HeteroInput.forward`."""
        h = self.convolve(self.input(x_dict, n_id_dict), edge_index_dict)
        return self.head(F.dropout(h, p=self.dropout, training=self.training))


class HAN(_HeteroClassifier):
    r"""HAN (Wang et al. 2019) from PyG's ``HANConv``: node-level attention per edge type (give
    meta-path edge types for the paper's model) and semantic attention across them. For an edge
    type (meta-path) :math:`\Phi`, per head,

    .. math::
        \alpha^{\Phi}_{ij} = \mathrm{softmax}_{j \in \mathcal{N}^{\Phi}(i)}\!\left(
        \mathrm{LeakyReLU}\big(\mathbf{a}_{\Phi}^{\top} [W h_i \,\Vert\, W h_j]\big)\right),
        \qquad z^{\Phi}_i = \sigma\Big(\sum_{j \in \mathcal{N}^{\Phi}(i)} \alpha^{\Phi}_{ij} W h_j\Big),

    then the semantic attention weighs the edge types,

    .. math::
        \beta_{\Phi} = \mathrm{softmax}_{\Phi}\Big(\frac{1}{|\mathcal{V}|}\sum_{i}
        \mathbf{q}^{\top} \tanh(M z^{\Phi}_i + \mathbf{b})\Big), \qquad
        z_i = \sum_{\Phi} \beta_{\Phi}\, z^{\Phi}_i .

    Args:
        metadata (Metadata): ``(node_types, edge_types)``.
        in_channels (Mapping[str, int]): feature size per featured node type.
        out_channels (int): number of classes.
        target_type (str): the node type to classify.
        hidden_channels (int, optional): width (``heads`` must divide it). (default: ``64``)
        num_layers (int, optional): stacked ``HANConv`` layers (ELU between them). (default: ``1``)
        heads (int, optional): attention heads. (default: ``8``)
        dropout (float, optional): on inputs, attention (``HANConv``'s) and before the head.
            (default: ``0.5``)
        num_nodes_dict (Mapping[str, int], optional): node counts of featureless types (learned embeddings).
            (default: ``None``)

    Shapes:
        - **input:** ``x_dict`` {node type: :math:`(N_t, F_t)`} (featureless types: none),
          ``edge_index_dict`` {edge type: :math:`(2, E_r)`}.
        - **output:** logits of the ``target_type`` nodes :math:`(N_{\text{target}}, \text{out\_channels})`.
    """

    def __init__(self, metadata: Metadata, in_channels: Mapping[str, int], out_channels: int, target_type: str,
                 hidden_channels: int = 64, num_layers: int = 1, heads: int = 8, dropout: float = 0.5,
                 num_nodes_dict: Mapping[str, int] | None = None) -> None:
        super().__init__(metadata, in_channels, out_channels, target_type, hidden_channels, num_layers,
                         dropout, num_nodes_dict)
        self.convs = nn.ModuleList(
            HANConv(hidden_channels, hidden_channels, (self.node_types, self.edge_types), heads=heads,
                    dropout=dropout)
            for _ in range(num_layers)
        )

    def convolve(self, h_dict, edge_index_dict):
        for n, conv in enumerate(self.convs):
            out = conv(h_dict, edge_index_dict)
            # HANConv returns None for node types that receive no edge; they keep their input
            h_dict = {t: h_dict[t] if out.get(t) is None else out[t] for t in h_dict}
            if n + 1 < len(self.convs):
                h_dict = {t: F.elu(h) for t, h in h_dict.items()}
        return h_dict[self.target_type]


class HGT(_HeteroClassifier):
    r"""HGT (Hu et al. 2020) from PyG's ``HGTConv`` (type-specific attention and messages,
    gated skip connection), ``num_layers`` layers of one width. For a target :math:`t`, its
    sources :math:`s` over edges :math:`e` of relation :math:`\phi(e)`, node types
    :math:`\tau(\cdot)` and head :math:`i`,

    .. math::
        \alpha^{i}(s, e, t) = \mathrm{softmax}_{s \in \mathcal{N}(t)}\Big(
        K^{i}_{\tau(s)}(h_s)\, W^{\mathrm{ATT}}_{\phi(e)}\, Q^{i}_{\tau(t)}(h_t)^{\top}
        \frac{\mu_{\phi(e)}}{\sqrt{d}}\Big),\qquad
        \tilde h_t = \big\Vert_{i} \sum_{s} \alpha^{i}(s, e, t)\, V^{i}_{\tau(s)}(h_s)\,
        W^{\mathrm{MSG}}_{\phi(e)},

    and :math:`h'_t = \gamma\, A_{\tau(t)}(\mathrm{GELU}(\tilde h_t)) + (1 - \gamma)\, h_t` with a
    learned gate :math:`\gamma` per node type.

    Args:
        metadata (Metadata): ``(node_types, edge_types)``.
        in_channels (Mapping[str, int]): feature size per featured node type.
        out_channels (int): number of classes.
        target_type (str): the node type to classify.
        hidden_channels (int, optional): width of every layer. (default: ``64``)
        num_layers (int, optional): number of layers. (default: ``2``)
        heads (int, optional): attention heads (``hidden_channels`` divisible by it). (default: ``4``)
        dropout (float, optional): dropout on inputs and before the head. (default: ``0.5``)
        num_nodes_dict (Mapping[str, int], optional): node counts of featureless types (learned
            embeddings). (default: ``None``)

    Shapes:
        - **input:** ``x_dict`` {node type: :math:`(N_t, F_t)`} (featureless types: none),
          ``edge_index_dict`` {edge type: :math:`(2, E_r)`}.
        - **output:** logits of the ``target_type`` nodes :math:`(N_{\text{target}}, \text{out\_channels})`.
    """

    def __init__(self, metadata: Metadata, in_channels: Mapping[str, int], out_channels: int, target_type: str,
                 hidden_channels: int = 64, num_layers: int = 2, heads: int = 4, dropout: float = 0.5,
                 num_nodes_dict: Mapping[str, int] | None = None) -> None:
        super().__init__(metadata, in_channels, out_channels, target_type, hidden_channels, num_layers,
                         dropout, num_nodes_dict)
        self.convs = nn.ModuleList(
            HGTConv(hidden_channels, hidden_channels, (self.node_types, self.edge_types), heads=heads)
            for _ in range(num_layers)
        )

    def convolve(self, h_dict, edge_index_dict):
        for conv in self.convs:
            out = conv(h_dict, edge_index_dict)
            h_dict = {t: h_dict[t] if out.get(t) is None else out[t] for t in h_dict}
        return h_dict[self.target_type]


class RGCN(_HeteroClassifier):
    r"""R-GCN (Schlichtkrull et al. 2018) from PyG's ``RGCNConv`` on the homogeneous view of the
    graph (node types stacked, one relation id per edge type): a weight per relation, mean
    aggregation per relation, a root weight; ReLU and dropout between layers:

    .. math::
        h'_i = \Theta_{\mathrm{root}}\, h_i + \sum_{r \in \mathcal{R}}
        \sum_{j \in \mathcal{N}_r(i)} \frac{1}{|\mathcal{N}_r(i)|}\, \Theta_r\, h_j

    Args:
        metadata (Metadata): ``(node_types, edge_types)``.
        in_channels (Mapping[str, int]): feature size per featured node type.
        out_channels (int): number of classes.
        target_type (str): the node type to classify.
        hidden_channels (int, optional): width of every layer. (default: ``64``)
        num_layers (int, optional): number of layers. (default: ``2``)
        dropout (float, optional): dropout between layers. (default: ``0.5``)
        num_nodes_dict (Mapping[str, int], optional): node counts of featureless types (learned
            embeddings). (default: ``None``)
        num_bases (int, optional): basis decomposition of the relation weights (``None``: a full
            weight per relation). (default: ``None``)

    Shapes:
        - **input:** ``x_dict`` {node type: :math:`(N_t, F_t)`} (featureless types: none),
          ``edge_index_dict`` {edge type: :math:`(2, E_r)`}.
        - **output:** logits of the ``target_type`` nodes :math:`(N_{\text{target}}, \text{out\_channels})`.
    """

    def __init__(self, metadata: Metadata, in_channels: Mapping[str, int], out_channels: int, target_type: str,
                 hidden_channels: int = 64, num_layers: int = 2, dropout: float = 0.5,
                 num_nodes_dict: Mapping[str, int] | None = None, num_bases: int | None = None) -> None:
        super().__init__(metadata, in_channels, out_channels, target_type, hidden_channels, num_layers,
                         dropout, num_nodes_dict)
        self.convs = nn.ModuleList(
            RGCNConv(hidden_channels, hidden_channels, len(self.edge_types), num_bases=num_bases)
            for _ in range(num_layers)
        )

    def convolve(self, h_dict, edge_index_dict):
        offsets, start = {}, 0
        for node_type in self.node_types:
            offsets[node_type] = start
            start += h_dict[node_type].size(0)
        x = torch.cat([h_dict[t] for t in self.node_types])
        pieces, types = [], []
        for relation, edge_type in enumerate(self.edge_types):
            if edge_type not in edge_index_dict:
                continue
            edge_index = edge_index_dict[edge_type]
            shift = torch.tensor([[offsets[edge_type[0]]], [offsets[edge_type[2]]]], device=edge_index.device)
            pieces.append(edge_index + shift)
            types.append(torch.full((edge_index.size(1),), relation, device=edge_index.device))
        edge_index, edge_type = torch.cat(pieces, 1), torch.cat(types)
        for n, conv in enumerate(self.convs):
            x = conv(x, edge_index, edge_type)
            if n + 1 < len(self.convs):
                x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        start = offsets[self.target_type]
        return x[start : start + h_dict[self.target_type].size(0)]
