"""Behaviour sequences for target-attention CTR models (DIN, DARE): interaction logs ->
per-user chronological histories, one sample per target, ragged (no padding).

Sources and the columns read (nothing is downloaded; a missing file is named with the folder
searched):

* **MovieLens** (:func:`read_movielens`, :func:`load_movielens`), the GroupLens files:
  ml-100k ``u.data`` (tab: user, item, rating 1-5, unix time) with ``u.item`` (pipe
  separated, latin-1: item id, title, release date, video release date, IMDb URL, then 19 0/1
  genre flags in the order of ``u.genre``); ml-1m ``ratings.dat`` (``user::item::rating::time``)
  with ``movies.dat`` (``item::title::Genre1|Genre2``, latin-1); ml-20m (and ml-25m,
  ml-latest) ``ratings.csv`` (header ``userId,movieId,rating,timestamp``; half-star ratings)
  with ``movies.csv`` (header ``movieId,title,genres``, quoted titles). The target's category
  is its genres: ``category="genres"`` (default) makes the whole genre set one category
  (``"Action|Thriller"``), ``"first_genre"`` the first genre listed.
* **Amazon** (:func:`read_amazon`, :func:`load_amazon`), the SNAP 2014 files of the DIN paper's
  Electronics protocol: ``reviews_<Category>[_5].json[.gz]`` (one review per line with
  ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``) as the behaviours, and
  ``meta_<Category>.json[.gz]`` (``asin``, ``categories``: a list of category paths) for the
  category, the last entry of the first path (``categories[0][-1]``) as in DIN's scripts.
  Lines may be strict JSON or the python-literal "loose JSON" the 2014 files are written in
  (single quotes); both are read (a per-line loop: that format has no vectorised reader).
* **Taobao** (:func:`read_taobao`, :func:`load_taobao`): ``UserBehavior.csv``, no header: user
  id, item id, category id, behaviour type (``pv``, ``buy``, ``cart``, ``fav``), unix time.
  ``behaviours=`` chooses the types kept (default all four).

Every reader counts malformed rows (wrong number of fields, a value that does not convert, a
line that is not JSON, a missing field, an unknown behaviour type) and reports them with their
line numbers: ``on_malformed="warn"`` (default) leaves them out and warns (the report is also
in ``info["malformed"]``), ``"raise"`` raises. An interaction whose item has no category in the
item file gets the category ``"<unknown>"`` (counted in ``info["items_without_category"]``).

Samples (:func:`build_behaviour_data`): interactions are ordered per user by time (equal
times keep file order). Each target is one interaction, and its **history is the user's
interactions strictly earlier in time**: interactions at the same second as the target, the
target itself and everything later are never in it, so no sample sees its own future. With
``max_history=L`` the most recent L are kept. Labels:

* ``label="rating"``: every interaction is a target, positive when ``rating >=
  positive_rating`` (default 4, so 4 and 5 stars are positive, 1-3 negative). A pipeline that
  labels every interaction positive reports a meaningless AUC.
* ``label="sampled"``: every positive interaction (every interaction when
  ``positive_rating`` is None or the source has no ratings; else those rated at least
  ``positive_rating``) gives one positive sample and ``num_negatives`` negative samples
  with the same user, history and time, whose items are drawn uniformly (seeded, with
  replacement) from the items the user never interacted with.

The history holds every earlier interaction whatever its rating. Splits (``split=``):

* ``"leave_last_out"`` (default): per user, the last ``holdout`` targets in time go to test,
  the ``holdout`` before them to validation, the rest to training (a user with fewer targets
  fills test first, then validation). With one target per user in test, per-user GAUC is
  undefined in ``label="rating"`` mode; use ``holdout`` > 1 or ``"global_time"`` for GAUC.
* ``"global_time"``: cut at the time quantiles of the targets, ``time_split`` = (0.8, 0.1,
  0.1) by default: a target earlier than the first cut time is training, from it to the
  second cut validation, from the second cut on test (targets at a cut time all go to the
  later split).

Negatives follow their positive's split. A test sample's history holds the user's earlier
interactions of any split (they are its past). Targets with fewer than ``min_history``
history items are dropped (counted in ``info``). Ids are 1-based in sorted order of the raw
keys, over all interactions (so an item first seen in test has an id); 0 is padding.

Output: :class:`BehaviourData` with a :class:`BehaviourSplit` per split: per-sample
``user_id``, ``item_id``, ``cate_id`` (int64 [B]), ``label`` (float32 [B]), ``timestamp``
(int64 [B]) and the ragged histories ``hist_item_id``, ``hist_cate_id`` (int64 [R],
chronological, most recent last) with ``hist_ptr`` (int64 [B+1]). A split is a torch
Dataset (one sample per item, :func:`collate_behaviour` builds the ragged batch) and has a
vectorised :meth:`BehaviourSplit.batches`; both yield dicts with those keys.

Memory: every sample stores its own history, 16 bytes per history entry (item and category
ids), so a split takes ``16 x sum(history lengths)`` bytes: about 160 MB for ml-100k in
``label="rating"`` mode (10M entries), but quadratic in the users' interaction counts, so
large logs (ml-20m, Taobao) need ``max_history`` (at most ``16 x L`` bytes per sample).

Export for the peers (DeepCTR-Torch, FuxiCTR) on the same split: :func:`export_din_parquet`
writes ``<folder>/{train,val,test}.parquet`` with columns ``user_id``, ``item_id`` (target),
``cate_id`` (target), ``hist_item_id`` and ``hist_cate_id`` (list<int64>, chronological, most
recent last), ``label`` (int64 0/1), ids 1-based with 0 reserved for padding, and
``meta.json`` (the vocabulary sizes including index 0, the options, the split sizes).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._paths import find_first, require_file, resolve_root
from ._tables import FieldInfo, MalformedRows, iter_delimited
from .root import register_source

__all__ = [
    "BehaviourData",
    "BehaviourSplit",
    "Interactions",
    "available",
    "build_behaviour_data",
    "collate_behaviour",
    "export_din_parquet",
    "load_amazon",
    "load_movielens",
    "load_taobao",
    "read_amazon",
    "read_movielens",
    "read_taobao",
]

SPLITS = ("train", "val", "test")
UNKNOWN_CATEGORY = "<unknown>"
TAOBAO_BEHAVIOURS = ("pv", "buy", "cart", "fav")
#: the 19 genres of ml-100k's u.item flags, in file order (its u.genre)
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: named data sets: name -> (description, folder under the data root)
MOVIELENS = {
    "movielens-100k": ("MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies", "movielens/ml-100k"),
    "movielens-1m": ("MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies", "movielens/ml-1m"),
    "movielens-20m": ("MovieLens 20M: 20,000,263 ratings, 138,493 users, 26,744 movies", "movielens/ml-20m"),
}
AMAZON_FOLDER = "amazon"
RATING_COLUMNS = {"user": "int", "item": "int", "rating": "float", "time": "int"}
TAOBAO_FILE = "taobao/UserBehavior.csv"


# ------------------------------------------------------------------------------ containers
@dataclass
class BehaviourSplit(Dataset):
    """The samples of one split; histories ragged (values + CSR pointer).

    Attributes:
        user_id (Tensor): [B] int64 id of the user.
        item_id (Tensor): [B] int64 id of the target item.
        cate_id (Tensor): [B] int64 id of the target item's category.
        label (Tensor): [B] float32, 1 positive, 0 negative.
        timestamp (Tensor): [B] int64 the target interaction's unix time.
        hist_item_id (Tensor): [R] int64 the item histories, sample after sample,
            chronological within a sample (most recent last).
        hist_cate_id (Tensor): [R] int64 the category histories, in the same order.
        hist_ptr (Tensor): [B+1] int64; sample ``b``'s history is rows ``hist_ptr[b]:hist_ptr[b+1]``.
    """

    user_id: Tensor
    item_id: Tensor
    cate_id: Tensor
    label: Tensor
    timestamp: Tensor
    hist_item_id: Tensor
    hist_cate_id: Tensor
    hist_ptr: Tensor

    def __post_init__(self) -> None:
        b = self.label.numel()
        for name in ("user_id", "item_id", "cate_id", "timestamp"):
            if getattr(self, name).shape != (b,):
                raise ValueError(f"`{name}` must be [{b}], got {tuple(getattr(self, name).shape)}")
        if self.hist_ptr.shape != (b + 1,) or int(self.hist_ptr[0]) != 0:
            raise ValueError(f"`hist_ptr` must be [{b + 1}] starting at 0, got {tuple(self.hist_ptr.shape)}")
        r = int(self.hist_ptr[-1])
        if self.hist_item_id.shape != (r,) or self.hist_cate_id.shape != (r,):
            raise ValueError(f"`hist_item_id` and `hist_cate_id` must be [{r}] (hist_ptr[-1])")

    def __len__(self) -> int:
        return self.label.numel()

    @property
    def hist_lengths(self) -> Tensor:
        return self.hist_ptr[1:] - self.hist_ptr[:-1]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        start, end = int(self.hist_ptr[index]), int(self.hist_ptr[index + 1])
        return {
            "user_id": self.user_id[index], "item_id": self.item_id[index], "cate_id": self.cate_id[index],
            "label": self.label[index], "timestamp": self.timestamp[index],
            "hist_item_id": self.hist_item_id[start:end], "hist_cate_id": self.hist_cate_id[start:end],
        }

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> BehaviourSplit:
        """The samples ``indices`` (in that order) as a new split."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
        lengths = self.hist_lengths[idx]
        ptr = torch.zeros(idx.numel() + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=ptr[1:])
        rows = _ragged_rows(self.hist_ptr[idx], lengths, ptr)
        return BehaviourSplit(self.user_id[idx], self.item_id[idx], self.cate_id[idx], self.label[idx],
                              self.timestamp[idx], self.hist_item_id[rows], self.hist_cate_id[rows], ptr)

    def as_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in BATCH_KEYS}

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, Tensor]]:
        """Batch dicts (keys of ``BATCH_KEYS``; the histories as values + ``hist_ptr``) of
        ``batch_size`` samples, in order or shuffled with ``generator``."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.subset(order[start : start + batch_size]).as_dict()

    def __repr__(self) -> str:
        lengths = self.hist_lengths.float()
        mean = float(lengths.mean()) if len(self) else 0.0
        return (f"BehaviourSplit({len(self)} samples, {int(self.label.sum())} positive, "
                f"history length mean {mean:.1f} max {int(lengths.max()) if len(self) else 0})")


BATCH_KEYS = ("user_id", "item_id", "cate_id", "label", "timestamp", "hist_item_id", "hist_cate_id", "hist_ptr")


def _ragged_rows(starts: Tensor, lengths: Tensor, ptr: Tensor) -> Tensor:
    """Source rows of ragged segments (segment b: ``starts[b] : starts[b] + lengths[b]``)
    laid out back to back as described by ``ptr``."""
    return torch.arange(int(ptr[-1])) + torch.repeat_interleave(starts - ptr[:-1], lengths)


def collate_behaviour(samples: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Collate :class:`BehaviourSplit` items into a batch dict: per-sample values stacked,
    histories concatenated with their ``hist_ptr`` [b+1] (for ``DataLoader(collate_fn=...)``).

    Args:
        samples (Sequence[Mapping[str, Tensor]]): items of a :class:`BehaviourSplit`.
    """
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("user_id", "item_id", "cate_id", "label",
                                                                       "timestamp")}
    lengths = torch.tensor([s["hist_item_id"].numel() for s in samples], dtype=torch.long)
    ptr = torch.zeros(len(samples) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=ptr[1:])
    batch["hist_item_id"] = torch.cat([s["hist_item_id"] for s in samples])
    batch["hist_cate_id"] = torch.cat([s["hist_cate_id"] for s in samples])
    batch["hist_ptr"] = ptr
    return batch


