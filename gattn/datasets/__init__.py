"""Loaders: each source's raw files -> PyG data or tensors. One module per source.

Each module has `available(root)` listing what it finds locally (`gattn datasets`).
"""

from .mil import (
    BagLoader,
    MILBags,
    cross_validation_folds,
    digit_bags,
    load_mil,
    read_mil_csv,
    read_mil_mat,
    read_musk_data,
)
from .ogb import OGBGraphPropDataset
from .ogb import evaluator as ogb_evaluator
from .sbm import SBMDataset, generate_sbm

__all__ = [
    "BagLoader",
    "MILBags",
    "OGBGraphPropDataset",
    "SBMDataset",
    "cross_validation_folds",
    "digit_bags",
    "generate_sbm",
    "load_mil",
    "ogb_evaluator",
    "read_mil_csv",
    "read_mil_mat",
    "read_musk_data",
]
