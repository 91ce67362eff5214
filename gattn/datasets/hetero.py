"""Heterogeneous graphs into PyG ``HeteroData``: the HeCo layout, and PyG's HGB / DBLP / IMDB
raw files when they are present locally.

The HeCo layout (Wang et al., "Self-supervised Heterogeneous Graph Neural Network with
Co-contrastive Learning", KDD 2021), one folder per data set, e.g. ``<root>/acm``::

    <s><d>.txt                 one relation per file, named by the one-letter node types of its
                               two columns (ACM: pa.txt, ps.txt; DBLP: pa.txt, pc.txt, pt.txt;
                               Freebase: ma.txt, md.txt, mw.txt); two integer node ids a line
    <t>_feat.npz               features of node type t (a scipy sparse matrix, or a numpy
                               .npz holding one array); <t>_feat.npy is read too
    labels.npy                 one class per node of the target type
    {train,val,test}_<n>.npy   node indices of the target type, n labelled nodes per class
    <t>...<t>.npz              meta-path adjacency matrices (pap.npz, psp.npz); optional
    nei_*.npy, pos.npz         HeCo's contrastive-learning inputs; not read

Every relation file present is read (nothing is hard-coded per data set). Node types are the
file letters (``"p"``, ``"a"``, ...; give ``node_type_names`` for readable names); the
relation in file ``pa.txt`` becomes the edge type ``("p", "pa", "a")`` and, with
``add_reverse=True``, its reverse ``("a", "ap", "p")``. The target type (the one ``labels.npy``
labels) is ``target`` when given, else the common first letter of the meta-path files, else
the one node type whose size equals the number of labels.

Node counts come from the feature file of a type, from ``labels.npy`` for the target, and from
the largest id in the relation files otherwise. Node types without features get
``featureless="embedding"`` (no ``x``, only ``num_nodes``: the model learns an embedding, as
:class:`gattn.models.LATTE` does) or ``"onehot"`` (``x`` is the identity, ``num_nodes ** 2``
floats: meant for small types such as ACM's 60 subjects).

Missing files raise :class:`FileNotFoundError` naming the file and the folder searched;
malformed relation rows are counted and reported with their line numbers; ids outside a
type's range are reported with file and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ._paths import require_file
from .root import register_source

__all__ = [
    "HECO_DATASETS",
    "available",
    "is_metapath",
    "load_heco",
    "load_pyg_hetero",
    "read_relation_file",
]

#: Data sets published in the HeCo layout (folder names under ``<root>/hetero``).
HECO_DATASETS = ("acm", "dblp", "imdb", "freebase", "aminer")
_RELATION_FILE = re.compile(r"^([a-z])([a-z])\.txt$")
_FEATURE_FILE = re.compile(r"^([a-z])_feat\.(npz|npy)$")
_METAPATH_FILE = re.compile(r"^([a-z])([a-z]+)\1\.npz$")
_MAX_REPORTED = 10


def is_metapath(relation: str) -> bool:
    """Whether ``relation`` (the middle name of an edge type) is a meta-path read from a
    ``<t>...<t>.npz`` file (``"pap"``), not a relation file or its reverse (``"pa"``, ``"ap"``).

    Args:
        relation (str): the middle name of an edge type.
    """
    return _METAPATH_FILE.match(f"{relation}.npz") is not None


def read_relation_file(path: str | Path) -> np.ndarray:
    """Read one HeCo relation file: two non-negative integer ids per line -> int64 [E, 2].

    Blank lines are skipped. Any other line that is not exactly two non-negative integers
    is malformed: all of them are counted and the first ones reported with line numbers.

    Args:
        path (str or Path): the relation file.
    """
    path = require_file(path, "relation")
    try:  # the fast path; on any failure the line scan below says exactly what is wrong
        rows = np.loadtxt(path, dtype=np.int64, ndmin=2)
        if rows.shape[1] == 2 and (rows >= 0).all():
            return rows
        if rows.size == 0:
            return rows.reshape(0, 2)
    except ValueError:
        pass
    rows, bad = [], []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 2 and all(f.isdigit() for f in fields):
                rows.append((int(fields[0]), int(fields[1])))
            else:
                bad.append(f"line {number}: {line.rstrip()!r}")
    if bad:
        shown = "; ".join(bad[:_MAX_REPORTED])
        raise ValueError(
            f"{path}: {len(bad)} malformed row(s) (expected two non-negative integer ids per "
            f"line): {shown}{' ...' if len(bad) > _MAX_REPORTED else ''}"
        )
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def _read_features(path: Path) -> Tensor:
    """A scipy sparse .npz, a numpy .npz holding one array, or a .npy -> dense float32."""
    if path.suffix == ".npy":
        array = np.load(path)
    else:
        import scipy.sparse as sp

        try:
            array = sp.load_npz(path).toarray()
        except (ValueError, KeyError):  # not a scipy sparse file: a plain numpy archive
            with np.load(path) as archive:
                if len(archive.files) != 1:
                    raise ValueError(
                        f"{path}: expected a scipy sparse matrix or one array, found arrays "
                        f"{archive.files}"
                    ) from None
                array = archive[archive.files[0]]
    if array.ndim != 2:
        raise ValueError(f"{path}: features must be a 2-D matrix, got shape {array.shape}")
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _read_labels(path: Path) -> Tensor:
    labels = np.load(require_file(path, "labels"))
    if labels.ndim == 2:  # one-hot rows
        if not ((labels == 0) | (labels == 1)).all() or not (labels.sum(1) == 1).all():
            raise ValueError(f"{path}: a 2-D labels array must be one-hot rows")
        labels = labels.argmax(1)
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.floating) and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)  # HeCo's ACM stores its classes as floats
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError(f"{path}: labels must be non-negative integer classes [N], got "
                         f"dtype {labels.dtype}, shape {labels.shape}")
    return torch.from_numpy(labels.astype(np.int64))


def _infer_target(
    folder: Path, target: str | None, node_types: set[str], counts: dict[str, int], num_labels: int
) -> str:
    if target is not None:
        if target not in node_types:
            raise ValueError(f"`target`={target!r} is not a node type of {folder} "
                             f"(found {sorted(node_types)})")
        return target
    starts = {m.group(1) for f in folder.iterdir() if (m := _METAPATH_FILE.match(f.name))}
    if len(starts) == 1 and starts <= node_types:
        return starts.pop()
    matches = [t for t in sorted(node_types) if counts.get(t) == num_labels]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(
        f"cannot tell which node type labels.npy ({num_labels} labels) belongs to in {folder}: "
        f"node counts {counts}; pass `target`"
    )


def load_heco(
    folder: str | Path,
    split: int = 20,
    *,
    target: str | None = None,
    featureless: str = "embedding",
    add_reverse: bool = True,
    metapaths: bool = False,
    node_type_names: Mapping[str, str] | None = None,
) -> HeteroData:
    """Read a data set in the HeCo layout (see the module docstring) into ``HeteroData``.

    Args:
        folder (str or Path): the data set's folder, e.g. ``../shared/data/hetero/acm``.
        split (int, optional): labelled nodes per class of the split to read (``train_<split>.npy`` ...; HeCo
            ships 20, 40 and 60). Sets ``train_mask``, ``val_mask``, ``test_mask`` on the
            target type. (default: ``20``)
        target (str, optional): the labelled node type (a file letter); ``None`` infers it.
            (default: ``None``)
        featureless (str, optional): ``"embedding"`` (default: node types without a feature file get
            ``num_nodes`` only) or ``"onehot"`` (they get an identity ``x``).
        add_reverse (bool, optional): also store every relation reversed (message passing in both directions).
            (default: ``True``)
        metapaths (bool, optional): also read the meta-path adjacency files (``pap.npz`` -> edge type
            ``("p", "pap", "p")``). (default: ``False``)
        node_type_names (Mapping[str, str], optional): optional map from file letters to node type names
            (``{"p": "paper", ...}``); edge type names keep the letters. (default: ``None``)

    Returns:
        ``HeteroData`` with ``x`` (or ``num_nodes``) per node type, ``edge_index`` per
        relation, and ``y`` plus the three masks on the target type; ``data.target_type``
        names the target type and ``data.num_classes`` the number of classes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"HeCo data folder {folder} not found")
    if featureless not in ("embedding", "onehot"):
        raise ValueError(f"`featureless` must be 'embedding' or 'onehot', got {featureless!r}")
    if isinstance(split, bool) or not isinstance(split, int) or split < 1:
        raise ValueError(f"`split` must be a positive int (labelled nodes per class), got {split!r}")
    names = dict(node_type_names or {})

    relation_files = sorted(f for f in folder.iterdir() if _RELATION_FILE.match(f.name))
    if not relation_files:
        raise FileNotFoundError(
            f"no relation file (two-letter name such as 'pa.txt') found in folder {folder}"
        )
    relations = {f: read_relation_file(f) for f in relation_files}
    features: dict[str, Tensor] = {}
    for f in sorted(folder.iterdir()):
        match = _FEATURE_FILE.match(f.name)
        if match and match.group(1) not in features:
            features[match.group(1)] = _read_features(f)
    labels = _read_labels(folder / "labels.npy")

    node_types = {letter for f in relation_files for letter in f.stem}
    counts = {t: int(x.size(0)) for t, x in features.items()}
    largest: dict[str, int] = {}
    for f, rows in relations.items():
        for column, letter in enumerate(f.stem):
            if len(rows):
                largest[letter] = max(largest.get(letter, -1), int(rows[:, column].max()))
    for letter in node_types:
        counts.setdefault(letter, largest.get(letter, -1) + 1)
    target = _infer_target(folder, target, node_types, counts, labels.numel())
    if target in features and counts[target] != labels.numel():
        raise ValueError(f"{folder}: labels.npy has {labels.numel()} labels but "
                         f"{target}_feat has {counts[target]} rows")
    counts[target] = labels.numel()  # the labels also count the target's isolated nodes

    data = HeteroData()
    name = lambda letter: names.get(letter, letter)
    for letter in sorted(node_types):
        if letter in features:
            data[name(letter)].x = features[letter]
        elif featureless == "onehot":
            data[name(letter)].x = torch.eye(counts[letter])
        else:
            data[name(letter)].num_nodes = counts[letter]
    for f, rows in relations.items():
        src, dst = f.stem
        for column, letter in enumerate(f.stem):
            over = np.nonzero(rows[:, column] >= counts[letter])[0] if len(rows) else []
            if len(over):
                raise ValueError(
                    f"{f}: {len(over)} id(s) in column {column + 1} out of range for node type "
                    f"{letter!r} ({counts[letter]} nodes), first at row {int(over[0]) + 1}: "
                    f"{int(rows[over[0], column])}"
                )
        edge_index = torch.from_numpy(rows.T.copy())
        data[name(src), f.stem, name(dst)].edge_index = edge_index
        if add_reverse:
            reverse = dst + src if src != dst else f"rev_{f.stem}"
            if (folder / f"{reverse}.txt").is_file():
                raise ValueError(
                    f"{folder}: both {f.name} and {reverse}.txt exist, so the reverse of {f.name} "
                    "would overwrite a relation file; pass add_reverse=False"
                )
            data[name(dst), reverse, name(src)].edge_index = edge_index.flip(0)
    if metapaths:
        import scipy.sparse as sp

        for f in sorted(folder.iterdir()):
            if _METAPATH_FILE.match(f.name):
                matrix = sp.load_npz(f).tocoo()
                letter = f.stem[0]
                if matrix.shape != (counts[letter], counts[letter]):
                    raise ValueError(f"{f}: expected a {counts[letter]} x {counts[letter]} "
                                     f"matrix, got {matrix.shape}")
                edge_index = torch.from_numpy(np.stack([matrix.col, matrix.row]).astype(np.int64))
                data[name(letter), f.stem, name(letter)].edge_index = edge_index

    store = data[name(target)]
    store.y = labels
    for part in ("train", "val", "test"):
        path = require_file(folder / f"{part}_{split}.npy", f"{part} split (split={split})")
        index = torch.from_numpy(np.load(path).astype(np.int64)).view(-1)
        if len(index) and (index.min() < 0 or index.max() >= labels.numel()):
            raise ValueError(f"{path}: indices must be in [0, {labels.numel()}), got "
                             f"[{int(index.min())}, {int(index.max())}]")
        mask = torch.zeros(labels.numel(), dtype=torch.bool)
        mask[index] = True
        store[f"{part}_mask"] = mask
    data.target_type = name(target)
    data.num_classes = int(labels.max()) + 1
    return data


