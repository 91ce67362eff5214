"""Loaders: each source's raw files -> PyG data or tensors. One module per source.

Each module has `available(root)` listing what it finds locally (`gattn datasets`).
"""

from .ogb import OGBGraphPropDataset
from .ogb import evaluator as ogb_evaluator
from .sbm import SBMDataset, generate_sbm

__all__ = ["OGBGraphPropDataset", "SBMDataset", "generate_sbm", "ogb_evaluator"]
