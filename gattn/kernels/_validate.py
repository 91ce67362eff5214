"""Input checks at the public boundary of the kernel API.

Every public kernel function validates its arguments once, here, with a message that names
the argument and what was expected; the backends below trust their input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_floating(name: str, tensor: Tensor, ndims: tuple[int, ...]) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"`{name}` must be {want}, got shape {tuple(tensor.shape)}")


def check_integer(name: str, tensor: Tensor) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor, got dtype {tensor.dtype}")


def check_edge_index_shape(edge_index: Tensor) -> None:
    """Type, layout and shape of an edge list (no pass over its values)."""
    if isinstance(edge_index, Tensor) and edge_index.layout != torch.strided:
        raise TypeError(
            f"`edge_index` must be a dense [2, E] integer tensor here, got a {edge_index.layout} "
            "sparse tensor (gattn's graph layers accept sparse adjacency and convert it)"
        )
    check_integer("edge_index", edge_index)
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"`edge_index` must have shape [2, E] (source, destination), "
            f"got {tuple(edge_index.shape)}"
        )


def check_edge_index(edge_index: Tensor, num_src: int, num_dst: int) -> None:
    check_edge_index_shape(edge_index)
    if edge_index.numel() == 0:
        return
    for row, name, bound, tensor_name in ((0, "source", num_src, "k/v"), (1, "destination", num_dst, "q")):
        lo, hi = int(edge_index[row].min()), int(edge_index[row].max())
        if lo < 0:
            raise ValueError(f"`edge_index` has a negative {name} index ({lo})")
        if hi >= bound:
            raise ValueError(
                f"`edge_index` {name} index {hi} is out of range for {bound} {name} nodes "
                f"(the number of rows of {tensor_name}, or `num_nodes`)"
            )


def check_ptr(ptr: Tensor, num_rows: int) -> None:
    check_integer("ptr", ptr)
    if ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError(f"`ptr` must be a 1-D row pointer of length S+1, got shape {tuple(ptr.shape)}")
    if ptr.numel() <= 64 and ptr.device.type == "cpu":
        # a few bags or graphs per step (one bag, in Ilse et al.'s MIL setting): Python's
        # comparisons on a list cost less than launching four tensor ops
        values = ptr.tolist()
        first, last = values[0], values[-1]
        decreasing = any(b < a for a, b in zip(values, values[1:]))
    else:
        first, last = int(ptr[0]), int(ptr[-1])
        decreasing = ptr.numel() > 1 and bool((ptr[1:] < ptr[:-1]).any())
    if first != 0:
        raise ValueError(f"`ptr` must start at 0, got {first}")
    if last != num_rows:
        raise ValueError(f"`ptr` must end at the number of rows ({num_rows}), got {last}")
    if decreasing:
        raise ValueError("`ptr` must be non-decreasing (a CSR row pointer over sorted rows)")


def check_index(index: Tensor, num_rows: int, num_segments: int | None) -> None:
    check_integer("index", index)
    if index.dim() != 1 or index.numel() != num_rows:
        raise ValueError(
            f"`index` must be 1-D with one entry per row ({num_rows}), got shape {tuple(index.shape)}"
        )
    if index.numel() == 0:
        return
    lo, hi = int(index.min()), int(index.max())
    if lo < 0:
        raise ValueError(f"`index` has a negative segment id ({lo})")
    if num_segments is not None and hi >= num_segments:
        raise ValueError(f"`index` has segment id {hi}, out of range for num_segments={num_segments}")


def check_per_edge(
    name: str, tensor: Tensor | None, num_edges: int, heads: int, dim: int | None, exact: bool = False
) -> None:
    """`edge_bias` is [E, H]; `edge_scale` is [E, H] or [E, H, D]; with `exact`, [E, H, D] only."""
    if tensor is None:
        return
    ndims = (2,) if dim is None else (3,) if exact else (2, 3)
    check_floating(name, tensor, ndims)
    if tensor.size(0) != num_edges or tensor.size(1) != heads:
        want = f"[E={num_edges}, H={heads}, D={dim}]" if exact else (
            f"[E={num_edges}, H={heads}]" + ("" if dim is None else f" or [E, H, D={dim}]")
        )
        raise ValueError(f"`{name}` must have shape {want}, got {tuple(tensor.shape)}")
    if tensor.dim() == 3 and tensor.size(2) != dim:
        raise ValueError(f"`{name}` must have last dimension D={dim}, got {tuple(tensor.shape)}")


def check_probability(name: str, value: object) -> float:
    """A probability in [0, 1) (a dropout rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1), got {value!r}")
    return float(value)


def resolve_segments(
    num_rows: int, index: Tensor | None, ptr: Tensor | None, num_segments: int | None
) -> int:
    """Validate the segment description (exactly one of `index` / `ptr`) and return S."""
    if (index is None) == (ptr is None):
        raise ValueError("give exactly one of `index` (segment id per row) or `ptr` (CSR row pointer)")
    if ptr is not None:
        check_ptr(ptr, num_rows)
        segments = ptr.numel() - 1
        if num_segments is not None and num_segments != segments:
            raise ValueError(f"`num_segments`={num_segments} disagrees with len(ptr)-1={segments}")
        return segments
    check_index(index, num_rows, num_segments)
    if num_segments is not None:
        return int(num_segments)
    return int(index.max()) + 1 if index.numel() else 0
