"""Argument checks of the layers, shared by every file of :mod:`gattn.nn` and :mod:`gattn.models`.

Constructors check their options once; ``forward`` checks what the caller passes (feature
sizes, dtypes, masks) at the public boundary, with a message that names the argument and
what was expected. Tensor-level checks of the kernels live in
:mod:`gattn.kernels._validate`; these are the layer-level ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gattn.kernels._validate import check_probability

__all__ = [
    "check_bool_mask",
    "check_channels",
    "check_features",
    "check_nonnegative_int",
    "check_positive_int",
    "check_probability",
    "check_real",
]


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return value


def check_nonnegative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
    return value


def check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    return float(value)


def check_channels(name: str, value: object) -> int:
    """A feature size: a positive int, or -1 for PyG's lazy initialisation."""
    if value == -1 and not isinstance(value, bool):
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int or -1 (lazy), got {value!r}")
    return value


def check_features(name: str, tensor: object, columns: int | None, rows: int | None = None,
                   what: str = "") -> None:
    """A floating-point [rows, columns] tensor (``columns`` None or -1: any width)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(f"`{name}` must be 2-D [{what or 'rows'}, features], got shape {tuple(tensor.shape)}")
    if columns not in (None, -1) and tensor.size(1) != columns:
        raise ValueError(
            f"`{name}` must have {columns} features (the layer's input size), got shape {tuple(tensor.shape)}"
        )
    if rows is not None and tensor.size(0) != rows:
        raise ValueError(f"`{name}` must have {rows} rows{f' ({what})' if what else ''}, got {tensor.size(0)}")


def check_bool_mask(name: str, mask: object, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"`{name}` must be a bool tensor (True = ignore), got {getattr(mask, 'dtype', type(mask).__name__)}"
        )
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(mask.shape)}")
