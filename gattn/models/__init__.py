"""Whole models assembled from gattn.nn layers."""

from .baselines import GINE, PyGTransformer
from .encoders import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, AtomEncoder, BondEncoder, FeatureEmbedding
from .graph_transformer import BaseGraphModel, GraphTransformer, MLPReadout
from .label_dependent_attention import LabelDependentAttention, LabelDependentAttentionOutput
from .transicd import TransICD

__all__ = ["GINE", "BaseGraphModel", "GraphTransformer", "MLPReadout", "PyGTransformer"]
__all__ += ["TransICD", "LabelDependentAttention", "LabelDependentAttentionOutput"]
__all__ += ["ATOM_FEATURE_DIMS", "BOND_FEATURE_DIMS", "AtomEncoder", "BondEncoder", "FeatureEmbedding"]

# Click-through-rate models.
from .ctr import DARE, DIN, CategoricalFeature, Hiformer, NumericFeature, SequenceFeature  # noqa: E402

__all__ += ["DARE", "DIN", "CategoricalFeature", "Hiformer", "NumericFeature", "SequenceFeature"]

# Heterogeneous graphs (LATTE and its baselines) and GIN-Attention.
from .gin_attention import AttentionBlock, GraphAttentionClassifier, SequenceTransformer  # noqa: E402
from .hetero import HAN, HGT, RGCN, HeteroInput  # noqa: E402
from .latte import LATTE, LATTEOutput  # noqa: E402

__all__ += [
    "HAN", "HGT", "LATTE", "RGCN", "AttentionBlock", "GraphAttentionClassifier", "HeteroInput",
    "LATTEOutput", "SequenceTransformer",
]
