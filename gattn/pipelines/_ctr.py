"""What the click-through-rate pipelines share: data sets and their options, batches as the
models take them, the task module (DIN's mini-batch aware regularisation), metrics and
baselines. The families are in :mod:`gattn.pipelines.din` (``din``, ``dare``) and
:mod:`gattn.pipelines.hiformer` (``hiformer``); this module registers none.

Data (``--dataset``):

* behaviour histories (:mod:`gattn.datasets.behaviour`): ``movielens-100k``,
  ``movielens-1m``, ``movielens-20m`` (under ``<root>/movielens``), ``amazon`` (SNAP
  ``reviews_<--amazon-category>[_5].json[.gz]`` + ``meta_<category>.json[.gz]`` under
  ``<root>/amazon``), ``taobao`` (``<root>/taobao/UserBehavior.csv``);
* Criteo files (:mod:`gattn.datasets.criteo`, Hiformer only): ``criteo-sample``,
  ``criteo-kaggle``;
* a path: its format is ``--data-format``, else guessed: a folder holds MovieLens files
  (``u.data``, ``ratings.dat`` or ``ratings.csv``), a file named ``reviews_*.json[.gz]`` is
  Amazon (its ``meta_<category>.json[.gz]`` beside it), any other file is Taobao's
  ``UserBehavior.csv`` for DIN/DARE and a Criteo file for Hiformer.

Behaviour samples: ``--label rating`` (MovieLens default: rating >= ``--positive-rating``, 4,
is a click, 1-3 stars are not) or ``--label sampled`` (Amazon and Taobao default: every
interaction a positive plus ``--num-negatives`` sampled negatives); the history is the
user's interactions strictly earlier in time, the most recent ``--max-history``; split
``leave_last_out`` (the last ``--holdout`` targets of every user are the test set, the
``--holdout`` before them validation) or ``global_time``. The groups of GAUC are the users.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler

from gattn.pipelines.base import DataLoaders, Pipeline, Split
from gattn.pipelines.config import ConfigError, TrainConfig, option
from gattn.pipelines.task import TaskModule

MOVIELENS_NAMES = ("movielens-100k", "movielens-1m", "movielens-20m")
BEHAVIOUR_NAMES = (*MOVIELENS_NAMES, "amazon", "taobao")
CRITEO_NAMES = ("criteo-sample", "criteo-kaggle")
FORMATS = ("movielens", "amazon", "taobao", "criteo")
BEHAVIOUR_FORMATS = ("movielens", "amazon", "taobao")


@dataclass
class CTRConfig(TrainConfig):
    """Data and training options of every CTR pipeline."""

    dataset: str = option("movielens-100k", "a data set (movielens-100k, movielens-1m, movielens-20m, amazon, "
                          "taobao, criteo-sample, criteo-kaggle) or a path", group="data", metavar="NAME|PATH")
    data_format: str | None = option(None, "format of a --dataset path (default: a folder is movielens, a "
                                     "reviews_*.json[.gz] file amazon, another file taobao, or criteo for hiformer)",
                                     choices=FORMATS, group="data")
    amazon_category: str = option("Electronics", "amazon: the SNAP category (reviews_<category>[_5].json)",
                                  group="data")
    label: str | None = option(None, "behaviour data: rating (rating >= --positive-rating is a click) or sampled "
                               "(every interaction a positive, plus sampled negatives); default: rating for "
                               "MovieLens, sampled for Amazon and Taobao", choices=("rating", "sampled"), group="data")
    positive_rating: float | None = option(None, "the lowest rating of a positive (default: 4 with --label rating; "
                                           "none with --label sampled: every interaction is a positive)",
                                           group="data")
    num_negatives: int = option(1, "--label sampled: negatives per positive", low=1, group="data")
    split: str = option("leave_last_out", "behaviour data: leave_last_out (per user, the last --holdout targets "
                        "are test, the --holdout before them validation) or global_time (cut at time quantiles)",
                        choices=("leave_last_out", "global_time"), group="data")
    holdout: int = option(5, "leave_last_out: targets per user in test and in validation (GAUC needs more than "
                          "one per user with --label rating)", low=1, group="data")
    time_split: tuple[float, ...] = option((0.8, 0.1, 0.1), "global_time: train, validation and test fractions",
                                           low=0, high=1, group="data")
    max_history: int | None = option(50, "keep the most recent N behaviours of a history (none: all)", low=1,
                                     group="data")
    min_history: int = option(0, "drop targets with a shorter history", low=0, group="data")
    category: str = option("genres", "MovieLens: a target's category is its genre set (genres) or first genre",
                           choices=("genres", "first_genre"), group="data")
    data_seed: int = option(0, "seed of the negative sampling (the split itself is not random)", low=0,
                            group="data")
    validation: bool = option(True, "select the best epoch (and stop early) on the validation split; "
                              "--no-validation trains --epochs and evaluates the last epoch (the peers' protocol)",
                              group="training")
    eval_batch_size: int = option(4096, "samples per evaluation batch", low=1, group="training")
    epochs: int = option(10, "maximum number of epochs", low=1, group="training")
    batch_size: int = option(1024, "samples per optimisation step", low=1, group="training")
    patience: int | None = option(2, "early stopping: epochs without improvement of the validation metric "
                                  "(none: never)", low=1, group="training")


@dataclass
class CTRData:
    """A prepared data set: the splits (in memory, or a Criteo handle read batch by batch),
    the model's features, the training frequencies of every id and the click rates."""

    kind: str  # "behaviour" or "criteo"
    splits: dict[str, Any]
    fields: list[Any]
    info: dict
    frequencies: dict[str, Tensor] | None = None
    processed: Any = None  # a CriteoProcessed when the splits are streamed

    @property
    def grouped(self) -> bool:
        """Whether the rows have users (GAUC's groups)."""
        return self.kind == "behaviour"


