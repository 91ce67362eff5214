"""The Graph Transformer model of Dwivedi & Bresson (2020) for graph- and node-level tasks.

:class:`GraphTransformer` stacks :class:`gattn.nn.GraphTransformerLayer` blocks between an
input embedding (features, integer ids, or OGB-style atom/bond encoders, plus an optional
Laplacian positional encoding) and the paper's MLP readout. :class:`BaseGraphModel` holds the
parts every graph model here shares (input and edge encoders, positional encoding, pooling,
readout), so that the baselines in :mod:`gattn.models.baselines` differ from it only in their
layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from gattn.nn._checks import check_nonnegative_int, check_positive_int, check_probability
from gattn.nn.graph_transformer import GraphTransformerLayer, reset_module

from .encoders import AtomEncoder, BondEncoder

__all__ = ["BaseGraphModel", "GraphTransformer", "MLPReadout"]

_POOLS = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}
_TASKS = ("graph", "node")


class MLPReadout(nn.Sequential):
    r"""The paper's readout MLP: ``num_layers`` hidden layers, each halving the width.

    .. math::
        y = W_{L} \,\mathrm{ReLU}(W_{L-1} \cdots \mathrm{ReLU}(W_0 h)), \qquad
        W_\ell \in \mathbb{R}^{\lfloor c/2^{\ell+1}\rfloor \times \lfloor c/2^{\ell}\rfloor}

    Args:
        in_channels (int): input size :math:`c`.
        out_channels (int): output size.
        num_layers (int, optional): hidden layers :math:`L`, each halving the width. (default: ``2``)

    Shapes:
        - **input:** :math:`(*, \text{in\_channels})`.
        - **output:** :math:`(*, \text{out\_channels})`.
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int = 2) -> None:
        check_nonnegative_int("num_layers", num_layers)
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_layers):
            layers += [nn.Linear(width, max(1, width // 2)), nn.ReLU()]
            width = max(1, width // 2)
        layers.append(nn.Linear(width, out_channels))
        super().__init__(*layers)

    def reset_parameters(self) -> None:
        for module in self:
            if isinstance(module, nn.Linear):
                module.reset_parameters()


class BaseGraphModel(nn.Module):
    r"""Shared embedding, positional encoding, pooling and readout of the graph models.

    Subclasses build their layers in :meth:`build_layers` and run them in
    :meth:`apply_layers`; the rest (``forward(data)``) is common. See
    :class:`GraphTransformer` for the meaning of the arguments.

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
        pe_attr (str, optional): name of the PE attribute of ``data``. (default: ``"pe"``)
        pe_sign_flip (bool, optional): flip PE signs at random while training. (default: ``True``)

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
        task: str = "graph",
        pe_dim: int = 0,
        edge_dim: int | None = None,
        norm: str | None = "batch",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        readout: str = "mean",
        readout_layers: int = 2,
        atom_encoder: bool = False,
        num_embeddings: int | None = None,
        num_edge_embeddings: int | None = None,
        pe_attr: str = "pe",
        pe_sign_flip: bool = True,
    ) -> None:
        super().__init__()
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if task not in _TASKS:
            raise ValueError(f"`task` must be one of {_TASKS}, got {task!r}")
        if readout not in _POOLS:
            raise ValueError(f"`readout` must be one of {tuple(_POOLS)}, got {readout!r}")
        check_nonnegative_int("pe_dim", pe_dim)
        check_probability("dropout", dropout)
        check_probability("input_dropout", input_dropout)
        if atom_encoder and num_embeddings is not None:
            raise ValueError("give at most one of `atom_encoder=True` and `num_embeddings`")
        self.task, self.readout, self.norm = task, readout, norm
        self.pe_dim, self.pe_attr, self.pe_sign_flip = pe_dim, pe_attr, bool(pe_sign_flip)
        self.dropout, self.input_dropout = float(dropout), float(input_dropout)
        self.edge_dim = None if edge_dim is None else check_positive_int("edge_dim", edge_dim)

        self.node_encoder = self._node_encoder(in_channels, atom_encoder, num_embeddings)
        self.pe_encoder = nn.Linear(pe_dim, hidden_channels) if pe_dim else None
        self.edge_encoder = None
        if self.edge_dim is not None:
            self.edge_encoder = self._edge_encoder(self.edge_dim, atom_encoder, num_edge_embeddings)
        self.layers = self.build_layers()
        self.head = MLPReadout(hidden_channels, out_channels, readout_layers)

    def _node_encoder(
        self, in_channels: int | nn.Module | None, atom_encoder: bool, num_embeddings: int | None
    ) -> nn.Module:
        hidden = self.hidden_channels
        if atom_encoder or num_embeddings is not None:
            if isinstance(in_channels, nn.Module):
                raise ValueError(
                    "`in_channels` is an encoder module, which conflicts with "
                    "`atom_encoder`/`num_embeddings`: give one of them"
                )
            if atom_encoder:
                return AtomEncoder(hidden)
            return nn.Embedding(check_positive_int("num_embeddings", num_embeddings), hidden)
        if isinstance(in_channels, nn.Module):
            return in_channels
        return nn.Linear(check_positive_int("in_channels", in_channels), hidden)

    def _edge_encoder(
        self, edge_dim: int, atom_encoder: bool, num_edge_embeddings: int | None
    ) -> nn.Module:
        hidden = self.hidden_channels
        if atom_encoder:
            return BondEncoder(hidden)
        if num_edge_embeddings is not None:
            return nn.Embedding(check_positive_int("num_edge_embeddings", num_edge_embeddings), hidden)
        return nn.Linear(edge_dim, hidden)

    # -- hooks for subclasses -------------------------------------------------------------

    def build_layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def apply_layers(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None
    ) -> Tensor:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        for child in self.children():
            reset_module(child)

    @staticmethod
    def _embed(encoder: nn.Module, values: Tensor, name: str) -> Tensor:
        """Apply an encoder, adapting the input to what it expects (ids or features)."""
        if isinstance(encoder, nn.Embedding):
            if values.is_floating_point():
                raise TypeError(
                    f"`data.{name}` must hold integer ids for nn.Embedding, got {values.dtype}"
                )
            if values.dim() == 2 and values.size(1) == 1:
                values = values.squeeze(1)
            if values.dim() != 1:
                raise ValueError(
                    f"`data.{name}` must be [N] or [N, 1] integer ids, got {tuple(values.shape)}"
                )
            return encoder(values.long())
        if isinstance(encoder, nn.Linear):
            if values.dim() == 1:
                values = values.unsqueeze(1)
            if values.dim() != 2 or values.size(1) != encoder.in_features:
                raise ValueError(
                    f"`data.{name}` must be [*, {encoder.in_features}], got {tuple(values.shape)}"
                )
            if not values.is_floating_point():
                values = values.to(encoder.weight.dtype)
            return encoder(values)
        return encoder(values)

    def encode(self, data) -> tuple[Tensor, Tensor | None]:
        """Input node (and edge) embeddings [N, hidden] ([E, hidden]), PE added."""
        x = getattr(data, "x", None)
        if x is None:
            raise ValueError("`data.x` is missing: the model embeds node features or ids")
        h = self._embed(self.node_encoder, x, "x")
        if self.pe_encoder is not None:
            pe = getattr(data, self.pe_attr, None)
            if pe is None:
                raise ValueError(
                    f"`data.{self.pe_attr}` is missing: the model was built with "
                    f"pe_dim={self.pe_dim} (add a Laplacian positional encoding, or pe_dim=0)"
                )
            if pe.dim() != 2 or pe.size(1) != self.pe_dim or pe.size(0) != h.size(0):
                raise ValueError(
                    f"`data.{self.pe_attr}` must be [N={h.size(0)}, pe_dim={self.pe_dim}], "
                    f"got {tuple(pe.shape)}"
                )
            pe = pe.to(h.dtype)
            if self.training and self.pe_sign_flip:
                # eigenvectors are defined up to sign: flip each dimension at random, per batch
                signs = torch.randint(0, 2, (1, self.pe_dim), device=pe.device) * 2 - 1
                pe = pe * signs.to(pe.dtype)
            h = h + self.pe_encoder(pe)
        h = F.dropout(h, p=self.input_dropout, training=self.training)
        edge_attr = None
        if self.edge_encoder is not None:
            raw = getattr(data, "edge_attr", None)
            if raw is None:
                raise ValueError(
                    "`data.edge_attr` is missing: the model was built with "
                    f"edge_dim={self.edge_dim} (edge_dim=None turns edge features off)"
                )
            edge_attr = self._embed(self.edge_encoder, raw, "edge_attr")
        return h, edge_attr

    def forward(self, data) -> Tensor:
        """``data``: a PyG ``Data``/``Batch`` with ``x``, ``edge_index`` and, as configured,
        ``edge_attr``, ``batch`` and the PE attribute. Returns [num_graphs, out] for
        ``task="graph"`` and [N, out] for ``task="node"``."""
        h, edge_attr = self.encode(data)
        h = self.apply_layers(h, data.edge_index, edge_attr)
        if self.task == "graph":
            batch = getattr(data, "batch", None)
            if batch is None:
                batch = torch.zeros(h.size(0), dtype=torch.long, device=h.device)
            num_graphs = getattr(data, "num_graphs", None)
            h = _POOLS[self.readout](h, batch, size=num_graphs)
        return self.head(h)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(hidden={self.hidden_channels}, out={self.out_channels}, "
            f"layers={self.num_layers}, task={self.task!r}, edge_dim={self.edge_dim}, "
            f"pe_dim={self.pe_dim}, norm={self.norm!r})"
        )


class GraphTransformer(BaseGraphModel):
    r"""Graph Transformer of Dwivedi & Bresson (2020): embedding, L blocks, MLP readout.

    .. math::
        h_i^{0} = A\alpha_i + a + C\lambda_i + c, \qquad
        (h^{\ell+1}, e^{\ell+1}) = \mathrm{GTLayer}(h^{\ell}, e^{\ell}), \qquad
        y = \mathrm{MLP}\Big(\tfrac{1}{|V|}\textstyle\sum_i h_i^{L}\Big)

    with :math:`\alpha_i` the input features, :math:`\lambda_i` the Laplacian eigenvector
    positional encoding (sign flipped at random per batch while training, as the paper), and
    :class:`gattn.nn.GraphTransformerLayer` blocks (edge stream on when ``edge_dim`` is set).
    Node tasks skip the pooling.

    Args:
        in_channels (int or nn.Module, optional): input node feature size, or a module embedding ``data.x`` into
            ``hidden_channels``; ignored with ``atom_encoder`` / ``num_embeddings`` (may be
            ``None`` then).
        hidden_channels (int): width of every block (divisible by ``heads``).
        out_channels (int): output size (classes or targets).
        num_layers (int, optional): number of Graph Transformer blocks. (default: ``4``)
        heads (int, optional): attention heads per block. (default: ``8``)
        task (str, optional): ``"graph"`` (pooled, [num_graphs, out]) or ``"node"`` ([N, out]).
            (default: ``"graph"``)
        pe_dim (int, optional): size of the Laplacian positional encoding in ``data.<pe_attr>``; 0 for none.
            (default: ``0``)
        edge_dim (int, optional): edge feature size; ``None`` turns edge features off (node-only blocks).
            With ``atom_encoder`` or ``num_edge_embeddings`` any positive value turns them on.
            (default: ``None``)
        norm (str, optional): ``"batch"`` or ``"layer"`` (or ``None``). (default: ``"batch"``)
        dropout (float, optional): dropout in the blocks. (default: ``0.0``)
        input_dropout (float, optional): dropout on the input embedding. (default: ``0.0``)
        readout (str, optional): graph pooling, ``"mean"``, ``"sum"`` or ``"max"``. (default: ``"mean"``)
        readout_layers (int, optional): hidden layers of the halving readout MLP (the paper uses 2).
            (default: ``2``)
        atom_encoder (bool, optional): embed OGB molecule features with :class:`gattn.models.encoders.AtomEncoder` /
            ``BondEncoder`` (OGB's encoders, without the ogb package). (default: ``False``)
        num_embeddings (int, optional): embed integer node ids (e.g. SBM node types, ZINC atom types) with an
            ``nn.Embedding`` of this many rows. (default: ``None``)
        num_edge_embeddings (int, optional): the same for edge ids. (default: ``None``)
        ffn_ratio (int, optional): the feed-forward width as a multiple of ``hidden_channels`` (as
            in :class:`gattn.nn.GraphTransformerLayer`). (default: ``2``)
        residual (bool, optional): residual connections around attention and FFN. (default: ``True``)
        attention_dropout (float, optional): dropout on the attention weights. (default: ``0.0``)
        backend (str, optional): kernel backend of the attention (``None``: by device). (default: ``None``)
        pe_attr (str, optional): name of the PE attribute of ``data`` (default ``"pe"``).
        pe_sign_flip (bool, optional): flip PE signs at random while training. (default: ``True``)

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
        heads: int = 8,
        *,
        task: str = "graph",
        pe_dim: int = 0,
        edge_dim: int | None = None,
        norm: str | None = "batch",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        readout: str = "mean",
        readout_layers: int = 2,
        atom_encoder: bool = False,
        num_embeddings: int | None = None,
        num_edge_embeddings: int | None = None,
        ffn_ratio: int = 2,
        residual: bool = True,
        attention_dropout: float = 0.0,
        pe_attr: str = "pe",
        pe_sign_flip: bool = True,
        backend: str | None = None,
    ) -> None:
        self.heads = check_positive_int("heads", heads)
        if hidden_channels % heads:
            raise ValueError(
                f"`hidden_channels` ({hidden_channels}) must be divisible by `heads` ({heads})"
            )
        self.ffn_ratio, self.residual = ffn_ratio, residual
        self.attention_dropout, self.backend = attention_dropout, backend
        super().__init__(
            in_channels, hidden_channels, out_channels, num_layers, task=task, pe_dim=pe_dim,
            edge_dim=edge_dim, norm=norm, dropout=dropout, input_dropout=input_dropout,
            readout=readout, readout_layers=readout_layers, atom_encoder=atom_encoder,
            num_embeddings=num_embeddings, num_edge_embeddings=num_edge_embeddings,
            pe_attr=pe_attr, pe_sign_flip=pe_sign_flip,
        )

    def make_layer(self, last: bool) -> nn.Module:
        """One block; :class:`gattn.models.baselines.PyGTransformer` swaps the attention.

        The last block computes no edge output: nothing would read it."""
        return GraphTransformerLayer(
            self.hidden_channels, self.heads, dropout=self.dropout, norm=self.norm,
            edge_dim=None if self.edge_dim is None else self.hidden_channels,
            ffn_ratio=self.ffn_ratio, residual=self.residual,
            attention_dropout=self.attention_dropout, update_edges=not last,
            backend=self.backend,
        )

    def build_layers(self) -> nn.ModuleList:
        return nn.ModuleList(
            self.make_layer(last=position == self.num_layers - 1)
            for position in range(self.num_layers)
        )

    def apply_layers(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        for layer in self.layers:
            if getattr(layer, "updates_edges", False):
                x, edge_attr = layer(x, edge_index, edge_attr)
            else:
                x = layer(x, edge_index, edge_attr)
        return x
