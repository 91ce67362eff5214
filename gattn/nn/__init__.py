"""Attention layers, one file per paper."""

from .graph_transformer import GraphTransformerConv, GraphTransformerLayer

__all__ = ["GraphTransformerConv", "GraphTransformerLayer"]
