"""What the MIMIC-III pipelines share (``transicd``, ``label_attention``): the data, batches
sorted by length, the loss, the ICD-coding metrics and the explanation output.

Data: :func:`gattn.datasets.mimic.load_icd_coding` on ``--mimic-dir`` (default
``<data root>/mimic3/mimic-iii-clinical-database-1.4``, the folder PhysioNet's download unpacks
to) and the CAML split files in ``--splits-dir`` (default ``<data root>/mimic3/caml-splits``);
``--setting 50`` (default: the top-50 codes) or ``full``, ``--top-codes K`` for another label
set. The loader cleans, joins and truncates the discharge summaries (``--max-length``, 2,500
tokens), builds the vocabulary of the training notes (``--min-count``) and trains word2vec
(CBOW) vectors of ``--embedding-dim`` on them; it caches each step (``--cache-dir``).

Batches: documents stay ragged (token ids and a row pointer); training batches are drawn
from pools of ``--length-pool`` batches sorted by length
(:class:`~gattn.datasets.mimic.LengthBucketBatchSampler`), so the transformer encoder, which
pads a batch to its longest note, pads little; evaluation batches are sorted by length.

Loss (``--loss``): ``ldam``, the label-distribution-aware margin loss of Cao et al.
(:class:`gattn.losses.LDAMLoss`; margins ``C * n_j^(-1/4)`` from the training positives
``n_j``: ``--ldam-c 3`` as the TransICD authors' code, whose margins are not normalised; with
``--ldam-normalise`` the largest margin is ``C`` instead, Cao et al.'s form), or plain ``bce``.
A label without a positive in the training split cannot be learned; it gets the largest
margin (:func:`gattn.losses.ldam_margins`), which only matters where it appears in the
validation loss, and the run prints how many such labels there are. Macro ROC-AUC scores only
the labels with both classes in the evaluated split, as CAML's evaluation does.

Metrics (:mod:`gattn.metrics`, over the whole split): micro and macro ROC-AUC, micro and macro
F1 at 0.5 (``f1_macro``: the mean of per-label F1; ``f1_macro_pr``: the F1 of macro precision
and recall, CAML's macro F1), precision at 5, 8 and 15 (those with ``k`` at most the number
of labels). The epoch evaluated is the best on validation micro F1 (``--selection best``,
CAML's criterion) or the last (``--selection last``: no validation during training, as the
TransICD authors' code, whose macro F1 is the mean of per-label F1, ``f1_macro``). Beside
the results: the label-frequency baseline (every test document scored with
the training frequency of each code), what a model that ignores the note can reach.

Explanations (``--explain N``, default 3): after training, the first N test documents with
text are scored by the evaluated checkpoint (``--selection``); for each, the codes predicted at 0.5 (at most
``--explain-codes``, the most probable first; the single most probable code when none reaches
0.5) with their ``--explain-tokens`` tokens of highest attention. Written to the run folder:
``explanations.md`` (every token with its rank and weight), ``explanations.html`` (the notes
with those tokens highlighted); a summary table is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gattn.pipelines.base import DataLoaders, Pipeline, Split
from gattn.pipelines.config import ConfigError, TrainConfig, option

__all__ = ["DEFAULT_MIMIC_FOLDER", "MimicConfig", "MimicData", "MimicPipeline", "ToInputs", "ldam_max_margin",
           "mimic_paths"]

#: the folder PhysioNet's MIMIC-III v1.4 download unpacks to, looked for under <root>/mimic3
DEFAULT_MIMIC_FOLDER = "mimic-iii-clinical-database-1.4"
DEFAULT_SPLITS_FOLDER = "caml-splits"
_PRECISION_AT = (5, 8, 15)


@dataclass
class MimicConfig(TrainConfig):
    """Options shared by the MIMIC-III pipelines (data, loss, explanations); TransICD's paper
    settings for training (batch 8, 30 epochs, learning rate 1e-3)."""

    mimic_dir: str | None = option(None, f"MIMIC-III directory (default: <root>/mimic3/{DEFAULT_MIMIC_FOLDER})",
                                   group="data", run_control=True, metavar="DIR")
    splits_dir: str | None = option(None, f"CAML split files (default: <root>/mimic3/{DEFAULT_SPLITS_FOLDER})",
                                    group="data", run_control=True, metavar="DIR")
    cache_dir: str | None = option(None, "processed-data cache (default: $GATTN_CACHE/mimic3, else "
                                   "~/.cache/gattn/mimic3)", group="data", run_control=True, metavar="DIR")
    setting: str = option("50", "CAML setting: the top-50 codes and their split files, or every code",
                          choices=("50", "full"), group="data")
    top_codes: int | None = option(None, "label set: the K codes on most admissions (default: 50 for --setting "
                                   "50, every code for full)", low=1, group="data", metavar="K")
    code_kind: str = option("both", "codes used as labels", choices=("both", "diagnosis", "procedure"),
                            group="data")
    max_length: int | None = option(2500, "tokens kept per note (none: all)", low=1, group="data")
    min_count: int = option(3, "a word enters the vocabulary when in at least this many training notes", low=1,
                            group="data")
    embedding_dim: int = option(128, "word2vec (CBOW) vector size, trained on the training notes", low=1,
                                group="data")
    embedding_epochs: int = option(5, "word2vec epochs", low=1, group="data")
    missing_notes: str = option("raise", "a split admission without a discharge summary: raise, drop it, or "
                                "keep it with an empty note", choices=("raise", "drop", "empty"), group="data")
    length_pool: int = option(50, "training batches are drawn from pools of this many batches sorted by note "
                              "length (1: plain shuffling)", low=1, group="data")
    loss: str = option("ldam", "loss: ldam (label-distribution-aware margins) or bce", choices=("ldam", "bce"),
                       group="training")
    ldam_c: float = option(3.0, "LDAM: C of the margins C * n^(-1/4) (the TransICD code's 3)", low=0,
                           low_open=True, group="training")
    ldam_normalise: bool = option(False, "LDAM: scale the margins so the largest is C (Cao et al.'s form)",
                                  group="training")
    epochs: int = option(30, "epochs (the best on validation is kept)", low=1, group="training")
    batch_size: int = option(8, "notes per step", low=1, group="training")
    lr: float = option(1e-3, "learning rate", low=0, low_open=True, group="training")
    selection: str = option("best", "the epoch evaluated on test: best (validation micro F1 after every epoch) or "
                            "last (no validation during training, as the TransICD authors' code)",
                            choices=("best", "last"), group="training")
    explain: int = option(3, "test documents explained after training (0: none)", low=0, group="output",
                          run_control=True)
    explain_codes: int = option(5, "explanations: most codes per document", low=1, group="output",
                                run_control=True)
    explain_tokens: int = option(10, "explanations: tokens per code", low=1, group="output", run_control=True)


@dataclass
class MimicData:
    """The prepared data set: the loaded :class:`~gattn.datasets.mimic.MimicICD`, and the
    time-series standardisation (training mean and std per feature, None without series)."""

    icd: Any
    series_mean: Tensor | None = None
    series_std: Tensor | None = None


def mimic_paths(config: Any) -> tuple[Path, Path]:
    """The MIMIC-III and CAML split folders of ``config`` (defaults under the data root).

    Raises:
        FileNotFoundError: a folder is missing; the message names it and says which option
            sets it.
    """
    from gattn.datasets.root import resolve_root

    root = resolve_root(config.root)
    found = []
    for value, default, flag, what in (
        (config.mimic_dir, DEFAULT_MIMIC_FOLDER, "--mimic-dir", "MIMIC-III directory"),
        (config.splits_dir, DEFAULT_SPLITS_FOLDER, "--splits-dir", "CAML splits directory"),
    ):
        path = Path(value).expanduser().resolve() if value else root / "mimic3" / default
        if not path.is_dir():
            where = f"given by {flag}" if value else f"the default under the data root {root}; set {flag} DIR or --root"
            raise FileNotFoundError(f"{what} {path} not found ({where})")
        found.append(path)
    return found[0], found[1]


def ldam_max_margin(label_counts: Tensor, c: float, normalise: bool) -> float:
    """The ``max_margin`` of :class:`gattn.losses.LDAMLoss` giving the margins ``c * n_j^(-1/4)``
    (the rarest training label's ``c * n_min^(-1/4)``), or ``c`` itself when ``normalise``."""
    seen = label_counts[label_counts > 0]
    if normalise or seen.numel() == 0:
        return float(c)
    return float(c * float(seen.min()) ** -0.25)


class ToInputs:
    """``collate_fn``: a :class:`~gattn.datasets.mimic.DocumentBatch` as the model's keyword
    arguments plus ``label`` (what :class:`~gattn.pipelines.task.TaskModule` unpacks)."""

    def __init__(self, series: bool) -> None:
        self.series = series

    def __call__(self, batch: Any) -> dict[str, Tensor]:
        inputs = {"input_ids": batch.token_ids, "ptr": batch.ptr, "label": batch.labels}
        if self.series:
            inputs.update(time_series=batch.series, time_series_mask=batch.series_mask)
        return inputs


class MimicPipeline(Pipeline):
    """Base of the MIMIC-III pipelines (module docstring); a family adds its model
    (:meth:`build_model`), its token attention (:meth:`token_attention`) and its search space."""

    Config = MimicConfig
    metric = "f1_micro"
    #: the loader's time-series features are read when the configuration asks for them
    uses_series = False

    def __init__(self) -> None:
        self._cache: dict[tuple, MimicData] = {}

    # ----------------------------------------------------------------- configuration
    def describe(self, config: Any) -> str:
        labels = f"top {config.top_codes}" if config.top_codes else f"setting {config.setting}"
        return (f"{self.name} on MIMIC-III ({labels}, notes <= {config.max_length} tokens), loss {config.loss}, "
                f"lr={config.lr:g}, batch {config.batch_size}, epochs {config.epochs}")

    def run_label(self, config: Any) -> str:
        return f"mimic3-top{config.top_codes}" if config.top_codes else f"mimic3-{config.setting}"

    def wants_series(self, config: Any) -> bool:
        return False

    # --------------------------------------------------------------------------- data
    def prepare(self, config: Any) -> MimicData:
        """The data set of ``config``, loaded once per set of loader options."""
        mimic_dir, splits_dir = mimic_paths(config)
        series = self.wants_series(config)
        options = dict(setting=config.setting, labels=config.top_codes, code_kind=config.code_kind,
                       max_length=config.max_length, min_count=config.min_count, embedding_dim=config.embedding_dim,
                       embedding_epochs=config.embedding_epochs, seed=config.seed,
                       missing_notes=config.missing_notes, cache_dir=config.cache_dir)
        if series:
            from gattn.datasets.mimic import DEFAULT_FEATURES

            options.update(time_series=DEFAULT_FEATURES, max_hours=config.max_hours)
        key = (str(mimic_dir), str(splits_dir), tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in self._cache:
            self._cache[key] = self._load(mimic_dir, splits_dir, options)
        return self._cache[key]

    def _load(self, mimic_dir: Path, splits_dir: Path, options: dict[str, Any]) -> MimicData:
        from gattn.datasets.mimic import load_icd_coding, load_notes

        try:
            icd = load_icd_coding(mimic_dir, splits_dir, **options)
        except KeyError as exc:  # admissions without a discharge summary (missing_notes="raise")
            notes = load_notes(mimic_dir, cache_dir=options["cache_dir"])
            if len(notes) == 0:
                raise ValueError(self._no_notes(mimic_dir, notes)) from None
            raise ValueError(f"{exc.args[0]} (on the command line: --missing-notes drop or empty)") from None
        except ValueError as exc:  # fewer codes than the label set asks for (a small extract)
            if "cannot take the top" not in str(exc):
                raise
            raise ValueError(f"{exc} (on the command line: a smaller --top-codes K)") from None
        if icd.train.token_ids.numel() == 0 and icd.train.series is None:
            raise ValueError(self._no_notes(mimic_dir, load_notes(mimic_dir, cache_dir=options["cache_dir"])))
        if len(icd.train) == 0:
            raise ValueError(f"no training document in {mimic_dir} (CAML splits {splits_dir})")
        data = MimicData(icd)
        if icd.train.series is not None:
            data.series_mean, data.series_std = _standardise_series(icd)
        return data

    def _no_notes(self, mimic_dir: Path, notes: Any) -> str:
        return (f"{self.name} learns from discharge summaries, and NOTEEVENTS in {mimic_dir} holds none "
                f"({notes.report}); the MIMIC-III demo's NOTEEVENTS is header-only")

    def datamodule(self, config: Any, data: MimicData, split: Split) -> DataLoaders:
        from gattn.datasets.mimic import LengthBucketBatchSampler

        icd = data.icd
        collate = ToInputs(icd.train.series is not None)

        def loader(documents: Any, shuffle: bool) -> DataLoader | None:
            if len(documents) == 0:
                return None
            sampler = LengthBucketBatchSampler(documents.lengths, config.batch_size, shuffle=shuffle,
                                               pool=config.length_pool, seed=config.seed)
            return DataLoader(documents, batch_sampler=sampler, collate_fn=collate, num_workers=config.num_workers)

        dev = loader(icd.dev, False) if config.selection == "best" else None
        return DataLoaders(loader(icd.train, True), dev, loader(icd.test, False))

    # -------------------------------------------------------------------------- model
    def loss(self, config: Any, data: MimicData) -> Any:
        if config.loss == "bce":
            from gattn.losses import masked_bce_with_logits

            return masked_bce_with_logits
        from gattn.losses import LDAMLoss

        counts = data.icd.train_label_counts
        unseen = int((counts == 0).sum())
        if unseen:
            print(f"{self.name}: {unseen} of the {counts.numel()} labels have no positive training document "
                  "(they get the largest LDAM margin and cannot be learned)", flush=True)
        return LDAMLoss(counts, max_margin=ldam_max_margin(counts, config.ldam_c, config.ldam_normalise))

    def metrics(self, config: Any, data: MimicData) -> dict[str, Any]:
        from gattn.metrics import METRICS

        names = ["rocauc_micro", "rocauc_macro", "f1_micro", "f1_macro", "f1_macro_pr"]
        names += [f"precision_at_{k}" for k in _PRECISION_AT if k <= data.icd.num_labels]
        return {name: METRICS[name].fn for name in names}

    def chance(self, config: Any, data: MimicData) -> dict[str, float]:
        """The label-frequency baseline: every test document scored with each code's training
        frequency (a model that ignores the note)."""
        icd = data.icd
        if len(icd.test) == 0 or len(icd.train) == 0:
            return {}
        frequency = (icd.train_label_counts.double() / len(icd.train)).clamp(1e-6, 1 - 1e-6)
        logits = torch.logit(frequency).expand(len(icd.test), -1)
        target = icd.test.multi_hot()
        out = {}
        for name, fn in self.metrics(config, data).items():
            try:
                out[f"test_{name}"] = float(fn(target, logits))
            except ValueError:
                out[f"test_{name}"] = math.nan
        return out

    def check_tunable(self, config: Any) -> None:
        """``gattn tune`` compares trials on validation, which ``--selection last`` turns off."""
        if config.selection == "last":
            raise ConfigError("gattn tune compares trials on the validation split: use --selection best")

    def word_vectors(self, config: Any, data: MimicData) -> Tensor | None:
        """The word2vec vectors the model starts from (None: trained from scratch); a frozen
        embedding needs them."""
        vectors = data.icd.embeddings
        if vectors is None and config.freeze_embeddings:
            raise ConfigError("--freeze-embeddings: the training notes gave no word2vec vectors (no word reached "
                              "--min-count); use --no-freeze-embeddings or a lower --min-count")
        return vectors

    def token_attention(self, model: nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(logits [b, C], attention [R, C] or [R, 1])`` of a batch (the family's model)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ results
    def artifacts(self, config: Any, data: MimicData, model: nn.Module, split: Split,
                  run_dir: Path) -> dict[str, Path]:
        if config.explain == 0:
            return {}
        rows, documents = explain_documents(self, config, data, model)
        if not documents:
            print(f"{self.name}: no test document with text to explain", flush=True)
            return {}
        from gattn.explain import explanations_html, format_table
        from gattn.pipelines.results import format_table as plain_table

        icd = data.icd
        title = f"{self.name}: top tokens per predicted code ({self.run_label(config)}, {split.name})"
        markdown = run_dir / "explanations.md"
        markdown.write_text(f"# {title}\n\n{format_table(rows)}\n", encoding="utf-8")
        page = run_dir / "explanations.html"
        page.write_text(explanations_html(documents, title=title), encoding="utf-8")
        summary = []
        for row in rows:
            if row["rank"] == 1:
                summary.append([row["document"], row["code"], f"{row['score']:.3f}", "yes" if row["true"] else "no",
                                ""])
            summary[-1][-1] += ("" if row["rank"] == 1 else ", ") + row["token"]
        print(f"\n{title} (of {len(icd.test)} test documents, {len(documents)} shown):")
        print(plain_table(summary, header=("document", "code", "p", "true", "top tokens")), flush=True)
        return {"explanation table": markdown, "explanation page": page}


def _standardise_series(icd: Any) -> tuple[Tensor, Tensor]:
    """Standardise every split's observed series values with the training split's mean and
    std per feature (in place; unobserved entries stay 0); returns the statistics."""
    train = icd.train
    observed = train.series_mask.float()
    count = observed.sum(dim=(0, 1)).clamp_min(1)
    mean = (train.series * observed).sum(dim=(0, 1)) / count
    var = (((train.series - mean) * observed) ** 2).sum(dim=(0, 1)) / count
    std = var.sqrt().clamp_min(1e-6)
    for documents in icd.splits.values():
        if documents.series is not None:
            documents.series = torch.where(documents.series_mask, (documents.series - mean) / std,
                                           torch.zeros(()))
    return mean, std


@torch.no_grad()
def explain_documents(pipeline: MimicPipeline, config: Any, data: MimicData,
                      model: nn.Module) -> tuple[list[dict], list[dict]]:
    """The explanation rows (:func:`gattn.explain.top_tokens`, with ``document``) and the
    per-document arguments of :func:`gattn.explain.explanations_html` for the first
    ``config.explain`` test documents that have text."""
    from gattn.explain import top_tokens

    icd = data.icd
    lengths = icd.test.lengths
    chosen = torch.nonzero(lengths > 0).flatten()[: config.explain]
    if chosen.numel() == 0:
        return [], []
    batch = ToInputs(icd.test.series is not None)(icd.test.batch(chosen))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits, attention = pipeline.token_attention(
            model, {k: v.to(device) for k, v in batch.items() if k != "label"})
    finally:
        model.train(was_training)
    probabilities, attention = torch.sigmoid(logits).cpu(), attention.float().cpu()
    ptr, words = batch["ptr"], icd.vocab.words
    rows, documents = [], []
    for b, index in enumerate(chosen.tolist()):
        scores = probabilities[b]
        ranked = torch.sort(scores, descending=True, stable=True).indices
        predicted = ranked[scores[ranked] > 0.5][: config.explain_codes]
        if predicted.numel() == 0:
            predicted = ranked[:1]
        tokens = [words[i] for i in batch["input_ids"][ptr[b]: ptr[b + 1]].tolist()]
        arguments = dict(tokens=tokens, attention=attention[ptr[b]: ptr[b + 1]], codes=icd.codes,
                         predicted=predicted, k=config.explain_tokens, scores=scores,
                         code_descriptions=icd.descriptions, true_codes=batch["label"][b] > 0)
        heading = f"admission {int(icd.test.hadm_ids[index])}"
        for row in top_tokens(**arguments):
            rows.append({"document": heading.split()[-1], **row})
        documents.append({"heading": heading, **arguments})
    return rows, documents
