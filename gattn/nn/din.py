r"""Deep Interest Network (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018) on ragged behaviour histories.

* :class:`Dice` - the data-adaptive activation, with batch statistics in training and running
  statistics in evaluation (the published code's batch normalisation ran in training mode at
  evaluation time too, which made a user's score depend on the rest of its batch);
* :class:`LocalActivationUnit` - the MLP that gives each behaviour one weight from
  :math:`[q, k, q - k, q \odot k]`;
* :class:`DINAttention` - the unit plus the weighted sum of each user's behaviours on
  :func:`gattn.kernels.segment_attention_pool` (``scores=``, ``normalize=False``: the paper's
  unnormalised weights; softmax on request);
* :func:`minibatch_aware_l2` - the paper's mini-batch aware regularisation: L2 only on the
  embedding rows that occur in the batch, each divided by its frequency in the data.

Histories are ragged (all behaviours of the batch as rows ``[R, D]`` with ``ptr`` or
``lengths``) or padded (``[B, L, D]`` with ``padding_mask`` or ``lengths``); padded input is
packed first, so padding is never attended and never enters Dice's batch statistics. An empty
history pools to zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gattn.kernels import segment_attention_pool
from gattn.kernels._validate import check_floating, check_integer, check_ptr
from gattn.kernels.din import dice, segment_broadcast, target_pair

from ._history import History, resolve_history

__all__ = ["DINAttention", "Dice", "LocalActivationUnit", "TargetAttention", "make_activation", "minibatch_aware_l2"]


class Dice(nn.Module):
    r"""The Dice activation of DIN.

    .. math::
        f(s) = p(s)\, s + (1 - p(s))\, \alpha\, s,\qquad
        p(s) = \sigma\!\left(\frac{s - \mathrm{E}[s]}{\sqrt{\mathrm{Var}[s] + \epsilon}}\right)

    per feature, with :math:`\mathrm{E}[s]` and :math:`\mathrm{Var}[s]` the statistics of the
    mini-batch in training (and folded into running averages) and the running averages in
    evaluation, exactly as ``BatchNorm1d(affine=False)`` does. In evaluation a row's output
    therefore depends on that row alone. A training batch of one row has no variance: it is
    normalised to 0 (:math:`p = 1/2`) and leaves the running statistics unchanged.

    Args:
        num_features (int): feature size :math:`C` (the last dimension).
        eps (float, optional): :math:`\epsilon` (as DeepCTR-Torch; the paper's code 1e-9).
            (default: ``1e-8``)
        momentum (float, optional): running-average momentum (torch's BatchNorm default).
            (default: ``0.1``)
        alpha (float, optional): initial :math:`\alpha` (the paper's code).
            (default: ``0.0``)

    Shapes:
        - **input:** ``x`` :math:`(N, C)`; optionally ``segment_bias`` :math:`(S, C)` with
          ``ptr`` :math:`(S + 1)`: the activation of ``x + segment_bias[segment]`` (rows of
          segment s get ``segment_bias[s]``), without materialising the broadcast bias (DIN's
          target term). On CPU a fused kernel (:func:`gattn.kernels.din.dice`).
        - **output:** :math:`(N, C)`.
    """

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.1, alpha: float = 0.0) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"`num_features` must be a positive int, got {num_features!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1], got {momentum}")
        if eps <= 0:
            raise ValueError(f"`eps` must be positive, got {eps}")
        self.num_features, self.eps, self.momentum, self.initial_alpha = num_features, eps, momentum, alpha
        self.alpha = nn.Parameter(torch.empty(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.alpha, self.initial_alpha)
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum})"

    def forward(self, x: Tensor, segment_bias: Tensor | None = None, ptr: Tensor | None = None) -> Tensor:
        check_floating("x", x, (2,))
        if x.size(1) != self.num_features:
            raise ValueError(f"`x` must be [N, {self.num_features}], got {tuple(x.shape)}")
        if (segment_bias is None) != (ptr is None):
            raise ValueError("`segment_bias` and `ptr` go together (the bias of each segment of rows)")
        if ptr is not None:
            check_ptr(ptr, x.size(0))
            check_floating("segment_bias", segment_bias, (2,))
            if segment_bias.shape != (ptr.numel() - 1, self.num_features):
                raise ValueError(
                    f"`segment_bias` must be [S, C] = [{ptr.numel() - 1}, {self.num_features}], "
                    f"got {tuple(segment_bias.shape)}"
                )
        return dice(
            x, self.alpha, self.running_mean, self.running_var, training=self.training,
            momentum=self.momentum, eps=self.eps, segment_bias=segment_bias, ptr=ptr,
        )


_ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "dice": Dice,
    "prelu": lambda size: nn.PReLU(size),
    "relu": lambda size: nn.ReLU(),
    "sigmoid": lambda size: nn.Sigmoid(),
}


def make_activation(name: str, size: int) -> nn.Module:
    """The activation ``name`` (``"dice"``, ``"prelu"``, ``"relu"``, ``"sigmoid"``) for ``size`` features.

    Args:
        name (str): ``"dice"``, ``"prelu"``, ``"relu"`` or ``"sigmoid"``.
        size (int): the number of features (Dice and PReLU learn per-feature parameters).
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name](size)


def _check_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive ints, got {sizes!r}")
    return sizes


class LocalActivationUnit(nn.Module):
    r"""DIN's local activation unit: one weight per behaviour from the target and the behaviour.

    .. math::
        a(q, k_j) = \mathrm{MLP}\big([\,q,\ k_j,\ q - k_j,\ q \odot k_j\,]\big) \in \mathbb{R}

    The first layer's weight is kept in the paper's layout (``lin_in``, [H1, 4D]), and computed
    as :math:`(W_q + W_d)\,q + (W_k - W_d)\,k_j + W_p\,(q \odot k_j)`: the target's part once
    per user, the behaviour's part as one product with a [R, 2D] operand instead of [R, 4D].

    Args:
        in_channels (int): behaviour (and target) embedding size :math:`D`.
        hidden_channels (Sequence[int], optional): hidden sizes of the MLP (the paper's).
            (default: ``(80, 40)``)
        activation (str, optional): ``"dice"``, ``"prelu"``, ``"relu"`` or ``"sigmoid"`` after
            each hidden layer. (default: ``"dice"``)
        dropout (float, optional): dropout after each hidden activation (training only).
            (default: ``0.0``)

    Shapes:
        - **input:** ``query`` :math:`(B, D)`, ``keys`` :math:`(R, D)` (rows of all histories)
          and ``ptr`` :math:`(B + 1)`. Inputs are trusted: :class:`DINAttention` validates
          them.
        - **output:** the scores :math:`(R)`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: Sequence[int] = (80, 40),
        activation: str = "dice",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"`in_channels` must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.hidden_channels = _check_sizes("hidden_channels", hidden_channels)
        self.activation = activation
        self.lin_in = nn.Linear(4 * in_channels, self.hidden_channels[0])
        self.activations = nn.ModuleList(make_activation(activation, size) for size in self.hidden_channels)
        self.lins = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(self.hidden_channels, (*self.hidden_channels[1:], 1))
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_in.reset_parameters()
        for module in (*self.lins, *self.activations):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, hidden_channels={self.hidden_channels}, "
            f"activation={self.activation!r})"
        )

    def forward(self, query: Tensor, keys: Tensor, ptr: Tensor) -> Tensor:
        dim = self.in_channels
        w_query, w_key, w_diff, w_prod = self.lin_in.weight.split(dim, dim=1)
        target = F.linear(query, w_query + w_diff, self.lin_in.bias)  # once per user
        pair = target_pair(query, keys, ptr)  # [k, q * k]
        hidden = pair @ torch.cat([w_key - w_diff, w_prod], dim=1).t()
        first = self.activations[0]
        if isinstance(first, Dice):  # adds the target's term inside the fused kernel
            hidden = first(hidden, target, ptr)
        else:
            hidden = first(hidden + segment_broadcast(target, ptr))
        hidden = self.lins[0](self.dropout(hidden))
        for activation, lin in zip(self.activations[1:], self.lins[1:]):
            hidden = lin(self.dropout(activation(hidden)))
        return hidden.squeeze(1)


def _check_query(query: Tensor, channels: int, name: str = "query") -> None:
    check_floating(name, query, (2,))
    if query.size(1) != channels:
        raise ValueError(f"`{name}` must be [B, {channels}], got {tuple(query.shape)}")


def _check_rows(name: str, rows: Tensor, channels: int | None, like: Tensor) -> None:
    check_floating(name, rows, (2,))
    if channels is not None and rows.size(1) != channels:
        raise ValueError(f"`{name}` must have {channels} features per behaviour, got {tuple(rows.shape)}")
    if rows.dtype != like.dtype:
        raise TypeError(f"`{name}` must have the dtype of the query ({like.dtype}), got {rows.dtype}")


def history_rows(
    query: Tensor,
    keys: Tensor,
    value: Tensor | None,
    ptr: Tensor | None,
    lengths: Tensor | None,
    padding_mask: Tensor | None,
    channels: int,
    query_name: str = "query",
) -> tuple[History, Tensor, Tensor]:
    """The validated segments and the packed key and value rows of one target-attention call."""
    _check_query(query, channels, query_name)
    history = resolve_history(keys, ptr, lengths, padding_mask, batch_size=query.size(0))
    key_rows = history.pack("keys", keys)
    _check_rows("keys", key_rows, channels, query)
    if value is None:
        return history, key_rows, key_rows
    value_rows = history.pack("value", value)
    _check_rows("value", value_rows, None, query)
    return history, key_rows, value_rows


class TargetAttention(nn.Module):
    r"""Base of the target-attention layers (one query per user over that user's history).

    For user :math:`u` with target (query) :math:`q_u` and history rows :math:`k_j`,
    :math:`j \in \mathcal{H}(u)`, with values :math:`v_j` (default: the keys),

    .. math::
        \mathbf{o}_u = \sum_{j \in \mathcal{H}(u)} w(q_u, k_j)\, v_j

    where the subclass's :meth:`pool` defines the weight :math:`w` (DIN's local activation
    unit, a softmax over the history, ...). An empty history gives zeros.

    :meth:`forward` is the one boundary check: it turns ragged (``ptr`` / ``lengths``) or padded
    (``padding_mask`` / ``lengths``) histories into packed rows and segments, and hands them to
    :meth:`pool`, which subclasses implement on validated rows only; weights come back in the
    caller's layout.

    Shapes:
        - **input:** ``query`` :math:`(B, D)`; ``keys`` :math:`(R, D)` with ``ptr``
          :math:`(B + 1)` or ``lengths`` :math:`(B)`, or padded :math:`(B, L, D)` with
          ``padding_mask`` :math:`(B, L)` (True = padding) or ``lengths`` :math:`(B)`;
          ``value`` *(optional)* in the layout of ``keys`` with its own last size
          :math:`D_v`.
        - **output:** :math:`(B, D_v)`; with ``return_attention_weights=True`` also the
          weights in the layout of ``keys`` (:math:`(R)` or :math:`(B, L)`).
    """

    in_channels: int

    def pool(self, query: Tensor, keys: Tensor, value: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled [B, Dv] and the weight of every row [R], on validated rows."""
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        ptr: Tensor | None = None,
        lengths: Tensor | None = None,
        padding_mask: Tensor | None = None,
        *,
        value: Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        history, key_rows, value_rows = history_rows(
            query, keys, value, ptr, lengths, padding_mask, self.in_channels
        )
        out, weights = self.pool(query, key_rows, value_rows, history.ptr)
        if return_attention_weights:
            return out, history.unpack(weights)
        return out


class DINAttention(TargetAttention):
    r"""DIN's target attention over ragged behaviour histories.

    .. math::
        v_U(A) = \sum_{j=1}^{H} a(e_A, e_j)\, e_j

    with :math:`a` the :class:`LocalActivationUnit`, :math:`e_A` the target (query) and
    :math:`e_j` the user's behaviours; the weights are not normalised (the paper's choice, to
    keep the intensity of a user's interest), or softmax-normalised per user on request. The
    values may be other vectors than the keys (``value``: decoupled attention and
    representation embeddings, as in DARE).

    Args:
        in_channels (int): query and key size :math:`D`.
        hidden_channels (Sequence[int], optional): hidden sizes of the local activation unit.
            (default: ``(80, 40)``)
        activation (str, optional): activation of the unit (see
            :class:`LocalActivationUnit`). (default: ``"dice"``)
        softmax (bool, optional): normalise the weights per user with a softmax.
            (default: ``False``)
        dropout (float, optional): dropout inside the unit. (default: ``0.0``)

    Shapes:
        - **input:** ``query`` :math:`(B, D)`; ``keys`` :math:`(R, D)` with ``ptr``
          :math:`(B + 1)` or ``lengths`` :math:`(B)`, or padded :math:`(B, L, D)` with
          ``padding_mask`` :math:`(B, L)` (True = padding) or ``lengths`` :math:`(B)`;
          ``value`` *(optional)* in the layout of ``keys`` with any last size :math:`D_v`.
        - **output:** the pooled interest :math:`(B, D_v)` and, with
          ``return_attention_weights=True``, the weight of each behaviour (:math:`(R)`, or
          :math:`(B, L)` with zeros at padding). An empty history gives zeros.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: Sequence[int] = (80, 40),
        activation: str = "dice",
        softmax: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.unit = LocalActivationUnit(in_channels, hidden_channels, activation, dropout)
        self.in_channels, self.softmax = in_channels, bool(softmax)

    def reset_parameters(self) -> None:
        self.unit.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, hidden_channels={self.unit.hidden_channels}, "
            f"activation={self.unit.activation!r}, softmax={self.softmax})"
        )

    def pool(self, query: Tensor, keys: Tensor, value: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.unit(query, keys, ptr)
        out, weights = segment_attention_pool(
            keys, scores=scores.unsqueeze(1), ptr=ptr, value=value, normalize=self.softmax
        )
        return out.squeeze(1), weights.squeeze(1)


def minibatch_aware_l2(weight: Tensor, ids: Tensor, frequency: Tensor) -> Tensor:
    r"""DIN's mini-batch aware L2 penalty of one embedding table.

    .. math::
        \Omega_m(W) = \sum_{j \in \mathcal{B}_m} \frac{\lVert w_j \rVert_2^2}{n_j}

    over the distinct ids :math:`j` that occur in the mini-batch :math:`\mathcal{B}_m`, with
    :math:`n_j` the number of occurrences of id :math:`j` in the training data. Rows that do
    not occur cost nothing (a full-table L2 over a large vocabulary would dominate each step).
    Multiply by :math:`\lambda/2` to get the paper's update :math:`w_j \leftarrow w_j -
    \eta\,\lambda\, w_j / n_j`.

    Args:
        weight (torch.Tensor): the table, shape ``[V, D]``.
        ids (torch.Tensor): the integer ids of the batch (any shape; repeats count once).
        frequency (torch.Tensor): occurrences of each id in the data, shape ``[V]`` (> 0 for
            every id that occurs).

    Returns:
        torch.Tensor: a scalar (differentiable in ``weight``).

    Raises:
        ValueError: ``frequency`` of the wrong shape, ids out of range, or a zero frequency
            for an id of the batch.
    """
    check_floating("weight", weight, (2,))
    check_integer("ids", ids)
    if not isinstance(frequency, Tensor) or frequency.dim() != 1 or frequency.numel() != weight.size(0):
        raise ValueError(
            f"`frequency` must be a 1-D tensor with one count per row of `weight` ({weight.size(0)}), "
            f"got {tuple(frequency.shape) if isinstance(frequency, Tensor) else type(frequency).__name__}"
        )
    unique = torch.unique(ids.reshape(-1)).long()
    if unique.numel() == 0:
        return weight.new_zeros(())
    if int(unique[0]) < 0 or int(unique[-1]) >= weight.size(0):
        bad = int(unique[0]) if int(unique[0]) < 0 else int(unique[-1])
        raise ValueError(f"`ids` has id {bad}, out of range for a table of {weight.size(0)} rows")
    counts = frequency.to(weight.device)[unique].to(weight.dtype)
    if bool((counts <= 0).any()):
        bad = int(unique[counts <= 0][0])
        raise ValueError(f"`frequency` of id {bad} is {float(frequency[bad])}, but the id occurs in the batch")
    rows = weight.index_select(0, unique)
    return (rows.square().sum(1) / counts).sum()
