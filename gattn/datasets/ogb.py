"""OGB graph property prediction data sets, read offline from the OGB raw file layout.

The layout (one folder per data set, e.g. ``<root>/ogbg_molbace``)::

    mapping/mol.csv.gz                      SMILES and labels (optional, not read)
    raw/num-node-list.csv.gz                nodes per graph, one row per graph
    raw/num-edge-list.csv.gz                edges per graph (each undirected edge once)
    raw/node-feat.csv.gz                    one row per node, all graphs stacked
    raw/edge.csv.gz                         "src,dst" per edge, node ids local to the graph
    raw/edge-feat.csv.gz                    one row per edge
    raw/graph-label.csv.gz                  one row per graph, one column per task
    split/<split>/{train,valid,test}.csv.gz graph indices, one per row

The files are parsed here with pandas / numpy; nothing is downloaded. (The ``ogb`` package's
own loaders ask an interactive question when ``RELEASE_v1.txt`` is missing, and its PyG
data set fails to load its cache on torch >= 2.6.) As OGB does for the molecule sets, every
undirected edge becomes two directed edges, stored one after the other, with the same
edge features.

Missing files raise :class:`FileNotFoundError` naming every missing file and the folder that
was searched. Malformed rows (a wrong number of fields, a value that is not a number) are
counted per file and reported in a :class:`ValueError`; so are inconsistent counts (node
rows that do not add up to ``num-node-list``, edge ids outside their graph, ...).
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset

from .root import register_source

__all__ = ["OGBGraphPropDataset", "available", "canonical_name", "evaluator", "master_table"]

RAW_FILES = (
    "num-node-list.csv.gz",
    "num-edge-list.csv.gz",
    "node-feat.csv.gz",
    "edge.csv.gz",
    "edge-feat.csv.gz",
    "graph-label.csv.gz",
)
SPLIT_FILES = ("train.csv.gz", "valid.csv.gz", "test.csv.gz")
_MAX_EXAMPLES = 5


def master_table() -> pd.DataFrame:
    """OGB's table of graph property prediction data sets (``master.csv`` of the package).

    Located without importing ``ogb.graphproppred`` (whose import pulls in its loaders).
    Raises ModuleNotFoundError when the ``ogb`` package is not installed.
    """
    spec = importlib.util.find_spec("ogb")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the 'ogb' package is not installed (pip install ogb)")
    for location in spec.submodule_search_locations:
        path = Path(location) / "graphproppred" / "master.csv"
        if path.is_file():
            return pd.read_csv(path, index_col=0, keep_default_na=False)
    raise ModuleNotFoundError("the 'ogb' package has no graphproppred/master.csv")


def canonical_name(name: str) -> str:
    """``"ogbg_molbace"`` or ``"ogbg-molbace"`` (any case) -> ``"ogbg-molbace"``.

    Args:
        name (str): a data set name, with ``-`` or ``_``, any case.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str such as 'ogbg-molbace', got {name!r}")
    name = name.strip().lower()
    if name.startswith("ogbg_"):
        name = "ogbg-" + name[len("ogbg_") :]
    if not name.startswith("ogbg-"):
        raise ValueError(
            f"name must name an OGB graph property data set ('ogbg-...'), got {name!r}"
        )
    return name


def _folder_candidates(root: Path, name: str) -> list[Path]:
    return [root / name.replace("-", "_"), root / name]


def _meta(name: str) -> dict[str, Any] | None:
    try:
        table = master_table()
    except ModuleNotFoundError:
        return None
    if name not in table.columns:
        return None
    column = table[name]
    return {
        "num_tasks": int(column["num tasks"]),
        "eval_metric": str(column["eval metric"]),
        "task_type": str(column["task type"]),
        "split": str(column["split"]),
        "add_inverse_edge": str(column["add_inverse_edge"]) == "True",
    }


def _missing_files(folder: Path, split: str) -> list[str]:
    wanted = [f"raw/{f}" for f in RAW_FILES] + [f"split/{split}/{f}" for f in SPLIT_FILES]
    return [relative for relative in wanted if not (folder / relative).is_file()]


