"""Baselines for the Graph Transformer, with its constructor style and ``forward(data)``.

* :class:`GINE` - PyG's ``GINEConv`` (``GINConv`` when edge features are off) stack, with
  OGB's atom/bond encoders for molecules: the usual message-passing baseline.
* :class:`PyGTransformer` - the Graph Transformer's exact block structure (O projection,
  residuals, norms, FFN, readout) with PyG's ``TransformerConv`` in place of
  :class:`gattn.nn.GraphTransformerConv`, so a comparison isolates the attention layer.
  ``TransformerConv`` adds projected edge features to keys and values and does not update
  them, so this baseline has no edge stream.

Both share :class:`gattn.models.graph_transformer.BaseGraphModel` (embeddings, Laplacian PE,
pooling, halving MLP readout) with :class:`gattn.models.GraphTransformer`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GINConv, GINEConv, TransformerConv

from gattn.models.graph_transformer import BaseGraphModel, GraphTransformer
from gattn.nn.graph_transformer import GraphTransformerLayer, make_norm

__all__ = ["GINE", "PyGTransformer"]


class GINE(BaseGraphModel):
    r"""GIN with edge features (Hu et al., 2020) on the shared embedding and readout.

    .. math::
        h_i^{\ell+1} = \mathrm{Dropout}\Big(\sigma\Big(\mathrm{Norm}\Big(
            \mathrm{MLP}\big((1+\epsilon) h_i^{\ell}
            + \textstyle\sum_{j \to i} \mathrm{ReLU}(h_j^{\ell} + e_{ji})\big)\Big)\Big)\Big)
            \;(+\, h_i^{\ell} \text{ with } \texttt{residual})

    with :math:`\sigma` a ReLU on every layer but the last (as OGB's GIN). Edge features off
    (``edge_dim=None``) gives plain GIN (no :math:`e_{ji}` term). The MLP is
    Linear(h, 2h) - ReLU - Linear(2h, h). Other arguments as :class:`GraphTransformer`.

    Args:
        in_channels (int or torch.nn.Module, optional): as :class:`GraphTransformer`.
        hidden_channels (int): width :math:`h` of every layer.
        out_channels (int): output size.
        num_layers (int, optional): number of GINE layers. (default: ``4``)
        residual (bool, optional): add each layer's input to its output. (default: ``False``)
        train_eps (bool, optional): learn :math:`\epsilon` (else ``0``). (default: ``False``)
        **kwargs (optional): the other options of :class:`GraphTransformer` (``task``, ``pe_dim``,
            ``edge_dim``, ``norm``, ``dropout``, ``readout``, ...).

    Shapes:
        - **input:** a PyG ``Data`` / ``Batch`` with ``x`` :math:`(N, F)` (or integer ids),
          ``edge_index`` :math:`(2, E)` and, as configured, ``edge_attr`` :math:`(E, D)`, ``batch``
          :math:`(N)` and the PE attribute :math:`(N, \text{pe\_dim})`.
        - **output:** :math:`(\text{num\_graphs}, \text{out\_channels})` for ``task="graph"``,
          :math:`(N, \text{out\_channels})` for ``task="node"``.
    """

    def __init__(
        self,
        in_channels: int | nn.Module | None,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 4,
        *,
        residual: bool = False,
        train_eps: bool = False,
        **kwargs,
    ) -> None:
        self.residual, self.train_eps = bool(residual), bool(train_eps)
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, **kwargs)

    def build_layers(self) -> nn.ModuleList:
        hidden = self.hidden_channels
        layers = nn.ModuleList()
        for _ in range(self.num_layers):
            mlp = nn.Sequential(
                nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden)
            )
            if self.edge_dim is None:
                conv: nn.Module = GINConv(mlp, train_eps=self.train_eps)
            else:
                conv = GINEConv(mlp, train_eps=self.train_eps)
            layers.append(nn.ModuleDict({"conv": conv, "norm": make_norm(self.norm, hidden)}))
        return layers

    def apply_layers(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        for position, layer in enumerate(self.layers):
            if edge_attr is None:
                h = layer["conv"](x, edge_index)
            else:
                h = layer["conv"](x, edge_index, edge_attr)
            h = layer["norm"](h)
            if position < self.num_layers - 1:
                h = F.relu(h)
            h = F.dropout(h, p=self.dropout, training=self.training)
            x = x + h if self.residual else h
        return x


class _NoSkip(nn.Module):
    """Stands in for TransformerConv's root weight, which PyG builds even when unused."""

    def reset_parameters(self) -> None:
        pass


class _TransformerConvLayer(GraphTransformerLayer):
    """The Graph Transformer block with PyG's TransformerConv as its attention."""

    def _build_attention(
        self, channels: int, heads: int, attention_dropout: float, edge_dim: int | None,
        bias: bool, backend: str | None,
    ) -> nn.Module:
        conv = TransformerConv(
            channels, channels // heads, heads=heads, concat=True, beta=False,
            dropout=attention_dropout, edge_dim=edge_dim, bias=bias, root_weight=False,
        )
        # With root_weight=False PyG still creates `lin_skip`: drop it so that the model has
        # no parameter without a gradient (and the parameter counts compare fairly).
        conv.lin_skip = _NoSkip()
        return conv


class PyGTransformer(GraphTransformer):
    r"""The :class:`GraphTransformer` with PyG's ``TransformerConv`` as the attention.

    ``TransformerConv`` (Shi et al., 2021) computes, per head,

    .. math::
        \alpha_{ij} = \operatorname{softmax}_j\!\left(
            \frac{(W_q h_i)^\top (W_k h_j + W_e e_{ij})}{\sqrt{d}}\right), \qquad
        \hat h_i = \sum_j \alpha_{ij} (W_v h_j + W_e e_{ij}),

    here without its root weight, so the surrounding block (O projection, residual, norm,
    FFN) is the Graph Transformer's. Edge features, when on, enter every layer's attention
    but are not updated. Same arguments as :class:`GraphTransformer` (``backend`` unused).

    Args:
        in_channels (int or torch.nn.Module, optional): input node feature size, or a module
            embedding ``data.x`` into ``hidden_channels``; ``None`` with ``atom_encoder`` /
            ``num_embeddings``.
        hidden_channels (int): width of every layer.
        out_channels (int): output size (classes or targets).
        num_layers (int, optional): number of layers. (default: ``4``)
        task (str, optional): ``"graph"`` (pooled, ``[num_graphs, out]``) or ``"node"``
            (``[N, out]``). (default: ``"graph"``)
        pe_dim (int, optional): size of the Laplacian positional encoding in ``data.<pe_attr>``
            (``0``: none). (default: ``0``)
        edge_dim (int, optional): edge feature size (``None``: no edge features). (default: ``None``)
        norm (str, optional): ``"batch"``, ``"layer"`` or ``None``. (default: ``"batch"``)
        dropout (float, optional): dropout in the layers. (default: ``0.0``)
        input_dropout (float, optional): dropout on the input embedding. (default: ``0.0``)
        readout (str, optional): graph pooling, ``"mean"``, ``"sum"`` or ``"max"``.
            (default: ``"mean"``)
        readout_layers (int, optional): hidden layers of the halving readout MLP. (default: ``2``)
        atom_encoder (bool, optional): embed OGB molecule features with :class:`AtomEncoder` /
            :class:`BondEncoder`. (default: ``False``)
        num_embeddings (int, optional): embed integer node ids with an ``nn.Embedding`` of this
            many rows. (default: ``None``)
        num_edge_embeddings (int, optional): the same for edge ids. (default: ``None``)
        heads (int, optional): attention heads (``hidden_channels`` divisible by it). (default: ``8``)
        ffn_ratio (int, optional): the feed-forward width as a multiple of ``hidden_channels``.
            (default: ``2``)
        residual (bool, optional): residual connections around attention and FFN. (default: ``True``)
        attention_dropout (float, optional): dropout on the attention weights. (default: ``0.0``)
        pe_attr (str, optional): name of the PE attribute of ``data``. (default: ``"pe"``)
        pe_sign_flip (bool, optional): flip PE signs at random while training. (default: ``True``)
        backend (str, optional): accepted for the same signature as :class:`GraphTransformer`;
            PyG's layer has no kernel backend. (default: ``None``)

    Shapes:
        - **input:** a PyG ``Data`` / ``Batch`` with ``x`` :math:`(N, F)` (or integer ids),
          ``edge_index`` :math:`(2, E)` and, as configured, ``edge_attr`` :math:`(E, D)`, ``batch``
          :math:`(N)` and the PE attribute :math:`(N, \text{pe\_dim})`.
        - **output:** :math:`(\text{num\_graphs}, \text{out\_channels})` for ``task="graph"``,
          :math:`(N, \text{out\_channels})` for ``task="node"``.
    """

    def make_layer(self, last: bool) -> nn.Module:
        return _TransformerConvLayer(
            self.hidden_channels, self.heads, dropout=self.dropout, norm=self.norm,
            edge_dim=None if self.edge_dim is None else self.hidden_channels,
            ffn_ratio=self.ffn_ratio, residual=self.residual,
            attention_dropout=self.attention_dropout,
        )
