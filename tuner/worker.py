"""A worker: one long-lived process that runs trials of one study until its budget is spent.

Many workers, on one machine or many, run this same loop against one storage URL. The study is
created by the first and loaded by the rest; the first also opens the study's MLflow parent run
and keeps its id in the study, where every other worker reads it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from tuner.budget import TrialBudget, release_slot, trials_counted
from tuner.launch import RunRequest, RunSummary
from tuner.objective import Objective
from tuner.study import PARENT_ATTR, StorageError, make_storage, open_study, wait_for_attr
from tuner.tracking import Tracker
from tuner.urls import redact

log = logging.getLogger(__name__)
T = TypeVar("T")


class TrialInterrupted(BaseException):
    """SIGINT or SIGTERM arrived during training: the trial ends as FAIL and is recorded.

    A BaseException because the signal can land anywhere, also inside library code that turns
    any Exception into its own (inspect.signature raises "TypeError: unsupported callable")."""


class Interrupts:
    """SIGINT / SIGTERM fail the trial in training and stop the worker after recording it.

    The signal only raises while armed (during training): a signal that arrives while Optuna or
    MLflow is writing lets the write finish, then the loop stops.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._armed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signal.Signals(signum).name
        if self._armed:
            self._armed = False
            raise TrialInterrupted(f"interrupted by {self.requested}")

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = self.requested is None
        try:
            if self.requested:
                raise TrialInterrupted(f"interrupted by {self.requested}")
            yield
        finally:
            self._armed = False


class StaleTrialHandler:
    """Runs in whichever worker notices a dead worker's trial: closes its MLflow run, gives its
    budget slot back and queues a retry with the same parameters."""

    def __init__(self, tracker: Tracker, grace_period: int) -> None:
        self.tracker, self.grace_period = tracker, grace_period
        self.storage: Any = None  # the RDBStorage this handler is given to
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = f"worker lost: no heartbeat for {self.grace_period} s; queued again"
        self.tracker.finish_trial(trial.user_attrs.get("mlflow_run_id"), "FAIL", [], {}, reason)
        study_id = self.storage.get_study_id_from_name(study.study_name)
        release_slot(self.storage.engine, study_id)  # the retry takes its place
        self.retry(study, trial)


class _Count:
    """Trials this command runs, shared by its local workers (a multiprocessing.Value or None)."""

    def __init__(self, limit: int | None, shared: Any = None) -> None:
        self.limit, self.shared, self.local = limit, shared, 0

    def claim(self) -> bool:
        if self.limit is None:
            return True
        if self.shared is None:
            self.local += 1
            return self.local <= self.limit
        with self.shared.get_lock():
            self.shared.value += 1
            return self.shared.value <= self.limit


def run_worker(req: RunRequest, shared_count: Any = None) -> RunSummary:
    cfg = req.cfg
    tracker = Tracker(req.tracking_uri, cfg.experiment_name())
    grace = cfg.study.grace_period
    on_stale = StaleTrialHandler(tracker, grace)
    storage = on_stale.storage = make_storage(
        req.storage,
        on_stale,
        heartbeat_interval=cfg.study.heartbeat_interval,
        grace_period=grace,
    )
    study, created = open_study(cfg, storage, req.study_name)
    parent_id = _attach_parent(study, created, tracker, req)
    if created:
        for params in cfg.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    budget = None
    if req.max_trials is not None:
        study_id = storage.get_study_id_from_name(study.study_name)
        budget = _retrying(
            lambda: TrialBudget(storage.engine, study_id, req.max_trials, trials_counted(study))
        )
    count = _Count(req.n_trials, shared_count)

    summary = RunSummary(req.study_name, parent_id)
    progress = _Progress(req, summary) if req.progress else None
    deadline = None if req.timeout is None else time.monotonic() + req.timeout

    last_best: list[int | None] = [None]  # the best trial the parent run shows

    def on_trial_end(study: optuna.Study, trial: FrozenTrial) -> None:
        summary.states[trial.state.name] += 1
        best = _best(study)
        if best is not None and best["number"] != last_best[0]:  # one MLflow write, when it moves
            tracker.update_best(parent_id, best, trial.number + 1)
            last_best[0] = best["number"]
        if progress:
            progress.update(trial, best)

    with Interrupts() as interrupts:
        objective = Objective(cfg, tracker, parent_id, interrupts, req.worker_index)

        def one_trial() -> bool:
            """Run the next trial; False when this worker's budget is spent."""
            if budget is not None and not budget.claim():
                # Spent, unless a running trial's worker dies and its retry needs a worker.
                if not _running(study):
                    return False
                optuna.storages.fail_stale_trials(study)
                time.sleep(cfg.study.heartbeat_interval)
                return True
            if not count.claim():
                if budget is not None:
                    budget.release()
                return False
            # One trial per call: Optuna runs heartbeats and fails stale trials around it.
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[on_trial_end])
            return True

        while interrupts.requested is None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not _retrying(one_trial):
                break
    summary.interrupted_by = interrupts.requested
    if progress:
        progress.close()
    if not _retrying(lambda: _running(study)):  # the last worker out: plots, close the parent
        if summary.interrupted_by is None:  # after Ctrl-C: exit now; `rnn-tuner report` later
            from tuner.plots import report_quietly  # matplotlib: for the last worker out only

            report_quietly(study, tracker, parent_id)
        tracker.close_parent(parent_id)
    return summary


