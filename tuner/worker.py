"""A worker: one long-lived process that runs trials of one study until its budget is spent.

Many workers, on one machine or many, run this same loop against one storage URL. The study is
created by the first and loaded by the rest; the first also opens the study's MLflow parent run
and keeps its id in the study, where every other worker reads it.

`run_worker` sets up (tracking, storage, study, parent run, budget) and `run_trials` is the loop:
claim a slot, ask, train, tell, record. Signals (tuner.interrupts), progress (tuner.progress),
dead workers' trials (tuner.stale) and the end-of-study report (tuner.end_of_study) live apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.budget import Claim, Slots, TrialBudget, trials_counted
from tuner.end_of_study import finish_if_last
from tuner.errors import BadInput
from tuner.interrupts import Interrupts
from tuner.keep import KeepBest
from tuner.memory import keep_freed_memory
from tuner.objective import BEFORE_TRAINING, Objective
from tuner.progress import Budget, Progress
from tuner.request import RunRequest, RunSummary
from tuner.stale import storage_with_heartbeats
from tuner.stop_rules import StopRules, StudyStopper
from tuner.study import PARENT_ATTR, best_trial, open_study, retrying, wait_for_attr
from tuner.tracking import Tracker
from tuner.urls import redact

log = logging.getLogger(__name__)


def run_worker(req: RunRequest, shared_count: Any = None) -> RunSummary:
    """Run trials of the study until the budget is spent, the timeout passes or a signal comes."""
    keep_freed_memory()
    tracker = Tracker(req.tracking_uri, req.cfg.experiment_name())
    tracker.send_from_process()  # before any thread starts here; where it may not: a thread
    try:
        return _work(req, tracker, shared_count)
    finally:
        tracker.close()


def _work(req: RunRequest, tracker: Tracker, shared_count: Any) -> RunSummary:
    study, storage, parent_id = _opened(req, tracker)
    slots = Slots(_study_budget(study, storage, req.max_trials), req.n_trials, shared_count, study)
    summary = RunSummary(req.study_name, parent_id)
    progress = _progress(req, summary, study)
    guard = FailureGuard(req.study_name, req.cfg.budget.max_failures)
    record = RecordTrial(study, tracker, parent_id, req.cfg.primary_index, summary, progress, guard)
    keeper = KeepBest(tracker, parent_id, req.cfg.primary_index, req.cfg.tracking.keep_best)
    with Interrupts(install=req.handle_signals) as interrupts:
        objective = Objective(
            req.cfg,
            tracker,
            parent_id,
            interrupts,
            req.worker_index,
            req.threads,
            keeper,
            progress,
            req.where,
        )
        stop = _stop_when(interrupts, req.timeout, guard)
        stopper = retrying(lambda: StudyStopper(StopRules.of(req.cfg), study, tracker, parent_id))
        wait = req.cfg.study.heartbeat_interval
        try:  # after each trial: keep its network if it ranks, then record it
            in_turn = _in_turn(keeper, record)
            run_trials(study, storage, objective, slots, in_turn, stop, wait, stopper)
        except KeyboardInterrupt:  # no handlers installed (tuner.api): Ctrl-C stops the worker
            interrupts.requested = "SIGINT"
        finally:  # the last trials' MLflow writes, queued while the next trial ran
            tracker.flush()
    summary.interrupted_by = interrupts.requested
    summary.stopped = None if stopper.fired is None else stopper.fired.line()
    if progress:
        progress.close()
    finish_if_last(study, tracker, parent_id, summary.interrupted_by, req.report)
    if guard.error is not None and summary.interrupted_by is None:
        raise guard.error
    return summary


def _opened(req: RunRequest, tracker: Tracker) -> tuple[optuna.Study, Any, str]:
    """The storage, the study (its enqueued trials added when created here) and its parent run;
    a study created here is removed again if its parent run cannot be made, so a failed start
    leaves no empty study behind."""
    storage = storage_with_heartbeats(req.storage, tracker, req.cfg.study)
    study, created = retrying(lambda: open_study(req.cfg, storage, req.study_name))
    try:
        parent_id = _attach_parent(study, created, tracker, req)
    except BaseException:
        if created:
            optuna.delete_study(study_name=req.study_name, storage=storage)
        raise
    if created:
        for params in req.cfg.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    return study, storage, parent_id


# The fail_reason of a trial that a dropped connection left between Optuna's ask and training.
UNSTARTED = "the study database's connection dropped before the trial started; it never trained"


class RecurringTrialFailure(BadInput):
    """A trial failed before its first optimizer step: every trial would (exit code 2)."""


class TooManyFailures(RuntimeError):
    """`budget.max_failures` trials failed in a row (exit code 1)."""


class FailureGuard:
    """Stops a run that would only fail: at the first trial that fails before its first optimizer
    step (a data or configuration error: every trial would fail the same way), and after
    `max_failures` failed trials in a row, whatever failed them. Never an endless loop."""

    def __init__(self, study_name: str, max_failures: int) -> None:
        self.study_name, self.max_failures = study_name, max_failures
        self.in_a_row = 0
        self.error: Exception | None = None

    def update(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        reason = trial.user_attrs.get("fail_reason", "no reason recorded")
        if trial.user_attrs.get(BEFORE_TRAINING):
            self.error = RecurringTrialFailure(
                f"trial {trial.number} of study {self.study_name!r} failed before its first "
                f"training step, so every trial would: {reason}. Fix the study file or the data "
                "(`rnn-tuner validate FILE`), then run again; the study keeps its trials"
            )
        elif self.in_a_row >= self.max_failures:
            self.error = TooManyFailures(
                f"{self.in_a_row} trials of study {self.study_name!r} failed in a row "
                f"(budget.max_failures: {self.max_failures}); the last: {reason}. Each trial's "
                "fail_reason is in MLflow; raise budget.max_failures to go on regardless"
            )


def run_trials(
    study: optuna.Study,
    storage: Any,
    objective: Objective,
    slots: Slots,
    record: Callable[[optuna.Study, FrozenTrial], None],
    stop: Callable[[], bool],
    wait: float,
    study_stopped: Callable[[], bool] = lambda: False,
) -> None:
    """The loop: claim a slot, ask, train, tell, record; until the slots run out, `stop()`,
    or `study_stopped()`: a rule of the study file fired (tuner.stop_rules), asked from the
    database before each claim so that every worker stops claiming.

    A database error anywhere in one turn retries the turn (`retrying`). The retry takes the
    slot held for a trial that never started rather than a second one, and tells again a trial
    whose tell the error lost, or fails a trial the error left unstarted (`storage`: the study's,
    a tuner.study.StartedTrials); the loop's end gives back a slot that no trial used."""
    last = LastTrial(objective, slots, record, storage)

    def one_trial() -> bool:
        last.tell_again(study)
        last.fail_unstarted()
        if study_stopped():
            return False
        claim = slots.claim()
        if claim is Claim.STOP:
            return False
        if claim is Claim.WAIT:  # a running trial's worker may die: its retry needs a worker
            optuna.storages.fail_stale_trials(study)
            time.sleep(wait)
            return True
        if stop():  # the claim can take a while (a slow or retried database): ask again
            return False  # the loop's end gives the slot back
        # Ask, train (objective), tell, record (callback): one trial per call, so Optuna runs
        # its heartbeat and fails stale trials around it.
        study.optimize(last.run, n_trials=1, catch=(Exception,), callbacks=[last.recorded])
        return True

    try:
        while not stop() and retrying(one_trial):
            pass
    finally:
        slots.release()


