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

# LATTE and GIN-Attention subclass PyG's MessagePassing, and importing torch_geometric pulls in
# pandas and takes seconds: they are imported on first use, so `import gattn.nn` stays light.
_LAZY_EXPORTS = {
    "GINAttention": "gin_attention",
    "HeadwiseMLP": "gin_attention",
    "SparseGINAdapter": "gin_attention",
    "WeightedGINConv": "gin_attention",
    "LATTEConv": "latte",
    "compose_meta_relations": "latte",
    "meta_relations": "latte",
}
__all__ += list(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
