"""LATTE layer of Tran & Gao, "Layer-stacked Attention for Heterogeneous Network Embedding"
(arXiv:2009.08072, 2020).

* :class:`LATTEConv` - one layer over a heterogeneous graph: per relation, multi-head
  node-level attention on the fused :func:`gattn.kernels.edge_attention` (bipartite, with the
  relation's own query/key projections and a learnable sharpening scale); per node type, a
  relation-level attention :math:`\\beta` over the type's relations plus a self slot.
* :func:`meta_relations` / :func:`compose_meta_relations` - the order-t meta-relations of
  layer t, built from the order-(t-1) ones by sparse products with the first-order relation
  adjacencies, pruned by a threshold and/or top-k per row.

:class:`gattn.models.LATTE` stacks the layers, concatenates their embeddings and classifies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import negative_sampling

from gattn.kernels import edge_attention

from ._checks import check_positive_int, check_probability

__all__ = ["LATTEConv", "compose_meta_relations", "meta_relations"]

EdgeType = tuple[str, str, str]
Metadata = tuple[Sequence[str], Sequence[EdgeType]]
#: separates relation names in a meta-relation's name: ``"pa.ap"`` is paper -> author -> paper
META_SEPARATOR = "."


def _check_metadata(metadata: object) -> tuple[list[str], list[EdgeType]]:
    if not (isinstance(metadata, (tuple, list)) and len(metadata) == 2):
        raise ValueError("`metadata` must be a (node_types, edge_types) pair, e.g. data.metadata()")
    node_types, edge_types = list(metadata[0]), [tuple(e) for e in metadata[1]]
    if not node_types or not all(isinstance(t, str) for t in node_types):
        raise ValueError(f"`metadata[0]` must be a non-empty list of node type names, got {node_types!r}")
    for edge_type in edge_types:
        if len(edge_type) != 3 or edge_type[0] not in node_types or edge_type[2] not in node_types:
            raise ValueError(
                f"edge type {edge_type!r} in `metadata` must be (src, rel, dst) with src and dst "
                f"among the node types {node_types}"
            )
    if len(set(edge_types)) != len(edge_types):
        raise ValueError("`metadata[1]` lists an edge type twice")
    return node_types, edge_types


def meta_relations(edge_types: Sequence[EdgeType], order: int) -> list[EdgeType]:
    r"""The meta-relations of length ``order`` composed from the first-order ``edge_types``.

    A path :math:`a \xrightarrow{r_1} b \xrightarrow{r_2} \cdots \xrightarrow{r_t} c` of
    relations (each edge type is (source, relation, destination), messages flow source ->
    destination) becomes the edge type ``(a, "r1.r2....rt", c)``. Order 1 is ``edge_types``.

    Args:
        edge_types (Sequence[EdgeType]): the first-order edge types ``(source, relation, destination)``.
        order (int): the length :math:`t` of the composed paths (``1``: ``edge_types`` themselves).
    """
    check_positive_int("order", order)
    current = [tuple(e) for e in edge_types]
    for _ in range(order - 1):
        current = [
            (first[0], f"{first[1]}{META_SEPARATOR}{rest[1]}", rest[2])
            for first in edge_types for rest in current if first[2] == rest[0]
        ]
    return current


def inverse_in_degree(edge_index: Tensor, num_dst: int) -> Tensor:
    """1 / in-degree of each edge's destination: each row of the adjacency sums to one."""
    degree = torch.bincount(edge_index[1], minlength=num_dst).clamp_(min=1)
    return 1.0 / degree[edge_index[1]].to(torch.float32)


def _is_sorted(values: Tensor) -> bool:
    return values.numel() < 2 or bool((values[1:] >= values[:-1]).all())


