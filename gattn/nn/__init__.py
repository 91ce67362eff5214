"""Attention layers, one file per paper."""

from ._ragged import Segments, to_segments
from .gat_conv import GATConv
from .gatv2_conv import GATv2Conv
from .graph_transformer import GraphTransformerConv, GraphTransformerLayer
from .hopfield import Association, Hopfield, HopfieldLayer, HopfieldPooling
from .label_attention import LabelCompatibilityAttention
from .mil import ABMIL, ACMIL, ACMILOutput, AttentionMILPooling, HopfieldMIL, diversity_loss
from .transformer_conv import TransformerConv
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

# Click-through-rate attention (DIN, DARE, Hiformer).
from .dare import DAREAttention  # noqa: E402
from .din import Dice, DINAttention, LocalActivationUnit, TargetAttention, minibatch_aware_l2  # noqa: E402
from .hiformer import HeterogeneousAttention, HiformerLayer  # noqa: E402

__all__ += [
    "DAREAttention",
    "DINAttention",
    "Dice",
    "HeterogeneousAttention",
    "HiformerLayer",
    "LocalActivationUnit",
    "TargetAttention",
    "minibatch_aware_l2",
]

# Drop-in fused replacements for PyG's attention layers, and the ragged-input helper.
__all__ += [
    "GATConv",
    "GATv2Conv",
    "Segments",
    "TransformerConv",
    "to_segments",
]

# Heterogeneous (LATTE) and graph-aware (GIN-Attention) attention.
from .gin_attention import GINAttention, HeadwiseMLP, SparseGINAdapter, WeightedGINConv  # noqa: E402
from .latte import LATTEConv, compose_meta_relations, meta_relations  # noqa: E402

__all__ += [
    "GINAttention",
    "HeadwiseMLP",
    "LATTEConv",
    "SparseGINAdapter",
    "WeightedGINConv",
    "compose_meta_relations",
    "meta_relations",
]
