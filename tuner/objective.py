"""One trial: sampled settings -> training with pruning and an epoch record -> its MLflow run.

`Objective.__call__` reads top to bottom: suggest, open the run, train (once, or on every fold of
cross-validation: tuner.crossval), return the best validation value(s); whatever happens, the run
is closed with the trial's state and reason.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna
import pytorch_lightning as pl

from models import EpochCallback, TaskData, TrainResult, train
from models.config import Settings
from models.data import task_data
from models.data.folds import cv_folds
from tuner.config import Objective as ObjectiveSpec
from tuner.config import StudyConfig
from tuner.constraints import figures
from tuner.constraints import parse as parse_constraint
from tuner.crossval import CrossValidation
from tuner.interrupts import TrialInterrupted
from tuner.keep import BestWeights, KeepBest
from tuner.progress import Progress
from tuner.space import suggest
from tuner.study import first_prunable_epoch, is_database_error
from tuner.threads import Threads
from tuner.tracking import Tracker, TrialRun
from tuner.urls import redact

# A trial's user attribute: it failed before its first optimizer step, so every trial would.
BEFORE_TRAINING = "failed_before_training"


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


class KeyboardInterruptGuard(pl.Callback):
    """Where no signal handler is installed (tuner.api, a notebook), Ctrl-C is a KeyboardInterrupt,
    which Lightning's fit meets by ignoring SIGINT for good and calling sys.exit(1): in a Jupyter
    kernel that would end every later interrupt. Lightning tells its callbacks first; this one
    puts the SIGINT handler back, stops the worker and fails the trial as a signal would."""

    def __init__(self, interrupts: Any) -> None:
        self.interrupts = interrupts
        self.handler: Any = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.handler = signal.getsignal(signal.SIGINT)

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        if self.handler is not None:  # a KeyboardInterrupt arrives in the main thread only
            signal.signal(signal.SIGINT, self.handler)
        self.interrupts.requested = "SIGINT"
        raise TrialInterrupted("interrupted by KeyboardInterrupt") from exception


class EpochRecorder(EpochCallback):
    """Keeps the trial's `TrainResult` as training fills it in, and when each epoch ended: what
    its MLflow run records, also when training fails midway and train() returns nothing."""

    def __init__(self, *listeners: Callable[[dict[str, float]], None]) -> None:
        """`listeners` see each finished epoch's row (with `time_ms`) as it ends: the live
        curve in MLflow, the progress display."""
        self.listeners = listeners
        self.result: TrainResult | None = None
        self.ended_ms: list[float] = []

    def on_start(self, result: TrainResult) -> None:
        self.result = result

    def on_epoch(self, result: TrainResult) -> None:
        self.ended_ms.append(time.time() * 1000)
        row = {**result.history[-1], "time_ms": self.ended_ms[-1]}
        for listener in self.listeners:
            listener(row)

    def history(self) -> list[dict[str, float]]:
        """Each finished epoch's row, with its end as `time_ms` (the MLflow timestamp)."""
        rows = [] if self.result is None else self.result.history
        return [{**row, "time_ms": t} for row, t in zip(rows, self.ended_ms, strict=False)]

    def steps(self) -> int:
        """Optimizer steps taken so far (0 also when training never started)."""
        return 0 if self.result is None else int(self.result.trainer.global_step)

    def summary(self, seconds: float) -> dict[str, float]:
        n_params = 0 if self.result is None else self.result.n_params
        return {"wall_time_s": seconds, "n_params": n_params, "epochs": len(self.ended_ms)}

    def profiles(self) -> dict[str, list[float]]:
        profile = [] if self.result is None else self.result.grad_flow_profile
        return {"grad_norm_by_step": profile}