@register_source("ogb", folder="ogb")
def available(root: str | Path) -> list[tuple[str, bool, str]]:
    """Which OGB graph property data sets are present under ``root``.

    Returns one ``(name, present, detail)`` per data set OGB knows: ``detail`` is the folder
    when present, otherwise what is missing (the folder, or the files missing inside it).

    Args:
        root (str or Path): the data root's OGB folder.
    """
    root = Path(root)
    table = master_table()
    rows = []
    for name in table.columns:
        if not str(name).startswith("ogbg-"):
            continue
        split = str(table[name]["split"])
        folders = [f for f in _folder_candidates(root, name) if f.is_dir()]
        if not folders:
            expected = _folder_candidates(root, name)[0]
            rows.append((name, False, f"missing folder {expected}"))
            continue
        missing = _missing_files(folders[0], split)
        if missing:
            rows.append((name, False, f"missing in {folders[0]}: {', '.join(missing)}"))
        else:
            rows.append((name, True, str(folders[0])))
    return rows


class _Problems:
    """Malformed rows, counted per file, with the first few examples."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, file: str, message: str) -> None:
        self.counts[file] = self.counts.get(file, 0) + 1
        examples = self.examples.setdefault(file, [])
        if len(examples) < _MAX_EXAMPLES:
            examples.append(message)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def report(self, folder: Path) -> str:
        lines = [f"malformed rows in {folder}:"]
        for file, count in self.counts.items():
            lines.append(f"  {file}: {count} malformed row(s), e.g. " + "; ".join(
                self.examples[file]
            ))
        return "\n".join(lines)


def _parse_field(text: str, allow_empty: bool) -> float | None:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return float("nan") if allow_empty else None
    try:
        return float(text)
    except ValueError:
        return None


def _read_table(
    path: Path,
    relative: str,
    problems: _Problems,
    *,
    ncols: int | None = None,
    allow_missing: bool = False,
) -> np.ndarray:
    """Read a header-less numeric CSV (gzip) into a 2-D float64 or int64 array.

    Rows with the wrong number of fields or a non-numeric field are reported to
    ``problems`` and left out of the result (the caller raises before using it). Empty
    fields and "nan" are read as NaN only when ``allow_missing`` (graph labels).
    """
    if not allow_missing:
        try:
            frame = pd.read_csv(path, header=None, compression="gzip")
        except pd.errors.EmptyDataError:
            return np.zeros((0, ncols or 0), dtype=np.int64)
        except (pd.errors.ParserError, ValueError):
            frame = None
        if frame is not None:
            values = frame.to_numpy()
            good_width = ncols is None or values.shape[1] == ncols
            if good_width and values.dtype.kind in "iu":
                return values.astype(np.int64)
            if good_width and values.dtype.kind == "f" and not np.isnan(values).any():
                return values
    # Slow path: parse line by line to count and describe every malformed row.
    with gzip.open(path, "rt", newline="") as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = [line.split(",") for line in lines]
    if ncols is None:
        widths = [len(row) for row in rows if len(row) > 0]
        ncols = max(set(widths), key=widths.count) if widths else 0
    parsed: list[list[float]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != ncols:
            problems.add(relative, f"line {number}: expected {ncols} field(s), got {len(row)}")
            continue
        values = [_parse_field(field, allow_missing) for field in row]
        bad = [field for field, value in zip(row, values) if value is None]
        if bad:
            problems.add(relative, f"line {number}: not a number: {bad[0].strip()!r}")
            continue
        parsed.append(values)  # type: ignore[arg-type]
    array = np.asarray(parsed, dtype=np.float64).reshape(len(parsed), ncols)
    finite = array[np.isfinite(array)]
    if not allow_missing and np.array_equal(finite, np.round(finite)):
        return array.astype(np.int64)
    return array


class OGBGraphPropDataset(InMemoryDataset):
    r"""An OGB graph property prediction data set (``ogbg-*``) read from its raw files.

    Every graph is a :class:`~torch_geometric.data.Data` with ``x`` (long [N, F] atom
    features for the molecule sets, F = 9), ``edge_index`` (long [2, 2M]: each undirected
    bond in both directions), ``edge_attr`` (long [2M, 3] for molecules) and ``y`` (float
    [1, num_tasks]; a missing label stays NaN). ``num_nodes`` is stored explicitly.

    Args:
        name (str): ``"ogbg-molbace"`` or the folder name ``"ogbg_molbace"``.
        root (str or Path): folder that holds the data set folder (e.g. ``../shared/data/ogb``).
        split (str, optional): split folder under ``split/`` (default: the one OGB lists, ``scaffold``).
        transform (Callable, optional): as for any PyG data set. (default: ``None``)
        pre_transform (Callable, optional): as for any PyG data set. (default: ``None``)
        pre_filter (Callable, optional): as for any PyG data set. (default: ``None``)

    Attributes:
        num_tasks, task_type (``"binary classification"`` / ``"regression"`` / ...),
        eval_metric (``"rocauc"``, ``"rmse"``, ...), folder (where the files were read).
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        split: str | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
    ) -> None:
        if not isinstance(root, str | Path):
            raise TypeError(f"root must be a str or Path, got {type(root).__name__}")
        self.name = canonical_name(name)
        meta = _meta(self.name)
        self._meta = meta
        self.split_name = split or (meta["split"] if meta else "scaffold")
        root = Path(root)
        candidates = _folder_candidates(root, self.name)
        folders = [folder for folder in candidates if folder.is_dir()]
        if not folders:
            raise FileNotFoundError(
                f"{self.name}: folder not found; looked for {candidates[0]} "
                f"(or {candidates[1]}); expected files: "
                + ", ".join(f"raw/{f}" for f in RAW_FILES)
                + ", "
                + ", ".join(f"split/{self.split_name}/{f}" for f in SPLIT_FILES)
            )
        self.folder = folders[0]
        missing = _missing_files(self.folder, self.split_name)
        if missing:
            raise FileNotFoundError(
                f"{self.name}: missing file(s) in {self.folder}: " + ", ".join(missing)
            )
        if pre_filter is not None:
            raise ValueError(
                "pre_filter would renumber the graphs and break the official split; "
                "filter with the indices of get_idx_split() instead"
            )
        super().__init__(None, transform, pre_transform, None, log=False)
        data_list, self._split = self._read()
        if pre_transform is not None:
            data_list = [pre_transform(data) for data in data_list]
        self.data, self.slices = self.collate(data_list)

    # ------------------------------------------------------------------ reading
    def _read(self) -> tuple[list[Data], dict[str, Tensor]]:
        folder, problems = self.folder, _Problems()

        def read(relative: str, **kwargs: Any) -> np.ndarray:
            return _read_table(folder / relative, relative, problems, **kwargs)

        nodes_per_graph = read("raw/num-node-list.csv.gz", ncols=1)
        edges_per_graph = read("raw/num-edge-list.csv.gz", ncols=1)
        node_feat = read("raw/node-feat.csv.gz")
        edges = read("raw/edge.csv.gz", ncols=2)
        edge_feat = read("raw/edge-feat.csv.gz")
        num_tasks = self._meta["num_tasks"] if self._meta else None
        labels = read("raw/graph-label.csv.gz", ncols=num_tasks, allow_missing=True)
        splits = {
            key: read(f"split/{self.split_name}/{key}.csv.gz", ncols=1)
            for key in ("train", "valid", "test")
        }
        if problems:
            raise ValueError(problems.report(folder))

        errors = []
        nodes_per_graph = nodes_per_graph[:, 0]
        edges_per_graph = edges_per_graph[:, 0]
        num_graphs = nodes_per_graph.shape[0]
        if edges_per_graph.shape[0] != num_graphs:
            errors.append(
                f"num-edge-list has {edges_per_graph.shape[0]} rows, "
                f"num-node-list has {num_graphs}"
            )
        if (nodes_per_graph < 0).any() or (edges_per_graph < 0).any():
            errors.append("negative node or edge counts")
        if int(nodes_per_graph.sum()) != node_feat.shape[0]:
            errors.append(
                f"node-feat has {node_feat.shape[0]} rows, num-node-list adds up to "
                f"{int(nodes_per_graph.sum())}"
            )
        total_edges = int(edges_per_graph.sum())
        if edges.shape[0] != total_edges or edge_feat.shape[0] != total_edges:
            errors.append(
                f"edge has {edges.shape[0]} rows and edge-feat {edge_feat.shape[0]}, "
                f"num-edge-list adds up to {total_edges}"
            )
        if labels.shape[0] != num_graphs:
            errors.append(f"graph-label has {labels.shape[0]} rows for {num_graphs} graphs")
        if self._meta is not None and labels.shape[1] != self._meta["num_tasks"]:
            errors.append(
                f"graph-label has {labels.shape[1]} column(s), OGB lists "
                f"{self._meta['num_tasks']} task(s) for {self.name}"
            )
        for key, index in splits.items():
            if index.size and (index.min() < 0 or index.max() >= num_graphs):
                errors.append(f"split/{self.split_name}/{key} has indices outside [0, {num_graphs})")
        if not errors:
            graph_of_edge = np.repeat(np.arange(num_graphs), edges_per_graph)
            limit = nodes_per_graph[graph_of_edge]
            outside = (edges < 0).any(axis=1) | (edges >= limit[:, None]).any(axis=1)
            if outside.any():
                first = int(np.flatnonzero(outside)[0]) + 1
                errors.append(
                    f"edge has {int(outside.sum())} row(s) with node ids outside their graph "
                    f"(first at line {first})"
                )
        if errors:
            raise ValueError(f"{self.name} in {folder}: " + "; ".join(errors))

        node_feat_t = torch.from_numpy(
            node_feat if node_feat.dtype == np.int64 else node_feat.astype(np.float32)
        )
        edge_feat_t = torch.from_numpy(
            edge_feat if edge_feat.dtype == np.int64 else edge_feat.astype(np.float32)
        )
        edges_t = torch.from_numpy(edges.T.copy())  # [2, M]
        add_inverse = self._meta["add_inverse_edge"] if self._meta else True
        if add_inverse:
            # e0, reverse(e0), e1, reverse(e1), ...: the order OGB's own loader produces.
            edges_t = torch.stack([edges_t, edges_t.flip(0)], dim=2).reshape(2, -1)
            edge_feat_t = edge_feat_t.repeat_interleave(2, dim=0)
            edge_counts = (edges_per_graph * 2).tolist()
        else:
            edge_counts = edges_per_graph.tolist()
        labels_t = torch.from_numpy(labels.astype(np.float32))
        node_counts = nodes_per_graph.tolist()

        data_list = []
        for x, edge_index, edge_attr, y, num_nodes in zip(
            torch.split(node_feat_t, node_counts),
            torch.split(edges_t, edge_counts, dim=1),
            torch.split(edge_feat_t, edge_counts),
            labels_t.split(1),
            node_counts,
        ):
            data_list.append(
                Data(x=x, edge_index=edge_index, edge_attr=edge_attr, y=y, num_nodes=num_nodes)
            )
        split = {key: torch.from_numpy(index[:, 0].astype(np.int64)) for key, index in splits.items()}
        return data_list, split

    # ------------------------------------------------------------------ API
    def get_idx_split(self) -> dict[str, Tensor]:
        """The official split: ``{"train", "valid", "test"}`` -> LongTensor of graph ids."""
        return {key: value.clone() for key, value in self._split.items()}

    @property
    def num_tasks(self) -> int:
        return int(self._data.y.size(1))

    @property
    def task_type(self) -> str:
        if self._meta is not None:
            return self._meta["task_type"]
        y = self._data.y
        finite = y[~torch.isnan(y)]
        binary = bool(((finite == 0) | (finite == 1)).all())
        return "binary classification" if binary else "regression"

    @property
    def eval_metric(self) -> str:
        if self._meta is not None:
            return self._meta["eval_metric"]
        return "rocauc" if self.task_type == "binary classification" else "rmse"

    def evaluator(self) -> Any:
        """OGB's ``Evaluator`` for this data set (works offline)."""
        return evaluator(self.name)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.name!r}, graphs={len(self)}, tasks={self.num_tasks})"


def evaluator(name: str) -> Any:
    """``ogb.graphproppred.Evaluator`` for ``name`` ("ogbg-molbace" or "ogbg_molbace").

    The evaluator only reads ``master.csv`` from the installed ``ogb`` package; it needs no
    download and no network.

    Args:
        name (str): the data set (``"ogbg-molbace"`` or ``"ogbg_molbace"``).
    """
    from ogb.graphproppred import Evaluator

    return Evaluator(canonical_name(name))
