"""The Lightning module every pipeline trains: :class:`TaskModule`.

It holds the model and knows four things, each a method a family may override in its own
pipeline file (never in shared code):

* :meth:`TaskModule.unpack` - a batch -> ``(output, target, groups)``; the default handles
  PyG ``Data``/``Batch`` objects (``model(batch)`` against ``batch.y``), tuples
  ``(inputs..., target)`` and dicts (``model(**inputs)`` against ``batch["label"]``, with the
  optional ``batch["group"]`` passed to grouped metrics such as GAUC);
* :meth:`TaskModule.training_loss` - the loss of a training batch (a family adds its terms:
  ACMIL's diversity loss, DIN's mini-batch aware regularisation, ...);
* :meth:`TaskModule.evaluate` - metrics over the predictions of a whole validation or test
  set (computed once over all rows, not averaged over batches);
* :meth:`TaskModule.configure_optimizers` - the optimiser and learning-rate schedule of the
  configuration (Adam/AdamW/SGD; plateau on the monitored metric, or cosine).

Validation and test predictions are gathered from every process when training is
distributed, so AUC, GAUC and F1 are computed on all the rows, not averaged across ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn

__all__ = ["TaskModule", "batch_size_of"]

MetricFn = Callable[..., float]


def batch_size_of(target: Any) -> int:
    """Rows in a batch's target (1 for a scalar).

    Args:
        target (Any): a batch's target (a tensor or a scalar).
    """
    if isinstance(target, Tensor):
        return int(target.shape[0]) if target.dim() > 0 else 1
    return len(target)


class TaskModule(L.LightningModule):
    """Trains ``model`` with ``loss`` and evaluates ``metrics`` on validation and test sets.

    Args:
        model (torch.nn.Module): the network.
        loss (Callable): ``loss(output, target) -> scalar``; also the ``loss`` metric of
            validation.
        metrics (Mapping[str, Callable]): ``name -> fn(y_true, y_pred[, groups=])`` evaluated
            over whole sets; a name in ``grouped`` gets ``groups=`` too.
        config (TrainConfig): the pipeline's configuration (optimiser, schedule and epochs are
            read from it).
        monitor (str, optional): the validation metric that selects the best epoch and drives
            the plateau schedule (``"loss"`` or a key of ``metrics``). (default: ``"loss"``)
        direction (str, optional): ``"maximize"`` or ``"minimize"`` for ``monitor``.
            (default: ``"minimize"``)
        train_transform (Callable, optional): applied to every training batch after it reaches
            the device (a random sign flip of Laplacian eigenvectors, ...). (default: ``None``)
        grouped (frozenset[str], optional): names of the metrics that need the rows' groups.
            (default: ``frozenset()``)
        meta (Mapping[str, Any], optional): stored in every checkpoint under ``"gattn"``
            (pipeline name, configuration). (default: ``None``)
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable[[Any, Tensor], Tensor],
        metrics: Mapping[str, MetricFn],
        config: Any,
        monitor: str = "loss",
        direction: str = "minimize",
        train_transform: Callable[[Any], Any] | None = None,
        grouped: frozenset[str] = frozenset(),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        if monitor != "loss" and monitor not in metrics:
            raise ValueError(f"monitor {monitor!r} is neither 'loss' nor one of the metrics {sorted(metrics)}")
        self.model = model
        self.loss_fn = loss
        self.metric_fns = dict(metrics)
        self.config = config
        self.monitor, self.direction = monitor, direction
        self.train_transform = train_transform
        self.grouped = frozenset(grouped)
        self.meta = dict(meta or {})
        self._outputs: dict[str, list[tuple[Any, Tensor, Tensor | None]]] = {"val": [], "test": []}
        #: the metrics of the last validation / test pass (``{"val_rocauc": ...}``)
        self.last_metrics: dict[str, dict[str, float]] = {}

    # ----------------------------------------------------------------- hooks to override
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def unpack(self, batch: Any) -> tuple[Any, Tensor, Tensor | None]:
        """``(output, target, groups)`` of ``batch`` (see the module docstring)."""
        if isinstance(batch, Mapping):
            inputs = {k: v for k, v in batch.items() if k not in ("label", "y", "group")}
            target = batch["label"] if "label" in batch else batch["y"]
            return self.model(**inputs), target, batch.get("group")
        if isinstance(batch, (tuple, list)):
            if len(batch) < 2:
                raise ValueError("a tuple batch must be (input_1, ..., input_k, target) with k >= 1")
            return self.model(*batch[:-1]), batch[-1], None
        if hasattr(batch, "y"):
            return self.model(batch), batch.y, None
        raise TypeError(
            f"TaskModule.unpack handles PyG batches, (inputs..., target) tuples and dicts, got "
            f"{type(batch).__name__}: override unpack() in the pipeline's task module"
        )

    def training_loss(self, output: Any, target: Tensor, batch: Any) -> Tensor:
        """The loss minimised on a training batch (default: ``loss(output, target)``)."""
        return self.loss_fn(output, target)

    def predictions(self, output: Any) -> Tensor:
        """What the metrics see of ``output`` (default: the output itself)."""
        return output

    def evaluate(self, output: Tensor, target: Tensor, groups: Tensor | None) -> dict[str, float]:
        """Metrics over a whole set of predictions (on the CPU), plus ``loss``."""
        result = {"loss": float(self.loss_fn(output, target))}
        for name, fn in self.metric_fns.items():
            try:
                value = fn(target, output, groups=groups) if name in self.grouped else fn(target, output)
            except ValueError:
                value = math.nan  # e.g. a ROC-AUC on a set with one class
            result[name] = float(value)
        return result

    # ------------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.train_transform is not None:
            batch = self.train_transform(batch)
        output, target, _ = self.unpack(batch)
        loss = self.training_loss(output, target, batch)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"training loss is {loss.item()} at epoch {self.current_epoch + 1}: lower the learning "
                "rate or check the inputs"
            )
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=batch_size_of(target),
                 sync_dist=True)
        return loss

    def _collect(self, stage: str, batch: Any) -> None:
        output, target, groups = self.unpack(batch)
        output = self.predictions(output)
        self._outputs[stage].append((output.detach().float().cpu(), target.detach().cpu(),
                                     None if groups is None else groups.detach().cpu()))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._collect("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._collect("test", batch)

    def _gathered(self, stage: str) -> tuple[Tensor, Tensor, Tensor | None]:
        parts = self._outputs[stage]
        self._outputs[stage] = []
        if self.trainer is not None and self.trainer.world_size > 1:
            import torch.distributed as dist

            everything: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(everything, parts)
            parts = [item for rank_parts in everything for item in rank_parts]
        if not parts:
            raise ValueError(f"the {stage} loader yielded no batch")
        output = torch.cat([p[0] for p in parts])
        target = torch.cat([p[1] for p in parts])
        groups = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        return output, target, groups

    def _finish(self, stage: str) -> None:
        output, target, groups = self._gathered(stage)
        values = self.evaluate(output, target, groups)
        self.last_metrics[stage] = values
        # every rank logs the same numbers (computed on the gathered rows)
        self.log_dict({f"{stage}_{k}": v for k, v in values.items()}, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gattn"] = self.meta

    # ----------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        c = self.config
        params = [p for p in self.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        elif c.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay, momentum=0.9)
        if c.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max" if self.direction == "maximize" else "min",
                factor=c.lr_factor, patience=c.lr_patience)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": f"val_{self.monitor}", "strict": False}}
        if c.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(c.epochs), 1))
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        return optimizer
