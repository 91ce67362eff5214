"""Whole models assembled from gattn.nn layers."""

from .baselines import GINE, PyGTransformer
from .encoders import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, AtomEncoder, BondEncoder, FeatureEmbedding
from .graph_transformer import BaseGraphModel, GraphTransformer, MLPReadout
from .label_dependent_attention import LabelDependentAttention, LabelDependentAttentionOutput
from .transicd import TransICD

# isort: split
# heterogeneous graphs: LATTE and its baselines
from .hetero import HAN, HGT, RGCN, HeteroInput
from .latte import LATTE, LATTEOutput

__all__ = ["GINE", "BaseGraphModel", "GraphTransformer", "MLPReadout", "PyGTransformer"]
__all__ += ["TransICD", "LabelDependentAttention", "LabelDependentAttentionOutput"]
__all__ += ["ATOM_FEATURE_DIMS", "BOND_FEATURE_DIMS", "AtomEncoder", "BondEncoder", "FeatureEmbedding"]

# Click-through-rate models.
from .ctr import DARE, DIN, CategoricalFeature, Hiformer, NumericFeature, SequenceFeature  # noqa: E402

__all__ += ["DARE", "DIN", "CategoricalFeature", "Hiformer", "NumericFeature", "SequenceFeature"]

__all__ += ["HAN", "HGT", "LATTE", "LATTEOutput", "RGCN", "HeteroInput"]
