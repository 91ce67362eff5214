"""Graph-aware isomorphic attention of Buehler, "Graph-Aware Isomorphic Attention for Adaptive
Dynamics in Transformers" (arXiv:2501.02393, 2025).

* :class:`GINAttention` - attention as a graph operation followed by a GIN update per head,
  in a dense form for sequences ([B, L, D] with a key padding mask and an optional causal mask)
  and a sparse form over the edges of a graph on :func:`gattn.kernels.edge_attention`; the
  two agree on a complete graph.
* :class:`WeightedGINConv` - GIN with edge weights,
  :math:`\\mathrm{MLP}((1 + \\epsilon) x_i + \\sum_j w_{ij} x_j)`.
* :class:`SparseGINAdapter` - the paper's Sparse GIN fine-tuning: wraps a frozen attention
  module, turns its attention into a sparse graph and adds a GIN on it through a trainable
  scale :math:`\\lambda` initialised to zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from gattn.kernels import edge_attention

from ._checks import check_positive_int, check_probability

__all__ = ["GINAttention", "HeadwiseMLP", "SparseGINAdapter", "WeightedGINConv"]

EPS_MODES = ("gin", "reference")


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    return float(value)


class HeadwiseMLP(nn.Module):
    r"""One MLP per head, all heads in one batched product:
    :math:`\mathrm{Linear}(d \to \gamma d) \to \mathrm{Dropout} \to \mathrm{RMSNorm} \to
    \mathrm{SiLU} \to \mathrm{Linear}(\gamma d \to d)`.

    Args:
        heads (int): number of heads :math:`H` (independent weights each).
        channels (int): head size :math:`d`.
        ratio (float, optional): hidden size multiplier :math:`\gamma` (hidden size
            ``round(ratio * d)``). (default: ``2.0``)
        dropout (float, optional): dropout after the first linear map. (default: ``0.0``)

    Shapes:
        - **input:** ``x`` :math:`(*, H, d)`.
        - **output:** :math:`(*, H, d)`.
    """

    def __init__(self, heads: int, channels: int, ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = check_positive_int("heads", heads)
        self.channels = check_positive_int("channels", channels)
        self.ratio = _check_positive_float("ratio", ratio)
        self.hidden = max(1, round(ratio * channels))
        self.dropout = check_probability("dropout", dropout)
        self.weight1 = nn.Parameter(torch.empty(heads, channels, self.hidden))
        self.bias1 = nn.Parameter(torch.empty(heads, self.hidden))
        self.norm_weight = nn.Parameter(torch.empty(heads, self.hidden))
        self.weight2 = nn.Parameter(torch.empty(heads, self.hidden, channels))
        self.bias2 = nn.Parameter(torch.empty(heads, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default initialisation, per head
        for weight, bias, fan_in in ((self.weight1, self.bias1, self.channels),
                                     (self.weight2, self.bias2, self.hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        nn.init.ones_(self.norm_weight)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.einsum("...hd,hdk->...hk", x, self.weight1) + self.bias1
        h = F.dropout(h, p=self.dropout, training=self.training)
        h = F.rms_norm(h, (self.hidden,)) * self.norm_weight
        h = F.silu(h)
        return torch.einsum("...hk,hkd->...hd", h, self.weight2) + self.bias2

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(heads={self.heads}, {self.channels} -> {self.hidden} -> {self.channels})"


class GINAttention(MessagePassing):
    r"""Graph-aware isomorphic attention (Buehler, 2025): per head :math:`h` with head size
    :math:`d = D / H` and :math:`X_h` the head's slice of the input (no value projection),

    .. math::
        A_h = \operatorname{softmax}\!\Big(\frac{\alpha}{T}\,
            \frac{Q_h K_h^\top}{\sqrt{d}} + M\Big), \qquad
        \mathrm{out}_h = \mathrm{MLP}_h\big((1 + \epsilon_h)\, X_h + A_h X_h\big), \qquad
        \mathrm{out} = W_O \big\Vert_h \mathrm{out}_h

    with a learnable sharpening scalar :math:`\alpha` (initialised to 1), a fixed temperature
    :math:`T`, a learnable :math:`\epsilon_h` per head, the mask :math:`M` (0 or
    :math:`-\infty`: key padding, causal, or the absent edges of a graph) and
    :math:`\mathrm{MLP}_h` a :class:`HeadwiseMLP`.

    The reference code adds :math:`\epsilon_h X_h` (not :math:`(1 + \epsilon_h) X_h`) although
    its comment says :math:`1 + \epsilon`; ``eps_mode="gin"`` (default) is GIN's update
    (Xu et al. 2019), ``eps_mode="reference"`` the code's. The reference code multiplies the
    masked scores by :math:`\alpha`; here the mask is added after scaling, which is the same for
    :math:`\alpha > 0` and keeps masked keys masked if :math:`\alpha` turns negative.

    Two forms, one set of parameters:

    * dense (``edge_index=None``): ``x`` [B, L, D], ``key_padding_mask`` [B, L] (``True`` =
      ignore, PyTorch's semantics), ``is_causal``; attention through
      ``scaled_dot_product_attention`` (no L x L tensor unless asked for the weights);
    * sparse (``edge_index`` [2, E] given): ``x`` [N, D]; node :math:`i` attends over the
      sources of its incoming edges on the fused :func:`gattn.kernels.edge_attention`.

    A query with no key (all padded, or no incoming edge) aggregates zeros.

    Args:
        channels (int): model width :math:`D` (divisible by ``heads``).
        heads (int, optional): number of heads :math:`H`. (default: ``8``)
        mlp_ratio (float, optional): :math:`\gamma`, the MLP hidden size per head is
            :math:`\gamma d`. (default: ``2.0``)
        dropout (float, optional): dropout inside the MLPs. (default: ``0.0``)
        temperature (float, optional): :math:`T` (fixed). (default: ``1.0``)
        eps_mode (str, optional): ``"gin"`` or ``"reference"`` (see above).
            (default: ``"gin"``)
        eps_init (float, optional): initial :math:`\epsilon_h`. (default: ``0.0``)
        out_proj (bool, optional): apply the output projection :math:`W_O`.
            (default: ``True``)
        bias (bool, optional): bias of the query/key (and output) projections.
            (default: ``True``)
        backend (str, optional): kernel backend of the sparse form; ``None``: by device.
            (default: ``None``)

    Shapes:
        - **input:** dense: ``x`` :math:`(B, L, D)`, ``key_padding_mask`` :math:`(B, L)`
          *(optional)*, ``is_causal``; sparse: ``x`` :math:`(N, D)` and ``edge_index``
          :math:`(2, |\mathcal{E}|)`.
        - **output:** ``out`` :math:`(B, L, D)` or :math:`(N, D)`; with
          ``return_attention_weights=True`` also the attention: :math:`(B, H, L, L)` (dense)
          or ``(edge_index, alpha)`` with alpha :math:`(|\mathcal{E}|, H)` (sparse).
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        temperature: float = 1.0,
        eps_mode: str = "gin",
        eps_init: float = 0.0,
        out_proj: bool = True,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__(aggr="sum", node_dim=0)
        self.channels = check_positive_int("channels", channels)
        self.heads = check_positive_int("heads", heads)
        if channels % heads:
            raise ValueError(f"`channels` ({channels}) must be divisible by `heads` ({heads})")
        if eps_mode not in EPS_MODES:
            raise ValueError(f"`eps_mode` must be one of {EPS_MODES}, got {eps_mode!r}")
        self.head_channels = channels // heads
        self.temperature = _check_positive_float("temperature", temperature)
        self.eps_mode = eps_mode
        self.eps_init = float(eps_init)
        self.backend = backend
        self.lin_query = nn.Linear(channels, channels, bias=bias)
        self.lin_key = nn.Linear(channels, channels, bias=bias)
        self.alpha = nn.Parameter(torch.ones(()))
        self.eps = nn.Parameter(torch.full((heads,), self.eps_init))
        self.mlp = HeadwiseMLP(heads, self.head_channels, mlp_ratio, dropout)
        self.lin_out = nn.Linear(channels, channels, bias=bias) if out_proj else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_query, self.lin_key, self.lin_out):
            if lin is not None:
                lin.reset_parameters()
        nn.init.ones_(self.alpha)
        nn.init.constant_(self.eps, self.eps_init)
        self.mlp.reset_parameters()

    def _check_x(self, x: object, dims: int, shape: str) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"`x` must be a floating-point tensor {shape}, got {type(x).__name__}"
                            + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else ""))
        if x.dim() != dims or x.size(-1) != self.channels:
            raise ValueError(f"`x` must have shape {shape} with D={self.channels}, got {tuple(x.shape)}")

    def _gin_update(self, x_heads: Tensor, aggregated: Tensor) -> Tensor:
        """MLP_h((1 + eps_h) X_h + A_h X_h) for [..., H, d] inputs, heads concatenated, W_O."""
        scale = self.eps if self.eps_mode == "reference" else 1.0 + self.eps
        out = self.mlp(scale.view(-1, 1) * x_heads + aggregated)
        out = out.reshape(*out.shape[:-2], self.channels)
        return out if self.lin_out is None else self.lin_out(out)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple:
        if edge_index is not None:
            if key_padding_mask is not None or is_causal:
                raise ValueError("`key_padding_mask` and `is_causal` belong to the dense form; with "
                                 "`edge_index` the graph says who attends to whom")
            return self._forward_sparse(x, edge_index, bool(return_attention_weights))
        return self._forward_dense(x, key_padding_mask, bool(is_causal), bool(return_attention_weights))

    def _projected(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Sharpened queries, keys and the raw head slices, each [..., H, d]."""
        shape = (*x.shape[:-1], self.heads, self.head_channels)
        query = self.lin_query(x).view(shape) * (self.alpha / self.temperature)
        return query, self.lin_key(x).view(shape), x.view(shape)

    def _forward_sparse(self, x: Tensor, edge_index: Tensor, want_attention: bool) -> Tensor | tuple:
        self._check_x(x, 2, "[N, D]")
        query, key, x_heads = self._projected(x)
        result = edge_attention(query, key, x_heads, edge_index, return_attention=want_attention,
                                backend=self.backend)
        aggregated, attention = result if want_attention else (result, None)
        out = self._gin_update(x_heads, aggregated)
        return (out, (edge_index, attention)) if want_attention else out

    def _forward_dense(
        self, x: Tensor, key_padding_mask: Tensor | None, is_causal: bool, want_attention: bool
    ) -> Tensor | tuple:
        self._check_x(x, 3, "[B, L, D]")
        batch, length = x.shape[:2]
        allowed = None  # [B, 1, L, L] True = may attend (SDPA's boolean semantics)
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (batch, length):
                raise ValueError(f"`key_padding_mask` must be a bool tensor [B={batch}, L={length}] "
                                 f"(True = ignore), got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
            allowed = (~key_padding_mask).view(batch, 1, 1, length).expand(batch, 1, length, length)
        if is_causal:
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            allowed = causal.expand(batch, 1, length, length) if allowed is None else allowed & causal
        has_key = None
        if allowed is not None:
            has_key = allowed.any(-1, keepdim=True)  # [B, 1, L, 1]
            # a query without any key attends to every key (finite, no NaN) and is zeroed below
            allowed = allowed | ~has_key
        query, key, x_heads = (t.transpose(1, 2) for t in self._projected(x))  # [B, H, L, d]
        scale = 1.0 / math.sqrt(self.head_channels)
        if want_attention:
            scores = (query @ key.transpose(-1, -2)) * scale
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            attention = torch.softmax(scores, dim=-1)
            if has_key is not None:
                attention = attention * has_key
            aggregated = attention @ x_heads
        else:
            aggregated = F.scaled_dot_product_attention(query, key, x_heads, attn_mask=allowed, scale=scale)
            if has_key is not None:
                aggregated = aggregated * has_key
        out = self._gin_update(x_heads.transpose(1, 2), aggregated.transpose(1, 2))
        return (out, attention) if want_attention else out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
                f"mlp_ratio={self.mlp.ratio}, eps_mode={self.eps_mode!r})")


class WeightedGINConv(MessagePassing):
    r"""GIN (Xu et al. 2019) with edge weights:

    .. math::
        x_i' = \mathrm{MLP}\Big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)} w_{ji}\, x_j\Big)

    with a learnable :math:`\epsilon` and ``MLP`` a one-head :class:`HeadwiseMLP`
    (Linear -> Dropout -> RMSNorm -> SiLU -> Linear).

    Args:
        channels (int): feature size (input and output).
        mlp_ratio (float, optional): MLP hidden size as a multiple of ``channels``.
            (default: ``2.0``)
        dropout (float, optional): dropout inside the MLP. (default: ``0.0``)
        eps_init (float, optional): initial :math:`\epsilon`. (default: ``0.0``)

    Shapes:
        - **input:** ``forward(x, edge_index, edge_weight=None)``: ``x``
          :math:`(|\mathcal{V}|, \text{channels})`, ``edge_index`` :math:`(2, |\mathcal{E}|)`,
          ``edge_weight`` :math:`(|\mathcal{E}|)` *(optional; default ones)*.
        - **output:** :math:`(|\mathcal{V}|, \text{channels})`.
    """

    def __init__(self, channels: int, mlp_ratio: float = 2.0, dropout: float = 0.0, eps_init: float = 0.0) -> None:
        super().__init__(aggr="sum")
        self.channels = check_positive_int("channels", channels)
        self.eps_init = float(eps_init)
        self.eps = nn.Parameter(torch.full((), self.eps_init))
        self.mlp = HeadwiseMLP(1, channels, mlp_ratio, dropout)

    def reset_parameters(self) -> None:
        nn.init.constant_(self.eps, self.eps_init)
        self.mlp.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        aggregated = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        return self.mlp(((1.0 + self.eps) * x + aggregated).unsqueeze(-2)).squeeze(-2)

    def message(self, x_j: Tensor, edge_weight: Tensor | None) -> Tensor:
        return x_j if edge_weight is None else edge_weight.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, mlp_ratio={self.mlp.ratio})"


class SparseGINAdapter(nn.Module):
    r"""Sparse GIN fine-tuning (Buehler, 2025) around a frozen self-attention module.

    The wrapped module's attention :math:`A^{(h)}` [B, H, L, L] becomes a graph: heads summed
    and clamped, :math:`\bar A = \min(1, \sum_h A^{(h)})`, sharpened
    :math:`S = \sigma(\kappa (\bar A - \tau))`, then each query keeps the keys with
    :math:`\bar A \ge \tau` (``threshold`` :math:`\tau`) or its ``top_k`` keys by :math:`S`;
    edges to padded keys, and to later positions when ``causal``, are never kept. A
    :class:`WeightedGINConv` on that graph (edge weights :math:`S`) is added with a trainable
    scale initialised to zero:

    .. math::
        \mathrm{out} = \mathrm{Attn}(x) + \lambda\, \mathrm{GIN}(x, S), \qquad \lambda_0 = 0,

    so at initialisation the output is exactly the wrapped module's. The wrapped module's
    parameters are frozen (``requires_grad=False``); only the GIN and :math:`\lambda` train.
    The wrapped module keeps its own train/eval mode handling (its dropout still follows
    ``train()`` / ``eval()``).

    Args:
        attention (torch.nn.Module): a batch-first ``torch.nn.MultiheadAttention`` (called
            twice: as usual for the output, and without autograd with
            ``need_weights=True, average_attn_weights=False`` for the weights, so the output is
            exactly the unwrapped module's), or any module whose ``forward(x, **kwargs)``
            returns ``(out [B, L, D], weights [B, H, L, L] or [B, L, L])`` for batch-first
            ``x``.
        channels (int, optional): model width ``D``; read from ``attention.embed_dim`` when it
            has one. (default: ``None``)
        threshold (float, optional): :math:`\tau`, keep edges whose summed attention reaches
            it; give exactly one of ``threshold`` and ``top_k``. (default: ``None``)
        top_k (int, optional): keep this many keys per query (fewer when fewer are allowed).
            (default: ``None``)
        sharpness (float, optional): :math:`\kappa` of the sigmoid. (default: ``10.0``)
        center (float, optional): :math:`\tau` of the sigmoid when ``top_k`` is used; with
            ``threshold``, the sigmoid is centred on the threshold and ``center`` must be left
            at its default. (default: ``0.1``)
        causal (bool, optional): the wrapped model is causal: each call must carry its causal
            mask (``is_causal=True`` or ``attn_mask``), and the graph keeps only keys at or
            before the query. (default: ``False``)
        mlp_ratio (float, optional): of the :class:`WeightedGINConv`. (default: ``2.0``)
        dropout (float, optional): of the :class:`WeightedGINConv`. (default: ``0.0``)
        eps_init (float, optional): of the :class:`WeightedGINConv`. (default: ``0.0``)

    Shapes:
        - **input:** ``forward(x, key_padding_mask=None, attn_mask=None, is_causal=False)``
          with batch-first ``x`` :math:`(B, L, D)`, ``key_padding_mask`` :math:`(B, L)`
          *(optional)*.
        - **output:** ``(out, None)`` with ``out`` :math:`(B, L, D)`, like
          ``MultiheadAttention`` with ``need_weights=False``, so a Transformer block can call
          it in place of its attention.
    """

    def __init__(
        self,
        attention: nn.Module,
        channels: int | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
        sharpness: float = 10.0,
        center: float = 0.1,
        causal: bool = False,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        eps_init: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(attention, nn.Module):
            raise TypeError(f"`attention` must be an nn.Module, got {type(attention).__name__}")
        if (threshold is None) == (top_k is None):
            raise ValueError("give exactly one of `threshold` (keep edges with summed attention >= it) "
                             "and `top_k` (keep the k strongest keys per query)")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
            raise ValueError(f"`threshold` must be a float in (0, 1], got {threshold!r}")
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)
        self.threshold = None if threshold is None else float(threshold)
        self.sharpness = _check_positive_float("sharpness", sharpness)
        if self.threshold is not None and center != 0.1:
            raise ValueError("`center` applies to `top_k`; with `threshold` the sigmoid is centred on it")
        self.center = self.threshold if self.threshold is not None else float(center)
        self.causal = bool(causal)
        self.is_mha = isinstance(attention, nn.MultiheadAttention)
        if self.is_mha and not attention.batch_first:
            raise ValueError("wrap a MultiheadAttention built with batch_first=True")
        embed_dim = getattr(attention, "embed_dim", None)
        if channels is None:
            if embed_dim is None:
                raise ValueError("`channels` is required: the wrapped module has no `embed_dim`")
            channels = embed_dim
        elif embed_dim is not None and channels != embed_dim:
            raise ValueError(f"`channels`={channels} disagrees with the wrapped module's embed_dim={embed_dim}")
        self.channels = check_positive_int("channels", channels)
        self.attention = attention
        self.attention.requires_grad_(False)
        self.gin = WeightedGINConv(self.channels, mlp_ratio=mlp_ratio, dropout=dropout, eps_init=eps_init)
        self.scale = nn.Parameter(torch.zeros(()))  # lambda

    @property
    def batch_first(self) -> bool:
        return True

    def reset_parameters(self) -> None:
        self.gin.reset_parameters()
        nn.init.zeros_(self.scale)

    def _attend(self, x: Tensor, key_padding_mask: Tensor | None, attn_mask: Tensor | None,
                is_causal: bool) -> tuple[Tensor, Tensor]:
        if self.is_mha:
            if is_causal and attn_mask is None:  # MultiheadAttention wants the mask with the hint
                length = x.size(1)
                attn_mask = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
            call = dict(key_padding_mask=key_padding_mask, attn_mask=attn_mask, is_causal=is_causal)
            # the output through the module's usual (fused) path, so that it is bit for bit what the
            # unwrapped model computes; the weights from its slower path, without autograd
            out = self.attention(x, x, x, need_weights=False, **call)[0]
            with torch.no_grad():
                weights = self.attention(x, x, x, need_weights=True, average_attn_weights=False, **call)[1]
        else:
            kwargs = {}
            if key_padding_mask is not None:
                kwargs["key_padding_mask"] = key_padding_mask
            if attn_mask is not None:
                kwargs["attn_mask"] = attn_mask
            if is_causal:
                kwargs["is_causal"] = True
            out, weights = self.attention(x, **kwargs)
        if weights.dim() == 3:
            weights = weights.unsqueeze(1)
        if weights.dim() != 4 or weights.shape[0] != x.size(0) or weights.shape[-2:] != (x.size(1), x.size(1)):
            raise ValueError(f"the wrapped module returned attention weights of shape {tuple(weights.shape)}; "
                             f"expected [B, H, L, L] or [B, L, L] with B={x.size(0)}, L={x.size(1)}")
        return out, weights

    def attention_graph(self, weights: Tensor, key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The sparse graph of attention ``weights`` [B, H, L, L]: ``edge_index`` [2, E] over the
        B * L flattened positions (source = key, destination = query) and edge weights [E]."""
        batch, _, length, _ = weights.shape
        summed = weights.detach().sum(1).clamp(max=1.0)  # [B, L, L] query x key
        sharpened = torch.sigmoid(self.sharpness * (summed - self.center))
        allowed = torch.ones_like(summed, dtype=torch.bool)
        if key_padding_mask is not None:
            allowed &= ~key_padding_mask.view(batch, 1, length)
        if self.causal:
            allowed &= torch.ones(length, length, dtype=torch.bool, device=weights.device).tril()
        if self.threshold is not None:
            keep = allowed & (summed >= self.threshold)
        else:
            k = min(self.top_k, length)
            ranked = sharpened.masked_fill(~allowed, -1.0)
            top = ranked.topk(k, dim=-1).indices
            keep = torch.zeros_like(allowed).scatter_(-1, top, True) & allowed
        graph, query, key = keep.nonzero(as_tuple=True)
        offset = graph * length
        edge_index = torch.stack([offset + key, offset + query])
        return edge_index, sharpened[graph, query, key]

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[Tensor, None]:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.size(-1) != self.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"`x` must be a batch-first tensor [B, L, {self.channels}], got {got}")
        if key_padding_mask is not None and (key_padding_mask.dtype != torch.bool
                                             or key_padding_mask.shape != x.shape[:2]):
            raise ValueError(f"`key_padding_mask` must be a bool tensor [B, L] = {tuple(x.shape[:2])} "
                             f"(True = ignore), got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        masked_causally = is_causal or attn_mask is not None
        if self.causal and not masked_causally:
            raise ValueError("the adapter was built with causal=True: pass the wrapped model's causal mask "
                             "(is_causal=True and/or attn_mask)")
        if not self.causal and is_causal:
            raise ValueError("is_causal=True but the adapter was built with causal=False")
        out, weights = self._attend(x, key_padding_mask, attn_mask, is_causal)
        edge_index, edge_weight = self.attention_graph(weights, key_padding_mask)
        batch, length, _ = x.shape
        gin = self.gin(x.reshape(batch * length, -1), edge_index, edge_weight).view_as(x)
        return out + self.scale * gin, None

    def __repr__(self) -> str:
        rule = f"threshold={self.threshold}" if self.threshold is not None else f"top_k={self.top_k}"
        return f"{self.__class__.__name__}({self.attention.__class__.__name__}, {rule}, causal={self.causal})"
