"""Adapter exposing `reference.py` through the backend interface of `gattn.kernels`."""

from torch import Tensor

from .reference import edge_attention, segment_attention_pool, segment_softmax

NAME = "reference"
__all__ = ["NAME", "edge_attention", "segment_attention_pool", "segment_softmax", "unsupported"]


def unsupported(like: Tensor) -> str | None:
    return None