#: PyG data set classes whose raw files may be present locally: name -> (class name, HGB name).
_PYG_SETS = {
    "hgb-acm": ("HGBDataset", "acm"),
    "hgb-dblp": ("HGBDataset", "dblp"),
    "hgb-imdb": ("HGBDataset", "imdb"),
    "hgb-freebase": ("HGBDataset", "freebase"),
    "dblp": ("DBLP", None),
    "imdb": ("IMDB", None),
}


def _pyg_class(name: str) -> tuple[type, dict]:
    import torch_geometric.datasets as pyg_datasets

    if name not in _PYG_SETS:
        raise ValueError(f"`name` must be one of {sorted(_PYG_SETS)}, got {name!r}")
    class_name, hgb_name = _PYG_SETS[name]
    return getattr(pyg_datasets, class_name), ({"name": hgb_name} if hgb_name else {})


def _pyg_raw_paths(name: str, root: Path) -> list[Path]:
    cls, kwargs = _pyg_class(name)
    if cls.__name__ == "HGBDataset":
        raw_dir = root / kwargs["name"] / "raw" / cls.names[kwargs["name"]]
        files = ["info.dat", "node.dat", "link.dat", "label.dat", "label.dat.test"]
    else:
        raw_dir = root / "raw"
        files = cls.raw_file_names.fget(None)
    return [raw_dir / f for f in files]