def _prune_rows(
    rows: Tensor, cols: Tensor, values: Tensor, threshold: float | None, top_k: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep entries >= threshold and the top_k largest of each row (rows need not be sorted)."""
    if threshold is not None:
        keep = values >= threshold
        rows, cols, values = rows[keep], cols[keep], values[keep]
    if top_k is not None and values.numel() and int(torch.unique_consecutive(rows, return_counts=True)[1].max()
                                                    if _is_sorted(rows) else torch.bincount(rows).max()) > top_k:
        by_value = torch.argsort(values, descending=True, stable=True)
        order = by_value[torch.argsort(rows[by_value], stable=True)]
        rows, cols, values = rows[order], cols[order], values[order]
        starts = torch.ones_like(rows, dtype=torch.bool)
        starts[1:] = rows[1:] != rows[:-1]
        first = torch.cummax(torch.where(starts, torch.arange(rows.numel(), device=rows.device), 0), 0).values
        keep = torch.arange(rows.numel(), device=rows.device) - first < top_k
        rows, cols, values = rows[keep], cols[keep], values[keep]
    return rows, cols, values


def _sparse_product_rows(
    p_rows: Tensor, p_mid: Tensor, p_values: Tensor, a_matrix: Tensor, first_row: int, num_rows: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Entries (rows, cols, values) of P @ A for the given entries of P, whose rows lie in
    [first_row, first_row + num_rows); A is a coalesced sparse COO matrix. Duplicates are
    summed; the entries come sorted by row."""
    chunk = torch.sparse_coo_tensor(
        torch.stack([p_rows - first_row, p_mid]), p_values, (num_rows, a_matrix.size(0)), check_invariants=False,
    )
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta", raised inside mm
        warnings.simplefilter("ignore", UserWarning)
        product = torch.sparse.mm(chunk, a_matrix).coalesce()
    rows, cols = product.indices()
    return rows + first_row, cols, product.values()


def compose_meta_relations(
    previous: Mapping[EdgeType, tuple[Tensor, Tensor]],
    first_order: Mapping[EdgeType, Tensor],
    num_nodes_dict: Mapping[str, int],
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    max_product_nnz: int = 1 << 24,
) -> dict[EdgeType, tuple[Tensor, Tensor]]:
    r"""The order-t meta-relations from the order-(t-1) ones and the first-order relations.

    For a first-order relation :math:`a \to b` with adjacency :math:`A_1` (row-normalised:
    :math:`A_1[b, a] = 1 / \deg_{r_1}(b)`) and an order-(t-1) meta-relation
    :math:`b \to c` with weighted adjacency :math:`W_{t-1}` (rows of destinations :math:`c`;
    LATTE uses the previous layer's attention, whose rows sum to one), the composed
    meta-relation :math:`a \to c` has the weights

    .. math::
        W_t = W_{t-1} A_1 \in \mathbb{R}^{N_c \times N_a}

    (the weight of every path, summed over the paths), then each row keeps the entries
    :math:`\ge` ``threshold`` and/or its ``top_k`` largest entries. A row whose bound
    :math:`\sum_b W_{t-1}[c, b] / \deg(b)` (no entry of the row can exceed it) is below the
    threshold is dropped before its products are formed.

    **Memory bound.** Rows of :math:`W_{t-1}` and :math:`A_1` sum to at most one, so rows of
    :math:`W_t` do too and at most :math:`1/\theta` entries of a row reach the threshold
    :math:`\theta`: a pruned meta-relation has at most
    :math:`N_c \cdot \min(k, 1/\theta)` edges whatever its order (unpruned, meta-path graphs
    grow like the degree to the power t). The product is computed in chunks of destination
    rows holding at most ``max_product_nnz`` expanded products each (a single row with more is
    computed alone), so the peak is
    :math:`O(\mathrm{max\_product\_nnz} + \text{kept edges})`.

    Args:
        previous (dict[EdgeType, tuple[Tensor, Tensor]]): order-(t-1) meta-relation ->
            ``(edge_index [2, E], weight [E])``; edges are (source, destination) as in PyG.
        first_order (dict[EdgeType, Tensor]): first-order relation -> ``edge_index [2, E]``.
        num_nodes_dict (dict[str, int]): node count per node type.
        threshold (float, optional): drop composed entries below this weight, in
            :math:`(0, 1]` (``None``: no threshold). (default: ``None``)
        top_k (int, optional): keep at most this many entries per destination (``None``: no
            limit). (default: ``None``)
        max_product_nnz (int, optional): chunk budget of expanded products (see the memory
            bound). (default: ``1 << 24``)

    Returns:
        order-t meta-relation ``(a, "r1.rest", c)`` -> ``(edge_index [2, E'], weight [E'])``
        for every composition with at least one edge left.
    """
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
        raise ValueError(f"`threshold` must be a float in (0, 1] or None, got {threshold!r}")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    check_positive_int("max_product_nnz", max_product_nnz)
    out: dict[EdgeType, tuple[Tensor, Tensor]] = {}
    for first_type, first_index in first_order.items():
        a_type, _, b_type = first_type
        num_a, num_b = int(num_nodes_dict[a_type]), int(num_nodes_dict[b_type])
        # A_1 [N_b, N_a]: row b lists the sources a of b's incoming edges
        a_matrix = torch.sparse_coo_tensor(
            first_index.flip(0), inverse_in_degree(first_index, num_b), (num_b, num_a), check_invariants=False,
        ).coalesce()
        row_length = torch.bincount(first_index[1], minlength=num_b)
        for rest_type, (rest_index, rest_weight) in previous.items():
            if rest_type[0] != b_type:
                continue
            composed_type = (a_type, f"{first_type[1]}{META_SEPARATOR}{rest_type[1]}", rest_type[2])
            num_c = int(num_nodes_dict[rest_type[2]])
            p_mid, p_rows = rest_index[0], rest_index[1]  # W_{t-1}[c, b]: rows c, columns b
            by_row = torch.argsort(p_rows, stable=True)
            p_rows, p_mid = p_rows[by_row], p_mid[by_row]
            p_values = rest_weight[by_row].to(torch.float32)
            if threshold is not None:
                # every entry of row c is at most sum_b W[c, b] max_a A_1[b, a] = sum_b W[c, b] / deg(b):
                # rows whose bound is below the threshold lose all their entries, skip them unexpanded
                bound = torch.zeros(num_c, dtype=torch.float32, device=p_values.device)
                bound.index_add_(0, p_rows, p_values / row_length[p_mid].clamp(min=1))
                keep = bound[p_rows] >= threshold
                p_rows, p_mid, p_values = p_rows[keep], p_mid[keep], p_values[keep]
            cost = torch.cumsum(row_length[p_mid], 0)
            pieces, start = [], 0
            while start < p_rows.numel():
                base = cost[start - 1] if start else 0
                stop = int(torch.searchsorted(cost, base + max_product_nnz, right=True))
                stop = max(stop, start + 1)
                if stop < p_rows.numel() and p_rows[stop] == p_rows[stop - 1]:
                    # end the chunk on a row boundary (pruning is per row): before the cut
                    # row, or after it when that row alone exceeds the budget
                    row = p_rows[stop - 1]
                    row_start = int(torch.searchsorted(p_rows, row, right=False))
                    stop = row_start if row_start > start else int(torch.searchsorted(p_rows, row, right=True))
                first_row = int(p_rows[start])
                rows, cols, values = _sparse_product_rows(
                    p_rows[start:stop], p_mid[start:stop], p_values[start:stop], a_matrix,
                    first_row, int(p_rows[stop - 1]) - first_row + 1,
                )
                pieces.append(_prune_rows(rows, cols, values, threshold, top_k))
                start = stop
            if not pieces:
                continue
            rows = torch.cat([p[0] for p in pieces])
            if rows.numel() == 0:
                continue
            cols = torch.cat([p[1] for p in pieces])
            values = torch.cat([p[2] for p in pieces])
            out[composed_type] = (torch.stack([cols, rows]), values)
    return out


class LATTEConv(MessagePassing):
    r"""One LATTE layer (Tran & Gao, 2020) over a heterogeneous graph.

    For a node :math:`i` of type :math:`m` with input :math:`x_i`, the relations
    :math:`\mathcal{R}_m` whose destination type is :math:`m` (first-order relations, or the
    layer's order-t meta-relations), heads :math:`h = 1..H` of size :math:`d`, and
    :math:`W_{\tau}` the value projection of node type :math:`\tau`:

    .. math::
        \alpha^{r,h}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}_r(i)}\!\left(
            s_{r,h}\,\frac{\langle Q^h_r x_i,\; K^h_r x_j \rangle}{\sqrt{d}}\right), \qquad
        z_{i,r} = \big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}_r(i)} \alpha^{r,h}_{ij}\,
            W^h_{\tau(j)} x_j

    with a learnable sharpening scale :math:`s_{r,h}` (initialised to 1) per relation and
    head, and the relation-level attention over the relations and a self slot

    .. math::
        \beta_i = \operatorname{softmax}\big(\Phi_m x_i\big) \in \mathbb{R}^{|\mathcal{R}_m| + 1},
        \qquad
        h_i = \sigma\Big(\beta_{i,\mathrm{self}}\, W_m x_i
            + \sum_{r \in \mathcal{R}_m} \beta_{i,r}\, z_{i,r}\Big).

    Differences from the authors' code: node-level scores are scaled dot products on the
    fused kernel (the code uses GAT's additive scores :math:`s_r\,\mathrm{LeakyReLU}
    (a_l^\top W x_i + a_r^\top W x_j)`); the sharpening scale is per relation and head. A node
    with no neighbour in a relation gets zeros from that relation (:math:`\beta` still covers
    all slots, as in the code).

    Args:
        in_channels (int or Mapping[str, int]): input size, one int for every node type or a
            dict per node type.
        out_channels (int): output size :math:`H d` (heads concatenated); divisible by
            ``heads``.
        metadata (Metadata): ``(node_types, edge_types)`` of the relations this layer attends
            over (``data.metadata()`` for a first-order layer; :func:`meta_relations` for
            order t).
        heads (int, optional): number of heads :math:`H`. (default: ``4``)
        sharpening (bool, optional): learn :math:`s_{r,h}` (``True``) or keep it at 1.
            (default: ``True``)
        act (str, optional): the activation :math:`\sigma` (any name PyG's activation resolver
            knows, or ``None``). (default: ``"relu"``)
        layer_norm (bool, optional): a LayerNorm per node type before the activation.
            (default: ``False``)
        dropout (float, optional): dropout on the output embeddings. (default: ``0.0``)
        bias (bool, optional): bias of the projections. (default: ``True``)
        backend (str, optional): kernel backend for :func:`gattn.kernels.edge_attention`
            (``None``: by device). (default: ``None``)

    Shapes:
        - input: ``x_dict`` {node type: [N_m, in_m]}, ``edge_index_dict``
          {edge type: [2, E_r]} (source, destination); a relation of ``metadata`` absent from
          the dict contributes zeros.
        - output: ``out_dict`` {node type: [N_m, out_channels]}; with ``return_beta=True`` also
          ``beta_dict`` ``{node type: [N_m, |R_m| + 1]}`` (slot names: :meth:`relation_slots`);
          with ``return_attention_weights=True`` also {edge type: [E_r, H]} (detached when a
          fused backend computed it).
    """

    def __init__(
        self,
        in_channels: int | Mapping[str, int],
        out_channels: int,
        metadata: Metadata,
        heads: int = 4,
        sharpening: bool = True,
        act: str | None = "relu",
        layer_norm: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__(aggr="sum", node_dim=0)
        self.node_types, self.edge_types = _check_metadata(metadata)
        self._edge_position = {e: n for n, e in enumerate(self.edge_types)}
        if isinstance(in_channels, Mapping):
            missing = [t for t in self.node_types if t not in in_channels]
            if missing:
                raise ValueError(f"`in_channels` has no size for node type(s) {missing}")
            self.in_channels = {t: check_positive_int(f"in_channels[{t!r}]", in_channels[t])
                                for t in self.node_types}
        else:
            size = check_positive_int("in_channels", in_channels)
            self.in_channels = dict.fromkeys(self.node_types, size)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.heads = check_positive_int("heads", heads)
        if out_channels % heads:
            raise ValueError(f"`out_channels` ({out_channels}) must be divisible by `heads` ({heads})")
        self.dropout = check_probability("dropout", dropout)
        self.sharpening = bool(sharpening)
        self.backend = backend
        self.act_name = act
        if act is None:
            self.act = None
        else:
            from torch_geometric.nn.resolver import activation_resolver

            self.act = activation_resolver(act)

        self.lin = nn.ModuleDict({t: nn.Linear(self.in_channels[t], out_channels, bias=bias)
                                  for t in self.node_types})
        # indexed by the relation's position in `edge_types` (meta-relation names contain ".",
        # which module names may not)
        self.lin_query = nn.ModuleList(nn.Linear(self.in_channels[e[2]], out_channels, bias=bias)
                                       for e in self.edge_types)
        self.lin_key = nn.ModuleList(nn.Linear(self.in_channels[e[0]], out_channels, bias=bias)
                                     for e in self.edge_types)
        self.sharpen = nn.Parameter(torch.ones(len(self.edge_types), heads), requires_grad=self.sharpening)
        self.lin_beta = nn.ModuleDict({
            t: nn.Linear(self.in_channels[t], len(self.incoming(t)) + 1, bias=bias) for t in self.node_types
        })
        self.norm = (nn.ModuleDict({t: nn.LayerNorm(out_channels) for t in self.node_types})
                     if layer_norm else None)
        self.reset_parameters()

    def incoming(self, node_type: str) -> list[EdgeType]:
        """The relations whose destination is ``node_type``, in :math:`\\beta`'s slot order."""
        return [e for e in self.edge_types if e[2] == node_type]

    def relation_slots(self, node_type: str) -> list[str]:
        """Names of the :math:`\\beta` slots of ``node_type``: its relations, then ``"self"``."""
        return [e[1] for e in self.incoming(node_type)] + ["self"]

    def reset_parameters(self) -> None:
        for lin in [*self.lin.values(), *self.lin_query, *self.lin_key]:
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        for lin in self.lin_beta.values():
            lin.reset_parameters()
        nn.init.ones_(self.sharpen)
        if self.norm is not None:
            for norm in self.norm.values():
                norm.reset_parameters()

    def _check_inputs(self, x_dict: Mapping[str, Tensor], edge_index_dict: Mapping[EdgeType, Tensor]) -> None:
        for node_type in self.node_types:
            x = x_dict.get(node_type) if isinstance(x_dict, Mapping) else None
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2 \
                    or x.size(1) != self.in_channels[node_type]:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(
                    f"`x_dict[{node_type!r}]` must be a float tensor [N, {self.in_channels[node_type]}], got {got}"
                )
        unknown = [e for e in edge_index_dict if tuple(e) not in self._edge_position]
        if unknown:
            raise ValueError(f"`edge_index_dict` has edge types {unknown} that are not in the layer's "
                             f"metadata {self.edge_types}")
        for edge_type, edge_index in edge_index_dict.items():
            if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
                raise ValueError(f"`edge_index_dict[{edge_type!r}]` must be a [2, E] tensor")

    def _query_key(self, x_dict: Mapping[str, Tensor], edge_type: EdgeType) -> tuple[Tensor, Tensor]:
        """Sharpened queries [N_dst, H, d] and keys [N_src, H, d] of one relation."""
        src, _, dst = edge_type
        dim = self.out_channels // self.heads
        position = self._edge_position[edge_type]
        lin = self.lin_query[position]
        # sharpening scales the projection's rows (C x in) rather than its output (N x C)
        row_scale = self.sharpen[position].repeat_interleave(dim).unsqueeze(1)
        bias = None if lin.bias is None else lin.bias * row_scale.squeeze(1)
        query = F.linear(x_dict[dst], lin.weight * row_scale, bias).view(-1, self.heads, dim)
        return query, self.lin_key[position](x_dict[src]).view(-1, self.heads, dim)

    def forward(
        self,
        x_dict: Mapping[str, Tensor],
        edge_index_dict: Mapping[EdgeType, Tensor],
        return_beta: bool = False,
        return_attention_weights: bool = False,
    ) -> dict[str, Tensor] | tuple:
        self._check_inputs(x_dict, edge_index_dict)
        heads, dim = self.heads, self.out_channels // self.heads
        value = {t: self.lin[t](x_dict[t]) for t in self.node_types}
        attention: dict[EdgeType, Tensor] = {}
        out_dict, beta_dict = {}, {}
        for node_type in self.node_types:
            slots = []
            num_dst = x_dict[node_type].size(0)
            for edge_type in self.incoming(node_type):
                edge_index = edge_index_dict.get(edge_type)
                if edge_index is None:
                    slots.append(value[node_type].new_zeros(num_dst, self.out_channels))
                    continue
                query, key = self._query_key(x_dict, edge_type)
                src = edge_type[0]
                result = edge_attention(
                    query, key, value[src].view(-1, heads, dim), edge_index,
                    num_nodes=(x_dict[src].size(0), num_dst),
                    return_attention=return_attention_weights, backend=self.backend,
                )
                if return_attention_weights:
                    result, attention[edge_type] = result
                slots.append(result.reshape(num_dst, self.out_channels))
            beta = torch.softmax(self.lin_beta[node_type](x_dict[node_type]), dim=-1)
            # a running weighted sum: no [N, R, C] stack (and no batched tiny matmuls)
            out = beta[:, -1:] * value[node_type]
            for slot, relation_out in enumerate(slots):
                out = out + beta[:, slot : slot + 1] * relation_out
            if self.norm is not None:
                out = self.norm[node_type](out)
            if self.act is not None:
                out = self.act(out)
            out_dict[node_type] = F.dropout(out, p=self.dropout, training=self.training)
            beta_dict[node_type] = beta
        result: list = [out_dict]
        if return_beta:
            result.append(beta_dict)
        if return_attention_weights:
            result.append(attention)
        return result[0] if len(result) == 1 else tuple(result)

    def link_logits(self, x_dict: Mapping[str, Tensor], edge_type: EdgeType, edge_index: Tensor) -> Tensor:
        """Proximity logits [E] of (source, destination) pairs under one relation: the
        sharpened query-key score of the node-level attention, averaged over heads."""
        query, key = self._query_key(x_dict, tuple(edge_type))
        scores = (query[edge_index[1]] * key[edge_index[0]]).sum(-1)
        return scores.mean(-1) / math.sqrt(self.out_channels // self.heads)

    def proximity_loss(
        self,
        x_dict: Mapping[str, Tensor],
        edge_index_dict: Mapping[EdgeType, Tensor],
        num_neg_per_edge: float = 1.0,
    ) -> Tensor:
        r"""LATTE's first-order proximity loss: for each relation, observed edges should score
        high and sampled non-edges low,

        .. math::
            \mathcal{L} = \frac{1}{|\mathcal{R}|}\sum_{r}\Big(
                -\operatorname{mean}_{(j,i) \in E_r} \log\sigma(\ell_r(j, i))
                -\operatorname{mean}_{(j,i) \in \bar E_r} \log\sigma(-\ell_r(j, i))\Big)

        with :math:`\ell_r` = :meth:`link_logits` and :math:`\bar E_r` drawn by PyG's
        ``negative_sampling`` (``num_neg_per_edge`` non-edges per edge, bipartite).
        """
        if not (isinstance(num_neg_per_edge, (int, float)) and num_neg_per_edge > 0):
            raise ValueError(f"`num_neg_per_edge` must be a positive number, got {num_neg_per_edge!r}")
        self._check_inputs(x_dict, edge_index_dict)
        losses = []
        for edge_type, edge_index in edge_index_dict.items():
            if edge_index.size(1) == 0:
                continue
            src, _, dst = edge_type
            negatives = negative_sampling(
                edge_index, num_nodes=(x_dict[src].size(0), x_dict[dst].size(0)),
                num_neg_samples=max(1, int(num_neg_per_edge * edge_index.size(1))),
            )
            positive = self.link_logits(x_dict, edge_type, edge_index)
            negative = self.link_logits(x_dict, edge_type, negatives)
            losses.append(-F.logsigmoid(positive).mean() - F.logsigmoid(-negative).mean())
        if not losses:
            return next(iter(x_dict.values())).new_zeros(())
        return torch.stack(losses).mean()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads}, relations={len(self.edge_types)})")
