r"""Modern Hopfield layers (Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021).

Three layers share one association core:

* :class:`Hopfield` - state patterns :math:`\xi` retrieve from stored patterns :math:`Y`
  (self-association when no state pattern is given);
* :class:`HopfieldPooling` - learned state patterns (``quantity`` queries) pool every bag;
* :class:`HopfieldLayer` - learned stored patterns: a lookup table every input queries.

Inputs are either **ragged** (rows of all bags concatenated, bags given by a CSR ``ptr`` or
a ``batch`` vector, no padding anywhere) or **padded** ``[B, N, D]`` with a mask in PyTorch
semantics (``True`` = ignore this position). The padded form is packed into the ragged form
before the core runs, so both give the same numbers and padding never costs compute.

How the association runs on the kernels: the stored rows of a bag and the state rows of the
same bag form a bipartite graph (an edge from every stored row to every state row of its
bag); :func:`gattn.kernels.edge_attention` computes the per-head scores, the segment softmax
over each state row's stored rows and the weighted sum of the projected patterns, fused, with
nothing of size ``edges x heads x dim`` stored. For pooling with ``quantity`` queries the
graph has ``instances x quantity`` edges: the work and memory are proportional to the number
of instances, never to ``bags x longest bag``. Heads are native to ``edge_attention``, which
is why it is used here rather than ``segment_attention_pool`` (one query set, no heads).
Dropout on the association matrix is the kernel's fused attention dropout (``dropout_p``).
Every ragged input goes through :func:`gattn.nn.to_segments`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from gattn.kernels import edge_attention

from ._checks import check_nonnegative_int, check_positive_int, check_probability
from ._ragged import Segments, to_segments

__all__ = ["Association", "Hopfield", "HopfieldLayer", "HopfieldPooling", "bag_edges"]

_MAX_UNBOUNDED_STEPS = 10_000


class Association(NamedTuple):
    """The association matrix of a ragged call, as a sparse matrix.

    ``weights[e, h]`` is the softmax weight with which state row ``edge_index[1, e]`` reads
    stored row ``edge_index[0, e]`` in head ``h`` (after the last update step).

    Attributes:
        weights (Tensor): the association weights. Shape :math:`(E, H)`.
        edge_index (Tensor): (stored row, state row) of each weight. Shape :math:`(2, E)`.
    """

    weights: Tensor
    edge_index: Tensor


# ----------------------------------------------------------------------------- structure
def bag_edges(stored_ptr: Tensor, state_bag: Tensor, stored_order: Tensor | None = None) -> Tensor:
    """Edges ``[2, E]`` (stored row, state row) from every stored row to every state row of its bag.

    ``stored_ptr`` [B+1] delimits the stored rows of each bag (in ``stored_order``, the
    bag-sorted order of the caller's rows; identity by default); ``state_bag`` [M] is the bag
    of each state row. Edges are grouped by state row (sorted destinations), so the CSR the
    kernels build from them needs no sort.

    Args:
        stored_ptr (Tensor): the stored rows of each bag. Shape :math:`(B + 1)`.
        state_bag (Tensor): the bag of each state row. Shape :math:`(M)`.
        stored_order (Tensor, optional): the caller's row of each bag-sorted stored row
            :math:`(R)`. (default: ``None``, the identity)
    """
    counts = (stored_ptr[1:] - stored_ptr[:-1])[state_bag]
    dst = torch.repeat_interleave(torch.arange(state_bag.numel(), device=state_bag.device), counts)
    edge_ptr = torch.zeros(state_bag.numel() + 1, dtype=torch.long, device=state_bag.device)
    torch.cumsum(counts, 0, out=edge_ptr[1:])
    local = torch.arange(dst.numel(), device=dst.device) - edge_ptr[dst]
    src = stored_ptr[state_bag[dst]] + local
    if stored_order is not None:
        src = stored_order[src]
    return torch.stack([src, dst])


def _change_norm(new: Tensor, old: Tensor, dst: Tensor, num_dst: int) -> float:
    """max over state rows and heads of || A_new - A_old ||_2 (over the stored rows)."""
    squared = torch.zeros(num_dst, new.size(1), dtype=new.dtype, device=new.device)
    squared.index_add_(0, dst, (new - old) ** 2)
    return float(squared.sqrt().max()) if squared.numel() else 0.0


# -------------------------------------------------------------------------------- Hopfield
class Hopfield(nn.Module):
    r"""Modern Hopfield association: state patterns retrieve from stored patterns.

    With stored patterns :math:`Y` (one bag), state patterns :math:`R` and pattern
    projections :math:`Y_P` (the values; default :math:`Y`), per head

    .. math::
        Q = \mathrm{LN}(R)\,W_Q,\quad K = \mathrm{LN}(Y)\,W_K,\quad V = \mathrm{LN}(Y_P)\,W_V,

    the state is updated ``update_steps_max`` times by the retrieval rule

    .. math::
        \xi^{\mathrm{new}} = \mathrm{softmax}\!\left(\beta\, \xi K^{\top}\right) K
        \quad(\xi^{0} = Q),

    stopping early once the association matrix changes by at most ``update_steps_eps`` (in
    L2 norm, for every state row and head), and the output is

    .. math::
        Z = \mathrm{softmax}\!\left(\beta\, \xi K^{\top}\right) V\, W_O .

    The softmax runs over the stored patterns of the state pattern's own bag only.

    Args:
        input_size (int, optional): feature size of the inputs (all three, unless given
            separately below). (default: ``None``)
        hidden_size (int, optional): size of the association space per head.
            (default: ``None``, ``input_size // num_heads``)
        output_size (int, optional): size of the output. (default: ``None``, ``input_size``)
        pattern_size (int, optional): size of the projected patterns (values) per head.
            (default: ``None``, ``hidden_size``)
        num_heads (int, optional): number of association heads. (default: ``1``)
        scaling (float, optional): :math:`\beta`, the inverse temperature.
            (default: ``None``, ``1/sqrt(hidden_size)``)
        update_steps_max (int, optional): the most state updates before the read-out (``0``:
            the single-step layer, the paper's default; ``None``: until converged).
            (default: ``0``)
        update_steps_eps (float, optional): convergence threshold of the association matrix
            between steps. (default: ``1e-4``)
        stored_pattern_size (int, optional): input size of the stored patterns.
            (default: ``None``, ``input_size``)
        state_pattern_size (int, optional): input size of the state patterns.
            (default: ``None``, ``input_size``)
        pattern_projection_size (int, optional): input size of the pattern projections.
            (default: ``None``, ``input_size``)
        normalize_stored_pattern (bool, optional): layer norm on the stored patterns before
            their projection. (default: ``True``)
        normalize_stored_pattern_affine (bool, optional): that norm with learned gain and bias.
            (default: ``True``)
        normalize_state_pattern (bool, optional): layer norm on the state patterns.
            (default: ``True``)
        normalize_state_pattern_affine (bool, optional): that norm with learned gain and bias.
            (default: ``True``)
        normalize_pattern_projection (bool, optional): layer norm on the pattern projections.
            (default: ``True``)
        normalize_pattern_projection_affine (bool, optional): that norm with learned gain and
            bias. (default: ``True``)
        normalize_hopfield_space (bool, optional): layer norm (per head) on :math:`Q` and
            :math:`K` after projection. (default: ``False``)
        normalize_hopfield_space_affine (bool, optional): that norm with learned gain and bias.
            (default: ``False``)
        stored_pattern_as_static (bool, optional): use the stored patterns as they are, without
            a projection (their size must then be ``num_heads * hidden_size``).
            (default: ``False``)
        state_pattern_as_static (bool, optional): the same for the state patterns.
            (default: ``False``)
        pattern_projection_as_static (bool, optional): the same for the pattern projections
            (size ``num_heads * pattern_size``). (default: ``False``)
        dropout (float, optional): dropout probability on the association matrix (training
            only). (default: ``0.0``)
        bias (bool, optional): whether the projections have a bias. (default: ``True``)
        disable_out_projection (bool, optional): no :math:`W_O` (then ``output_size`` is
            ``num_heads * pattern_size``). (default: ``False``)

    Shapes:
        - **input (ragged):** ``stored`` :math:`(R, D)` with ``ptr`` :math:`(B + 1)` or
          ``batch`` :math:`(R)`; ``state`` :math:`(M, D)` with ``state_ptr`` /
          ``state_batch`` (``None``: self-association, the state rows are the stored rows);
          ``projection`` :math:`(R, D_p)` (``None``: the stored rows).
        - **output (ragged):** :math:`(M, \text{output\_size})`, and with
          ``return_association=True`` an :class:`Association` (sparse, :math:`(E, H)`).
        - **input (padded):** ``stored`` :math:`(B, N, D)`, ``state`` :math:`(B, M, D)`,
          ``projection`` :math:`(B, N, D_p)`, ``mask`` :math:`(B, N)` bool (True = ignore
          that stored position).
        - **output (padded):** :math:`(B, M, \text{output\_size})`, and the dense association
          :math:`(B, H, M, N)`.

    A state pattern whose bag has no stored pattern (an empty or fully masked bag) gets zeros.
    """

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        output_size: int | None = None,
        pattern_size: int | None = None,
        num_heads: int = 1,
        scaling: float | None = None,
        update_steps_max: int | None = 0,
        update_steps_eps: float = 1e-4,
        stored_pattern_size: int | None = None,
        state_pattern_size: int | None = None,
        pattern_projection_size: int | None = None,
        normalize_stored_pattern: bool = True,
        normalize_stored_pattern_affine: bool = True,
        normalize_state_pattern: bool = True,
        normalize_state_pattern_affine: bool = True,
        normalize_pattern_projection: bool = True,
        normalize_pattern_projection_affine: bool = True,
        normalize_hopfield_space: bool = False,
        normalize_hopfield_space_affine: bool = False,
        stored_pattern_as_static: bool = False,
        state_pattern_as_static: bool = False,
        pattern_projection_as_static: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        disable_out_projection: bool = False,
    ) -> None:
        super().__init__()
        sizes = {
            "stored_pattern_size": stored_pattern_size,
            "state_pattern_size": state_pattern_size,
            "pattern_projection_size": pattern_projection_size,
        }
        if input_size is None and any(v is None for v in sizes.values()):
            raise ValueError(
                "give `input_size`, or all of stored_pattern_size, state_pattern_size "
                "and pattern_projection_size"
            )
        for name, value in {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "output_size": output_size,
            "pattern_size": pattern_size,
            **sizes,
        }.items():
            if value is not None:
                check_positive_int(name, value)
        check_positive_int("num_heads", num_heads)
        if update_steps_max is not None:
            check_nonnegative_int("update_steps_max", update_steps_max)
        check_probability("dropout", dropout)
        if scaling is not None and not scaling > 0:
            raise ValueError(f"`scaling` (beta) must be positive, got {scaling!r}")
        stored_size = stored_pattern_size or input_size
        state_size = state_pattern_size or input_size
        proj_size = pattern_projection_size or input_size
        default_hidden = max(1, (input_size or stored_size) // num_heads)
        self.num_heads = num_heads
        self.hidden_size = hidden_size or default_hidden
        self.pattern_size = pattern_size or self.hidden_size
        self.stored_pattern_size, self.state_pattern_size = stored_size, state_size
        self.pattern_projection_size = proj_size
        self.update_steps_max = update_steps_max
        self.update_steps_eps = float(update_steps_eps)
        self.dropout = float(dropout)
        self._scaling = scaling
        self.stored_pattern_as_static = stored_pattern_as_static
        self.state_pattern_as_static = state_pattern_as_static
        self.pattern_projection_as_static = pattern_projection_as_static

        assoc, value = num_heads * self.hidden_size, num_heads * self.pattern_size
        for flag, size, want, name in (
            (stored_pattern_as_static, stored_size, assoc, "stored_pattern_size"),
            (state_pattern_as_static, state_size, assoc, "state_pattern_size"),
            (pattern_projection_as_static, proj_size, value, "pattern_projection_size"),
        ):
            if flag and size != want:
                raise ValueError(
                    f"a static pattern is used without projection, so `{name}` ({size}) "
                    f"must equal num_heads * {'pattern' if want == value else 'hidden'}_size "
                    f"({want})"
                )

        def norm(flag: bool, size: int, affine: bool) -> nn.Module | None:
            return nn.LayerNorm(size, elementwise_affine=affine) if flag else None

        self.norm_stored = norm(
            normalize_stored_pattern, stored_size, normalize_stored_pattern_affine
        )
        self.norm_state = norm(normalize_state_pattern, state_size, normalize_state_pattern_affine)
        self.norm_projection = norm(
            normalize_pattern_projection, proj_size, normalize_pattern_projection_affine
        )
        self.norm_hopfield = norm(
            normalize_hopfield_space, self.hidden_size, normalize_hopfield_space_affine
        )
        self.proj_state = (
            None if state_pattern_as_static else nn.Linear(state_size, assoc, bias=bias)
        )
        self.proj_stored = (
            None if stored_pattern_as_static else nn.Linear(stored_size, assoc, bias=bias)
        )
        self.proj_value = (
            None if pattern_projection_as_static else nn.Linear(proj_size, value, bias=bias)
        )
        if disable_out_projection:
            if output_size is not None and output_size != value:
                raise ValueError(
                    f"with disable_out_projection, `output_size` must be num_heads * "
                    f"pattern_size ({value}), got {output_size}"
                )
            self.proj_out = None
            self.output_size = value
        else:
            self.output_size = output_size or input_size or value
            self.proj_out = nn.Linear(value, self.output_size, bias=bias)
        self.reset_parameters()

    @property
    def scaling(self) -> float:
        """:math:`\\beta` (``1/sqrt(hidden_size)`` unless given)."""
        return self._scaling if self._scaling is not None else 1.0 / math.sqrt(self.hidden_size)

    def reset_parameters(self) -> None:
        for module in (self.norm_stored, self.norm_state, self.norm_projection, self.norm_hopfield):
            if module is not None:
                module.reset_parameters()
        for module in (self.proj_state, self.proj_stored, self.proj_value, self.proj_out):
            if module is not None:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(stored={self.stored_pattern_size}, "
            f"state={self.state_pattern_size}, projection={self.pattern_projection_size}, "
            f"hidden={self.hidden_size}, pattern={self.pattern_size}, output={self.output_size}, "
            f"heads={self.num_heads}, scaling={self.scaling:.4g}, "
            f"update_steps_max={self.update_steps_max}, dropout={self.dropout})"
        )

    # ---------------------------------------------------------------- projections
    def project_state(self, state: Tensor) -> Tensor:
        """State patterns -> association space ``[M, H, hidden]``."""
        return self._project(state, self.norm_state, self.proj_state, self.hidden_size, True)

    def project_stored(self, stored: Tensor) -> Tensor:
        """Stored patterns -> association space ``[R, H, hidden]``."""
        return self._project(stored, self.norm_stored, self.proj_stored, self.hidden_size, True)

    def project_value(self, projection: Tensor) -> Tensor:
        """Pattern projections -> values ``[R, H, pattern]``."""
        return self._project(
            projection, self.norm_projection, self.proj_value, self.pattern_size, False
        )

    def _project(
        self,
        x: Tensor,
        norm: nn.Module | None,
        linear: nn.Module | None,
        size: int,
        hopfield_space: bool,
    ) -> Tensor:
        if norm is not None:
            x = norm(x)
        if linear is not None:
            x = linear(x)
        x = x.reshape(x.size(0), self.num_heads, size)
        if hopfield_space and self.norm_hopfield is not None:
            x = self.norm_hopfield(x)
        return x

    def read_out(self, pooled: Tensor) -> Tensor:
        """``[M, H, pattern]`` -> ``[M, output]`` (the output projection)."""
        out = pooled.reshape(pooled.size(0), pooled.size(1) * pooled.size(2))
        return out if self.proj_out is None else self.proj_out(out)

    # ---------------------------------------------------------------------- core
    def _associate(
        self, q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, with_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """One association ``softmax(beta q k^T) v`` over the bipartite bag graph (fused,
        with the association dropout in the kernel while training)."""
        result = edge_attention(
            q, k, v, edge_index, num_nodes=(k.size(0), q.size(0)), scale=self.scaling,
            dropout_p=self.dropout if self.training else 0.0, return_attention=with_weights,
        )
        return result if with_weights else (result, None)

    def associate(
        self, q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, return_association: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The update steps and read-out on projected patterns.

        ``q`` [M, H, hidden] state, ``k`` [R, H, hidden] stored, ``v`` [R, H, pattern];
        ``edge_index`` [2, E] (stored row, state row), grouped by state row. Returns the
        read-out ``[M, H, pattern]`` and the final association weights ``[E, H]`` (or None).
        """
        limit = _MAX_UNBOUNDED_STEPS if self.update_steps_max is None else self.update_steps_max
        previous = None
        for _ in range(limit):
            retrieved, weights = self._associate(q, k, k, edge_index, with_weights=True)
            weights = weights.detach()  # only compared between steps
            if (
                previous is not None
                and _change_norm(weights, previous, edge_index[1], q.size(0))
                <= self.update_steps_eps
            ):
                break  # the association of the current state has converged: no more updates
            q, previous = retrieved, weights
        return self._associate(q, k, v, edge_index, with_weights=return_association)

    # ------------------------------------------------------------------- forward
    def forward(
        self,
        stored: Tensor,
        state: Tensor | None = None,
        projection: Tensor | None = None,
        *,
        ptr: Tensor | None = None,
        batch: Tensor | None = None,
        state_ptr: Tensor | None = None,
        state_batch: Tensor | None = None,
        num_bags: int | None = None,
        mask: Tensor | None = None,
        return_association: bool = False,
    ) -> Tensor | tuple[Tensor, Association | Tensor]:
        for name, tensor in (("stored", stored), ("state", state), ("projection", projection)):
            if tensor is not None and (not isinstance(tensor, Tensor) or not tensor.is_floating_point()):
                raise TypeError(f"`{name}` must be a floating-point tensor")
        stored_seg = to_segments(stored, ptr, batch, mask, num_bags, name="stored")
        if stored.dim() == 3:
            if state_ptr is not None or state_batch is not None:
                raise ValueError("padded [B, N, D] input takes `mask`, not `state_ptr`/`state_batch`")
            return self._forward_padded(stored_seg, stored, state, projection, return_association)
        return self._forward_ragged(stored_seg, stored, state, projection, state_ptr, state_batch,
                                    return_association)

    def _check_sizes(self, stored: Tensor, state: Tensor, projection: Tensor) -> None:
        for name, tensor, size in (
            ("stored", stored, self.stored_pattern_size),
            ("state", state, self.state_pattern_size),
            ("projection", projection, self.pattern_projection_size),
        ):
            if tensor.size(-1) != size:
                raise ValueError(
                    f"`{name}` must have feature size {size}, got {tuple(tensor.shape)}"
                )
        if projection.shape[:-1] != stored.shape[:-1]:
            raise ValueError(
                f"`projection` must have one row per stored row {tuple(stored.shape[:-1])}, "
                f"got {tuple(projection.shape)}"
            )

    def _retrieve(self, stored_seg: Segments, state_rows: Tensor, state_bag: Tensor, projection_rows: Tensor,
                  return_association: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        """The core on grouped rows: (output per state row, weights, bag edges)."""
        edge_index = bag_edges(stored_seg.ptr, state_bag)
        q = self.project_state(state_rows)
        k = self.project_stored(stored_seg.x)
        v = self.project_value(projection_rows)
        pooled, weights = self.associate(q, k, v, edge_index, return_association)
        out = _zero_empty(self.read_out(pooled), stored_seg.ptr, state_bag)
        return out, weights, edge_index

    def _forward_ragged(self, stored_seg, stored, state, projection, state_ptr, state_batch, return_association):
        projection = stored if projection is None else projection
        if state is None:
            if state_ptr is not None or state_batch is not None:
                raise ValueError(
                    "`state_ptr`/`state_batch` need `state` (None means self-association)"
                )
            state, state_seg = stored, stored_seg
        else:
            if state.dim() != 2:
                raise ValueError(f"ragged `state` must be [M, D], got {tuple(state.shape)}")
            state_seg = to_segments(state, state_ptr, state_batch, None, stored_seg.num_segments, name="state",
                                    ptr_name="state_ptr", batch_name="state_batch")
        self._check_sizes(stored, state, projection)
        out, weights, edge_index = self._retrieve(
            stored_seg, state_seg.x, state_seg.segment_of_rows(), stored_seg.group(projection), return_association
        )
        out = state_seg.ungroup(out)
        if not return_association:
            return out
        # edges between the caller's rows (not the grouped ones)
        src, dst = edge_index
        if stored_seg.order is not None:
            src = stored_seg.order[src]
        if state_seg.order is not None:
            dst = state_seg.order[dst]
        return out, Association(weights, torch.stack([src, dst]))

    def _forward_padded(self, stored_seg, stored, state, projection, return_association):
        bsz, length = stored.size(0), stored.size(1)
        state = stored if state is None else state
        projection = stored if projection is None else projection
        if state.dim() != 3 or state.size(0) != bsz:
            raise ValueError(f"padded `state` must be [B={bsz}, M, D], got {tuple(state.shape)}")
        if projection.dim() != 3:
            raise ValueError(
                f"padded `projection` must be [B, N, D], got {tuple(projection.shape)}"
            )
        self._check_sizes(stored, state, projection)
        num_state = state.size(1)
        state_bag = torch.arange(bsz, device=stored.device).repeat_interleave(num_state)
        out, weights, edge_index = self._retrieve(
            stored_seg, state.reshape(bsz * num_state, state.size(2)), state_bag, stored_seg.group(projection),
            return_association,
        )
        out = out.reshape(bsz, num_state, self.output_size)
        if not return_association:
            return out
        # position of each kept stored row inside its padded bag
        positions = stored_seg.keep.nonzero()[:, 1]
        dense = torch.zeros(
            bsz * num_state, length, self.num_heads, dtype=weights.dtype, device=weights.device
        )
        dense[edge_index[1], positions[edge_index[0]]] = weights
        return out, dense.view(bsz, num_state, length, self.num_heads).permute(0, 3, 1, 2)


def _zero_empty(out: Tensor, stored_ptr: Tensor, state_bag: Tensor) -> Tensor:
    """Zero the rows of state patterns whose bag has no stored pattern (bias included)."""
    has_rows = (stored_ptr[1:] > stored_ptr[:-1])[state_bag]
    if bool(has_rows.all()):
        return out
    return out * has_rows.unsqueeze(-1).to(out.dtype)


# ------------------------------------------------------------------------ HopfieldPooling
class HopfieldPooling(nn.Module):
    r"""Pool every bag with ``quantity`` learned state patterns (Hopfield pooling).

    .. math::
        z_b = \mathrm{softmax}\!\left(\beta\, Q K_b^{\top}\right) V_b\, W_O,
        \qquad K_b = \mathrm{LN}(Y_b) W_K,\ V_b = \mathrm{LN}(Y_b) W_V,

    with :math:`Q` [quantity, H, hidden] a learned parameter (static in the association
    space by default), shared by all bags.

    Args:
        input_size (int): feature size :math:`D` of the instances.
        quantity (int, optional): number of learned state patterns (pooled vectors per bag).
            (default: ``1``)
        trainable (bool, optional): whether the state patterns are learned (else fixed at
            initialisation). (default: ``True``)
        **kwargs (optional): any :class:`Hopfield` option (``hidden_size``, ``num_heads``,
            ``scaling``, ``dropout``, ``update_steps_max``, norms, ...).
            ``state_pattern_as_static`` is True by default (the learned queries live in the
            association space); set it False to learn them in input space and project them.

    Shapes:
        - **input:** the rows of all bags :math:`(R, D)` with ``ptr`` :math:`(B + 1)` or
          ``batch`` :math:`(R)`, or padded :math:`(B, N, D)` with ``mask`` :math:`(B, N)`.
        - **output:** :math:`(B, \text{quantity} \cdot \text{output\_size})` (a bag with no
          row gives zeros); with ``return_association=True`` also the weights
          :math:`(R, H, \text{quantity})` of every instance (ragged) or
          :math:`(B, H, \text{quantity}, N)` (padded).
    """

    def __init__(
        self, input_size: int, quantity: int = 1, trainable: bool = True, **kwargs
    ) -> None:
        super().__init__()
        check_positive_int("quantity", quantity)
        kwargs.setdefault("state_pattern_as_static", True)
        kwargs.setdefault("normalize_state_pattern", False)
        heads = kwargs.get("num_heads", 1)
        hidden = kwargs.get("hidden_size") or max(1, input_size // heads)
        if kwargs["state_pattern_as_static"]:
            kwargs["state_pattern_size"] = heads * hidden
            kwargs["hidden_size"] = hidden
        self.hopfield = Hopfield(input_size, **kwargs)
        self.quantity = quantity
        size = self.hopfield.state_pattern_size
        self.state_pattern = nn.Parameter(torch.empty(quantity, size), requires_grad=trainable)
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        return self.quantity * self.hopfield.output_size

    def reset_parameters(self) -> None:
        self.hopfield.reset_parameters()
        nn.init.normal_(self.state_pattern, std=1.0 / math.sqrt(self.state_pattern.size(1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(quantity={self.quantity}, {self.hopfield!r})"

    def forward(
        self,
        x: Tensor,
        ptr: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        num_bags: int | None = None,
        mask: Tensor | None = None,
        return_association: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        seg = to_segments(x, ptr, batch, mask, num_bags)
        hop = self.hopfield
        if x.size(-1) != hop.stored_pattern_size:
            raise ValueError(f"`x` must have feature size {hop.stored_pattern_size}, got {tuple(x.shape)}")
        bags = seg.num_segments
        q = hop.project_state(self.state_pattern)  # [Q, H, hidden], the same for every bag
        q = q.unsqueeze(0).expand(bags, -1, -1, -1).reshape(bags * self.quantity, hop.num_heads, q.size(-1))
        state_bag = torch.arange(bags, device=x.device).repeat_interleave(self.quantity)
        edge_index = bag_edges(seg.ptr, state_bag)
        pooled, weights = hop.associate(
            q, hop.project_stored(seg.x), hop.project_value(seg.x), edge_index, return_association
        )
        out = _zero_empty(hop.read_out(pooled), seg.ptr, state_bag).reshape(bags, self.output_size)
        if not return_association:
            return out
        # every instance has exactly `quantity` edges, one per learned query of its bag
        per_instance = weights.new_zeros(seg.num_rows, self.quantity, hop.num_heads)
        per_instance[edge_index[0], edge_index[1] % self.quantity] = weights
        per_instance = seg.ungroup(per_instance.transpose(1, 2))  # [R, H, Q] or [B, N, H, Q]
        return out, per_instance if x.dim() == 2 else per_instance.permute(0, 2, 3, 1)


# -------------------------------------------------------------------------- HopfieldLayer
class HopfieldLayer(nn.Module):
    r"""A learned lookup table: every input row retrieves from ``quantity`` learned patterns.

    .. math::
        z = \mathrm{softmax}\!\left(\beta\, \mathrm{LN}(x) W_Q\, W_K^{\top}\right) W_V\, W_O

    where :math:`W_K` [quantity, H*hidden] are the learned stored patterns and :math:`W_V`
    [quantity, H*pattern] the learned pattern projections (``lookup_targets_as_trainable``;
    otherwise the stored patterns serve as values too). The stored patterns are static (no
    projection).

    Args:
        input_size (int): feature size of the input.
        quantity (int, optional): number of learned stored patterns (table rows).
            (default: ``1``)
        lookup_targets_as_trainable (bool, optional): learn separate value patterns.
            (default: ``True``)
        **kwargs (optional): any :class:`Hopfield` option (``hidden_size``, ``num_heads``,
            ``scaling``, ``output_size``, ``dropout``, ``update_steps_max``, norms, ...).

    Shapes:
        - **input:** ``x`` :math:`(*, \text{input\_size})`, any leading dimensions.
        - **output:** :math:`(*, \text{output\_size})`; with ``return_association=True`` also
          the weights :math:`(*, H, \text{quantity})`.
    """

    def __init__(
        self, input_size: int, quantity: int = 1, lookup_targets_as_trainable: bool = True, **kwargs
    ) -> None:
        super().__init__()
        check_positive_int("quantity", quantity)
        heads = kwargs.get("num_heads", 1)
        hidden = kwargs.get("hidden_size") or max(1, input_size // heads)
        kwargs["hidden_size"] = hidden
        kwargs.setdefault("normalize_stored_pattern", False)
        kwargs.setdefault("normalize_pattern_projection", False)
        kwargs["stored_pattern_as_static"] = True
        kwargs["stored_pattern_size"] = heads * hidden
        if lookup_targets_as_trainable:
            pattern = kwargs.get("pattern_size") or hidden
            kwargs["pattern_size"] = pattern
            kwargs["pattern_projection_as_static"] = True
            kwargs["pattern_projection_size"] = heads * pattern
        else:
            kwargs["pattern_projection_size"] = heads * hidden
        kwargs["state_pattern_size"] = input_size
        self.hopfield = Hopfield(input_size, **kwargs)
        self.quantity = quantity
        self.lookup = nn.Parameter(torch.empty(quantity, heads * hidden))
        self.targets = (
            nn.Parameter(torch.empty(quantity, self.hopfield.pattern_projection_size))
            if lookup_targets_as_trainable
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.hopfield.reset_parameters()
        nn.init.normal_(self.lookup, std=1.0 / math.sqrt(self.lookup.size(1)))
        if self.targets is not None:
            nn.init.normal_(self.targets, std=1.0 / math.sqrt(self.targets.size(1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(quantity={self.quantity}, {self.hopfield!r})"

    def forward(
        self, x: Tensor, return_association: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("`x` must be a floating-point tensor")
        if x.dim() < 1 or x.size(-1) != self.hopfield.state_pattern_size:
            raise ValueError(
                f"`x` must be [..., {self.hopfield.state_pattern_size}], got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        rows = x.reshape(-1, x.size(-1))
        values = self.lookup if self.targets is None else self.targets
        # one bag holding the whole table; every input row is a state pattern of it
        table_ptr = torch.tensor([0, self.quantity], device=x.device)
        state_bag = torch.zeros(rows.size(0), dtype=torch.long, device=x.device)
        edge_index = bag_edges(table_ptr, state_bag)
        hop = self.hopfield
        pooled, weights = hop.associate(
            hop.project_state(rows),
            hop.project_stored(self.lookup),
            hop.project_value(values),
            edge_index,
            return_association,
        )
        out = hop.read_out(pooled).view(*lead, hop.output_size)
        if not return_association:
            return out
        table = weights.view(rows.size(0), self.quantity, hop.num_heads).transpose(1, 2)
        return out, table.reshape(*lead, hop.num_heads, self.quantity)
