"""Admissions as ragged documents with multi-hot labels: a torch Dataset and its batches.

Layout (plain tensors; no model is imported here):

* documents: ``token_ids [N]`` int64 and ``ptr [B+1]`` int64; document ``b`` is
  ``token_ids[ptr[b]:ptr[b+1]]``, never padded to the longest;
* labels: ragged ``label_index [nnz]`` / ``label_ptr [B+1]`` over the label set (``C`` codes),
  turned into dense multi-hot ``[b, C]`` float32 rows only for a batch;
* time series (optional): ``series [B, T, F]`` float32 and ``series_mask [B, T, F]`` bool;
* ``hadm_ids [B]`` int64.

``DataLoader(docs, batch_size=..., shuffle=..., collate_fn=docs.collate)`` (or
:meth:`MimicDocuments.loader`) yields :class:`DocumentBatch` es; the batch is gathered in one
vectorised step (``__getitems__``) rather than item by item. With
``batch_sampler=LengthBucketBatchSampler(docs.lengths, ...)`` the documents of a batch have
similar lengths, so a model that pads per batch (a transformer encoder) pads little.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["DocumentBatch", "LengthBucketBatchSampler", "MimicDocuments", "gather_ragged"]


def gather_ragged(values: Tensor, ptr: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``index`` of a ragged tensor, in that order: ``(values [n], ptr [len(index)+1])``.

    Args:
        values (Tensor): the ragged rows' values, concatenated.
        ptr (Tensor): the rows over ``values``.
        index (Tensor): the rows to take, in order.
    """
    start, length = ptr[index], ptr[index + 1] - ptr[index]
    new_ptr = torch.zeros(index.numel() + 1, dtype=torch.long)
    torch.cumsum(length, 0, out=new_ptr[1:])
    row = torch.repeat_interleave(torch.arange(index.numel()), length)
    position = start[row] + torch.arange(int(new_ptr[-1])) - new_ptr[:-1][row]
    return values[position], new_ptr


@dataclass
class DocumentBatch:
    """A batch of ``b`` documents.

    Attributes:
        token_ids (Tensor): [n] int64, the documents' tokens one after the other.
        ptr (Tensor): [b+1] int64, document ``i`` is ``token_ids[ptr[i]:ptr[i+1]]``.
        labels (Tensor): [b, C] float32 multi-hot.
        hadm_ids (Tensor): [b] int64.
        series (Tensor, optional): [b, T, F] float32 or None. (default: ``None``)
        series_mask (Tensor, optional): [b, T, F] bool or None. (default: ``None``)
    """

    token_ids: Tensor
    ptr: Tensor
    labels: Tensor
    hadm_ids: Tensor
    series: Tensor | None = None
    series_mask: Tensor | None = None

    def __len__(self) -> int:
        return self.ptr.numel() - 1

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DocumentBatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)
        return DocumentBatch(move(self.token_ids), move(self.ptr), move(self.labels), move(self.hadm_ids),
                             move(self.series), move(self.series_mask))