# A restarted database or dropped connections: how long a worker waits before giving up.
_DB_RETRIES, _DB_RETRY_WAIT = 12, 5.0


def _retrying(action: Callable[[], T]) -> T:
    """`action()`, retried while the study database is unreachable; a lasting outage is fatal.

    Optuna reports a dropped connection as StorageInternalError, SQLAlchemy as DBAPIError."""
    for attempt in range(1, _DB_RETRIES + 1):
        try:
            return action()
        except (sa.exc.DBAPIError, optuna.exceptions.StorageInternalError) as e:
            if attempt == _DB_RETRIES:
                raise StorageError(
                    f"the study database stayed unreachable for {_DB_RETRIES * _DB_RETRY_WAIT:.0f}"
                    f" s: {redact(str(e).splitlines()[0])}"
                ) from e
            log.warning(
                "study database error (%s); retrying in %.0f s",
                redact(str(e).splitlines()[0]),
                _DB_RETRY_WAIT,
            )
            time.sleep(_DB_RETRY_WAIT)
    raise AssertionError("unreachable")


def _running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _attach_parent(study: optuna.Study, created: bool, tracker: Tracker, req: RunRequest) -> str:
    """The study's one parent run: made by the creator, found through the study by the others."""
    parent_id = None if created else wait_for_attr(study, PARENT_ATTR)
    if parent_id is not None and tracker.has_run(parent_id):
        tracker.reopen_parent(parent_id)
        return parent_id
    tags = {
        "storage": redact(req.storage),
        "sampler": req.cfg.sampler.name,
        "pruner": req.cfg.pruner_name,
        "objective": ",".join(o.metric for o in req.cfg.objectives),
    }
    new_id = tracker.create_parent(study.study_name, tags)
    if parent_id is None:
        study.set_user_attr(PARENT_ATTR, new_id)
    else:
        log.warning(
            "the study's parent run %s is not in this tracking store; this worker's trials go "
            "under a new parent run %s",
            parent_id,
            new_id,
        )
    if req.study_file is not None:
        tracker.log_artifact(new_id, str(req.study_file))
    return new_id


def _best(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial (single objective) or the first of the Pareto front, as a plain dict."""
    try:
        if len(study.directions) == 1:
            t = study.best_trial
            return {"number": t.number, "values": {"value": t.value}, "params": t.params}
        front = study.best_trials
    except ValueError:  # no complete trial yet
        return None
    if not front:
        return None
    t = front[0]
    return {
        "number": t.number,
        "values": {f"value_{i}": v for i, v in enumerate(t.values)},
        "params": t.params,
    }


class _Progress:
    """A progress bar on a terminal, one line per trial otherwise (logs, CI, containers)."""

    def __init__(self, req: RunRequest, summary: RunSummary) -> None:
        from tqdm import tqdm

        self.summary = summary
        self.prefix = "" if req.worker_index is None else f"[w{req.worker_index}] "
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=req.n_trials, unit="trial", disable=not self.tty, file=sys.stderr)
        self.started = time.perf_counter()

    def update(self, trial: FrozenTrial, best: dict[str, Any] | None) -> None:
        states = self.summary.states
        counts = f"complete {states['COMPLETE']} pruned {states['PRUNED']} failed {states['FAIL']}"
        best_text = (
            "-"
            if best is None
            else (f"{_fmt(list(best['values'].values()))} (trial {best['number']})")
        )
        if self.tty:
            self.bar.set_postfix_str(f"{counts} | best {best_text}")
            self.bar.update(1)
            return
        value = "" if trial.values is None else f" {_fmt(trial.values)}"
        reason = trial.user_attrs.get("fail_reason", "") if trial.state == TrialState.FAIL else ""
        print(
            f"{self.prefix}trial {trial.number} {trial.state.name}{value}{' - ' + reason if reason else ''} | "
            f"{counts} | best {best_text} | {time.perf_counter() - self.started:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        self.bar.close()


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.5g}" for v in values)
