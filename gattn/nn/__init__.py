"""Attention layers, one file per paper."""

from .graph_transformer import GraphTransformerConv, GraphTransformerLayer
from .hopfield import Association, Hopfield, HopfieldLayer, HopfieldPooling
from .label_attention import LabelCompatibilityAttention
from .mil import ABMIL, ACMIL, ACMILOutput, AttentionMILPooling, HopfieldMIL, diversity_loss
from .transicd import CodeWiseAttention, LabelWiseLinear, sinusoidal_position_encoding

__all__ = [
    "ABMIL",
    "ACMIL",
    "ACMILOutput",
    "Association",
    "AttentionMILPooling",
    "GraphTransformerConv",
    "GraphTransformerLayer",
    "Hopfield",
    "HopfieldLayer",
    "HopfieldMIL",
    "HopfieldPooling",
    "diversity_loss",
    "CodeWiseAttention",
    "LabelWiseLinear",
    "sinusoidal_position_encoding",
    "LabelCompatibilityAttention",
]