@dataclass
class BehaviourData:
    """Train, validation and test samples with their field metadata.

    Attributes:
        train (BehaviourSplit): the training samples.
        val (BehaviourSplit): the validation samples.
        test (BehaviourSplit): the test samples.
        fields (list[gattn.datasets._tables.FieldInfo]): :class:`~gattn.datasets._tables.FieldInfo` of ``user_id``,
            ``item_id``, ``cate_id`` (categorical) and ``hist_item_id`` / ``hist_cate_id``
            (sequences sharing ``item_id`` / ``cate_id``'s tables); cardinalities include index 0.
        item_category (Tensor): [num_items + 1] int64, the category id of every item id (0 at 0).
        vocab (dict[str, np.ndarray]): ``"user_id"`` / ``"item_id"`` / ``"cate_id"`` -> the raw key of every id
            (entry 0 is None).
        info (dict, optional): the source, every option, sample counts, malformed-row reports.
    """

    train: BehaviourSplit
    val: BehaviourSplit
    test: BehaviourSplit
    fields: list[FieldInfo]
    item_category: Tensor
    vocab: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.vocab["user_id"]) - 1

    @property
    def num_items(self) -> int:
        return len(self.vocab["item_id"]) - 1

    @property
    def num_categories(self) -> int:
        return len(self.vocab["cate_id"]) - 1

    def __repr__(self) -> str:
        return (f"BehaviourData({self.info.get('name', '')}: {self.num_users} users, {self.num_items} items, "
                f"{self.num_categories} categories; train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)})")


