"""One training run: `train(settings, data)` fits a model and returns its `TrainResult`.

    from models import AddingData, Settings, load_task, train
    result = train(Settings(cell="gru", max_epochs=5), load_task(AddingData(seq_len=50)))
    print(result.best_value, result.best_epoch, result.history[-1])

`evaluate(result.module, data, "test")` computes the same metrics on another split.

The record of a run is the `TrainResult`: the monitored metric's best value and epoch, the
parameter count, the last validation's gradient-flow profile, and `history`, one row per epoch:

    epoch                   0, 1, ...
    train_loss              mean training loss of the epoch
    val_<metric>            the task's validation metrics (`models.metrics.val_metric_names`)
    best_val_<metric>       the best value of each of them so far, in its direction
    lr                      the learning rate the epoch trained with
    grad_norm_mean, grad_norm_max   the global gradient norm per optimizer step, before clipping
    grad_flow               log10 of |dL/dx_t| at the first step over the last (models.diagnostics)

Following a run while it trains: pass `EpochCallback`s among `callbacks`. train() calls each one's
`on_start(result)` before the first epoch and `on_epoch(result)` after each epoch's validation,
with the same `TrainResult` it will return, filled in up to that epoch. A callback that raises
stops training, and its exception leaves train() unchanged (the tuner's pruning raises
`optuna.TrialPruned` this way). A callback that keeps `result` still holds every finished epoch
if training fails later. Lightning callbacks may be passed too; they see `module.history[-1]` in
`on_train_epoch_end`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import os
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning_fabric.utilities.registry
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from models.config import Settings
from models.data.base import Batch, TaskData
from models.data.datamodule import SequenceDataModule
from models.metrics import (
    METRIC_MODES,
    Mode,
    accumulate,
    baseline_names,
    default_monitor,
    val_metric_names,
)
from models.module import SequenceModule
from models.stopping import Best
from models.tbptt import carried

# Batches per Lightning step (`SequenceDataModule(batches_per_step=...)`): Lightning's hooks and
# bookkeeping cost about a thousand Python calls per step, which a small network's step is not much
# more than; in groups of 32 they are a few percent of that. A group is 32 batches in memory at once.
BATCHES_PER_STEP = 32
# Trainer options that count batches: with them, a batch stays a Lightning step.
_COUNTS_BATCHES = ("limit_train_batches", "limit_val_batches", "val_check_interval")

# Lightning's per-Trainer banners ("GPU available: ...", tips) go through these loggers at INFO.
_NOISY_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed")


@functools.lru_cache(maxsize=16)
def _entry_points_on(path: tuple[str, ...], group: str) -> importlib.metadata.EntryPoints:
    return importlib.metadata.entry_points(group=group)


def _entry_points(**selection: Any) -> importlib.metadata.EntryPoints:
    """importlib's `entry_points`, looked up once per group and `sys.path`.

    Every Trainer() asks for the callback factories packages register (group
    `pytorch_lightning.callbacks_factory`), and importlib answers by reading the metadata of
    every installed package: 6.6 ms with this project's 136, a fifth of a small trial's fixed
    cost. The packages on a path do not change while a worker trains; a factory found here is
    still called by every Trainer, so each gets callbacks of its own."""
    if set(selection) != {"group"}:
        return importlib.metadata.entry_points(**selection)
    return _entry_points_on(tuple(sys.path), selection["group"])


# Lightning's only use of the name: `_load_external_callbacks`, called by every Trainer().
lightning_fabric.utilities.registry.entry_points = _entry_points  # type: ignore[assignment]


@dataclass
class TrainResult:
    """What one run produced; `EpochCallback`s see it filled in epoch by epoch."""

    monitor: str  # the metric early stopping and `best_value` follow
    mode: Mode  # its direction: "min" or "max"
    n_params: int  # every parameter of the network
    module: SequenceModule  # trained: the last epoch's weights
    trainer: pl.Trainer
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    grad_flow_profile: list[float] = field(default_factory=list)  # mean |dL/dx_t| by step t
    best_value: float = math.nan  # the best value of `monitor` over the epochs, not the last
    best_epoch: int | None = None  # the epoch that reached it

    @property
    def epochs(self) -> int:
        """Epochs trained (early stopping may end before max_epochs)."""
        return len(self.history)


class EpochCallback:
    """Follows a train() run through its `TrainResult`: subclass, override, pass in `callbacks`."""

    def on_start(self, result: TrainResult) -> None:
        """Before the first epoch: `n_params`, `module` and `trainer` are set, `history` empty."""

    def on_epoch(self, result: TrainResult) -> None:
        """After each epoch: `result.history[-1]` is its row, the best value and the profile are
        up to date. Raising stops training; the exception leaves train() as it is."""


class _EpochFeed(pl.Callback):
    """Fills in the TrainResult as each epoch closes and tells the EpochCallbacks."""

    def __init__(self, listeners: list[EpochCallback], best: Best) -> None:
        self.listeners, self.best = listeners, best
        self.result: TrainResult | None = None  # set once the Trainer exists

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module.close_epoch()  # a no-op when validation already closed it
        result = self.result
        assert result is not None
        row = result.history[-1]
        if self.best.update(row.get(result.monitor, math.nan), int(row["epoch"])):
            result.best_value, result.best_epoch = self.best.value, self.best.epoch
        result.grad_flow_profile = pl_module.grad_flow_profile  # a new list each validation
        for listener in self.listeners:
            listener.on_epoch(result)


def train(
    settings: Settings,
    data: TaskData,
    *,
    monitor: str | None = None,
    callbacks: Sequence[pl.Callback | EpochCallback] = (),
    enable_progress_bar: bool = False,
    trainer_kwargs: dict[str, Any] | None = None,
    batches_per_step: int | None = None,
) -> TrainResult:
    """Train on `data.train`, validate every epoch on `data.val`, stop early on `monitor`
    (default: the task's metric) when `settings.patience` is set. `trainer_kwargs` override the
    Trainer arguments set here (e.g. a logger, or `limit_train_batches` in tests).
    `batches_per_step` batches make one Lightning step (the same training, fewer of Lightning's
    per-step calls); default `BATCHES_PER_STEP`, or 1 with a progress bar or a Trainer option that
    counts batches."""
    for name in _NOISY_LOGGERS:
        quiet = logging.getLogger(name)
        if quiet.level != logging.WARNING:  # setLevel clears every logger's cache: 0.2 ms
            quiet.setLevel(logging.WARNING)
    seed_everything(settings.seed)
    monitor, mode = _monitor(monitor, data)
    if batches_per_step is None:
        options = trainer_kwargs or {}
        counts = any(options.get(name) not in (None, 0) for name in _COUNTS_BATCHES)
        batches_per_step = 1 if counts or enable_progress_bar else BATCHES_PER_STEP
    datamodule = SequenceDataModule(
        data, settings.batch_size, settings.seed, batches_per_step=batches_per_step
    )
    module = SequenceModule(settings.to_dict(), asdict(data.info), monitor)
    listeners = [c for c in callbacks if isinstance(c, EpochCallback)]
    feed = _EpochFeed(listeners, Best(mode))
    lightning = [feed, *(c for c in callbacks if not isinstance(c, EpochCallback))]
    trainer = pl.Trainer(
        **_trainer_options(settings, lightning, enable_progress_bar, trainer_kwargs)
    )
    n_params = sum(p.numel() for p in module.parameters())
    result = TrainResult(monitor, mode, n_params, module, trainer, module.history)
    feed.result = result
    for listener in listeners:
        listener.on_start(result)
    with warnings.catch_warnings():
        # torch 2.13 deprecates a pytree class that Lightning 2.6 still checks for
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        trainer.fit(module, datamodule=datamodule)
    return result


def seed_everything(seed: int) -> None:
    """Lightning's `seed_everything` (Python, NumPy, torch, `PL_GLOBAL_SEED`), seeding only the
    accelerators this machine has: torch's `manual_seed` queues a lazy CUDA seed with a stack
    trace it formats whenever CUDA is not initialized, 1.4 ms a trial deep in a study's stack
    on a machine without a GPU."""
    if torch.cuda.is_available() or torch.backends.mps.is_available() or torch.xpu.is_available():
        pl.seed_everything(seed, workers=False, verbose=False)
        return
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = "0"
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


def _trainer_options(
    settings: Settings,
    callbacks: list[pl.Callback],
    enable_progress_bar: bool,
    trainer_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "max_epochs": settings.max_epochs,
        "callbacks": callbacks,
        "enable_progress_bar": enable_progress_bar,
        **(trainer_kwargs or {}),
    }
    # Barebones skips Lightning's logging, checkpointing and summaries: about a tenth of a small
    # trial's time. The module keeps its own history and early stopping, so nothing is lost,
    # unless a logger, a progress bar or a callback that reads logged metrics is asked for.
    reads_logged = any(isinstance(c, (EarlyStopping, ModelCheckpoint)) for c in callbacks)
    if options.get("logger") or options["enable_progress_bar"] or reads_logged:
        return {
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            **options,
        }
    dropped = ("logger", "enable_progress_bar")
    return {"barebones": True, **{k: v for k, v in options.items() if k not in dropped}}


def _monitor(monitor: str | None, data: TaskData) -> tuple[str, Mode]:
    if monitor is None:
        return default_monitor(data.info.task)
    baselines = baseline_names(data.info.baselines)
    valid = ("train_loss", *val_metric_names(data.info.task, data.info.level, baselines))
    if monitor not in valid:
        raise ValueError(
            f"monitor {monitor!r} is not logged for a {data.info.task} task; "
            f"valid: {', '.join(valid)}"
        )
    return monitor, METRIC_MODES[monitor]


@torch.no_grad()
def evaluate(module: SequenceModule, data: TaskData, split: str = "test") -> dict[str, float]:
    """The task's metrics on `split` ("train", "val" or "test"), named `<split>_<metric>`.

    A language model walks the split's windows in order, carrying its state as in validation."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    datamodule = SequenceDataModule(data, module.settings.batch_size, module.settings.seed)
    loader = getattr(datamodule, f"{split}_dataloader")()
    was_training = module.training
    module.eval()
    sums: dict[str, Any] = {}
    state = None
    try:
        for inputs, targets, lengths in loader:
            batch = Batch(
                inputs.to(module.device),
                targets.to(module.device),
                None if lengths is None else lengths.to(module.device),
            )
            batch_sums, state = module.evaluate_batch(batch, carried(state, targets.shape[0]))
            accumulate(sums, **batch_sums)
    finally:
        module.train(was_training)
    return module.metrics(sums, f"{split}_")
