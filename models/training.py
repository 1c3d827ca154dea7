"""One training run: `train(settings, data)` fits a model and returns its best validation value.

    from models import AddingData, Settings, load_task, train
    result = train(Settings(cell="gru", max_epochs=5), load_task(AddingData(seq_len=50)))
    print(result.best_value, result.history[-1])

`evaluate(result.module, data, "test")` computes the same metrics on another split.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from models.config import Settings
from models.data.base import Batch, TaskData
from models.data.datamodule import SequenceDataModule
from models.metrics import (
    METRIC_MODES,
    Mode,
    baseline_names,
    default_monitor,
    val_metric_names,
)
from models.module import SequenceModule
from models.network import state_batch_size

# Lightning's per-Trainer banners ("GPU available: ...", tips) go through these loggers at INFO.
_NOISY_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed")


@dataclass
class TrainResult:
    best_value: float  # the best validation value of `monitor` over the epochs, not the last
    monitor: str
    mode: Mode
    epochs: int  # epochs trained (early stopping may end before max_epochs)
    history: list[dict[str, float]]  # one row of metrics per epoch
    n_params: int
    module: SequenceModule
    trainer: pl.Trainer


def train(
    settings: Settings,
    data: TaskData,
    *,
    monitor: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
    enable_progress_bar: bool = False,
    trainer_kwargs: dict[str, Any] | None = None,
) -> TrainResult:
    """Train on `data.train`, validate every epoch on `data.val`, stop early on `monitor`
    (default: the task's metric) when `settings.patience` is set. `trainer_kwargs` override the
    Trainer arguments set here (e.g. a logger, or `limit_train_batches` in tests)."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    pl.seed_everything(settings.seed, workers=False, verbose=False)
    monitor, mode = _monitor(monitor, data)

    datamodule = SequenceDataModule(data, settings.batch_size, settings.seed)
    module = SequenceModule(settings.to_dict(), asdict(data.info), monitor)
    options: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "max_epochs": settings.max_epochs,
        "callbacks": list(callbacks),
        "enable_progress_bar": enable_progress_bar,
        **(trainer_kwargs or {}),
    }
    # Barebones skips Lightning's logging, checkpointing and summaries: about a tenth of a small
    # trial's time. The module keeps its own history and early stopping, so nothing is lost,
    # unless a logger, a progress bar or a callback that reads logged metrics is asked for.
    reads_logged = any(isinstance(c, (EarlyStopping, ModelCheckpoint)) for c in callbacks)
    if options.get("logger") or options["enable_progress_bar"] or reads_logged:
        options = {
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            **options,
        }
    else:
        options = {
            "barebones": True,
            **{k: v for k, v in options.items() if k not in ("logger", "enable_progress_bar")},
        }
    trainer = pl.Trainer(**options)
    with warnings.catch_warnings():
        # torch 2.13 deprecates a pytree class that Lightning 2.6 still checks for
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        trainer.fit(module, datamodule=datamodule)

    values = [row[monitor] for row in module.history if not math.isnan(row.get(monitor, math.nan))]
    best = (max if mode == "max" else min)(values, default=math.nan)
    n_params = sum(p.numel() for p in module.parameters())
    history = module.history
    return TrainResult(best, monitor, mode, len(history), history, n_params, module, trainer)


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
            if state is not None and state_batch_size(state) != targets.shape[0]:
                state = None
            batch = Batch(
                inputs.to(module.device),
                targets.to(module.device),
                None if lengths is None else lengths.to(module.device),
            )
            batch_sums, state = module.evaluate_batch(batch, state)
            for key, value in batch_sums.items():
                sums[key] = sums[key] + value if key in sums else value
    finally:
        module.train(was_training)
    return module.metrics(sums, f"{split}_")