def load_pyg_hetero(name: str, root: str | Path) -> HeteroData:
    """One of PyG's heterogeneous node-classification sets from raw files already on disk.

    ``name``: ``"hgb-acm"``, ``"hgb-dblp"``, ``"hgb-imdb"``, ``"hgb-freebase"`` (PyG's
    ``HGBDataset``, raw files in ``<root>/<acm|...>/raw/<ACM|...>/``), ``"dblp"`` or ``"imdb"``
    (PyG's ``DBLP`` / ``IMDB``, raw files in ``<root>/raw/``). Nothing is downloaded: when a raw
    file is missing, :class:`FileNotFoundError` names every missing file and the folder
    searched. PyG processes the raw files once into ``<root>/.../processed`` (so ``root`` must
    be writable the first time).

    Args:
        name (str): the data set (one of PyG's raw sets: an HGB name, ``"dblp"``, ``"imdb"``).
        root (str or Path): the data root's ``hetero`` folder.
    """
    root = Path(root)
    paths = _pyg_raw_paths(name, root)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: raw file(s) {', '.join(missing)} not found in folder {paths[0].parent}"
        )
    cls, kwargs = _pyg_class(name)
    return cls(str(root), **kwargs)[0]


@register_source("hetero", folder="hetero")
def available(root: str | Path) -> list[tuple[str, bool, str]]:
    """``(name, present, detail)`` for the HeCo-layout folders ``<root>/<name>`` and PyG's raw
    sets (``<root>/hgb`` for HGBDataset, ``<root>/dblp``, ``<root>/imdb``) under ``root``, the
    data root's ``hetero`` folder.

    Args:
        root (str or Path): the data root's ``hetero`` folder.
    """
    root = Path(root)
    rows = []
    for name in HECO_DATASETS:
        folder = root / name
        if not folder.is_dir():
            rows.append((f"heco-{name}", False, f"missing folder {folder}"))
            continue
        has_relations = any(_RELATION_FILE.match(f.name) for f in folder.iterdir())
        has_labels = (folder / "labels.npy").is_file()
        ok = has_relations and has_labels
        rows.append((f"heco-{name}", ok, str(folder) if ok else
                     f"{folder} lacks {'relation files' if not has_relations else 'labels.npy'}"))
    for name in _PYG_SETS:
        paths = _pyg_raw_paths(name, root / ("hgb" if name.startswith("hgb-") else name))
        missing = [p.name for p in paths if not p.is_file()]
        rows.append((name, not missing, str(paths[0].parent) if not missing
                     else f"missing in {paths[0].parent}: {', '.join(missing)}"))
    return rows
