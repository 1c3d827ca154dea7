"""The best value of a metric so far, and early stopping on it.

    best = Best("min")
    best.update(0.3, epoch=0); best.update(0.5, epoch=1)     # True, False
    best.value, best.epoch                                   # 0.3, 0

    stop = Patience("min", patience=2, min_delta=0.01)
    [stop.should_stop(v) for v in (0.3, 0.295, 0.31)]        # [False, False, True]

A NaN value (a metric not measured that epoch) is never best and never counts against patience.
Done here rather than by Lightning's EarlyStopping callback, which reads metrics that only
logging provides, and logging costs time in every trial.
"""

from __future__ import annotations

import math

from models.metrics import Mode


class Best:
    """The best value of one metric so far, in direction `mode`; an update must beat it by more
    than `min_delta` (the first value that is not NaN always does)."""

    def __init__(self, mode: Mode, min_delta: float = 0.0) -> None:
        self.mode, self.min_delta = mode, min_delta
        self.value = math.nan
        self.epoch: int | None = None  # when `value` was reached

    def update(self, value: float, epoch: int | None = None) -> bool:
        """Keep `value` if it is the new best; says whether it was."""
        if math.isnan(value):
            return False
        best, delta = self.value, self.min_delta
        better = value > best + delta if self.mode == "max" else value < best - delta
        if not (math.isnan(best) or better):
            return False
        self.value, self.epoch = value, epoch
        return True


class Patience:
    """Early stopping: stop after `patience` epochs in a row without improving by `min_delta`;
    `patience=None` never stops."""

    def __init__(self, mode: Mode, patience: int | None, min_delta: float = 0.0) -> None:
        self.best = Best(mode, min_delta)
        self.patience = patience
        self.bad_epochs = 0

    def should_stop(self, value: float) -> bool:
        """Count this epoch's `value`; True once patience has run out."""
        if self.patience is None or math.isnan(value):
            return False
        self.bad_epochs = 0 if self.best.update(value) else self.bad_epochs + 1
        return self.bad_epochs >= self.patience