def data_format(dataset: str, given: str | None, file_format: str) -> str:
    """The format of ``--dataset`` (see the module docstring); ``file_format`` is what an
    unrecognised file is taken to be."""
    named = ({name: "movielens" for name in MOVIELENS_NAMES} | {"amazon": "amazon", "taobao": "taobao"}
             | {name: "criteo" for name in CRITEO_NAMES})
    if dataset.lower() in named:
        fmt = named[dataset.lower()]
        if given is not None and given != fmt:
            raise ConfigError(f"--data-format {given} contradicts --dataset {dataset} (a {fmt} data set)")
        return fmt
    if given is not None:
        return given
    path = Path(dataset).expanduser()
    if path.is_dir():
        return "movielens"
    if path.is_file():
        return "amazon" if path.name.startswith("reviews_") else file_format
    raise ConfigError(
        f"--dataset {dataset!r} is neither a known data set ({', '.join(BEHAVIOUR_NAMES + CRITEO_NAMES)}) nor an "
        f"existing file or folder (looked in {path.parent.resolve()})"
    )


def resolve_data_options(config: Any, fmt: str) -> Any:
    """``config`` with the behaviour options that depend on the source filled in, or a
    ConfigError for a combination that cannot work."""
    if fmt not in BEHAVIOUR_FORMATS:
        return replace(config, data_format=fmt)
    label = config.label or ("rating" if fmt == "movielens" else "sampled")
    if label == "rating" and fmt == "taobao":
        raise ConfigError("--label rating: Taobao's UserBehavior.csv has no ratings; use --label sampled")
    positive = config.positive_rating
    if positive is None and label == "rating":
        positive = 4.0
    if len(config.time_split) != 3 or not math.isclose(sum(config.time_split), 1.0, abs_tol=1e-9):
        raise ConfigError(f"--time-split must be three fractions summing to 1, got {config.time_split}")
    return replace(config, data_format=fmt, label=label, positive_rating=positive)


