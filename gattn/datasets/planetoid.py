"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from the original raw files, offline.

The raw files are Planetoid's pickles ``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}``
(Yang et al. 2016), in ``<root>/planetoid/<Name>/raw`` (``<Name>`` as PyG spells it: ``Cora``,
``CiteSeer``, ``PubMed``). PyG's :class:`~torch_geometric.datasets.Planetoid` reads them (the
public split: 20 labelled nodes per class, 500 validation and 1,000 test nodes); it processes
them in a temporary folder, so the data folder may be read-only and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from torch_geometric.data import Data

from .root import register_source

__all__ = ["PLANETOID_DATASETS", "available", "load_planetoid"]

#: PyG's spelling of the Planetoid sets (folder names under ``<root>/planetoid``)
PLANETOID_DATASETS = ("Cora", "CiteSeer", "PubMed")
_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def _raw_files(name: str, raw: Path) -> list[Path]:
    return [raw / f"ind.{name.lower()}.{part}" for part in _PARTS]


def load_planetoid(name: str, raw: str | os.PathLike) -> Data:
    """One Planetoid graph with its public split, from the raw files in folder ``raw``.

    Args:
        name (str): ``"Cora"``, ``"CiteSeer"`` or ``"PubMed"``.
        raw (str or os.PathLike): the folder holding ``ind.<name>.*`` (e.g. ``<root>/planetoid/Cora/raw``).

    Returns:
        ``Data`` with ``x``, ``edge_index``, ``y`` and ``train_mask`` / ``val_mask`` /
        ``test_mask``.

    Raises:
        ValueError: an unknown ``name``.
        FileNotFoundError: naming every missing raw file and the folder searched.
    """
    from torch_geometric.datasets import Planetoid

    if name not in PLANETOID_DATASETS:
        raise ValueError(f"`name` must be one of {', '.join(PLANETOID_DATASETS)}, got {name!r}")
    raw = Path(raw).expanduser()
    missing = [p.name for p in _raw_files(name, raw) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{name} raw file(s) {', '.join(missing)} not found in folder {raw.resolve()}")
    with tempfile.TemporaryDirectory(prefix="gattn-planetoid-") as root:
        (Path(root) / name).mkdir()
        (Path(root) / name / "raw").symlink_to(raw.resolve(), target_is_directory=True)
        # PyG announces its processing of a temporary copy on stderr: noise here
        with contextlib.redirect_stderr(io.StringIO()):
            return Planetoid(root, name)[0]


@register_source("planetoid", folder="planetoid")
def available(root: str | os.PathLike) -> list[tuple[str, bool, str]]:
    """``(name, present, detail)`` for ``<root>/<Name>/raw`` of each Planetoid set, ``root``
    being the data root's ``planetoid`` folder.

    Args:
        root (str or os.PathLike): the data root's ``planetoid`` folder.
    """
    rows = []
    for name in PLANETOID_DATASETS:
        raw = Path(root) / name / "raw"
        files = _raw_files(name, raw)
        missing = [p.name for p in files if not p.is_file()]
        if len(missing) == len(files):
            detail = f"missing (looked for ind.{name.lower()}.* in {raw})"
        else:
            detail = str(raw) if not missing else f"incomplete, missing in {raw}: {', '.join(missing)}"
        rows.append((name, not missing, detail))
    return rows
