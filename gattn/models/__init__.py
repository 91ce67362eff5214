"""Whole models assembled from gattn.nn layers."""

from .baselines import GINE, PyGTransformer
from .graph_transformer import BaseGraphModel, GraphTransformer, MLPReadout

__all__ = ["GINE", "BaseGraphModel", "GraphTransformer", "MLPReadout", "PyGTransformer"]