@dataclass
class Interactions:
    """An interaction log as read from a source, before ids and samples.

    Attributes:
        user (np.ndarray): [n] raw user keys (ints or strings).
        item (np.ndarray): [n] raw item keys (ints or strings).
        timestamp (np.ndarray): [n] int64 unix time.
        rating (np.ndarray, optional): [n] float64, or None when the source has none (Taobao).
        item_keys (np.ndarray): the item keys with a category.
        item_categories (np.ndarray): the category token of each of ``item_keys`` (a key listed
            twice keeps its first token).
        name (str, optional): the source's name. (default: ``""``)
        malformed (list[dict], optional): the readers' malformed-row reports. (default: ``[]``)
        notes (dict, optional): other facts the reader counted (copied into the samples' ``info``).
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray | None
    item_keys: np.ndarray
    item_categories: np.ndarray
    name: str = ""
    malformed: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.user)
        if len(self.item) != n or len(self.timestamp) != n or (self.rating is not None and len(self.rating) != n):
            raise ValueError("`user`, `item`, `timestamp` (and `rating`) must have one entry per interaction")
        if len(self.item_keys) != len(self.item_categories):
            raise ValueError("`item_keys` and `item_categories` must have the same length")

    def __len__(self) -> int:
        return len(self.user)


# ------------------------------------------------------------------------------ samples
def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return value


def build_behaviour_data(
    interactions: Interactions,
    *,
    label: str = "rating",
    positive_rating: float | None = 4.0,
    num_negatives: int = 1,
    split: str = "leave_last_out",
    holdout: int = 1,
    time_split: Sequence[float] = (0.8, 0.1, 0.1),
    max_history: int | None = None,
    min_history: int = 0,
    seed: int = 0,
) -> BehaviourData:
    """Samples (target, history, label) per split from an interaction log.

    Args:
        interactions (Interactions): from a reader (:func:`read_movielens`, :func:`read_amazon`,
            :func:`read_taobao`) or built by hand.
        label (str, optional): ``"rating"`` (rating >= ``positive_rating`` is positive) or ``"sampled"``
            (positives plus ``num_negatives`` sampled negatives each); see the module docstring.
            (default: ``"rating"``)
        positive_rating (float, optional): the rating threshold (default 4.0). In ``"sampled"`` mode, None makes
            every interaction a positive.
        num_negatives (int, optional): negatives per positive in ``"sampled"`` mode (default 1).
        split (str, optional): ``"leave_last_out"`` (default) or ``"global_time"``.
        holdout (int, optional): targets per user in test and in validation for ``"leave_last_out"`` (default 1).
        time_split (Sequence[float], optional): (train, val, test) fractions of the targets for ``"global_time"``.
            (default: ``(0.8, 0.1, 0.1)``)
        max_history (int, optional): keep the most recent ``max_history`` history items (default: all).
        min_history (int, optional): drop targets with fewer history items (default 0: keep all).
        seed (int, optional): seeds the negative sampling. (default: ``0``)
    """
    if label not in ("rating", "sampled"):
        raise ValueError(f"`label` must be 'rating' or 'sampled', got {label!r}")
    if label == "rating" and (interactions.rating is None or positive_rating is None):
        raise ValueError(
            f"`label`='rating' needs ratings and a `positive_rating`; {interactions.name or 'this source'} "
            f"{'has no ratings' if interactions.rating is None else 'got positive_rating=None'}: use label='sampled'"
        )
    if split not in ("leave_last_out", "global_time"):
        raise ValueError(f"`split` must be 'leave_last_out' or 'global_time', got {split!r}")
    _check_int(num_negatives, "num_negatives", 1)
    _check_int(holdout, "holdout", 1)
    _check_int(min_history, "min_history", 0)
    if max_history is not None:
        _check_int(max_history, "max_history", 1)
        if min_history > max_history:
            raise ValueError(f"`min_history`={min_history} is more than `max_history`={max_history}: no target "
                             f"would be kept")
    _check_int(seed, "seed", 0)
    fractions = tuple(float(f) for f in time_split)
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"`time_split` must be three non-negative fractions summing to 1, got {time_split!r}")
    if len(interactions) == 0:
        raise ValueError(f"{interactions.name or 'interactions'}: no interactions")

    # ids (1-based, sorted raw keys) and each item's category
    user_keys, user = np.unique(interactions.user, return_inverse=True)
    item_keys, item = np.unique(interactions.item, return_inverse=True)
    user, item = user.astype(np.int64) + 1, item.astype(np.int64) + 1
    tokens, missing_category = _item_tokens(item_keys, interactions.item_keys, interactions.item_categories)
    category_keys, item_category = np.unique(tokens, return_inverse=True)
    item_category = np.concatenate([[0], item_category.astype(np.int64) + 1])
    num_items = len(item_keys)

    # chronological per user; equal times keep file order (a stable sort)
    order = np.lexsort((np.arange(len(user)), interactions.timestamp, user))
    user, item, time = user[order], item[order], np.asarray(interactions.timestamp, dtype=np.int64)[order]
    rating = None if interactions.rating is None else np.asarray(interactions.rating, dtype=np.float64)[order]
    position = np.arange(len(user))
    new_user = np.r_[True, user[1:] != user[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, position, 0))
    new_time = new_user | np.r_[True, time[1:] != time[:-1]]
    history_end = np.maximum.accumulate(np.where(new_time, position, 0))  # first interaction at this time

    if label == "rating":
        target = position
        target_label = (rating >= positive_rating).astype(np.float32)
    else:
        target = position if rating is None or positive_rating is None else np.flatnonzero(rating >= positive_rating)
        target_label = np.ones(target.size, dtype=np.float32)
    history_start = user_start[target]
    if max_history is not None:
        history_start = np.maximum(history_start, history_end[target] - max_history)
    short = history_end[target] - history_start < min_history
    target, target_label, history_start = target[~short], target_label[~short], history_start[~short]

    which = _assign_splits(user[target], time[target], split, holdout, fractions)

    # samples: every target, and in "sampled" mode its negatives right after it
    copies = 1 if label == "rating" else 1 + num_negatives
    sample_target = np.repeat(target, copies)
    sample_start = np.repeat(history_start, copies)
    sample_split = np.repeat(which, copies)
    sample_item = item[sample_target].copy()
    sample_label = np.repeat(target_label, copies)
    if label == "sampled":
        negative = np.tile(np.r_[False, np.ones(num_negatives, dtype=bool)], target.size)
        sample_label[negative] = 0.0
        sample_item[negative] = _sample_negatives(user[sample_target[negative]], user, item, num_items,
                                                  user_keys, np.random.default_rng(seed))

    splits = {}
    for index, name in enumerate(SPLITS):
        chosen = np.flatnonzero(sample_split == index)
        t = sample_target[chosen]
        starts = torch.from_numpy(sample_start[chosen])
        lengths = torch.from_numpy(history_end[t] - sample_start[chosen])
        ptr = torch.zeros(chosen.size + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=ptr[1:])
        rows = _ragged_rows(starts, lengths, ptr).numpy()
        hist_item = item[rows]
        splits[name] = BehaviourSplit(
            torch.from_numpy(user[t]), torch.from_numpy(sample_item[chosen]),
            torch.from_numpy(item_category[sample_item[chosen]]), torch.from_numpy(sample_label[chosen]),
            torch.from_numpy(time[t]), torch.from_numpy(hist_item), torch.from_numpy(item_category[hist_item]),
            ptr,
        )

    vocab = {
        "user_id": np.concatenate([[None], user_keys.astype(object)]),
        "item_id": np.concatenate([[None], item_keys.astype(object)]),
        "cate_id": np.concatenate([[None], category_keys.astype(object)]),
    }
    num_users, num_categories = len(user_keys), len(category_keys)
    fields = [
        FieldInfo("user_id", "categorical", num_users + 1, "user_id"),
        FieldInfo("item_id", "categorical", num_items + 1, "item_id"),
        FieldInfo("cate_id", "categorical", num_categories + 1, "cate_id"),
        FieldInfo("hist_item_id", "sequence", num_items + 1, "hist_item_id", shares="item_id"),
        FieldInfo("hist_cate_id", "sequence", num_categories + 1, "hist_cate_id", shares="cate_id"),
    ]
    info = {
        "name": interactions.name,
        "options": {"label": label, "positive_rating": positive_rating, "num_negatives": num_negatives,
                    "split": split, "holdout": holdout, "time_split": list(fractions), "max_history": max_history,
                    "min_history": min_history, "seed": seed},
        "interactions": len(interactions),
        "targets_dropped_by_min_history": int(short.sum()),
        "items_without_category": missing_category,
        "samples": {name: len(part) for name, part in splits.items()},
        "positives": {name: int(part.label.sum()) for name, part in splits.items()},
        "malformed": interactions.malformed,
        **interactions.notes,
    }
    return BehaviourData(splits["train"], splits["val"], splits["test"], fields, torch.from_numpy(item_category),
                         vocab, info)


def _item_tokens(items: np.ndarray, keys: np.ndarray, categories: np.ndarray) -> tuple[np.ndarray, int]:
    """The category token of every item in `items` (sorted unique), "<unknown>" when `keys`
    has none; and how many had none."""
    tokens = np.full(len(items), UNKNOWN_CATEGORY, dtype=object)
    if len(keys):
        unique_keys, first = np.unique(np.asarray(keys), return_index=True)
        where = np.clip(np.searchsorted(unique_keys, items), 0, len(unique_keys) - 1)
        found = unique_keys[where] == items
        tokens[found] = np.asarray(categories, dtype=object)[first[where[found]]]
    else:
        found = np.zeros(len(items), dtype=bool)
    return tokens.astype(str), int((~found).sum())


def _assign_splits(user: np.ndarray, time: np.ndarray, split: str, holdout: int,
                   fractions: tuple[float, float, float]) -> np.ndarray:
    """0/1/2 (train/val/test) per target; targets are sorted by user, then time."""
    if split == "leave_last_out":
        if user.size == 0:
            return np.zeros(0, dtype=np.int8)
        new_user = np.r_[True, user[1:] != user[:-1]]
        group = np.cumsum(new_user) - 1
        position = np.arange(user.size)
        rank = position - np.maximum.accumulate(np.where(new_user, position, 0))
        from_end = np.bincount(group)[group] - 1 - rank
        return np.where(from_end < holdout, 2, np.where(from_end < 2 * holdout, 1, 0)).astype(np.int8)
    ordered = np.sort(time)
    cuts = []
    for fraction in (fractions[0], fractions[0] + fractions[1]):
        index = int(math.floor(fraction * time.size + 1e-9))
        cuts.append(ordered[index] if index < time.size else np.iinfo(np.int64).max)
    return np.searchsorted(np.asarray(cuts), time, side="right").astype(np.int8)


def _sample_negatives(users: np.ndarray, all_users: np.ndarray, all_items: np.ndarray, num_items: int,
                      user_keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per entry of `users`, drawn uniformly from the items that user never
    interacted with (rejection sampling, vectorised)."""
    stride = np.int64(num_items + 1)
    seen = np.unique(all_users * stride + all_items)
    distinct = np.bincount(seen // stride, minlength=int(all_users.max()) + 1)
    full = np.unique(users[distinct[users] >= num_items])
    if full.size:
        who = user_keys[full[0] - 1]
        raise ValueError(f"user {who!r} interacted with every one of the {num_items} items: no negative to sample")
    drawn = rng.integers(1, num_items + 1, size=users.size)
    todo = np.arange(users.size)
    while todo.size:
        keys = users[todo] * stride + drawn[todo]
        hit = np.minimum(np.searchsorted(seen, keys), seen.size - 1)
        todo = todo[seen[hit] == keys]
        drawn[todo] = rng.integers(1, num_items + 1, size=todo.size)
    return drawn


# ------------------------------------------------------------------------------ readers
def _finish(report: MalformedRows, reports: list[dict]) -> None:
    reports.append(report.to_dict())
    report.finish()


def _read_columns(
    path: Path,
    columns: dict[str, str],
    report: MalformedRows,
    *,
    output: Sequence[str],
    required: Sequence[str] | None = None,
    keep: Callable[[pa.RecordBatch, np.ndarray], np.ndarray] | None = None,
    **kwargs,
) -> dict[str, np.ndarray]:
    """The `output` columns of every valid row of a delimited file (:func:`iter_delimited`)
    as numpy arrays. ``keep(batch, lines)``, if given, returns the rows to keep (a boolean
    mask) and reports the malformed ones it finds."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in output}
    required = list(columns) if required is None else required
    for batch, lines in iter_delimited(path, columns, report, required=required, **kwargs):
        mask = None if keep is None else keep(batch, lines)
        for name in output:
            values = batch.column(name).to_numpy(zero_copy_only=False)
            parts[name].append(values if mask is None else values[mask])
    return {name: np.concatenate(chunks) if chunks else np.empty(0) for name, chunks in parts.items()}


def _genre_token(genres: Sequence[str], category: str) -> str:
    if not genres:
        return "(no genres listed)"
    return "|".join(genres) if category == "genres" else genres[0]


def read_movielens(
    folder: str | os.PathLike, *, category: str = "genres", on_malformed: str = "warn"
) -> Interactions:
    """Read a MovieLens folder: ml-100k (``u.data`` + ``u.item``), ml-1m (``ratings.dat`` +
    ``movies.dat``) or ml-20m style (``ratings.csv`` + ``movies.csv``), whichever is there.

    Args:
        folder (str or os.PathLike): the folder holding the files.
        category (str, optional): ``"genres"`` (the genre set as one category) or
            ``"first_genre"``. (default: ``"genres"``)
        on_malformed (str, optional): ``"warn"`` or ``"raise"``. (default: ``"warn"``)
    """
    if category not in ("genres", "first_genre"):
        raise ValueError(f"`category` must be 'genres' or 'first_genre', got {category!r}")
    folder = Path(folder).expanduser()
    ratings = find_first(folder, ("u.data", "ratings.dat", "ratings.csv"), "MovieLens ratings")
    reports: list[dict] = []
    report = MalformedRows(ratings, on_malformed)
    if ratings.name == "u.data":
        cols = _read_columns(ratings, RATING_COLUMNS, report, output=list(RATING_COLUMNS))
        keys, tokens = _ml100k_items(require_file(folder / "u.item", "MovieLens item"), category, on_malformed,
                                     reports)
    elif ratings.name == "ratings.dat":
        # "::" separated: read on ":" and require the fields between the colons to be empty
        spec = {"user": "int", "s1": "str", "item": "int", "s2": "str", "rating": "float", "s3": "str",
                "time": "int"}

        def separated(batch: pa.RecordBatch, lines: np.ndarray) -> np.ndarray:
            filled = np.zeros(batch.num_rows, dtype=bool)
            for name in ("s1", "s2", "s3"):
                filled |= batch.column(name).is_valid().to_numpy(zero_copy_only=False)
            report.add(lines[filled], "not '::' separated")
            return ~filled

        cols = _read_columns(ratings, spec, report, output=list(RATING_COLUMNS), required=list(RATING_COLUMNS),
                             keep=separated, delimiter=":")
        keys, tokens = _movies_file(require_file(folder / "movies.dat", "MovieLens item"), category, on_malformed,
                                    reports)
    else:
        _expect_header(ratings, ["userId", "movieId", "rating", "timestamp"])
        cols = _read_columns(ratings, RATING_COLUMNS, report, output=list(RATING_COLUMNS), delimiter=",",
                             skip_rows=1)
        keys, tokens = _movies_file(require_file(folder / "movies.csv", "MovieLens item"), category, on_malformed,
                                    reports)
    _finish(report, reports)
    return Interactions(cols["user"].astype(np.int64), cols["item"].astype(np.int64), cols["time"].astype(np.int64),
                        cols["rating"].astype(np.float64), keys, tokens, f"movielens:{folder.name}", reports)


def _expect_header(path: Path, names: list[str]) -> None:
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().strip().split(",")
    if first != names:
        raise ValueError(f"{path}: line 1 must be the header {','.join(names)}, got {','.join(first)[:80]!r}")


def _ml100k_items(path: Path, category: str, on_malformed: str, reports: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    spec = {"item": "int", "title": "str", "release": "str", "video": "str", "url": "str"}
    spec.update({f"g{j}": "int" for j in range(len(ML100K_GENRES))})
    report = MalformedRows(path, on_malformed)
    keys, tokens = [], []
    for batch, lines in iter_delimited(path, spec, report, delimiter="|", encoding="latin-1", required=["item"]):
        flags = np.stack([batch.column(f"g{j}").to_numpy(zero_copy_only=False) for j in range(len(ML100K_GENRES))],
                         axis=1)
        flags = np.nan_to_num(flags.astype(np.float64), nan=0.0)
        bad = ~np.isin(flags, (0, 1)).all(axis=1)
        report.add(lines[bad], "a genre flag is not 0 or 1")
        keys.append(batch.column("item").to_numpy(zero_copy_only=False)[~bad])
        tokens.extend(_genre_token([ML100K_GENRES[j] for j in np.flatnonzero(row)], category) for row in flags[~bad])
    _finish(report, reports)
    return (np.concatenate(keys) if keys else np.empty(0, np.int64)).astype(np.int64), np.asarray(tokens, dtype=object)


def _movies_file(path: Path, category: str, on_malformed: str, reports: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """ml-1m ``movies.dat`` (``id::title::genres``, latin-1) or ml-20m ``movies.csv`` (small
    files; titles contain the separators, so they are split by hand)."""
    report = MalformedRows(path, on_malformed)
    keys, tokens = [], []
    with open(path, encoding="latin-1" if path.suffix == ".dat" else "utf-8", newline="") as handle:
        if path.suffix == ".dat":
            rows = ((n, line.rstrip("\r\n").split("::")) for n, line in enumerate(handle, start=1))
        else:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != ["movieId", "title", "genres"]:
                raise ValueError(f"{path}: line 1 must be the header movieId,title,genres, got {header}")
            rows = ((reader.line_num, fields) for fields in reader)
        for line, fields in rows:
            report.rows_read += 1
            if len(fields) != 3:
                report.add([line], f"{len(fields)} field(s), expected 3")
                continue
            try:
                keys.append(int(fields[0]))
            except ValueError:
                report.add([line], f"movie id is not an integer: {fields[0][:20]!r}")
                continue
            genres = [] if fields[2] in ("", "(no genres listed)") else fields[2].split("|")
            tokens.append(_genre_token(genres, category))
    _finish(report, reports)
    return np.asarray(keys, dtype=np.int64), np.asarray(tokens, dtype=object)


def _open_text(path: Path) -> io.TextIOBase:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _json_lines(
    path: Path, report: MalformedRows, wanted: Mapping[str, tuple[type, ...]]
) -> Iterator[tuple[int, dict]]:
    """Records of a JSON-lines file, strict JSON or python literals (the 2014 SNAP files),
    with the `wanted` fields present and of one of the given types (never bool); others go
    to `report`."""
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.rows_read += 1
            try:
                record = json.loads(line)
            except ValueError:
                try:
                    record = ast.literal_eval(line.strip())
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    report.add([line_number], "neither JSON nor a python literal")
                    continue
            if not isinstance(record, dict):
                report.add([line_number], f"a {type(record).__name__}, expected an object")
                continue
            problem = next((f"field {name!r} missing or not {' or '.join(k.__name__ for k in kinds)}"
                            for name, kinds in wanted.items()
                            if not isinstance(record.get(name), kinds) or isinstance(record.get(name), bool)), None)
            if problem:
                report.add([line_number], problem)
                continue
            yield line_number, record


def read_amazon(
    reviews: str | os.PathLike, meta: str | os.PathLike, *, on_malformed: str = "warn"
) -> Interactions:
    """Read SNAP Amazon ``reviews_*.json[.gz]`` (the behaviours: ``reviewerID``, ``asin``,
    ``overall``, ``unixReviewTime``) and ``meta_*.json[.gz]`` (``asin``, ``categories``; the
    category is ``categories[0][-1]``). Strict JSON lines and python-literal lines both work.

    Args:
        reviews (str or os.PathLike): the ``reviews_*.json[.gz]`` file.
        meta (str or os.PathLike): the ``meta_*.json[.gz]`` file.
        on_malformed (str, optional): ``"warn"`` (count and report the malformed rows with their line
            numbers, skip them) or ``"raise"``. (default: ``"warn"``)
    """
    reviews = require_file(reviews, "Amazon reviews")
    meta = require_file(meta, "Amazon metadata")
    reports: list[dict] = []
    report = MalformedRows(reviews, on_malformed)
    users, items, times, ratings = [], [], [], []
    wanted = {"reviewerID": (str,), "asin": (str,), "overall": (int, float), "unixReviewTime": (int,)}
    for _, record in _json_lines(reviews, report, wanted):
        users.append(record["reviewerID"])
        items.append(record["asin"])
        ratings.append(float(record["overall"]))
        times.append(record["unixReviewTime"])
    _finish(report, reports)
    report = MalformedRows(meta, on_malformed)
    keys, tokens = [], []
    for line_number, record in _json_lines(meta, report, {"asin": (str,)}):
        paths = record.get("categories")
        if paths is None:
            continue  # an item without categories: "<unknown>", counted by the builder
        if not (isinstance(paths, list) and paths and isinstance(paths[0], list) and paths[0]
                and all(isinstance(c, str) for c in paths[0])):
            report.add([line_number], "field 'categories' is not a list of category paths")
            continue
        keys.append(record["asin"])
        tokens.append(paths[0][-1])
    _finish(report, reports)
    return Interactions(np.asarray(users, dtype=object).astype(str), np.asarray(items, dtype=object).astype(str),
                        np.asarray(times, dtype=np.int64), np.asarray(ratings, dtype=np.float64),
                        np.asarray(keys, dtype=str), np.asarray(tokens, dtype=object), f"amazon:{reviews.name}",
                        reports)


def read_taobao(
    path: str | os.PathLike,
    *,
    behaviours: Sequence[str] = TAOBAO_BEHAVIOURS,
    on_malformed: str = "warn",
    block_size: int = 1 << 24,
) -> Interactions:
    """Read Taobao ``UserBehavior.csv`` (no header: user id, item id, category id, behaviour
    type, unix time), keeping the ``behaviours`` types (default all of pv, buy, cart, fav).
    An item's category is the one on its first row; how many items have rows with other
    categories is in ``notes["items_with_several_categories"]``.

    Args:
        path (str or os.PathLike): the ``UserBehavior.csv`` file.
        behaviours (Sequence[str], optional): the behaviour types kept.
            (default: ``("pv", "buy", "cart", "fav")``)
        on_malformed (str, optional): ``"warn"`` (count and report the malformed rows with their line
            numbers, skip them) or ``"raise"``. (default: ``"warn"``)
        block_size (int, optional): bytes of CSV parsed per block; memory grows with it.
            (default: ``16 << 20``)
    """
    unknown = set(behaviours) - set(TAOBAO_BEHAVIOURS)
    if unknown or not behaviours:
        raise ValueError(f"`behaviours` must be a non-empty subset of {TAOBAO_BEHAVIOURS}, got {behaviours!r}")
    path = require_file(path, "Taobao")
    report = MalformedRows(path, on_malformed)
    spec = {"user": "int", "item": "int", "category": "int", "behaviour": "str", "time": "int"}
    valid_types, kept_types = pa.array(list(TAOBAO_BEHAVIOURS)), pa.array(list(behaviours))

    def known_and_kept(batch: pa.RecordBatch, lines: np.ndarray) -> np.ndarray:
        kind = batch.column("behaviour")
        known = pc.is_in(kind, value_set=valid_types).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~known)
        report.add(lines[bad], lambda i: f"behaviour type {kind[int(bad[i])].as_py()!r} is not one of "
                                         f"{'/'.join(TAOBAO_BEHAVIOURS)}")
        return known & pc.is_in(kind, value_set=kept_types).to_numpy(zero_copy_only=False)

    cols = _read_columns(path, spec, report, output=["user", "item", "category", "time"], keep=known_and_kept,
                         delimiter=",", block_size=block_size)
    cols = {name: values.astype(np.int64) for name, values in cols.items()}
    reports: list[dict] = []
    _finish(report, reports)
    pairs = np.unique(np.stack([cols["item"], cols["category"]], axis=1), axis=0)
    several = int((np.bincount(np.unique(pairs[:, 0], return_inverse=True)[1]) > 1).sum()) if len(pairs) else 0
    return Interactions(cols["user"], cols["item"], cols["time"], None, cols["item"], cols["category"].astype(str),
                        f"taobao:{path.name}", reports, {"items_with_several_categories": several})


# ------------------------------------------------------------------------------ loading
_BUILD_OPTIONS = ("label", "positive_rating", "num_negatives", "split", "holdout", "time_split", "max_history",
                  "min_history", "seed")


def _split_options(options: dict) -> tuple[dict, dict]:
    build = {k: v for k, v in options.items() if k in _BUILD_OPTIONS}
    return build, {k: v for k, v in options.items() if k not in _BUILD_OPTIONS}


def load_movielens(
    name: str = "movielens-100k", root: str | os.PathLike | None = None, **options
) -> BehaviourData:
    """MovieLens samples: ``name`` is ``"movielens-100k"``, ``"movielens-1m"``,
    ``"movielens-20m"`` (under ``<root>/movielens/``) or a folder path; ``options`` go to
    :func:`read_movielens` (``category``, ``on_malformed``) and :func:`build_behaviour_data`
    (default ``label="rating"``, ``positive_rating=4``).

    Args:
        name (str, optional): ``"movielens-100k"``, ``"movielens-1m"``, ``"movielens-20m"`` or a
            folder path. (default: ``"movielens-100k"``)
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
        **options (optional): for :func:`read_movielens` and :func:`build_behaviour_data`.
    """
    build, read = _split_options(options)
    folder = resolve_root(root) / MOVIELENS[name.lower()][1] if name.lower() in MOVIELENS else Path(name)
    return build_behaviour_data(read_movielens(folder, **read), **build)


def load_amazon(
    category: str = "Electronics",
    root: str | os.PathLike | None = None,
    *,
    reviews: str | os.PathLike | None = None,
    meta: str | os.PathLike | None = None,
    **options,
) -> BehaviourData:
    """Amazon samples, the DIN paper's protocol by default: every review a positive behaviour,
    one sampled negative per positive (``label="sampled"``, ``positive_rating=None``),
    leave-last-out per user. Files: ``reviews`` and ``meta`` if given, else
    ``<root>/amazon/reviews_<category>_5.json[.gz]`` (or without ``_5``) and
    ``<root>/amazon/meta_<category>.json[.gz]``.

    Args:
        category (str, optional): the Amazon category of the file names. (default: ``"Electronics"``)
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
        reviews (str or os.PathLike, optional): the reviews file (``None``: under the root).
            (default: ``None``)
        meta (str or os.PathLike, optional): the meta file (``None``: under the root).
            (default: ``None``)
        **options (optional): for :func:`read_amazon` and :func:`build_behaviour_data`.
    """
    folder = resolve_root(root) / AMAZON_FOLDER
    if reviews is None:
        reviews = find_first(folder, [f"reviews_{category}{k}.json{z}" for k in ("_5", "") for z in ("", ".gz")],
                             f"Amazon {category} reviews")
    if meta is None:
        meta = find_first(folder, [f"meta_{category}.json{z}" for z in ("", ".gz")], f"Amazon {category} metadata")
    build, read = _split_options({"label": "sampled", "positive_rating": None, **options})
    return build_behaviour_data(read_amazon(reviews, meta, **read), **build)


def load_taobao(
    path: str | os.PathLike | None = None, root: str | os.PathLike | None = None, **options
) -> BehaviourData:
    """Taobao samples from ``path`` (default ``<root>/taobao/UserBehavior.csv``): every kept
    behaviour a positive, ``num_negatives`` sampled negatives each (``label="sampled"``).

    Args:
        path (str or os.PathLike, optional): the ``UserBehavior.csv`` file (``None``: under the
            root). (default: ``None``)
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
        **options (optional): for :func:`read_taobao` and :func:`build_behaviour_data`
            (``num_negatives``, ...).
    """
    if path is None:
        path = resolve_root(root) / TAOBAO_FILE
    build, read = _split_options({"label": "sampled", "positive_rating": None, **options})
    return build_behaviour_data(read_taobao(path, **read), **build)


@register_source("behaviour")
def available(root: str | os.PathLike | None = None) -> list[tuple[str, bool, str]]:
    """``(name, present, where or what is missing)`` for the behaviour data sets.

    Args:
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
    """
    base = resolve_root(root)
    found = []
    for name, (description, sub) in MOVIELENS.items():
        hit = next((base / sub / f for f in ("u.data", "ratings.dat", "ratings.csv") if (base / sub / f).is_file()),
                   None)
        found.append((name, hit is not None, f"{description}: {hit or f'missing (looked in {base / sub})'}"))
    amazon = sorted((base / AMAZON_FOLDER).glob("reviews_*.json*")) if (base / AMAZON_FOLDER).is_dir() else []
    found.append(("amazon", bool(amazon), ", ".join(p.name for p in amazon) or
                  f"missing (looked for reviews_*.json in {base / AMAZON_FOLDER})"))
    taobao = base / TAOBAO_FILE
    found.append(("taobao", taobao.is_file(), str(taobao) if taobao.is_file() else f"missing (looked for {taobao})"))
    return found


# ------------------------------------------------------------------------------- export
def export_din_parquet(data: BehaviourData, folder: str | os.PathLike) -> dict[str, Path]:
    """Write each split as ``<folder>/<split>.parquet`` for DeepCTR-Torch / FuxiCTR scripts:
    ``user_id``, ``item_id``, ``cate_id`` (int64), ``hist_item_id``, ``hist_cate_id``
    (list<int64>, chronological, most recent last), ``label`` (int64 0/1); ids 1-based, 0 is
    padding. ``meta.json`` holds the vocabulary sizes (index 0 included) and the options.
    Returns the paths by split.

    Args:
        data (BehaviourData): the splits to write.
        folder (str or os.PathLike): the output folder (created).
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SPLITS:
        part: BehaviourSplit = getattr(data, name)
        offsets = pa.array(part.hist_ptr.numpy().astype(np.int32 if int(part.hist_ptr[-1]) < 2**31 else np.int64))
        list_type = pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray
        table = pa.table({
            "user_id": part.user_id.numpy(),
            "item_id": part.item_id.numpy(),
            "cate_id": part.cate_id.numpy(),
            "hist_item_id": list_type.from_arrays(offsets, pa.array(part.hist_item_id.numpy())),
            "hist_cate_id": list_type.from_arrays(offsets, pa.array(part.hist_cate_id.numpy())),
            "label": part.label.numpy().astype(np.int64),
        })
        paths[name] = folder / f"{name}.parquet"
        pq.write_table(table, paths[name])
    meta = {
        "vocab_sizes": {f.name: f.cardinality for f in data.fields},
        "padding_id": 0,
        "samples": data.info["samples"],
        "source": data.info["name"],
        "options": data.info["options"],
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return paths