class TrialRecord:
    """What a trial's MLflow run records: one `EpochRecorder` per training (one, or one per fold
    of cross-validation, whose curves are keyed `fold<k>/<metric>`, step = epoch)."""

    def __init__(
        self,
        cv: CrossValidation | None = None,
        live: Callable[[dict[str, float]], None] | None = None,
        watch: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        """`live` gets each epoch's row as it ends (the run's live curve); with folds, whose
        curves are keyed by fold, the epochs are sent with the trial's end instead. `watch`
        gets every epoch's row, of every fold (the progress display)."""
        self.cv = cv
        self.started = time.perf_counter()
        listeners = [None if cv is not None else live, watch]
        self.listeners = [listener for listener in listeners if listener is not None]
        self.recorders: list[EpochRecorder] = []

    def recorder(self) -> EpochRecorder:
        """A recorder for the next training."""
        self.recorders.append(EpochRecorder(*self.listeners))
        return self.recorders[-1]

    def history(self) -> list[dict[str, float]]:
        if self.cv is None:
            return self.recorders[0].history() if self.recorders else []
        rows = [
            {"epoch": row["epoch"], "time_ms": row["time_ms"]}
            | {f"fold{k}/{key}": v for key, v in row.items() if key not in ("epoch", "time_ms")}
            for k, recorder in enumerate(self.recorders)
            for row in recorder.history()
        ]
        # The running mean after each fold, as the pruner saw it: step = fold.
        means = self.cv.running_means()
        return rows + [{"epoch": k, f"cv_{self.cv.monitor}": m} for k, m in enumerate(means)]

    def summary(self, seconds: float, metrics: list[str]) -> dict[str, float]:
        figures = {"wall_time_s": seconds, "n_params": 0.0, "epochs": 0.0}
        for recorder in self.recorders:  # every fold's network has the same size
            one = recorder.summary(seconds)
            figures["n_params"] = one["n_params"]
            figures["epochs"] += one["epochs"]
        return figures | (self.cv.summary(metrics) if self.cv else {})

    def steps(self) -> int:
        """Optimizer steps taken so far, over every training (0 when none started)."""
        return sum(recorder.steps() for recorder in self.recorders)

    def profiles(self) -> dict[str, list[float]]:
        """The last training's (with folds, the last fold's)."""
        return self.recorders[-1].profiles() if self.recorders else {}


class TrialThreads(EpochCallback):
    """Sets the trial's intra-op torch threads by its network's size (tuner.threads), and
    records the count in the trial (user attribute `torch_threads`)."""

    def __init__(self, trial: optuna.Trial, threads: Threads) -> None:
        self.trial, self.threads = trial, threads

    def on_start(self, result: TrainResult) -> None:
        import torch

        n = self.threads.for_network(result.n_params)
        torch.set_num_threads(n)
        self.trial.set_user_attr("torch_threads", n)


class EpochEnds(EpochCallback):
    """Tells the trial's callbacks of each epoch's end, in order, with signals held
    (`Interrupts.held`): a Ctrl-C that lands there waits until all have seen the epoch, so its
    point in MLflow, Optuna's report of it and its kept weights are all recorded or none is."""

    def __init__(self, interrupts: Any, callbacks: list[EpochCallback]) -> None:
        self.interrupts, self.callbacks = interrupts, callbacks

    def on_start(self, result: TrainResult) -> None:
        for callback in self.callbacks:
            callback.on_start(result)

    def on_epoch(self, result: TrainResult) -> None:
        with self.interrupts.held():
            for callback in self.callbacks:
                callback.on_epoch(result)


class RunInTrial(EpochCallback):
    """Records the trial's MLflow run id in the trial (user attribute `mlflow_run_id`) at the first
    epoch's end by which the tracker's sender has made the run (it does so while the network is
    built; training never waits for it). From then on any worker can close the run if ours dies;
    before, tuner.stale finds the run by its tags."""

    def __init__(self, trial: optuna.Trial, run: TrialRun) -> None:
        self.trial, self.run = trial, run
        self.done = False

    def on_epoch(self, result: TrainResult) -> None:
        if self.run.made.is_set():
            self.record()

    def record(self) -> None:
        """Record the id once, waiting for the sender if it has not made the run yet (a trial
        that completes or is pruned records it at the latest then)."""
        if not self.done:
            self.done = True
            if self.run.wait() is not None:
                self.trial.set_user_attr("mlflow_run_id", self.run.id)


class Objective:
    def __init__(
        self,
        cfg: StudyConfig,
        tracker: Tracker,
        parent_id: str,
        interrupts: Any,
        worker_index: int | None = None,
        threads: Threads | None = None,
        keeper: KeepBest | None = None,
        progress: Progress | None = None,
        where: dict[str, str] | None = None,
    ) -> None:
        self.cfg, self.tracker, self.parent_id = cfg, tracker, parent_id
        self.progress = progress
        self.constraints = [parse_constraint(text) for text in cfg.sampler.constraints]
        self.threads = threads or Threads()
        self.interrupts, self.keeper = interrupts, keeper
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
        self.tags.update(where or {})  # a cluster's node (a Ray node's id and address)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        settings = self._settings(trial)
        task = {f"task.{k}": v for k, v in asdict(self.cfg.task).items()}
        params = {**settings.params(), **task}
        run = self.tracker.start_trial(self.parent_id, trial.number, params, self.tags)
        record, in_trial = self._record(trial, run), RunInTrial(trial, run)
        state, reason, best, started = "FAIL", None, [], time.perf_counter()
        try:  # from here on, whatever stops the trial closes its run (a Ray actor's stop too)
            with self.interrupts.armed():
                best = self._best_values(trial, settings, record, in_trial)
            in_trial.record()
            values = [value for value, _ in best]
            state = "COMPLETE"
            return values[0] if len(values) == 1 else values
        except optuna.TrialPruned:
            state = "PRUNED"
            in_trial.record()
            raise
        except BaseException as raised:
            e = _interrupt_behind(raised) or raised
            reason = _failed(trial, e, isinstance(e, Exception) and record.steps() == 0)
            if not isinstance(e, Exception | KeyboardInterrupt):  # an interrupt by signal
                raise TrialFailed(reason) from e  # Optuna records an Exception as FAIL
            raise
        finally:
            summary = record.summary(time.perf_counter() - started, self.metrics)
            if state == "COMPLETE":
                # as measured: a tie-break nudges only the value Optuna sees
                summary |= {
                    f"objective_{m}": v for m, (_, v) in zip(self.metrics, best, strict=True)
                }
            history, profiles = record.history(), record.profiles()
            self.tracker.finish_trial(run, state, history, summary, reason, profiles)

    def _record(self, trial: optuna.Trial, run: TrialRun) -> TrialRecord:
        """The trial's record, which sends each epoch to its MLflow run and the progress."""
        watch = None
        if self.progress is not None:
            self.progress.start_trial(trial.number)
            watch = functools.partial(self.progress.epoch, trial.number)
        live = functools.partial(self.tracker.log_epoch, run)
        return TrialRecord(self._cross_validation(), live, watch)

    def _settings(self, trial: optuna.Trial) -> Settings:
        try:
            return suggest(trial, self.cfg)[0]
        except Exception as e:  # settings that cannot go together, e.g. truncation bidirectional
            _failed(trial, e, before_training=True)
            raise

    def _best_values(
        self, trial: optuna.Trial, settings: Settings, record: TrialRecord, in_trial: RunInTrial
    ) -> list[tuple[float, float]]:
        """Train (once, or on every fold) and return each objective's best value: as Optuna
        sees it (with its tie-break) and as measured (`_best`); with folds, their means."""

        def best(result: TrainResult) -> list[tuple[float, float]]:
            return [_best(result, objective) for objective in self.cfg.objectives]

        def fit(data: TaskData, callbacks: list[EpochCallback]) -> TrainResult:
            guard = KeyboardInterruptGuard(self.interrupts)
            threads = TrialThreads(trial, self.threads)
            epochs = EpochEnds(self.interrupts, [threads, record.recorder(), in_trial, *callbacks])
            return train(
                settings, data, monitor=self.monitor, callbacks=[epochs, guard],
                trainer_kwargs=self.trainer_kwargs,
            )  # fmt: skip

        if record.cv is not None:  # one network per fold: none is kept
            values = record.cv.run(trial, lambda data, _: fit(data, []), best, self.prunes)
        else:
            weights = self._best_weights()
            result = fit(task_data(self.cfg.task), [*self._pruning(trial), weights])
            values = best(result)
            self._completed(trial, result, weights, in_trial.run)
        self._constrain(trial, record)
        return values

    def _constrain(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Give Optuna the trial's violation of each of `sampler.constraints` (tuner.constraints)."""
        if not self.constraints:
            return
        rows = record.history() if record.cv is None else []
        summary = record.summary(time.perf_counter() - record.started, [])
        measured = figures(summary, rows[-1] if rows else {})
        for constraint in self.constraints:
            trial.set_constraint(constraint.text, constraint.violation(measured))

    def _best_weights(self) -> BestWeights:
        """Finds the best epoch; copies its weights only when the network may be kept."""
        keeps = self.keeper is not None and self.keeper.wanted
        return BestWeights(self.cfg.objectives[self.cfg.primary_index], copy=keeps)

    def _completed(
        self, trial: optuna.Trial, result: TrainResult, weights: BestWeights, run: TrialRun
    ) -> None:
        """Record the best epoch; offer its network to be kept (tuner.keep)."""
        if weights.epoch is not None:
            trial.set_user_attr("best_epoch", weights.epoch)
        if self.keeper is not None:
            run_id = run.wait()
            self.keeper.offer(trial.number, run_id, result, weights, task_data(self.cfg.task))

    def _cross_validation(self) -> CrossValidation | None:
        if not self.cfg.cv_folds:
            return None
        data = task_data(self.cfg.task)
        folds = cv_folds(data, self.cfg.cv_folds, seed=getattr(self.cfg.task, "seed", 0))
        return CrossValidation(folds, self.cfg.primary_index, self.monitor)

    def _pruning(self, trial: optuna.Trial) -> list[EpochCallback]:
        if not self.prunes:
            return []
        monitored = self.cfg.objectives[self.cfg.primary_index]
        return [PruningCallback(trial, monitored, first_prunable_epoch(self.cfg))]


def _interrupt_behind(e: BaseException) -> TrialInterrupted | None:
    """The signal's TrialInterrupted where Lightning's clean-up raised another error on top of it
    (its teardown can fail on a loader the signal left half-started): the trial failed because of
    the signal, and says so."""
    seen: BaseException | None = e
    for _ in range(8):  # a chain is short; a cycle must not loop
        if seen is None or isinstance(seen, TrialInterrupted):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _failed(trial: optuna.Trial, e: BaseException, before_training: bool) -> str:
    """Record why the trial failed, and whether before its first optimizer step (then every
    trial would: tuner.worker.FailureGuard stops the run). A dropped database connection is
    no such error: it passes, and the next trial reconnects."""
    reason = redact(f"{type(e).__name__}: {e}")
    trial.set_user_attr("fail_reason", reason)
    if before_training and not is_database_error(e):
        trial.set_user_attr(BEFORE_TRAINING, True)
    return reason


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
