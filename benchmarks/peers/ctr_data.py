"""Behaviour-history data for the CTR comparisons, shared by gattn's side and the peer venv.

Only numpy (and pyarrow for files): the peer venv has no gattn, and both sides must build
byte-identical inputs from the same seed.

A split is a dict of numpy arrays: ``user_id``, ``item_id``, ``cate_id``, ``label`` [N] and
the histories as CSR: ``hist_offsets`` [N+1], ``hist_item_id`` and ``hist_cate_id`` [R]
(oldest first, most recent last). Ids are 1-based, 0 is padding. That is the parquet export
of the behaviour loader: columns ``user_id, item_id, cate_id, hist_item_id (list<int64>),
hist_cate_id (list<int64>), label``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

SCALARS = ("user_id", "item_id", "cate_id")
SEQUENCES = ("hist_item_id", "hist_cate_id")
COLUMNS = (*SCALARS, *SEQUENCES, "label")


def lognormal_lengths(count: int, max_len: int, seed: int, median_fraction: float = 0.125) -> np.ndarray:
    """History lengths: log-normal with median ``max_len * median_fraction``, its sigma set so
    that the expected longest of 1,024 draws is ``max_len``; clipped to [1, max_len]."""
    median = max(1.0, max_len * median_fraction)
    sigma = math.log(max_len / median) / statistics.NormalDist().inv_cdf(1 - 1 / 1024) if max_len > median else 0.0
    rng = np.random.default_rng(seed)
    lengths = np.exp(math.log(median) + sigma * rng.standard_normal(count))
    return np.clip(np.rint(lengths), 1, max_len).astype(np.int64)


def synthetic_split(
    count: int, max_len: int, seed: int, num_users: int = 50_000, num_items: int = 100_000,
    num_cates: int = 1_000, median_fraction: float = 0.125,
) -> dict[str, np.ndarray]:
    """Random samples with log-normal history lengths (ids 1-based; a synthetic data set)."""
    lengths = lognormal_lengths(count, max_len, seed, median_fraction)
    rng = np.random.default_rng(seed + 1)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = int(offsets[-1])
    items = rng.integers(1, num_items, rows)
    return {
        "user_id": rng.integers(1, num_users, count),
        "item_id": rng.integers(1, num_items, count),
        "cate_id": rng.integers(1, num_cates, count),
        "hist_offsets": offsets,
        "hist_item_id": items,
        "hist_cate_id": items % (num_cates - 1) + 1,  # an item's category is fixed, as in real data
        "label": rng.integers(0, 2, count).astype(np.float32),
    }


def read_split(path: str) -> dict[str, np.ndarray]:
    """A split from a parquet file with the columns of :data:`COLUMNS`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {table.column_names})")
    out: dict[str, np.ndarray] = {c: table.column(c).to_numpy().astype(np.int64) for c in SCALARS}
    out["label"] = table.column("label").to_numpy().astype(np.float32)
    offsets = None
    for name in SEQUENCES:
        column = table.column(name).combine_chunks()
        these = column.offsets.to_numpy().astype(np.int64)
        values = column.values.to_numpy().astype(np.int64)
        these, values = these - these[0], values[these[0]:these[-1]]
        if offsets is not None and not np.array_equal(offsets, these):
            raise ValueError(f"{path}: {SEQUENCES[0]} and {name} have different lengths in some rows")
        offsets, out[name] = these, values
    out["hist_offsets"] = offsets
    return out


def vocab_sizes(*splits: dict[str, np.ndarray]) -> dict[str, int]:
    """Table sizes (largest id + 1) of each id column over all splits."""
    sizes = {"user_id": 1, "item_id": 1, "cate_id": 1}
    for split in splits:
        for name, source in (("user_id", "user_id"), ("item_id", "item_id"), ("cate_id", "cate_id"),
                             ("item_id", "hist_item_id"), ("cate_id", "hist_cate_id")):
            if split[source].size:
                sizes[name] = max(sizes[name], int(split[source].max()) + 1)
    return sizes


def take(split: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The samples ``index`` of a split (histories gathered, offsets rebuilt)."""
    offsets = split["hist_offsets"]
    starts, ends = offsets[index], offsets[index + 1]
    lengths = ends - starts
    new_offsets = np.zeros(index.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    rows = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(int(new_offsets[-1]))
    out = {c: split[c][index] for c in (*SCALARS, "label")}
    out.update({c: split[c][rows] for c in SEQUENCES})
    out["hist_offsets"] = new_offsets
    return out


def padded(split: dict[str, np.ndarray], name: str, max_len: int, side: str) -> np.ndarray:
    """[N, max_len] ids of history ``name``, keeping the most recent ``max_len``; zeros pad the
    end (``side="post"``, DeepCTR-Torch's layout) or the start (``"pre"``, FuxiCTR's)."""
    offsets, values = split["hist_offsets"], split[name]
    count = offsets.size - 1
    lengths = np.minimum(offsets[1:] - offsets[:-1], max_len)
    out = np.zeros((count, max_len), dtype=np.int64)
    position = np.arange(max_len)
    shift = np.zeros_like(lengths) if side == "post" else max_len - lengths  # where the history starts
    valid = (position >= shift[:, None]) & (position < (shift + lengths)[:, None])
    # the last `lengths` values of each history, in order
    source = (offsets[1:] - lengths - shift)[:, None] + position
    out[valid] = values[source[valid]]
    return out


def batches(count: int, batch_size: int, seed: int | None) -> list[np.ndarray]:
    """Sample indices per batch, shuffled with ``seed`` (None: in order)."""
    order = np.arange(count) if seed is None else np.random.default_rng(seed).permutation(count)
    return [order[i:i + batch_size] for i in range(0, count, batch_size)]
