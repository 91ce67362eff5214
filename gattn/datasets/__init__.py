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

# isort: split
# CTR loaders (Criteo; behaviour sequences for DIN/DARE), kept apart so merges stay append-only
from .behaviour import (
    BehaviourData,
    BehaviourSplit,
    Interactions,
    build_behaviour_data,
    collate_behaviour,
    export_din_parquet,
    load_amazon,
    load_movielens,
    load_taobao,
    read_amazon,
    read_movielens,
    read_taobao,
)
from .criteo import CriteoData, CriteoProcessed, CriteoSplit, load_criteo, prepare_criteo

# isort: split
# clinical loaders (MIMIC-III), kept apart so merges stay append-only
from .mimic import MimicDocuments, MimicICD, load_icd_coding, load_notes, load_time_series

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
    # CTR loaders
    "BehaviourData",
    "BehaviourSplit",
    "CriteoData",
    "CriteoProcessed",
    "CriteoSplit",
    "Interactions",
    "build_behaviour_data",
    "collate_behaviour",
    "export_din_parquet",
    "load_amazon",
    "load_criteo",
    "load_movielens",
    "load_taobao",
    "prepare_criteo",
    "read_amazon",
    "read_movielens",
    "read_taobao",
    # clinical loaders
    "MimicDocuments",
    "MimicICD",
    "load_icd_coding",
    "load_notes",
    "load_time_series",
]
from .hetero import load_heco, load_pyg_hetero, read_relation_file

__all__ += ["load_heco", "load_pyg_hetero", "read_relation_file"]