class LastTrial:
    """The trial this worker started last and its objective's outcome, kept until the trial is
    recorded: Optuna's tell can fail on a dropped connection after training, and the trial,
    left RUNNING, would later go stale and train again as a retry in an extra trial."""

    def __init__(
        self, objective: Objective, slots: Slots, record: Callable[..., None], storage: Any
    ) -> None:
        self.objective, self.slots, self.record, self.storage = objective, slots, record, storage
        self.trial: optuna.Trial | None = None  # started, not yet recorded
        self.ran: int | None = None  # the id of the last trial the objective was given
        self.values: Any = None
        self.state: TrialState | None = None  # for Optuna's tell: None lets the values decide

    def run(self, trial: optuna.Trial) -> Any:
        """The function `study.optimize` calls once Optuna has created the trial."""
        self.slots.spend()  # the trial exists: its slot is used, however it ends
        self.trial, self.values, self.state = trial, None, TrialState.FAIL
        self.ran = trial._trial_id
        try:
            self.values = self.objective(trial)
        except optuna.TrialPruned:
            self.state = TrialState.PRUNED
            raise
        self.state = None
        return self.values

    def recorded(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.trial = None  # told: a later error must not record it twice
        self.record(study, trial)

    def tell_again(self, study: optuna.Study) -> None:
        """Tell and record the last trial if an error came before it was recorded; a trial
        already finished (its tell went through, or a worker found it stale) is only recorded."""
        if self.trial is None:
            return
        told = study.tell(self.trial, self.values, self.state, skip_if_finished=True)
        self.recorded(study, told)

    def fail_unstarted(self) -> None:
        """Fail the trial Optuna last set RUNNING here if the objective never got it: an error
        (a dropped connection) came between Optuna's ask and the objective's start. No worker
        would run it, and without a heartbeat it would never go stale: it would stay RUNNING for
        good, and workers whose budget is spent would wait for it. It used the held slot."""
        started = getattr(self.storage, "last_started", None)
        if started is None or started == self.ran:
            return
        if self.storage.get_trial(started).state == TrialState.RUNNING:
            self.storage.set_trial_user_attr(started, "fail_reason", UNSTARTED)
            self.storage.set_trial_state_values(started, TrialState.FAIL)
        self.ran = started  # done: a later error does not come back to it
        self.slots.spend()


def _stop_when(
    interrupts: Interrupts, timeout: float | None, guard: FailureGuard
) -> Callable[[], bool]:
    """A signal came, the trials only fail, or `timeout` seconds have passed since now: start
    no new trial."""
    deadline = None if timeout is None else time.monotonic() + timeout
    return lambda: (
        interrupts.requested is not None
        or guard.error is not None
        or (deadline is not None and time.monotonic() >= deadline)
    )


def _progress(req: RunRequest, summary: RunSummary, study: optuna.Study) -> Progress | None:
    """The display of this worker's trials, counting down to this command's trials, else to
    what is left of the study's --max-trials, and to its --timeout."""
    if not req.progress:
        return None
    trials = req.n_trials
    if trials is None and req.max_trials is not None:
        trials = max(req.max_trials - retrying(lambda: trials_counted(study)), 0)
    deadline = None if req.timeout is None else time.monotonic() + req.timeout
    metrics = [o.metric for o in req.cfg.objectives]
    return Progress(
        summary, Budget(trials, deadline), req.cfg.budget.max_epochs, metrics,
        req.worker_index, bars=req.bars, verbose=req.verbose,
    )  # fmt: skip


def _study_budget(study: optuna.Study, storage: Any, max_trials: int | None) -> TrialBudget | None:
    if max_trials is None:
        return None
    study_id = retrying(lambda: storage.get_study_id_from_name(study.study_name))
    return retrying(lambda: TrialBudget(storage, study_id, max_trials, trials_counted(study)))


class RecordTrial:
    """After each trial: count its state, move the parent run's best when it changes, show it."""

    def __init__(
        self,
        study: optuna.Study,
        tracker: Tracker,
        parent_id: str,
        primary: int,
        summary: RunSummary,
        progress: Progress | None,
        guard: FailureGuard,
    ) -> None:
        self.tracker, self.parent_id, self.primary = tracker, parent_id, primary
        self.summary, self.progress, self.guard = summary, progress, guard
        self.shown: int | None = None  # the best trial the parent run shows

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.summary.states[trial.state.name] += 1
        best = best_trial(study, self.primary)
        if best is not None and best.number != self.shown:  # one MLflow write, when it moves
            self.tracker.update_best(self.parent_id, best, trial.number + 1)
            self.shown = best.number
        if self.progress:
            self.progress.update(trial, best)
        self.guard.update(trial)


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
    if parent_id is None:  # a write a dropped connection may fail, as the reads before it
        retrying(lambda: study.set_user_attr(PARENT_ATTR, new_id))
    else:
        log.warning(
            "the study's parent run %s is not in this tracking store; this worker's trials go "
            "under a new parent run %s",
            parent_id,
            new_id,
        )
    if req.study_file is not None:
        tracker.log_study_file(new_id, str(req.study_file))
    return new_id


def _in_turn(*callbacks: Callable[[optuna.Study, FrozenTrial], None]) -> Callable[..., None]:
    """One Optuna callback calling each of `callbacks` in turn."""

    def call(study: optuna.Study, trial: FrozenTrial) -> None:
        for callback in callbacks:
            callback(study, trial)

    return call
