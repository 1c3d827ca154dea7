"""One trial by k-fold cross-validation (`task.cv_folds`): k trainings, one value.

Fold i trains on every part of the training data but part i and validates on part i
(models.data.folds). Each fold's value is its best epoch's, as for a single split; the trial's
value is the mean over the folds. The folds are the same for every trial of a study (seeded by
`task.seed`), so trials are compared on the same data.

Pruning: after each fold the running mean of the primary metric is reported (step = fold) and the
pruner asked. The value reported is the quantity the study optimises, so the pruner compares like
with like and the last report equals the trial's value; judging a trial on one fold's first
epochs instead would bring back the one-split noise cross-validation is there to remove. A pruned
trial has still trained one whole fold: 1/k of a complete trial.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import optuna

from models import TaskData, TrainResult

Fit = Callable[[TaskData, int], TrainResult]  # (a fold's data, its index) -> its training
# A training -> each objective's best value: (as Optuna sees it, with any tie-break; as measured)
Best = Callable[[TrainResult], list[tuple[float, float]]]


class CrossValidation:
    """Trains a trial's settings on every fold; keeps what its MLflow run records."""

    def __init__(self, folds: Sequence[TaskData], primary: int, monitor: str) -> None:
        self.folds, self.primary, self.monitor = folds, primary, monitor
        self.best: list[list[tuple[float, float]]] = []  # per fold: each objective's best
        self.best_epochs: list[int] = []  # per fold: the epoch of its best primary value

    def run(
        self, trial: optuna.Trial, fit: Fit, best: Best, prunes: bool
    ) -> list[tuple[float, float]]:
        """Each objective's mean over the folds of their best values (seen, measured)."""
        for k, data in enumerate(self.folds):
            result = fit(data, k)
            self.best.append(best(result))
            # without a finite value in the fold, its last epoch stands in as the one to stop at
            last = result.epochs - 1
            self.best_epochs.append(last if result.best_epoch is None else result.best_epoch)
            mean = self.running_means()[-1]
            trial.report(mean, step=k)
            if prunes and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {k} (mean {self.monitor}={mean:.5g})")
        trial.set_user_attr("cv_best_epochs", self.best_epochs)
        columns = [list(c) for c in zip(*self.best, strict=True)]  # per objective, per fold
        return [
            (statistics.fmean(s for s, _ in c), statistics.fmean(m for _, m in c)) for c in columns
        ]

    def running_means(self) -> list[float]:
        """The primary objective's mean over folds 0..k (as Optuna sees it), per finished fold."""
        primary = [fold[self.primary][0] for fold in self.best]
        return [statistics.fmean(primary[: k + 1]) for k in range(len(primary))]

    def summary(self, metrics: Sequence[str]) -> dict[str, float]:
        """Per fold its best values (as measured) and best epoch, under `fold<k>/`."""
        figures: dict[str, float] = {}
        for k, (fold, epoch) in enumerate(zip(self.best, self.best_epochs, strict=True)):
            figures |= {f"fold{k}/best_{m}": v for m, (_, v) in zip(metrics, fold, strict=True)}
            figures[f"fold{k}/best_epoch"] = epoch
        return figures


def retrain_epochs(best_epochs: Sequence[int]) -> int:
    """Epochs to train on all the training data after cross-validation: the folds' mean best
    epoch, counted from one (a best epoch 0 means one epoch of training)."""
    return max(1, round(statistics.fmean(e + 1 for e in best_epochs)))