class MimicDocuments(Dataset):
    """Documents of one split (module docstring for the layout).

    Args:
        hadm_ids (Tensor): [B] int64.
        token_ids (Tensor): [N] int64 token ids.
        ptr (Tensor): [B+1] int64 row pointer into ``token_ids``.
        label_index (Tensor): [nnz] int64 label ids in ``[0, num_labels)``.
        label_ptr (Tensor): [B+1] int64 row pointer into ``label_index``.
        num_labels (int): C, the size of the label set.
        series (Tensor, optional): [B, T, F] float32, optional. (default: ``None``)
        series_mask (Tensor, optional): [B, T, F] bool, required with ``series``. (default: ``None``)
    """

    def __init__(self, hadm_ids: Tensor, token_ids: Tensor, ptr: Tensor, label_index: Tensor, label_ptr: Tensor,
                 num_labels: int, series: Tensor | None = None, series_mask: Tensor | None = None):
        num = hadm_ids.numel()
        for name, t in (("hadm_ids", hadm_ids), ("token_ids", token_ids), ("ptr", ptr),
                        ("label_index", label_index), ("label_ptr", label_ptr)):
            if t.dtype != torch.long or t.dim() != 1:
                raise TypeError(f"`{name}` must be a 1-D int64 tensor, got {t.dtype} {tuple(t.shape)}")
        for name, p, total in (("ptr", ptr, token_ids.numel()), ("label_ptr", label_ptr, label_index.numel())):
            if p.numel() != num + 1 or int(p[0]) != 0 or int(p[-1]) != total or bool((p[1:] < p[:-1]).any()):
                raise ValueError(f"`{name}` must be a sorted [B+1] row pointer from 0 to {total} (B={num})")
        if label_index.numel() and (int(label_index.min()) < 0 or int(label_index.max()) >= num_labels):
            raise ValueError(f"`label_index` values must be in [0, {num_labels})")
        if (series is None) != (series_mask is None):
            raise ValueError("give `series` and `series_mask` together")
        if series is not None:
            if series.dim() != 3 or series.size(0) != num or series.shape != series_mask.shape:
                raise ValueError(f"`series` and `series_mask` must both be [B={num}, T, F], got "
                                 f"{tuple(series.shape)} and {tuple(series_mask.shape)}")
            if series_mask.dtype != torch.bool:
                raise TypeError(f"`series_mask` must be bool, got {series_mask.dtype}")
        self.hadm_ids, self.token_ids, self.ptr = hadm_ids, token_ids, ptr
        self.label_index, self.label_ptr, self.num_labels = label_index, label_ptr, int(num_labels)
        self.series, self.series_mask = series, series_mask

    def __len__(self) -> int:
        return self.hadm_ids.numel()

    def __repr__(self) -> str:
        series = "" if self.series is None else f", series {tuple(self.series.shape[1:])}"
        return (f"MimicDocuments({len(self)} documents, {self.token_ids.numel()} tokens, "
                f"{self.num_labels} labels{series})")

    @property
    def lengths(self) -> Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def __getitem__(self, i: int) -> dict:
        """One document: ``{"hadm_id", "token_ids", "labels" (label ids), "series", "series_mask"}``."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents")
        i %= len(self)
        return {
            "hadm_id": int(self.hadm_ids[i]),
            "token_ids": self.token_ids[self.ptr[i]: self.ptr[i + 1]],
            "labels": self.label_index[self.label_ptr[i]: self.label_ptr[i + 1]],
            "series": None if self.series is None else self.series[i],
            "series_mask": None if self.series_mask is None else self.series_mask[i],
        }

    def multi_hot(self, index: Tensor | None = None) -> Tensor:
        """Dense labels ``[len(index), C]`` float32 (default: every document)."""
        index = torch.arange(len(self)) if index is None else index
        label_index, label_ptr = gather_ragged(self.label_index, self.label_ptr, index)
        out = torch.zeros(index.numel(), self.num_labels)
        row = torch.repeat_interleave(torch.arange(index.numel()), label_ptr[1:] - label_ptr[:-1])
        out[row, label_index] = 1.0
        return out

    def label_counts(self) -> Tensor:
        """[C] int64: documents carrying each label (the training frequencies of LDAM margins)."""
        return torch.bincount(self.label_index, minlength=self.num_labels)

    def batch(self, index: Sequence[int] | Tensor) -> DocumentBatch:
        """The documents ``index`` as one :class:`DocumentBatch`, gathered in one step."""
        index = torch.as_tensor(np.asarray(index, dtype=np.int64)).reshape(-1)
        tokens, ptr = gather_ragged(self.token_ids, self.ptr, index)
        return DocumentBatch(
            tokens, ptr, self.multi_hot(index), self.hadm_ids[index],
            None if self.series is None else self.series[index],
            None if self.series_mask is None else self.series_mask[index],
        )

    def subset(self, index: Sequence[int] | Tensor) -> MimicDocuments:
        b = self.batch(index)
        index = torch.as_tensor(np.asarray(index, dtype=np.int64)).reshape(-1)
        label_index, label_ptr = gather_ragged(self.label_index, self.label_ptr, index)
        return MimicDocuments(b.hadm_ids, b.token_ids, b.ptr, label_index, label_ptr, self.num_labels,
                              b.series, b.series_mask)

    # DataLoader's fetcher calls this with a whole batch of indices when it exists
    def __getitems__(self, indices: list[int]) -> DocumentBatch:
        return self.batch(indices)

    def collate(self, items: DocumentBatch | list[dict]) -> DocumentBatch:
        """``collate_fn`` for a DataLoader: passes a batch gathered by ``__getitems__`` through,
        and stacks a list of ``dataset[i]`` items otherwise."""
        if isinstance(items, DocumentBatch):
            return items
        lengths = torch.tensor([len(it["token_ids"]) for it in items], dtype=torch.long)
        ptr = torch.zeros(len(items) + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=ptr[1:])
        labels = torch.zeros(len(items), self.num_labels)
        for row, it in enumerate(items):
            labels[row, it["labels"]] = 1.0
        series = None if items[0]["series"] is None else torch.stack([it["series"] for it in items])
        mask = None if items[0]["series_mask"] is None else torch.stack([it["series_mask"] for it in items])
        tokens = torch.cat([it["token_ids"] for it in items]) if items else torch.zeros(0, dtype=torch.long)
        return DocumentBatch(tokens, ptr, labels, torch.tensor([it["hadm_id"] for it in items], dtype=torch.long),
                             series, mask)

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0, **kwargs) -> DataLoader:
        """A DataLoader of :class:`DocumentBatch` es (reshuffled each epoch when ``shuffle``, seeded)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=self.collate, **kwargs)


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of documents of similar length, for encoders that pad each batch to its longest.

    With ``shuffle``: the documents are shuffled, cut into pools of ``pool`` batches, each pool
    sorted by length and cut into batches, and the batches shuffled; a new order every epoch
    (``set_epoch``, which Lightning calls, or one more per pass). Without: every document
    sorted by length (evaluation: the order does not change the metrics).

    Args:
        lengths (Tensor): [B] document lengths (``MimicDocuments.lengths``).
        batch_size (int): documents per batch (the last batch of a pool may be smaller).
        shuffle (bool, optional): shuffle as above (training) or sort everything (evaluation). Default False.
        pool (int, optional): batches per sorted pool when shuffling (default 50; 1 gives plain shuffled
            batches; larger pads less but makes batches less random).
        seed (int, optional): the shuffling seed (epoch ``e`` uses ``seed + e``). (default: ``0``)
    """

    def __init__(self, lengths: Tensor, batch_size: int, *, shuffle: bool = False, pool: int = 50,
                 seed: int = 0) -> None:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise TypeError(f"`lengths` must be a 1-D integer tensor, got {lengths.dtype} {tuple(lengths.shape)}")
        for name, value in (("batch_size", batch_size), ("pool", pool)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        self.lengths, self.batch_size, self.shuffle = lengths.long(), batch_size, bool(shuffle)
        self.pool, self.seed, self.epoch = pool, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if not self.shuffle:
            return -(-self.lengths.numel() // self.batch_size)
        size = self.batch_size * self.pool
        full, rest = divmod(self.lengths.numel(), size)
        return full * self.pool + -(-rest // self.batch_size)

    def __iter__(self):
        count = self.lengths.numel()
        if not self.shuffle:
            order = torch.sort(self.lengths, stable=True).indices
            yield from (order[i: i + self.batch_size].tolist() for i in range(0, count, self.batch_size))
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1  # without set_epoch, the next pass draws another order
        order = torch.randperm(count, generator=generator)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, count, size):
            chunk = order[start: start + size]
            chunk = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches += [chunk[i: i + self.batch_size] for i in range(0, chunk.numel(), self.batch_size)]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index].tolist()
