"""One trial: sampled settings -> training with pruning and an epoch record -> its MLflow run.

`Objective.__call__` reads top to bottom: suggest, open the run, train, return the best
validation value(s); whatever happens, the run is closed with the trial's state and reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import optuna

from models import EpochCallback, TrainResult, train
from models.data import task_data
from tuner.config import Objective as ObjectiveSpec
from tuner.config import StudyConfig
from tuner.space import suggest
from tuner.study import first_prunable_epoch
from tuner.tracking import Tracker


class MetricNotLoggedError(ValueError):
    """The objective names a metric that training never logs."""


class TrialFailed(Exception):
    """The trial was stopped by a signal; carries the reason to Optuna."""


class PruningCallback(EpochCallback):
    """Reports the objective's value each epoch (the monitored metric, nudged by its tie-break:
    `tuner.config.Objective.score`) to the trial; stops pruned trials."""

    def __init__(
        self, trial: optuna.Trial, monitor: str | ObjectiveSpec, first_prunable_epoch: int = 0
    ) -> None:
        self.trial = trial
        self.objective = (
            monitor if isinstance(monitor, ObjectiveSpec) else ObjectiveSpec(metric=monitor)
        )
        self.monitor = self.objective.metric
        # Asking the pruner reads every trial of the study: skip it while it cannot say yes.
        self.first_prunable_epoch = first_prunable_epoch

    def on_epoch(self, result: TrainResult) -> None:
        row = result.history[-1]
        if self.monitor not in row:
            raise MetricNotLoggedError(
                f"metric {self.monitor!r} is never logged; logged: {', '.join(sorted(row))}"
            )
        epoch = int(row["epoch"])
        self.trial.report(self.objective.score(row), step=epoch)
        if epoch >= self.first_prunable_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch} ({self.monitor}={row[self.monitor]:.5g})"
            )


class EpochRecorder(EpochCallback):
    """Keeps the trial's `TrainResult` as training fills it in, and when each epoch ended: what
    its MLflow run records, also when training fails midway and train() returns nothing."""

    def __init__(self) -> None:
        self.result: TrainResult | None = None
        self.ended_ms: list[float] = []

    def on_start(self, result: TrainResult) -> None:
        self.result = result

    def on_epoch(self, result: TrainResult) -> None:
        self.ended_ms.append(time.time() * 1000)

    def history(self) -> list[dict[str, float]]:
        """Each finished epoch's row, with its end as `time_ms` (the MLflow timestamp)."""
        rows = [] if self.result is None else self.result.history
        return [{**row, "time_ms": t} for row, t in zip(rows, self.ended_ms, strict=False)]

    def summary(self, seconds: float) -> dict[str, float]:
        n_params = 0 if self.result is None else self.result.n_params
        return {"wall_time_s": seconds, "n_params": n_params, "epochs": len(self.ended_ms)}

    def profiles(self) -> dict[str, list[float]]:
        profile = [] if self.result is None else self.result.grad_flow_profile
        return {"grad_norm_by_step": profile}


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
        self.monitor = cfg.primary_metric
        self.prunes = cfg.pruner_name != "none"
        self.tags = {
            "rnn_tuner.study": cfg.study.name,
            "sampler": cfg.sampler.name,
            "pruner": cfg.pruner_name,
        }
        if worker_index is not None:  # which worker ran it: find its log line, its machine
            self.tags["rnn_tuner.worker"] = str(worker_index)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        settings, _ = suggest(trial, self.cfg)
        task = {f"task.{k}": v for k, v in asdict(self.cfg.task).items()}
        params = {**settings.to_dict(), **task}
        run_id = self.tracker.start_trial(self.parent_id, trial.number, params, self.tags)
        if run_id:  # lets any worker close this run if ours dies mid-trial
            trial.set_user_attr("mlflow_run_id", run_id)
        recorder = EpochRecorder()
        state, reason, best, started = "FAIL", None, [], time.perf_counter()
        try:
            with self.interrupts.armed():
                result = train(
                    settings,
                    task_data(self.cfg.task),
                    monitor=self.monitor,
                    callbacks=self._callbacks(trial, recorder),
                    trainer_kwargs=self.trainer_kwargs,
                )
            best = [_best(result, objective) for objective in self.cfg.objectives]
            values = [value for value, _ in best]
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
            summary = recorder.summary(time.perf_counter() - started)
            if state == "COMPLETE":
                # as measured: a tie-break nudges only the value Optuna sees
                summary |= {
                    f"objective_{m}": v for m, (_, v) in zip(self.metrics, best, strict=True)
                }
            if run_id is None:  # the tracking server was away when the trial began: try again
                run_id = self.tracker.start_trial(self.parent_id, trial.number, params, self.tags)
            history, profiles = recorder.history(), recorder.profiles()
            self.tracker.finish_trial(run_id, state, history, summary, reason, profiles)

    def _callbacks(self, trial: optuna.Trial, recorder: EpochRecorder) -> list[EpochCallback]:
        if not self.prunes:
            return [recorder]
        monitored = self.cfg.objectives[self.cfg.primary_index]
        return [recorder, PruningCallback(trial, monitored, first_prunable_epoch(self.cfg))]


def _best(result: TrainResult, objective: ObjectiveSpec) -> tuple[float, float]:
    """The best value reached during training, not the last epoch's: the number Optuna sees
    (with the tie-break) and the metric as measured in that epoch."""
    metric = objective.metric
    if metric == "n_params":
        return float(result.n_params), float(result.n_params)
    rows = [row for row in result.history if metric in row]
    if not rows:
        raise MetricNotLoggedError(f"metric {metric!r} was never logged")
    pick = max if objective.resolved_direction == "maximize" else min
    row = pick(rows, key=objective.score)
    return objective.score(row), float(row[metric])


def _device(worker_index: int | None) -> dict[str, Any]:
    """Workers of one machine share its GPUs round robin; without GPUs, Lightning's own choice."""
    import torch
    from pytorch_lightning.plugins.environments import LightningEnvironment

    # A trial is one process, whatever started the worker: without this, Lightning takes a Slurm
    # job for a multi-process launch, warns about srun each trial and requeues on SIGUSR1.
    single = {"plugins": [LightningEnvironment()]}
    if worker_index is None or not torch.cuda.is_available():
        return single
    return {**single, "accelerator": "gpu", "devices": [worker_index % torch.cuda.device_count()]}