# ------------------------------------------------------------------------------ loading
def load_behaviour(config: Any) -> CTRData:
    from gattn.datasets.behaviour import load_amazon, load_movielens, load_taobao

    options = dict(label=config.label, positive_rating=config.positive_rating, num_negatives=config.num_negatives,
                   split=config.split, holdout=config.holdout, time_split=tuple(config.time_split),
                   max_history=config.max_history, min_history=config.min_history, seed=config.data_seed)
    dataset, fmt = config.dataset, config.data_format
    if fmt == "movielens":
        data = load_movielens(dataset, config.root, category=config.category, **options)
    elif fmt == "amazon":
        if dataset.lower() == "amazon":
            data = load_amazon(config.amazon_category, config.root, **options)
        else:
            reviews = Path(dataset).expanduser()
            meta = reviews.with_name(f"meta_{config.amazon_category}.json")
            meta = next((m for m in (meta, meta.with_suffix(".json.gz")) if m.is_file()), meta)
            data = load_amazon(config.amazon_category, config.root, reviews=reviews, meta=meta, **options)
    else:
        data = load_taobao(None if dataset.lower() == "taobao" else dataset, config.root, **options)
    train = data.train
    frequencies = {
        "user_id": torch.bincount(train.user_id, minlength=_cardinality(data.fields, "user_id")),
        "item_id": torch.bincount(torch.cat([train.item_id, train.hist_item_id]),
                                  minlength=_cardinality(data.fields, "item_id")),
        "cate_id": torch.bincount(torch.cat([train.cate_id, train.hist_cate_id]),
                                  minlength=_cardinality(data.fields, "cate_id")),
    }
    for name, part in (("train", data.train), ("validation", data.val), ("test", data.test)):
        if len(part) == 0:
            raise ValueError(f"{config.dataset}: the {name} split is empty ({data.info['samples']}); check "
                             f"--split, --holdout and --min-history")
    return CTRData("behaviour", {"train": data.train, "val": data.val, "test": data.test}, data.fields,
                   data.info, frequencies)


def load_criteo_data(config: Any) -> CTRData:
    from gattn.datasets.criteo import locate_criteo, prepare_criteo

    processed = prepare_criteo(locate_criteo(config.dataset, config.root), min_count=config.min_count,
                               numeric="bucket", split=tuple(config.criteo_split), seed=config.criteo_seed,
                               cache_dir=config.cache_dir)
    if config.stream:
        return CTRData("criteo", {}, processed.fields, processed.info, processed=processed)
    splits = {name: processed.load(name) for name in ("train", "val", "test")}
    return CTRData("criteo", splits, processed.fields, processed.info)


def _cardinality(fields: list[Any], name: str) -> int:
    return next(f.cardinality for f in fields if f.name == name)


def model_features(data: CTRData) -> tuple[list[Any], list[Any]]:
    """The models' feature declarations: categorical features and history sequences."""
    from gattn.models.ctr import CategoricalFeature, SequenceFeature

    features = [CategoricalFeature(f.name, f.cardinality) for f in data.fields if f.kind == "categorical"]
    sequences = [SequenceFeature(f.name, f.shares) for f in data.fields if f.kind == "sequence"]
    return features, sequences


# ------------------------------------------------------------------------------ batches
def behaviour_batch(batch: Mapping[str, Tensor], history: bool) -> dict[str, Any]:
    """A behaviour batch (:meth:`BehaviourSplit.as_dict`) as the models take it: ``features``,
    ``history`` and ``ptr`` (when ``history``), ``label``, and the users as ``group``."""
    out: dict[str, Any] = {"features": {k: batch[k] for k in ("user_id", "item_id", "cate_id")},
                           "label": batch["label"], "group": batch["user_id"]}
    if history:
        out["history"] = {k: batch[k] for k in ("hist_item_id", "hist_cate_id")}
        out["ptr"] = batch["hist_ptr"]
    return out


def criteo_batch(batch: Mapping[str, Tensor], fields: list[Any]) -> dict[str, Any]:
    """A Criteo batch (``sparse`` [B, 26], ``dense`` [B, 13], ``label``) as one [B] id tensor
    per field."""
    return {"features": {f.name: batch[f.key][:, f.column] for f in fields}, "label": batch["label"]}


class IndexedBatches(Dataset):
    """A split whose items are whole batches: ``view[indices]`` slices every tensor at once
    (``BatchSampler`` yields the index lists), instead of one sample at a time and a collate."""

    def __init__(self, size: int, take: Callable[[Tensor], dict[str, Any]]) -> None:
        self.size, self.take = size, take

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        return self.take(torch.as_tensor(indices, dtype=torch.long))


