"""The LightningModule: task losses, truncated BPTT with manual optimisation, per-epoch metrics.

Truncated back-propagation through time with chunk length k (`Settings.truncation`):

- tagging and language modelling (a loss at every step): the batch is cut along time into chunks
  of k steps; each chunk's loss is back-propagated and the optimizer steps once per chunk; the
  state is carried to the next chunk detached. A chunk's loss is its summed per-step loss divided
  by the batch's real steps, so the chunks' losses add up to the full-BPTT loss.
- classification and regression (one loss per sequence): one optimizer step per batch. Each
  sequence's own last k real steps carry a graph; its earlier steps run under `torch.no_grad` and
  hand over their state, and under mean/max pooling their features enter the pool as constants.
  With equal lengths this is exactly "the final k steps of the batch".
- language modelling: the train loader yields consecutive windows of B parallel streams; the
  state is carried (detached) from batch to batch, reset at each train epoch and when the batch
  size changes (Zaremba et al. 2014). Validation carries its own state, reset at its start.

Metrics are summed in tensors during the epoch and logged once, in `on_validation_epoch_end`,
which also appends a row to `history` (the tuner's callbacks read `history[-1]`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from models.config import Settings
from models.data.base import Batch, DataInfo
from models.errors import DivergenceError
from models.metrics import METRIC_MODES, default_monitor, ratio, summarize
from models.network import (
    MANY_TO_ONE,
    SequenceNet,
    State,
    detach_state,
    state_batch_size,
    step_mask,
)

_FLOW_SEQUENCES = 32  # sequences of the first validation batch that the diagnostic looks at
_FLOW_EPS = torch.finfo(torch.float32).tiny  # keeps log10 finite if a gradient underflows


def _optimizer(settings: Settings, groups: list[dict]) -> torch.optim.Optimizer:
    s = settings
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, lr=s.lr)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr)
    if s.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=s.lr, momentum=s.momentum)
    raise ValueError(f"unknown optimizer {s.optimizer!r}; valid: sgd, adam, adamw, rmsprop")


class SequenceModule(pl.LightningModule):
    """Trains a `SequenceNet`. Takes `Settings` and `DataInfo` as dicts (or the dataclasses,
    stored as dicts) so that checkpoints load with `load_from_checkpoint`."""

    def __init__(
        self, settings: dict[str, Any], info: dict[str, Any], monitor: str | None = None
    ) -> None:
        """`monitor` is the validation metric early stopping watches (default: the task's)."""
        super().__init__()
        settings = asdict(settings) if isinstance(settings, Settings) else dict(settings)
        info = asdict(info) if isinstance(info, DataInfo) else dict(info)
        self.save_hyperparameters()
        self.settings = Settings(**settings)
        self.info = DataInfo(**info)
        if self.settings.scheduler not in ("none", "step", "plateau"):
            raise ValueError(
                f"unknown scheduler {self.settings.scheduler!r}; valid: none, step, plateau"
            )
        if self.settings.truncation is not None and self.settings.truncation < 1:
            raise ValueError(f"truncation must be None or >= 1, got {self.settings.truncation}")
        self.monitor, self.mode = (
            default_monitor(self.info.task) if monitor is None else (monitor, METRIC_MODES[monitor])
        )
        self.net = SequenceNet(self.settings, self.info)
        self.automatic_optimization = False  # TBPTT steps the optimizer per chunk
        self.many_to_one = self.info.task in MANY_TO_ONE
        # matrices (and embeddings): what L1 and weight decay act on; biases and norms are spared
        self._weights = [p for p in self.net.parameters() if p.ndim >= 2]
        self._params = list(self.net.parameters())

        self.history: list[dict[str, float]] = []
        self.grad_flow_profile: list[float] = []
        self.train_state: State | None = None  # language model: carried across train batches
        self.val_state: State | None = None  # language model: carried across val batches
        self._best: dict[str, float] = {}
        self._train_sums: dict[str, Tensor] = {}
        self._val_sums: dict[str, Tensor] = {}
        self._grad_flow = math.nan
        self._epoch_closed = False
        self._stop_best = math.nan  # early stopping: the best monitored value so far
        self._bad_epochs = 0

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

    def _many_to_one_loss(self, pred: Tensor, targets: Tensor) -> Tensor:
        if self.info.task == "classification":
            return F.cross_entropy(pred, targets)
        return F.mse_loss(pred, targets.to(pred.dtype))

    def loss(self, batch: Batch) -> Tensor:
        """The task's mean loss on whole sequences from a zero state (no truncation, no penalty)."""
        pred = self(batch.inputs, batch.lengths)
        if self.many_to_one:
            return self._many_to_one_loss(pred, batch.targets)
        return F.cross_entropy(pred.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)

    def truncated_loss(self, batch: Batch) -> Tensor:
        """Classification/regression training loss whose graph spans only each sequence's last
        k = `truncation` real steps; the value equals `loss(batch)` (up to dropout)."""
        if not self.many_to_one:
            raise ValueError(
                f"truncated_loss is for classification and regression, not {self.info.task}"
            )
        inputs, targets, lengths = batch
        batch_size, steps = inputs.shape[:2]
        k = self.settings.truncation
        full = torch.full((batch_size,), steps, device=inputs.device)
        real = full if lengths is None else lengths.to(inputs.device)
        if k is None:
            prefix = 0
        else:
            start = (real - k).clamp(min=0)  # (B,) each row's steps before its last k
            # steps run without a graph (equal lengths need no device sync to know it)
            prefix = max(steps - k, 0) if lengths is None else int(start.max())
        if prefix == 0:
            features, _ = self.net.encode(inputs, lengths)  # (B, T, H)
            mask, last = step_mask(real, steps), real - 1
        elif lengths is None and self.settings.pooling == "last":
            # equal lengths, last-step pooling: the plain TBPTT split, no window or mask to build
            with torch.no_grad():
                _, state = self.net.encode(inputs[:, :prefix])
            features, _ = self.net.encode(inputs[:, prefix:], None, state)  # (B, k, H)
            return self._many_to_one_loss(self.net.head(features[:, -1]), targets)
        else:
            with torch.no_grad():
                early, state = self.net.encode(inputs[:, :prefix], start)  # (B, P, H), constants
            # each row's last k real steps, gathered to the front of a (B, k, ...) window
            window = (start[:, None] + torch.arange(k, device=inputs.device)).clamp(max=steps - 1)
            if inputs.dim() == 3:
                window = window[..., None].expand(-1, -1, inputs.shape[2])
            recent, _ = self.net.encode(inputs.gather(1, window), real - start, state)  # (B, k, H)
            features = torch.cat([early, recent], 1)  # (B, P + k, H)
            mask = torch.cat([step_mask(start, prefix), step_mask(real - start, k)], 1)
            last = prefix + real - start - 1
        pred = self.net.head(self.net.pool(features, mask, last))
        return self._many_to_one_loss(pred, targets)

    # --- training ---
    def on_train_epoch_start(self) -> None:
        self.train_state = None
        self._train_sums = {}
        self._epoch_closed = False

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.many_to_one:
            loss = self.truncated_loss(batch)
            self._optimize(loss + self.penalty(), loss)
            n = batch.targets.shape[0] * (1 if batch.targets.dim() == 1 else batch.targets.shape[1])
            self._add(self._train_sums, loss_sum=loss.detach() * n, count=n)
        else:
            self._train_many_to_many(batch)

    def _train_many_to_many(self, batch: Batch) -> None:
        carried = self.train_state if self.info.task == "language_model" else None
        if carried is not None and state_batch_size(carried) != batch.targets.shape[0]:
            carried = None  # a short last batch: its streams do not continue the others
        batch_loss, state = 0.0, carried
        for loss, share, state in self.chunk_losses(batch, carried):  # noqa: B007
            objective = loss + share * self.penalty() if self.settings.l1 else loss
            self._optimize(objective, loss)
            batch_loss = batch_loss + loss.detach()
        if self.info.task == "language_model":
            self.train_state = detach_state(state)
        total = (batch.targets != -100).sum()
        self._add(self._train_sums, loss_sum=batch_loss * total, count=total)

    def chunk_losses(
        self, batch: Batch, state: State | None = None
    ) -> Iterator[tuple[Tensor, Tensor, State]]:
        """Tagging and language modelling: for each chunk of k = `truncation` steps, its loss,
        its share of the batch's real steps, and the state after it.

        A chunk's loss is its summed cross-entropy over the batch's real steps, so the losses
        add up to `loss(batch)`. Consume each loss (backward) before asking for the next chunk,
        which starts from the state detached."""
        inputs, targets, lengths = batch
        steps = targets.shape[1]
        if lengths is not None:
            steps = int(lengths.max())  # chunks of padding alone would be empty steps
        total = (targets != -100).sum()  # the real steps of the batch
        k = self.settings.truncation or steps
        for t0 in range(0, steps, k):
            chunk_lengths = None if lengths is None else (lengths - t0).clamp(0, k)
            features, state = self.net.encode(inputs[:, t0 : t0 + k], chunk_lengths, state)
            logits = self.net.head(features)  # (B, k, C)
            chunk_targets = targets[:, t0 : t0 + k]
            chunk_sum = F.cross_entropy(
                logits.flatten(0, 1), chunk_targets.flatten(), ignore_index=-100, reduction="sum"
            )
            yield chunk_sum / total, (chunk_targets != -100).sum() / total, state
            state = detach_state(state)

    def _optimize(self, objective: Tensor, loss: Tensor) -> None:
        """One manual optimizer step on `objective`; raises DivergenceError before stepping if
        the loss or the gradient is not finite."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(objective)
        norm = self._clip()
        if not bool(torch.isfinite(objective.detach() + norm)):  # one host sync for both checks
            raise DivergenceError(self.current_epoch, self.global_step, float(loss.detach()))
        optimizer.step()
        sums = self._train_sums
        sums["grad_norm_max"] = torch.maximum(sums.get("grad_norm_max", norm), norm)
        self._add(sums, grad_norm_sum=norm, grad_steps=1)

    def _clip(self) -> Tensor:
        """Clip the gradients as configured; returns their global norm before clipping."""
        params = self._params
        clip_norm, clip_value = self.settings.clip_norm, self.settings.clip_value
        if clip_value is None and clip_norm is not None:
            return torch.nn.utils.clip_grad_norm_(params, clip_norm)
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, clip_value)
        if clip_norm is not None:  # after the value clip, so both bounds hold
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        return norm

    def on_train_epoch_end(self) -> None:
        if not self._epoch_closed:  # validation did not run this epoch
            self._close_epoch({})

    # --- validation ---
    def on_validation_epoch_start(self) -> None:
        self.val_state = None
        self._val_sums = {}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if batch_idx == 0:
            # a few sequences estimate the profile well, at a fraction of a training step's cost
            self._grad_flow = self.gradient_flow(
                Batch(*(None if t is None else t[:_FLOW_SEQUENCES] for t in batch))
            )
        state = self.val_state
        if state is not None and state_batch_size(state) != batch.targets.shape[0]:
            state = None
        sums, self.val_state = self.evaluate_batch(batch, state)
        self._add(self._val_sums, **sums)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._close_epoch(self.metrics(self._val_sums, "val_"))

    def _close_epoch(self, val: dict[str, float]) -> None:
        """Log the epoch's metrics once, append them to `history`, step the scheduler."""
        sums = self._train_sums
        row: dict[str, float] = {"epoch": self.current_epoch}
        row["train_loss"] = ratio(sums, "loss_sum", "count")
        row.update(val)
        for name, value in val.items():
            better = max if METRIC_MODES[name] == "max" else min
            best = self._best.get(name)
            self._best[name] = value if best is None or math.isnan(best) else better(best, value)
            row[f"best_{name}"] = self._best[name]
        optimizer = self.optimizers()
        row["lr"] = float(optimizer.param_groups[0]["lr"])
        row["grad_norm_mean"] = ratio(sums, "grad_norm_sum", "grad_steps")
        row["grad_norm_max"] = float(sums["grad_norm_max"]) if "grad_norm_max" in sums else math.nan
        row["grad_flow"] = self._grad_flow
        if not self.trainer.barebones:  # for loggers and callbacks that read logged metrics
            self.log_dict({k: v for k, v in row.items() if k != "epoch"})
        self.history.append(row)
        self._epoch_closed = True
        if self._no_longer_improving(row.get(self.monitor, math.nan)):
            self.trainer.should_stop = True

        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if "val_loss" in val:
                scheduler.step(val["val_loss"])
        elif scheduler is not None:
            scheduler.step()

    def _no_longer_improving(self, value: float) -> bool:
        """Early stopping: `patience` epochs in a row without improving by `min_delta`.

        Done here rather than by Lightning's EarlyStopping callback, which reads metrics that
        only logging provides, and logging costs time in every trial."""
        if self.settings.patience is None or math.isnan(value):
            return False
        delta = self.settings.min_delta
        best = self._stop_best
        improved = math.isnan(best) or (
            value > best + delta if self.mode == "max" else value < best - delta
        )
        if improved:
            self._stop_best, self._bad_epochs = value, 0
        else:
            self._bad_epochs += 1
        return self._bad_epochs >= self.settings.patience

    # --- evaluation ---
    def evaluate_batch(
        self, batch: Batch, state: State | None = None
    ) -> tuple[dict[str, Tensor], State | None]:
        """Summed loss and metric counts of one batch (whole sequences); a language model starts
        from `state` and returns its new state."""
        inputs, targets, lengths = batch
        if self.info.task == "language_model":
            features, state = self.net.encode(inputs, None, state)
            pred = self.net.head(features)  # (B, L, V)
        else:
            pred = self(inputs, lengths)
        if self.info.task == "regression":
            err = pred - targets.to(pred.dtype)
            sq = err.square().sum()
            return {"loss_sum": sq, "sq_sum": sq, "abs_sum": err.abs().sum(), "count": targets.numel()}, state  # fmt: skip
        if self.info.task == "classification":
            loss_sum = F.cross_entropy(pred, targets, reduction="sum")
            return {"loss_sum": loss_sum, "correct": (pred.argmax(-1) == targets).sum(), "count": targets.numel()}, state  # fmt: skip
        real = targets != -100
        loss_sum = F.cross_entropy(pred.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")  # fmt: skip
        correct = ((pred.argmax(-1) == targets) & real).sum()
        return {"loss_sum": loss_sum, "correct": correct, "count": real.sum()}, state

    def metrics(self, sums: dict[str, Tensor], prefix: str = "val_") -> dict[str, float]:
        """The task's metrics from summed `evaluate_batch` results, named `prefix + metric`."""
        return summarize(sums, self.info.task, self.info.level, prefix, self.info.baselines)

    # --- diagnostics ---
    def gradient_flow(self, batch: Batch) -> float:
        """log10 of |dL/dx_t| at the first step over that at the last step, x_t being the input
        of the recurrent layer, averaged over the batch's real steps; sets `grad_flow_profile`.

        Parameter gradients are untouched. L is the task loss for classification and regression,
        and the loss at each sequence's last real step for tagging and language modelling, so
        that the profile always measures how far a gradient from the end travels back. Steps
        are padded-time positions from a fresh zero state."""
        with torch.inference_mode(False), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):  # fmt: skip
            # cuDNN cannot back-propagate an RNN in eval mode; inference tensors cannot join a graph
            inputs, targets = batch.inputs.clone(), batch.targets.clone()
            batch_size, steps = inputs.shape[:2]
            lengths = torch.full((batch_size,), steps, device=inputs.device)
            if batch.lengths is not None:
                lengths = batch.lengths.clone().to(inputs.device)
            x = self.net.embed(inputs).detach().requires_grad_(True)  # (B, T, E)
            features, _ = self.net.recur(x, None if batch.lengths is None else lengths)
            mask, last = step_mask(lengths, steps), lengths - 1
            if self.many_to_one:
                loss = self._many_to_one_loss(self.net.head(self.net.pool(features, mask, last)), targets)  # fmt: skip
            else:
                rows = torch.arange(batch_size, device=inputs.device)
                loss = F.cross_entropy(self.net.head(features[rows, last]), targets[rows, last])
            (grad,) = torch.autograd.grad(loss, x)
        norms = grad.norm(dim=-1) * mask  # (B, T)
        profile = norms.sum(0) / mask.sum(0).clamp(min=1)
        profile = profile[: int(lengths.max())]
        self.grad_flow_profile = profile.tolist()
        first, last_norm = self.grad_flow_profile[0], self.grad_flow_profile[-1]
        return math.log10(max(first, _FLOW_EPS) / max(last_norm, _FLOW_EPS))

    # --- optimisation ---
    def configure_optimizers(self) -> Any:
        s = self.settings
        weights = {id(p) for p in self._weights}
        groups = [
            {"params": self._weights, "weight_decay": s.weight_decay},
            {"params": [p for p in self.parameters() if id(p) not in weights], "weight_decay": 0.0},
        ]
        optimizer = _optimizer(s, groups)
        if s.scheduler == "none":
            return optimizer
        if s.scheduler == "step":
            scheduler: Any = torch.optim.lr_scheduler.StepLR(optimizer, s.lr_step, s.lr_gamma)
        else:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", patience=s.lr_step, factor=s.lr_gamma
            )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    @staticmethod
    def _add(sums: dict[str, Any], **values: Any) -> None:
        for key, value in values.items():
            sums[key] = sums[key] + value if key in sums else value
