"""Node classification graphs: ogbn-arxiv from its raw OGB files, or a random graph of any size.

``load_ogbn_arxiv(root)`` reads ``<root>/ogb/ogbn_arxiv/`` (or ``<root>/ogbn_arxiv``) in OGB's
raw layout: ``raw/edge.csv.gz`` (citing paper, cited paper), ``raw/node-feat.csv.gz`` (128
floats per node), ``raw/node-label.csv.gz`` (one of 40 subject areas) and the time split
``split/time/{train,valid,test}.csv.gz``. Edges are made undirected, as in OGB's examples.
Malformed rows are counted per file with line numbers (:mod:`gattn.datasets.ogb`'s reader).

``random_graph`` draws a graph of a given size (``ogbn-arxiv``: 169,343 nodes, 1,166,243
edges; ``ogbn-products``: 2,449,029 nodes, 61,859,140 edges) whose labels depend on the
neighbourhood: the class of node i is the arg-max of a fixed random projection of its own
features plus the mean of its in-neighbours', so a graph model can beat an MLP on it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch_geometric.data import Data

from .ogb import _Problems, _read_table

__all__ = ["SIZES", "load_ogbn_arxiv", "random_graph"]

#: (nodes, directed edges, features, classes) of the OGB graphs the random ones stand in for
SIZES = {"ogbn-arxiv": (169_343, 1_166_243, 128, 40), "ogbn-products": (2_449_029, 61_859_140, 100, 47)}


_CHUNK_EDGES = 1 << 22


def _masks(num_nodes: int, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    masks = {}
    for name, index in parts.items():
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[index] = True
        masks[f"{name}_mask"] = mask
    return masks


def random_graph(num_nodes: int, num_edges: int, num_features: int, num_classes: int, seed: int = 0,
                 split: tuple[float, float] = (0.6, 0.2)) -> Data:
    """A random directed graph with ``num_edges`` uniformly drawn edges (no self-loops), features
    ``x`` ~ N(0, 1), neighbourhood-dependent labels ``y`` and random train/val/test masks
    (``split``: the train and validation shares; the test set is the rest).

    Args:
        num_nodes (int): the number of nodes.
        num_edges (int): the number of directed edges drawn.
        num_features (int): the node feature size.
        num_classes (int): the number of labels.
        seed (int, optional): the random seed. (default: ``0``)
        split (tuple[float, float], optional): the train and validation shares.
            (default: ``(0.6, 0.2)``)
    """
    for name, value in (("num_nodes", num_nodes), ("num_edges", num_edges), ("num_features", num_features),
                        ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be >= 2 for a graph without self-loops, got {num_nodes}")
    generator = torch.Generator().manual_seed(seed)
    source = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    # a uniform other node: shift by 1..N-1 (no self-loop, still uniform)
    target = (source + torch.randint(1, num_nodes, (num_edges,), generator=generator)) % num_nodes
    x = torch.randn(num_nodes, num_features, generator=generator)
    degree = torch.bincount(target, minlength=num_nodes).clamp(min=1).unsqueeze(1)
    neighbourhood = torch.zeros_like(x)
    # in chunks of edges: x[source] whole is E x F floats (25 GB at ogbn-products' size)
    for start in range(0, num_edges, _CHUNK_EDGES):
        part = slice(start, start + _CHUNK_EDGES)
        neighbourhood.index_add_(0, target[part], x[source[part]])
    neighbourhood /= degree
    projection = torch.randn(num_features, num_classes, generator=generator)
    y = ((x + neighbourhood) @ projection).argmax(1)
    order = torch.randperm(num_nodes, generator=generator)
    n_train, n_val = int(split[0] * num_nodes), int(split[1] * num_nodes)
    masks = _masks(num_nodes, {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                               "test": order[n_train + n_val:]})
    return Data(x=x, edge_index=torch.stack([source, target]), y=y, num_nodes=num_nodes, **masks)


def load_ogbn_arxiv(root: str | Path) -> Data:
    """ogbn-arxiv from its raw files under ``root`` (see the module docstring).

    Args:
        root (str or Path): the folder of the raw files.

    Raises:
        FileNotFoundError: naming the missing files and the folders searched.
        ValueError: malformed rows (per file, with line numbers) or inconsistent sizes.
    """
    root = Path(root)
    folders = [root / "ogb" / "ogbn_arxiv", root / "ogbn_arxiv"]
    needed = ["raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz",
              *(f"split/time/{part}.csv.gz" for part in ("train", "valid", "test"))]
    folder = next((f for f in folders if all((f / n).is_file() for n in needed)), None)
    if folder is None:
        missing = [n for n in needed if not (folders[0] / n).is_file()]
        raise FileNotFoundError(f"ogbn-arxiv not found: looked for {', '.join(missing)} under "
                                f"{' and '.join(str(f) for f in folders)}")
    problems = _Problems()
    tables = {name: _read_table(folder / name, name, problems,
                                ncols={"raw/edge.csv.gz": 2, "raw/node-feat.csv.gz": None}.get(name, 1))
              for name in needed}
    if problems:
        raise ValueError(problems.report(folder))
    x = torch.as_tensor(tables["raw/node-feat.csv.gz"], dtype=torch.float32)
    y = torch.as_tensor(tables["raw/node-label.csv.gz"][:, 0], dtype=torch.long)
    edges = torch.as_tensor(tables["raw/edge.csv.gz"], dtype=torch.long).t()
    num_nodes = x.size(0)
    if y.numel() != num_nodes:
        raise ValueError(f"{folder}: node-label has {y.numel()} rows, node-feat has {num_nodes}")
    files = {"train": "split/time/train.csv.gz", "val": "split/time/valid.csv.gz", "test": "split/time/test.csv.gz"}
    parts = {name: torch.as_tensor(tables[file][:, 0], dtype=torch.long) for name, file in files.items()}
    for label, ids in (("raw/edge.csv.gz", edges.reshape(-1)), *((files[k], v) for k, v in parts.items())):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_nodes):
            raise ValueError(f"{folder}: {label} holds node ids outside [0, {num_nodes})")
    edge_index = torch.cat([edges, edges.flip(0)], 1)
    return Data(x=x, edge_index=edge_index, y=y, num_nodes=num_nodes, **_masks(num_nodes, parts))
