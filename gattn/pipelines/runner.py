"""The platform's engine: one configuration of a pipeline trained on Lightning, in a run folder.

:func:`run` loads the data (:meth:`Pipeline.prepare`), trains every split
(:meth:`Pipeline.splits`: one, or the folds of a cross-validation) with a
:class:`lightning.pytorch.Trainer`, evaluates the best epoch of each on validation and test,
and aggregates (mean, and standard deviation over splits). The run folder holds::

    config.yaml          the full effective configuration (gattn train --config repeats the run)
    metrics.json         the aggregated results (and per split)
    metrics.csv          every epoch's metrics (per split folder under cross-validation)
    learning_curves.png  the curves of metrics.csv (per split folder, and every split's in the
                         run folder under cross-validation)
    checkpoints/best.ckpt, last.ckpt
                         Lightning checkpoints with model, optimiser and schedule state and the
                         configuration; written to a temporary file and renamed, so a kill
                         never leaves a torn file; read back with ``weights_only=True``
    *.png                the pipeline's plots

Training: early stopping (``--patience``) and best-epoch selection on the monitored validation
metric, plateau or cosine schedules, a minimum learning rate, gradient clipping, a time limit,
``--accelerator/--devices/--strategy/--precision``, Optuna pruning (optuna-integration's
Lightning callback per epoch, or per split under cross-validation), ``resume`` from the last
checkpoint of an interrupted run.

Distributed training (``--devices N --num-nodes M --strategy ddp``): every process runs this
same code. Lightning shards the training loader with a ``DistributedSampler``; validation and
test loaders are sharded without the rows that sampler repeats to even out the shards
(:class:`UnpaddedEvaluation`), so that metrics on the gathered predictions count each row once.
Only rank zero (:func:`is_rank_zero`) writes the run folder: configuration, results,
checkpoints, epoch table and plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from .base import Pipeline, Split, count_parameters, metric_direction
from .config import ConfigError, build_config, config_dict, write_config_file

__all__ = [
    "AtomicCheckpointIO",
    "RunResult",
    "UnpaddedEvaluation",
    "is_rank_zero",
    "load_checkpoint",
    "make_config",
    "new_run_dir",
    "processes_per_run",
    "run",
]


# ------------------------------------------------------------------------ checkpoints
class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, flushed, then renamed over
    the target (a kill leaves the old file or the new one, never a torn one); loaded with
    ``weights_only=True`` unless asked otherwise."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return super().load_checkpoint(path, map_location=map_location,
                                       weights_only=True if weights_only is None else weights_only)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A run's checkpoint (``weights_only=True``): ``state_dict`` (keys ``model.*``), optimiser
    and schedule states, and ``gattn`` (pipeline name and configuration).

    Args:
        path (str or os.PathLike): the checkpoint file (``best.ckpt`` of a run folder).
        map_location (Any, optional): as :func:`torch.load`'s. (default: ``"cpu"``)

    Raises:
        FileNotFoundError: naming the file and the folder looked in.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path.name!r} not found (looked in {path.parent.resolve()})")
    return torch.load(path, map_location=map_location, weights_only=True)


# ---------------------------------------------------------------------- callbacks
class MinLRStopping(Callback):
    """Stop when the learning rate falls below ``min_lr`` (benchmarking-gnns' rule)."""

    def __init__(self, min_lr: float) -> None:
        self.min_lr = min_lr

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.optimizers and trainer.optimizers[0].param_groups[0]["lr"] < self.min_lr:
            trainer.should_stop = True


class EpochTable(Callback):
    """``metrics.csv``: one row per epoch (epoch, train loss, learning rate, validation metrics,
    seconds), rewritten atomically after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key == "train_loss" or key.startswith("val_"):
                row[key] = float(value)
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["seconds"] = round(time.perf_counter() - self.start, 4)
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        lines = [",".join(columns)] + [",".join("" if r.get(c) is None else repr(r[c]) for c in columns)
                                       for r in self.rows]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class EpochReport(Callback):
    """A tqdm bar over epochs (kept on screen) and/or one printed line per epoch."""

    def __init__(self, bar: bool, lines: bool, monitor: str, label: str, leave: bool) -> None:
        self.bar_enabled, self.lines, self.monitor, self.label, self.leave = bar, lines, monitor, label, leave
        self.bar: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar_enabled and trainer.is_global_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.max_epochs, initial=trainer.current_epoch, desc=self.label,
                            unit="epoch", leave=self.leave, dynamic_ncols=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = {}
        for key in ("train_loss", f"val_{self.monitor}"):
            if key in metrics:
                shown[key] = f"{float(metrics[key]):.4f}"
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        if self.lines:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
            text = "  ".join(f"{k} {v}" for k, v in shown.items())
            print(f"{self.label} epoch {trainer.current_epoch + 1:4d}  {text}  lr {lr:.2e}", flush=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's banners (GPU available, model summary, worker hints) off; warnings kept."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*number of training batches.*",
                        ".*log_every_n_steps.*", ".*Checkpoint directory .* exists and is not empty.*",
                        ".*`isinstance.treespec, LeafSpec.` is deprecated.*",
                        ".*Total length of .* across ranks is zero.*",
                        ".*The '(val|test)_dataloader' does not have many workers.*",
                        ".*You called `self.log.*` with a `float`.*",
                        ".*GPU available but not used.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _call(trainer: L.Trainer, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a Trainer entry point; Lightning turns Ctrl-C into ``sys.exit(1)`` and ignores
    SIGINT afterwards: restore the handler and raise KeyboardInterrupt instead."""
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        return fn(*args, **kwargs)
    except SystemExit as exc:
        if trainer.interrupted:
            raise KeyboardInterrupt from exc
        raise
    finally:
        if main_thread and handler is not None:
            signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's and numba's CPU threads set to ``count`` for the block, then restored (None: unchanged).

    numba's pool is set first: changing it resets the OpenMP pool that torch shares.
    """
    if not count:
        yield
        return
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency of the layers
        numba = None
    before = (torch.get_num_threads(), numba.get_num_threads() if numba else None)
    if numba is not None:
        numba.set_num_threads(min(int(count), numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(int(count))
    try:
        yield
    finally:
        if numba is not None:
            numba.set_num_threads(before[1])
        torch.set_num_threads(before[0])


def _has_stage(datamodule: Any, stage: str) -> bool:
    attr = getattr(datamodule, f"{stage}_loader", "absent")
    if attr != "absent":
        return attr is not None
    method = getattr(datamodule, f"{stage}_dataloader", None)
    return callable(method)


def check_hardware(config: Any) -> None:
    """Refuse an accelerator or precision this machine cannot run, in one clear line."""
    accelerator = getattr(config, "accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--accelerator {accelerator}: no CUDA device is visible to this torch build "
            f"({torch.__version__}); use --accelerator cpu, or install a CUDA build of torch (README)"
        )
    if accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("--accelerator mps: Apple's MPS backend is not available here")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if getattr(config, "precision", "32-true") == "16-mixed" and not on_gpu:
        raise ConfigError("--precision 16-mixed needs a GPU; on CPU use bf16-mixed or 32-true")
    if getattr(config, "precision", "32-true").startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this GPU does not support bfloat16; use 16-mixed or 32-true")


def _devices(text: str) -> Any:
    text = str(text).strip()
    if text == "auto":
        return "auto"
    if "," in text:
        try:
            return [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"--devices must be auto, a count or a list of ids, got {text!r}") from None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--devices must be auto, a count or a list of ids, got {text!r}") from None


def _device_shorthand(config: Any) -> Any:
    """``--device cpu|cuda|cuda:N`` as ``--accelerator`` / ``--devices`` (refused when they disagree)."""
    device = getattr(config, "device", None)
    if device is None:
        return config
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    accelerator = "cpu" if kind == "cpu" else "gpu"
    devices = "auto" if kind == "cpu" else (f"{index}," if index else "1")
    if config.accelerator not in ("auto", accelerator) and not (accelerator == "gpu" and config.accelerator == "cuda"):
        raise ConfigError(f"--device {device} disagrees with --accelerator {config.accelerator}")
    if config.devices != "auto" and kind == "cuda":
        raise ConfigError(f"--device {device} and --devices {config.devices}: give one of them")
    return dataclasses.replace(config, accelerator=accelerator, devices=devices, device=None)


# ------------------------------------------------------------------- distribution
#: the variables by which Lightning's launcher, torchrun and SLURM give a process its rank
RANK_VARIABLES = ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID")
#: set by rank zero to its run folder: the processes Lightning starts for the other ranks inherit it
RUN_DIR_ENV = "GATTN_DISTRIBUTED_RUN_DIR"
_SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp_spawn")


def processes_per_run(config: Any) -> int:
    """How many processes Lightning trains ``config`` on (devices per node x nodes).

    Args:
        config (TrainConfig): the run's configuration (``devices``, ``num_nodes``).
    """
    devices = _devices(getattr(config, "devices", "auto"))
    if devices == "auto":
        accelerator = getattr(config, "accelerator", "auto")
        count = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() \
            else 1
    elif isinstance(devices, list):
        count = len(devices)
    else:
        count = devices if devices > 0 else max(torch.cuda.device_count(), 1)  # -1: every GPU
    return max(int(count), 1) * int(getattr(config, "num_nodes", 1))


def is_rank_zero(config: Any) -> bool:
    """Is this the process that writes the run folder? True for a run on one process, else for
    the process that the launcher's environment (Lightning, torchrun, SLURM) makes rank zero.

    Args:
        config (TrainConfig): the run's configuration.
    """
    if processes_per_run(config) == 1:
        return True
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def check_distributed(config: Any) -> None:
    """Refuse the strategies whose processes the run folder cannot follow, in one clear line."""
    strategy = str(getattr(config, "strategy", "auto"))
    if processes_per_run(config) > 1 and strategy in _SPAWNING:
        raise ConfigError(
            f"--strategy {strategy}: the spawned processes do not return their metrics to the run; use "
            "--strategy ddp (Lightning starts one process per device; torchrun and SLURM work too)"
        )
    accelerator = getattr(config, "accelerator", "auto")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if getattr(config, "sync_batchnorm", False) and not on_gpu:
        raise ConfigError("--sync-batchnorm needs GPUs (torch's SyncBatchNorm runs on CUDA only); on CPU "
                          "use --norm layer or train on one process")


class UnpaddedEvaluation(L.LightningDataModule):
    """A pipeline's data module whose validation and test loaders are sharded across processes
    without padding.

    Lightning's ``DistributedSampler`` repeats rows so that every process gets as many; the
    predictions gathered for AUC, GAUC and F1 would then count those rows twice. Here each
    evaluation loader (a torch ``DataLoader`` with the default batching, PyG's included) is
    rebuilt on Lightning's ``UnrepeatedDistributedSampler``: disjoint shards covering every row
    once. The training loader is left to Lightning.

    Args:
        inner (lightning.LightningDataModule): the pipeline's data module.
    """

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def prepare_data(self) -> None:
        if hasattr(self.inner, "prepare_data"):
            self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        if hasattr(self.inner, "setup"):
            self.inner.setup(stage)

    def teardown(self, stage: str) -> None:
        if hasattr(self.inner, "teardown"):
            self.inner.teardown(stage)

    def train_dataloader(self) -> Any:
        return self.inner.train_dataloader()

    def val_dataloader(self) -> Any:
        return self.unpadded(self.inner.val_dataloader())

    def test_dataloader(self) -> Any:
        return self.unpadded(self.inner.test_dataloader())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return self.inner.transfer_batch_to_device(batch, device, dataloader_idx)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.inner.on_before_batch_transfer(batch, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.inner.on_after_batch_transfer(batch, dataloader_idx)

    def unpadded(self, loader: Any, num_replicas: int | None = None, rank: int | None = None) -> Any:
        """``loader`` rebuilt on the unrepeated sampler of ``rank`` among ``num_replicas`` (default:
        the trainer's); unchanged on one process, and for loaders with their own sampling."""
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
        from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

        if num_replicas is None:
            if self.trainer is None or self.trainer.world_size == 1:
                return loader
            num_replicas, rank = self.trainer.world_size, self.trainer.global_rank
        if (type(loader) is not DataLoader and not isinstance(loader, _pyg_loader())) or loader.batch_size is None:
            return loader  # not a loader we can rebuild faithfully: Lightning's handling applies
        if isinstance(loader.sampler, DistributedSampler) or not isinstance(loader.sampler, SequentialSampler):
            return loader
        sampler = UnrepeatedDistributedSampler(loader.dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        return DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
            timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
            persistent_workers=loader.persistent_workers if loader.num_workers else False,
        )


def _pyg_loader() -> type:
    from torch_geometric.loader import DataLoader as PyGDataLoader

    return PyGDataLoader


def make_config(pipeline: Pipeline, values: Mapping[str, Any], source: str = "the configuration") -> Any:
    """The pipeline's effective configuration from ``values``: converted, checked, presets applied
    (and ``--device`` turned into ``--accelerator`` / ``--devices``).

    Args:
        pipeline (Pipeline): the pipeline class.
        values (Mapping[str, Any]): option name -> value (a config file's, the command line's).
        source (str, optional): what the values came from, for error messages.
            (default: ``"the configuration"``)
    """
    config = _device_shorthand(build_config(pipeline.Config, dict(values), source))
    resolved = pipeline.resolve(config)
    build_config(pipeline.Config, config_dict(resolved), source)  # presets must satisfy the bounds too
    return resolved


def new_run_dir(runs_dir: str | os.PathLike, pipeline: Pipeline, config: Any, name: str | None = None) -> Path:
    """A fresh folder ``runs_dir/<pipeline>/<name>`` (default name: time and the data set).

    Args:
        runs_dir (str or os.PathLike): the runs folder.
        pipeline (Pipeline): the pipeline class (its name is the sub-folder).
        config (TrainConfig): the configuration (its data set goes into the default name).
        name (str, optional): the run's folder name (``None``: time and data set). (default: ``None``)
    """
    base = Path(runs_dir).expanduser() / pipeline.name
    if name is None:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{pipeline.run_label(config)}"
        candidate, n = base / name, 2
        while candidate.exists():
            candidate, n = base / f"{name}-{n}", n + 1
        return candidate
    return base / name


@dataclasses.dataclass
class RunResult:
    """What :func:`run` returns: aggregated metrics, the per-split results, the run folder (every
    process of a distributed run returns the same metrics, computed on all the rows).

    Attributes:
        metrics (dict[str, Any]): the metrics aggregated over the splits.
        splits (list[dict[str, Any]]): each split's results.
        run_dir (Path): the run folder.
        files (dict[str, str]): the files written, by kind.
        chance (dict[str, float]): each metric's chance level.
        rank_zero (bool, optional): False in the processes of a distributed run other than rank zero
            (which wrote nothing). (default: ``True``)
    """

    metrics: dict[str, Any]
    splits: list[dict[str, Any]]
    run_dir: Path
    files: dict[str, str]
    chance: dict[str, float]
    #: False in the processes of a distributed run other than rank zero (which wrote nothing)
    rank_zero: bool = True


def _aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over splits (NaNs skipped), a ``<key>_std`` for validation and test metrics under
    cross-validation; counts that every split shares (parameters, epochs) stay integers."""
    keys = [k for k in results[0] if all(k in r for r in results)]
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in results]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and len(set(values)) == 1:
            out[key] = values[0]
            continue
        array = np.array(values, dtype=float)
        finite = array[~np.isnan(array)]
        out[key] = float(finite.mean()) if finite.size else math.nan
        if len(results) > 1 and (key.startswith("val_") or key.startswith("test_")):
            out[f"{key}_std"] = float(finite.std()) if finite.size else math.nan
    return out


def _best_epoch(path: str) -> int:
    if not path or not Path(path).is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True).get("epoch", -1)) + 1


def _train_split(
    pipeline: Pipeline, config: Any, data: Any, split: Split, split_dir: Path, *, trial: Any, resume: bool,
    progress: bool, single: bool,
) -> tuple[dict[str, Any], Any]:
    selection, monitor = pipeline.selection_metric(config), pipeline.monitor(config)
    mode = "max" if metric_direction(monitor) == "maximize" else "min"
    L.seed_everything(int(config.seed) * 1000 + split.index if not single else int(config.seed),
                      workers=True, verbose=False)
    model = pipeline.build_model(config, data, split)
    task = pipeline.task(config, data, model)
    task.meta.update(pipeline=pipeline.name, config=config_dict(config), split=split.name)
    datamodule = pipeline.datamodule(config, data, split)
    has_val = _has_stage(datamodule, "val")
    has_test = _has_stage(datamodule, "test")
    if processes_per_run(config) > 1:
        datamodule = UnpaddedEvaluation(datamodule)

    checkpoints = ModelCheckpoint(
        dirpath=split_dir / "checkpoints", filename="best", monitor=f"val_{monitor}" if has_val else None,
        mode=mode, save_top_k=1, save_last=True, enable_version_counter=False, auto_insert_metric_name=False,
    )
    if is_rank_zero(config):
        split_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[Callback] = [checkpoints, EpochTable(split_dir / "metrics.csv")]
    if has_val and config.patience is not None:
        callbacks.append(EarlyStopping(monitor=f"val_{monitor}", mode=mode, patience=config.patience))
    if config.min_lr is not None:
        callbacks.append(MinLRStopping(config.min_lr))
    if progress or config.verbose:
        callbacks.append(EpochReport(bar=progress, lines=config.verbose, monitor=selection,
                                     label=split.name if not single else pipeline.name, leave=single))
    pruning = None
    if trial is not None and single and has_val:
        from optuna_integration import PyTorchLightningPruningCallback

        pruning = PyTorchLightningPruningCallback(trial, monitor=f"val_{selection}")
        callbacks.append(pruning)
    trainer = L.Trainer(
        max_epochs=config.epochs,
        max_time=timedelta(seconds=config.max_time) if config.max_time else None,
        accelerator="gpu" if config.accelerator == "cuda" else config.accelerator,
        devices=_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        gradient_clip_val=config.grad_clip,
        sync_batchnorm=bool(getattr(config, "sync_batchnorm", False)),
        logger=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=str(split_dir),
    )
    last = split_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    _call(trainer, trainer.fit, task, datamodule=datamodule,
          ckpt_path=str(last) if resume and last.is_file() else None, weights_only=True)
    if pruning is not None:
        pruning.check_pruned()
    elapsed = time.perf_counter() - start
    best = checkpoints.best_model_path if has_val and checkpoints.best_model_path else str(last)
    result: dict[str, Any] = {}
    if has_val:
        _call(trainer, trainer.validate, task, datamodule=datamodule, ckpt_path=best, weights_only=True,
              verbose=False)
        result.update({f"val_{k}": v for k, v in task.last_metrics["val"].items()})
    if has_test:
        _call(trainer, trainer.test, task, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
        result.update({f"test_{k}": v for k, v in task.last_metrics["test"].items()})
    result.update(epochs=int(trainer.current_epoch), best_epoch=_best_epoch(best) if has_val else
                  int(trainer.current_epoch), time_s=elapsed, num_params=count_parameters(model))
    return result, task.model


def run(
    pipeline: Pipeline, config: Any, run_dir: str | os.PathLike, *, trial: Any = None, resume: bool = False,
    progress: bool | None = None,
) -> RunResult:
    """Train and evaluate ``config`` (an effective configuration, see :func:`make_config`).

    Args:
        pipeline (Pipeline): the family.
        config (Any): its configuration.
        run_dir (str or os.PathLike): the run folder (created; under cross-validation one sub-folder per split).
        trial (Any, optional): an Optuna trial to report to (pruning per epoch, or per split under CV).
            (default: ``None``)
        resume (bool, optional): continue from the last checkpoint of each split that did not finish, and keep
            the splits that did. (default: ``False``)
        progress (bool, optional): tqdm bars (None: ``config.progress``, else when stderr is a terminal).
            (default: ``None``)

    Raises:
        optuna.TrialPruned: the trial was pruned.
        FloatingPointError: the training loss diverged.
    """
    run_dir = Path(run_dir)
    if progress is None:
        progress = config.progress if config.progress is not None else sys.stderr.isatty()
    check_hardware(config)
    check_distributed(config)
    with threads(config.threads):
        return _run(pipeline, config, run_dir, trial=trial, resume=resume, progress=bool(progress))


def _run(pipeline: Pipeline, config: Any, run_dir: Path, *, trial: Any, resume: bool, progress: bool) -> RunResult:
    data = pipeline.prepare(config)
    splits = list(pipeline.splits(config, data))
    if not splits:
        raise ValueError(f"pipeline {pipeline.name!r} produced no split to train on")
    writer = is_rank_zero(config)  # the other processes of a distributed run write nothing
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config_file(run_dir / "config.yaml", pipeline.name, config)
    single = len(splits) == 1
    selection = pipeline.selection_metric(config)
    results: list[dict[str, Any]] = []
    model = None
    outer = None
    if progress and not single and writer:
        from tqdm.auto import tqdm

        outer = tqdm(total=len(splits), desc=pipeline.describe(config), unit="split", dynamic_ncols=True)
    try:
        with quiet_lightning():
            for split in splits:
                split_dir = run_dir if split.name == "run" else run_dir / split.name
                done = split_dir / "result.json"
                if resume and done.is_file():
                    results.append(json.loads(done.read_text()))
                else:
                    result, model = _train_split(pipeline, config, data, split, split_dir, trial=trial,
                                                 resume=resume, progress=bool(progress), single=single)
                    result["split"] = split.name
                    if writer:
                        _write_json(done, result)
                    results.append(result)
                if config.verbose and not single and writer:
                    print(f"{split.name}: " + "  ".join(
                        f"{k} {v:.4f}" for k, v in results[-1].items()
                        if k.startswith("test_") and isinstance(v, float)), flush=True)
                if outer is not None:
                    key = f"test_{selection}"
                    values = [r[key] for r in results if key in r and not math.isnan(r[key])]
                    if values:
                        outer.set_postfix({key: f"{np.mean(values):.4f}"}, refresh=False)
                    outer.update(1)
                if trial is not None and not single:
                    values = [r[f"val_{selection}"] for r in results if f"val_{selection}" in r]
                    if values:
                        trial.report(float(np.nanmean(values)), split.index)
                        if trial.should_prune():
                            import optuna

                            raise optuna.TrialPruned(f"pruned after {split.name}")
    finally:
        if outer is not None:
            outer.close()
    metrics = _aggregate([{k: v for k, v in r.items() if k != "split"} for r in results])
    metrics["splits"] = len(results)
    files: dict[str, str] = {"config": str(run_dir / "config.yaml")}
    if writer:
        curves = _learning_curves(pipeline, config, run_dir, splits)
        if curves is not None:
            files["learning_curves"] = str(curves)
    if model is not None and writer:
        written = pipeline.artifacts(config, data, model, splits[-1], run_dir)
        files.update({k: str(v) for k, v in written.items()})
    chance = pipeline.chance(config, data)
    if writer:
        _write_json(run_dir / "metrics.json", {"pipeline": pipeline.name, "metrics": metrics, "splits": results,
                                               "chance": chance, "files": files})
    files["metrics"] = str(run_dir / "metrics.json")
    return RunResult(metrics, results, run_dir, files, chance, writer)


def _learning_curves(pipeline: Pipeline, config: Any, run_dir: Path, splits: list[Split]) -> Path | None:
    """learning_curves.png of each split folder, and of every split together in the run folder."""
    from .results import plot_learning_curves

    label = f"{pipeline.name} {pipeline.run_label(config)}"
    tables = {s.name: (run_dir if s.name == "run" else run_dir / s.name) / "metrics.csv" for s in splits}
    tables = {name: table for name, table in tables.items() if table.is_file()}
    drawn = {name: plot_learning_curves({name: table}, table.with_name("learning_curves.png"),
                                        label if name == "run" else f"{label}, {name}")
             for name, table in tables.items()}
    if len(tables) < 2:
        return next(iter(drawn.values()), None)
    selection = f"val_{pipeline.selection_metric(config)}"
    return plot_learning_curves(tables, run_dir / "learning_curves.png", f"{label}: every split",
                                metrics=[selection])


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default, allow_nan=True))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)