class StreamedBatches(IterableDataset):
    """A processed Criteo split read from its parquet file in blocks of ``buffer`` rows, each
    block shuffled (seeded, another order every epoch) when ``shuffle``: bounded memory for
    files that do not fit (the Kaggle file's 45M rows)."""

    def __init__(self, processed: Any, split: str, batch_size: int, convert: Callable[[dict], dict],
                 shuffle: bool, buffer: int, seed: int) -> None:
        self.processed, self.split, self.batch_size, self.convert = processed, split, batch_size, convert
        self.shuffle, self.buffer, self.seed, self.epoch = shuffle, max(buffer, batch_size), seed, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        left: dict[str, Tensor] | None = None
        for block in self.processed.iter_batches(self.split, self.buffer):
            if self.shuffle:
                order = torch.randperm(block["label"].numel(), generator=generator)
                block = {k: v[order] for k, v in block.items()}
            if left is not None:  # the rows that did not fill a batch in the previous block
                block = {k: torch.cat([left[k], v]) for k, v in block.items()}
            n = block["label"].numel()
            full = n - n % self.batch_size
            for start in range(0, full, self.batch_size):
                yield self.convert({k: v[start:start + self.batch_size] for k, v in block.items()})
            left = {k: v[full:] for k, v in block.items()} if full < n else None
        if left is not None:
            yield self.convert(left)


