"""One trial: sampled settings -> training with pruning and an epoch record -> its MLflow run.

`Objective.__call__` reads top to bottom: suggest, open the run, train, return the best
validation value(s); whatever happens, the run is closed with the trial's state and reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import optuna
import pytorch_lightning as pl

from models import train
from models.data import task_data
from tuner.config import StudyConfig
from tuner.space import suggest
from tuner.study import first_prunable_epoch
from tuner.tracking import Tracker


class MetricNotLoggedError(ValueError):
    """The objective names a metric that training never logs."""


class TrialFailed(Exception):
    """The trial was stopped by a signal; carries the reason to Optuna."""


class PruningCallback(pl.Callback):
    """Reports the monitored validation metric to the trial each epoch; stops pruned trials."""

    def __init__(self, trial: optuna.Trial, monitor: str, first_prunable_epoch: int = 0) -> None:
        self.trial, self.monitor = trial, monitor
        # Asking the pruner reads every trial of the study: skip it while it cannot say yes.
        self.first_prunable_epoch = first_prunable_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        row = pl_module.history[-1]  # written after this epoch's validation
        if self.monitor not in row:
            raise MetricNotLoggedError(
                f"metric {self.monitor!r} is never logged; logged: {', '.join(sorted(row))}"
            )
        epoch = int(row["epoch"])
        self.trial.report(float(row[self.monitor]), step=epoch)
        if epoch >= self.first_prunable_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch} ({self.monitor}={row[self.monitor]:.5g})"
            )


class EpochRecorder(pl.Callback):
    """Keeps each epoch's metrics with a timestamp, the parameter count and the last epoch's
    gradient norm per time step (already measured by the module), even if training fails."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.n_params = 0
        self.grad_profile: list[float] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.n_params = sum(p.numel() for p in pl_module.parameters())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.history.append({**pl_module.history[-1], "time_ms": time.time() * 1000})
        self.grad_profile = pl_module.grad_flow_profile  # a new list each validation: no copy


class Objective:
    def __init__(
        self,
        cfg: StudyConfig,
        tracker: Tracker,
        parent_id: str,
        interrupts: Any,
        worker_index: int | None = None,
    ) -> None:
        self.cfg, self.tracker, self.parent_id = cfg, tracker, parent_id
        self.interrupts = interrupts
        self.trainer_kwargs = _device(worker_index)
        self.metrics = [o.metric for o in cfg.objectives]
        self.monitor = next(m for m in self.metrics if m != "n_params")
        self.prunes = cfg.pruner_name != "none"
        self.tags = {
            "rnn_tuner.study": cfg.study.name,
            "sampler": cfg.sampler.name,
            "pruner": cfg.pruner_name,
        }

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        settings, _ = suggest(trial, self.cfg)
        params = {
            **settings.to_dict(),
            **{f"task.{k}": v for k, v in asdict(self.cfg.task).items()},
        }
        run_id = self.tracker.start_trial(self.parent_id, trial.number, params, self.tags)
        if run_id:  # lets any worker close this run if ours dies mid-trial
            trial.set_user_attr("mlflow_run_id", run_id)
        recorder = EpochRecorder()
        callbacks: list[pl.Callback] = [recorder]
        if self.prunes:
            callbacks.append(PruningCallback(trial, self.monitor, first_prunable_epoch(self.cfg)))
        state, reason, started = "FAIL", None, time.perf_counter()
        try:
            with self.interrupts.armed():
                train(
                    settings,
                    task_data(self.cfg.task),
                    monitor=self.monitor,
                    callbacks=callbacks,
                    trainer_kwargs=self.trainer_kwargs,
                )
            values = [
                self._best(recorder, m, d)
                for m, d in zip(self.metrics, self.cfg.directions, strict=True)
            ]
            state = "COMPLETE"
            return values[0] if len(values) == 1 else values
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except BaseException as e:
            reason = f"{type(e).__name__}: {e}"
            trial.set_user_attr("fail_reason", reason)
            if not isinstance(e, Exception | KeyboardInterrupt):  # an interrupt by signal
                raise TrialFailed(reason) from e  # Optuna records an Exception as FAIL
            raise
        finally:
            summary = {
                "wall_time_s": time.perf_counter() - started,
                "n_params": recorder.n_params,
                "epochs": len(recorder.history),
            }
            if state == "COMPLETE":
                summary.update(
                    {f"objective_{m}": v for m, v in zip(self.metrics, values, strict=True)}
                )
            profiles = {"grad_norm_by_step": recorder.grad_profile}
            if run_id is None:  # the tracking server was away when the trial began: try again
                run_id = self.tracker.start_trial(self.parent_id, trial.number, params, self.tags)
            self.tracker.finish_trial(run_id, state, recorder.history, summary, reason, profiles)

    @staticmethod
    def _best(recorder: EpochRecorder, metric: str, direction: str) -> float:
        """The best validation value reached during training, not the last epoch's."""
        if metric == "n_params":
            return float(recorder.n_params)
        values = [row[metric] for row in recorder.history if metric in row]
        if not values:
            raise MetricNotLoggedError(f"metric {metric!r} was never logged")
        return max(values) if direction == "maximize" else min(values)


def _device(worker_index: int | None) -> dict[str, Any]:
    """Workers of one machine share its GPUs round robin; without GPUs, Lightning's own choice."""
    import torch

    if worker_index is None or not torch.cuda.is_available():
        return {}
    return {"accelerator": "gpu", "devices": [worker_index % torch.cuda.device_count()]}
