"""The LightningModule: its hooks call the small homes of each concern.

    module = SequenceModule(settings, info)    # or through models.train(), which builds one
    pl.Trainer(max_epochs=5).fit(module, datamodule=SequenceDataModule(data, 64, 0))
    module.history[-1]                         # the last epoch's metrics

- losses and metric counts: `models.losses`; the metric table: `models.metrics`
- truncated BPTT (chunks, truncated many-to-one loss, the carried state): `models.tbptt`
- optimiser, schedule, clipping: `models.optim`; early stopping and best values: `models.stopping`
- the gradient-flow diagnostic: `models.diagnostics`

Optimisation is manual, since truncated BPTT steps the optimizer once per chunk; so a Lightning
step may also be a list of batches (`SequenceDataModule(batches_per_step=k)`), trained in order.
Each optimizer step calls torch's backward and step directly unless a callback, a subclass or
mixed precision needs Lightning's wrappers (`lightning_steps_idle`). Metrics are
summed in tensors during the epoch and turned into numbers once, when the epoch closes (after its
validation): a row of `history` with every metric, its best value so far, the learning rate,
the gradient norms and the gradient flow. `models.train` passes each row on to its callbacks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import Tensor

from models import diagnostics, losses, optim, tbptt
from models.config import Settings
from models.data.base import Batch, DataInfo
from models.errors import DivergenceError
from models.metrics import METRIC_MODES, accumulate, default_monitor, ratio, summarize
from models.network import MANY_TO_ONE, State, build_network, detach_state
from models.schedules import EpochSchedule
from models.stopping import Best, Patience


class SequenceModule(pl.LightningModule):
    """Trains a `SequenceNet` or the user's network (`models.user_network`). Takes `Settings` and `DataInfo` as dicts (or the dataclasses,
    stored as dicts) so that checkpoints load with `load_from_checkpoint`."""

    def __init__(
        self, settings: dict[str, Any], info: dict[str, Any], monitor: str | None = None
    ) -> None:
        """`monitor` is the validation metric early stopping watches (default: the task's)."""
        super().__init__()
        settings = asdict(settings) if isinstance(settings, Settings) else dict(settings)
        info = asdict(info) if isinstance(info, DataInfo) else dict(info)
        self.save_hyperparameters()
        self.settings, self.info = Settings(**settings), DataInfo(**info)
        if self.settings.truncation is not None and self.settings.truncation < 1:
            raise ValueError(f"truncation must be None or >= 1, got {self.settings.truncation}")
        self.monitor, self.mode = (
            default_monitor(self.info.task) if monitor is None else (monitor, METRIC_MODES[monitor])
        )
        self.net = build_network(self.settings, self.info)
        self.automatic_optimization = False  # TBPTT steps the optimizer per chunk
        self.many_to_one = self.info.task in MANY_TO_ONE
        self._weights = optim.penalized(self.net)
        self._params = list(self.net.parameters())

        self.history: list[dict[str, float]] = []  # one row per closed epoch
        self.grad_flow_profile: list[float] = []  # |dL/dx_t| by step, at the last validation
        self.train_state: State | None = None  # language model: carried across train batches
        self.val_state: State | None = None  # language model: carried across val batches
        self._best: dict[str, Best] = {}  # per validation metric: the best_<metric> columns
        self._stopping = Patience(self.mode, self.settings.patience, self.settings.min_delta)
        self._train_sums: dict[str, Tensor] = {}
        self._grad_norms: list[Tensor] = []  # each optimizer step's, this epoch
        self._val_sums: dict[str, Tensor] = {}
        self._grad_flow = math.nan
        self._epoch_closed = False
        self._direct_steps = False  # see on_train_start

    # --- inference ---
    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(inputs, lengths)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch.inputs, batch.lengths)

    # --- losses ---
    def penalty(self) -> Tensor | float:
        """The L1 term added to the training loss."""
        if not self.settings.l1:
            return 0.0
        return self.settings.l1 * sum(w.abs().sum() for w in self._weights)

    def loss(self, batch: Batch) -> Tensor:
        """The task's mean loss on whole sequences from a zero state (no truncation, no penalty)."""
        return losses.sequence_loss(self.net, batch)

    def truncated_loss(self, batch: Batch) -> Tensor:
        """Classification/regression training loss whose graph spans only each sequence's last
        k = `truncation` real steps; the value equals `loss(batch)` (up to dropout)."""
        if not self.many_to_one:
            raise ValueError(
                f"truncated_loss is for classification and regression, not {self.info.task}"
            )
        loss_fn = functools.partial(losses.many_to_one_loss, self.info.task)
        return tbptt.truncated_loss(self.net, batch, self.settings.truncation, loss_fn)

    def chunk_losses(
        self, batch: Batch, state: State | None = None
    ) -> Iterator[tuple[Tensor, Tensor, State]]:
        """Tagging and language modelling: each chunk's loss, share of the real steps and state
        after it (`models.tbptt.chunk_losses`); the losses add up to `loss(batch)`."""
        return tbptt.chunk_losses(self.net, batch, self.settings.truncation, state)

    def evaluate_batch(
        self, batch: Batch, state: State | None = None
    ) -> tuple[dict[str, Any], State | None]:
        """Summed loss and metric counts of one batch (`models.losses.batch_sums`)."""
        return losses.batch_sums(self.net, batch, state)

    def metrics(self, sums: dict[str, Tensor], prefix: str = "val_") -> dict[str, float]:
        """The task's metrics from summed `evaluate_batch` results, named `prefix + metric`."""
        return summarize(sums, self.info.task, self.info.level, prefix, self.info.baselines)

    # --- training ---
    def on_train_start(self) -> None:
        self._direct_steps = lightning_steps_idle(self)

    def on_train_epoch_start(self) -> None:
        self.train_state = None
        self._train_sums = {}
        self._grad_norms = []
        self._epoch_closed = False

    def training_step(self, batch: Batch | list[Batch], batch_idx: int) -> None:
        """One batch, or a group of them in order (`SequenceDataModule(batches_per_step=...)`)."""
        for one in batch if isinstance(batch, list) else (batch,):
            self._train_batch(one)

    def _train_batch(self, batch: Batch) -> None:
        if self.many_to_one:
            loss = self.truncated_loss(batch)
            self._optimize(loss + self.penalty() if self.settings.l1 else loss, loss)
            n = batch.targets.shape[0] * (1 if batch.targets.dim() == 1 else batch.targets.shape[1])
            accumulate(self._train_sums, loss_sum=loss.detach() * n, count=n)
        else:
            self._train_many_to_many(batch)

    def _train_many_to_many(self, batch: Batch) -> None:
        is_lm = self.info.task == "language_model"
        carried = tbptt.carried(self.train_state, batch.targets.shape[0]) if is_lm else None
        batch_loss, state = 0.0, carried
        for loss, share, state in self.chunk_losses(batch, carried):  # noqa: B007
            objective = loss + share * self.penalty() if self.settings.l1 else loss
            self._optimize(objective, loss)
            batch_loss = batch_loss + loss.detach()
        if is_lm:
            self.train_state = detach_state(state)
        total = (batch.targets != -100).sum()
        accumulate(self._train_sums, loss_sum=batch_loss * total, count=total)

    def _optimize(self, objective: Tensor, loss: Tensor) -> None:
        """One manual optimizer step on `objective`; raises DivergenceError before stepping if
        the loss or the gradient is not finite."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        if self._direct_steps:
            objective.backward()
        else:
            self.manual_backward(objective)
        norm = optim.clip_gradients(self._params, self.settings)
        if not math.isfinite(objective.item() + norm.item()):  # a NaN or inf in either
            raise DivergenceError(self.current_epoch, self.global_step, float(loss.detach()))
        if self._direct_steps:
            optimizer._on_before_step()  # Lightning's step count (`trainer.global_step`)
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            optimizer.step()
        self._grad_norms.append(norm)  # summed once, when the epoch closes

    def on_train_epoch_end(self) -> None:
        self.close_epoch()  # when validation did not run this epoch

    # --- validation ---
    def on_validation_epoch_start(self) -> None:
        self.val_state = None
        self._val_sums = {}

    def validation_step(self, batch: Batch | list[Batch], batch_idx: int) -> None:
        group = batch if isinstance(batch, list) else (batch,)
        if batch_idx == 0:
            self._grad_flow = self.gradient_flow(diagnostics.first_sequences(group[0]))
        for one in group:
            self._validate_batch(one)

    def _validate_batch(self, batch: Batch) -> None:
        state = tbptt.carried(self.val_state, batch.targets.shape[0])
        sums, self.val_state = self.evaluate_batch(batch, state)
        accumulate(self._val_sums, **sums)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.close_epoch(self.metrics(self._val_sums, "val_"))

    # --- the epoch's record ---
    def close_epoch(self, val: dict[str, float] | None = None) -> None:
        """Once per epoch (later calls do nothing): append the row of metrics to `history`, log
        it if a logger reads it, apply early stopping and step the scheduler."""
        if self._epoch_closed:
            return
        self._epoch_closed = True
        row = self._epoch_row(val or {})
        if not self.trainer.barebones:  # for loggers and callbacks that read logged metrics
            self.log_dict({k: v for k, v in row.items() if k != "epoch"})
        self.history.append(row)
        if self._stopping.should_stop(row.get(self.monitor, math.nan)):
            self.trainer.should_stop = True
        self.lr_schedulers().step(val or {})

    def _epoch_row(self, val: dict[str, float]) -> dict[str, float]:
        sums = self._train_sums
        row: dict[str, float] = {"epoch": self.current_epoch}
        row["train_loss"] = ratio(sums, "loss_sum", "count")
        row.update(val)
        for name, value in val.items():
            best = self._best.setdefault(name, Best(METRIC_MODES[name]))
            best.update(value)
            row[f"best_{name}"] = best.value
        row["lr"] = float(self.optimizers().param_groups[0]["lr"])
        norms = torch.stack(self._grad_norms).tolist() if self._grad_norms else [math.nan]
        row["grad_norm_mean"] = sum(norms) / len(norms)
        row["grad_norm_max"] = max(norms)
        row["grad_flow"] = self._grad_flow
        return row

    # --- diagnostics ---
    def gradient_flow(self, batch: Batch) -> float:
        """log10 of |dL/dx_t| at the first step over the last (`models.diagnostics`); sets
        `grad_flow_profile` to the norm at every step."""
        ratio_log10, self.grad_flow_profile = diagnostics.gradient_flow(self.net, batch)
        return ratio_log10

    # --- optimisation ---
    def configure_optimizers(self) -> Any:
        optimizer = optim.make_optimizer(self.settings, self.net)
        return {"optimizer": optimizer, "lr_scheduler": EpochSchedule(optimizer, self.settings)}


_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def lightning_steps_idle(module: SequenceModule) -> bool:
    """Whether Lightning's backward and optimizer-step wrappers would do nothing but call hooks
    no one overrides: full precision on one device, no callback and no module override of the
    step hooks. Then `_optimize` calls torch directly; the wrappers cost about 0.1 ms a step,
    3% of a small network's truncated-BPTT step."""
    trainer = module.trainer
    if type(trainer.precision_plugin) is not Precision:  # mixed precision scales the loss
        return False
    if type(trainer.strategy) is not SingleDeviceStrategy:  # DDP syncs in backward
        return False
    if any(is_overridden(hook, module, pl.LightningModule) for hook in (*_STEP_HOOKS, "backward")):
        return False
    return not any(
        is_overridden(hook, callback, pl.Callback)
        for callback in trainer.callbacks
        for hook in _STEP_HOOKS
    )