def in_memory_loader(part: Any, take: Callable[[Tensor], dict[str, Any]], batch_size: int, shuffle: bool,
                     seed: int, num_workers: int) -> DataLoader:
    view = IndexedBatches(len(part), take)
    order = RandomSampler(view, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(view)
    return DataLoader(view, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None,
                      num_workers=num_workers)


# --------------------------------------------------------------------------- the task
class CTRTask(TaskModule):
    """Binary cross-entropy on the logits, plus ``penalty_weight * penalty(model, batch)`` when a
    penalty is given (DIN's mini-batch aware regularisation)."""

    def __init__(self, *args: Any, penalty: Callable[[nn.Module, Any], Tensor] | None = None,
                 penalty_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalty, self.penalty_weight = penalty, float(penalty_weight)

    def training_loss(self, output: Any, target: Tensor, batch: Any) -> Tensor:
        loss = self.loss_fn(output, target)
        if self.penalty is not None and self.penalty_weight > 0:
            loss = loss + self.penalty_weight * self.penalty(self.model, batch)
        return loss


def _constant_logloss(rate: float, labels: np.ndarray) -> float:
    rate = min(max(rate, 1e-7), 1 - 1e-7)
    return float(-(labels * math.log(rate) + (1 - labels) * math.log(1 - rate)).mean())


class CTRPipeline(Pipeline):
    """The parts of a CTR family that do not depend on the model (see the module docstring).

    A subclass sets :attr:`history` (whether its model reads the behaviour histories) and
    :attr:`file_format` (what a ``--dataset`` file path is), and gives ``build_model`` and
    ``search_space``.
    """

    metric = "rocauc"
    #: whether the model reads behaviour histories (DIN, DARE) or only the per-sample features
    history: bool = False
    #: the format of a --dataset path to a file that is not an Amazon reviews file
    file_format: str = "taobao"

    def __init__(self) -> None:
        self._cache: dict[tuple, CTRData] = {}

    # ----------------------------------------------------------------- configuration
    def resolve(self, config: Any) -> Any:
        fmt = data_format(config.dataset, config.data_format, self.file_format)
        if self.history and fmt not in BEHAVIOUR_FORMATS:
            raise ConfigError(f"--dataset {config.dataset}: {self.name} attends over behaviour histories, which "
                              f"{fmt} data do not have (behaviour data: {', '.join(BEHAVIOUR_NAMES)})")
        config = resolve_data_options(config, fmt)
        if (self.selection_metric(config) == "gauc" and fmt in BEHAVIOUR_FORMATS and config.label == "rating"
                and config.split == "leave_last_out" and config.holdout == 1):
            raise ConfigError("--holdout 1 with --label rating leaves one test sample per user, so GAUC (the "
                              "selection metric) is undefined: use --holdout 2 or more, or --split global_time")
        return config

    def selection_metric(self, config: Any) -> str:
        return self.metric

    def run_label(self, config: Any) -> str:
        return Path(str(config.dataset)).name.replace("/", "_")

    def describe(self, config: Any) -> str:
        text = f"{self.name} on {config.dataset}"
        if config.data_format in BEHAVIOUR_FORMATS:
            text += (f" ({config.label} labels, {config.split}"
                     f"{f' holdout {config.holdout}' if config.split == 'leave_last_out' else ''}, "
                     f"history <= {config.max_history or 'all'})")
        return text + f", d={config.embedding_dim}, epochs<={config.epochs}, batch {config.batch_size}"

    # --------------------------------------------------------------------------- data
    def _data_key(self, config: Any) -> tuple:
        names = [f for f in ("dataset", "data_format", "amazon_category", "label", "positive_rating",
                             "num_negatives", "split", "holdout", "time_split", "max_history", "min_history",
                             "category", "data_seed", "min_count", "criteo_split", "criteo_seed", "stream",
                             "cache_dir") if hasattr(config, f)]
        return (str(config.root), *(getattr(config, f) for f in names))

    def prepare(self, config: Any) -> CTRData:
        key = self._data_key(config)
        if key not in self._cache:
            loader = load_criteo_data if config.data_format == "criteo" else load_behaviour
            self._cache[key] = loader(config)
        return self._cache[key]

    def convert(self, data: CTRData) -> Callable[[Mapping[str, Tensor]], dict[str, Any]]:
        """A loader batch -> the model's inputs, ``label`` and ``group``."""
        if data.kind == "behaviour":
            return lambda batch: behaviour_batch(batch, self.history)
        fields = data.fields
        return lambda batch: criteo_batch(batch, fields)

    def datamodule(self, config: Any, data: CTRData, split: Split) -> DataLoaders:
        convert = self.convert(data)

        def loader(name: str, shuffle: bool) -> Any:
            size = config.batch_size if shuffle else config.eval_batch_size
            if data.processed is not None:
                if config.num_workers:
                    raise ConfigError("--stream reads the parquet file in this process: use --num-workers 0")
                return DataLoader(StreamedBatches(data.processed, name, size, convert, shuffle,
                                                  config.shuffle_buffer, config.seed), batch_size=None)
            part = data.splits[name]
            if data.kind == "behaviour":
                def take(index: Tensor) -> dict[str, Any]:
                    return convert(part.subset(index).as_dict())
            else:
                def take(index: Tensor) -> dict[str, Any]:
                    return convert({"sparse": part.sparse[index], "dense": part.dense[index],
                                    "label": part.label[index]})
            return in_memory_loader(part, take, size, shuffle, config.seed, config.num_workers)

        return DataLoaders(loader("train", True), loader("val", False) if config.validation else None,
                           loader("test", False))

    # ---------------------------------------------------------------------- metrics
    def metrics(self, config: Any, data: CTRData) -> dict[str, Any]:
        from gattn.metrics import METRICS

        names = ["rocauc", "logloss"] + (["gauc"] if data.grouped else [])
        return {name: METRICS[name].fn for name in names}

    def penalty(self, config: Any, data: CTRData) -> tuple[Callable[[nn.Module, Any], Tensor] | None, float]:
        """An extra training loss term and its weight (default: none)."""
        return None, 0.0

    def task(self, config: Any, data: CTRData, model: nn.Module) -> CTRTask:
        from gattn.losses import masked_bce_with_logits
        from gattn.metrics import METRICS

        metrics = self.metrics(config, data)
        monitor = self.monitor(config)
        penalty, weight = self.penalty(config, data)
        return CTRTask(model, masked_bce_with_logits, metrics, config, monitor=monitor,
                       direction=METRICS[monitor].direction if monitor != "loss" else "minimize",
                       grouped=frozenset(n for n in metrics if METRICS[n].needs_groups),
                       meta={"pipeline": self.name}, penalty=penalty, penalty_weight=weight)

    def labels(self, data: CTRData, split: str) -> np.ndarray:
        if data.processed is not None:
            import pyarrow.parquet as pq

            return pq.read_table(data.processed.paths[split], columns=["label"]).column("label").to_numpy()
        return data.splits[split].label.numpy()

    def chance(self, config: Any, data: CTRData) -> dict[str, float]:
        """AUC (and GAUC) 0.5, and the test log loss of predicting the training click rate for every row."""
        rate = float(self.labels(data, "train").mean())
        baseline = {"test_rocauc": 0.5, "test_logloss": _constant_logloss(rate, self.labels(data, "test"))}
        if data.grouped:
            baseline["test_gauc"] = 0.5
        return baseline

    def check_tunable(self, config: Any) -> None:
        if not config.validation:
            raise ConfigError("gattn tune selects on the validation split: drop --no-validation")

