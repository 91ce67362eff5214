"""A node classifier for large graphs: attention convolutions trained on neighbour-sampled
mini-batches, evaluated layer by layer over the full graph.

Training batches come from PyG's ``NeighborLoader``: a subgraph whose nodes are ordered by hop
(the seed nodes first) and whose edges are ordered by the hop that sampled them. Layer
:math:`l` of :math:`L` only needs the nodes within :math:`L - l` hops of the seeds as
destinations and those within :math:`L - l + 1` hops as sources, so every layer runs on a
bipartite block ``((x_src, x_dst), edge_index)`` (``N_src`` sources, ``N_dst`` destinations) that shrinks towards the
seeds (the "blocks" of GraphSAGE and DGL).

Inference (:meth:`NodeGNN.inference`) runs layer by layer over every node: each layer is
applied to all the nodes in mini-batches of destinations, each with its complete one-hop
neighbourhood as sources, and its output for the whole graph is kept before the next layer
starts. Memory is then one layer's activations for all nodes plus one batch's neighbourhood,
instead of the full graph's activations of every layer at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CONVS", "NodeGNN"]

#: the attention convolutions a :class:`NodeGNN` can stack
CONVS = ("gattn", "transformer", "gat")


def _conv(kind: str, channels: int, heads: int) -> nn.Module:
    if channels % heads:
        raise ValueError(f"hidden_channels ({channels}) must be divisible by heads ({heads})")
    width = channels // heads
    if kind == "gattn":
        from gattn.nn import GraphTransformerConv

        return GraphTransformerConv((channels, channels), width, heads=heads)
    if kind == "transformer":
        from torch_geometric.nn import TransformerConv

        return TransformerConv((channels, channels), width, heads=heads)
    if kind == "gat":
        from torch_geometric.nn import GATConv

        return GATConv((channels, channels), width, heads=heads, add_self_loops=False)
    raise ValueError(f"conv must be one of {', '.join(CONVS)}, got {kind!r}")


class NodeGNN(nn.Module):
    r"""Node classification with :math:`L` attention convolutions on bipartite blocks.

    .. math::
        h^{(0)} = W_{in} x, \qquad
        h^{(l)}_i = \mathrm{Norm}\big(h^{(l-1)}_i + \mathrm{ReLU}(\mathrm{Conv}^{(l)}(h^{(l-1)})_i)\big),
        \qquad \hat y_i = W_{out} h^{(L)}_i

    Args:
        in_channels (int): node feature size.
        hidden_channels (int): width of every layer (divisible by ``heads``).
        out_channels (int): classes.
        num_layers (int, optional): convolutions (the number of sampling hops). Default 2.
        conv (str, optional): ``"gattn"`` (:class:`gattn.nn.GraphTransformerConv`), ``"transformer"`` (PyG's
            ``TransformerConv``) or ``"gat"`` (PyG's ``GATConv``). Default ``"gattn"``.
        heads (int, optional): attention heads per layer. Default 4.
        dropout (float, optional): on the input of every layer, in training. Default 0.
        checkpoint (bool, optional): activation checkpointing in training: each layer keeps only its
            input for the backward pass and computes its forward again there
            (:func:`torch.utils.checkpoint.checkpoint`, non-reentrant, the random state restored so
            dropout masks are the same). Full-batch training on a large graph then holds one layer's
            intermediates at a time instead of every layer's, for one more forward per layer.
            Gradients are those of the plain model. Default ``False``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 conv: str = "gattn", heads: int = 4, dropout: float = 0.0, checkpoint: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.conv = conv
        self.dropout = float(dropout)
        self.checkpoint = bool(checkpoint)
        self.lin_in = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(_conv(conv, hidden_channels, heads) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_channels) for _ in range(num_layers))
        self.lin_out = nn.Linear(hidden_channels, out_channels)

    @property
    def num_layers(self) -> int:
        return len(self.convs)

    def reset_parameters(self) -> None:
        for module in (self.lin_in, self.lin_out, *self.convs, *self.norms):
            module.reset_parameters()

    def _layer(self, index: int, h_src: Tensor, h_dst: Tensor, edge_index: Tensor) -> Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._layer_body, index, h_src, h_dst, edge_index, use_reentrant=False)
        return self._layer_body(index, h_src, h_dst, edge_index)

    def _layer_body(self, index: int, h_src: Tensor, h_dst: Tensor, edge_index: Tensor) -> Tensor:
        h = F.dropout(h_src, self.dropout, self.training)
        # the block's size is that of (sources, destinations): every conv reads it from the pair
        out = self.convs[index]((h, h_dst), edge_index)
        return self.norms[index](h_dst + F.relu(out))

    def forward(self, x: Tensor, edge_index: Tensor, num_sampled_nodes: Sequence[int] | None = None,
                num_sampled_edges: Sequence[int] | None = None) -> Tensor:
        """Logits of the nodes of ``x`` (full graph), or of the seed nodes of a ``NeighborLoader``
        subgraph when its ``num_sampled_nodes`` / ``num_sampled_edges`` per hop are given.

        Args:
            x: node features, shape ``(N, in_channels)``.
            edge_index: ``(2, E)`` source -> destination.
            num_sampled_nodes: nodes per hop (seeds first), ``num_layers + 1`` entries.
            num_sampled_edges: edges per hop, ``num_layers`` entries.
        """
        if (num_sampled_nodes is None) != (num_sampled_edges is None):
            raise ValueError("give both num_sampled_nodes and num_sampled_edges, or neither")
        h = self.lin_in(x)
        if num_sampled_nodes is None:
            for index in range(self.num_layers):
                h = self._layer(index, h, h, edge_index)
            return self.lin_out(h)
        nodes, edges = [int(n) for n in num_sampled_nodes], [int(e) for e in num_sampled_edges]
        if len(nodes) != self.num_layers + 1 or len(edges) != self.num_layers:
            raise ValueError(f"a {self.num_layers}-layer model needs a {self.num_layers}-hop sample: got "
                             f"{len(nodes)} node counts and {len(edges)} edge counts per hop")
        for index in range(self.num_layers):
            hops = self.num_layers - index  # hops of sources this layer still needs
            n_src, n_dst, n_edges = sum(nodes[:hops + 1]), sum(nodes[:hops]), sum(edges[:hops])
            h = self._layer(index, h[:n_src], h[:n_dst], edge_index[:, :n_edges])
        return self.lin_out(h)

    @torch.no_grad()
    def inference(self, x: Tensor, batches: Iterable[Any], device: torch.device | str | None = None) -> Tensor:
        """Logits of every node, computed layer by layer.

        Args:
            x: node features of the whole graph, ``(N, in_channels)`` (on the CPU).
            batches: iterated once per layer; each batch is a one-hop ``NeighborLoader`` sample
                with every neighbour (``num_neighbors=[-1]``) whose ``n_id`` holds the global
                ids (seeds first), ``batch_size`` the number of seeds and ``edge_index`` local
                source -> seed edges. The seeds of one pass must cover every node once.
            device: where each batch is computed (default: the model's).
        """
        device = torch.device(device) if device is not None else self.lin_in.weight.device
        h = torch.cat([self.lin_in(part.to(device)).cpu() for part in x.split(65536)])
        for index in range(self.num_layers):
            out = torch.empty_like(h)
            seen = torch.zeros(h.size(0), dtype=torch.bool)
            for batch in batches:
                seeds = batch.n_id[:batch.batch_size]
                h_src = h[batch.n_id].to(device)
                out[seeds] = self._layer(index, h_src, h_src[:batch.batch_size], batch.edge_index.to(device)).cpu()
                seen[seeds] = True
            if not bool(seen.all()):
                raise ValueError(f"the inference batches cover {int(seen.sum())} of {h.size(0)} nodes: their "
                                 "seeds must be every node (input_nodes=None)")
            h = out
        return torch.cat([self.lin_out(part.to(device)).cpu() for part in h.split(65536)])
