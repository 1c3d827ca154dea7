"""A dead worker's trial: heartbeats stop, and whichever worker notices closes its MLflow run,
gives its budget slot back and queues a retry with the same parameters."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from tuner.budget import release_slot
from tuner.config import StudyBlock
from tuner.study import PARENT_ATTR, make_storage
from tuner.tracking import Tracker, TrialRun


class StaleTrialHandler:
    """Optuna's stale-trial callback: runs in the worker that finds a trial without heartbeat."""

    def __init__(self, tracker: Tracker, grace_period: int) -> None:
        self.tracker, self.grace_period = tracker, grace_period
        self.storage: Any = None  # the storage this handler is given to
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = f"worker lost: no heartbeat for {self.grace_period} s; queued again"
        run = self._run_of(study, trial)
        if run is not None:
            self.tracker.finish_trial(run, "FAIL", [], {}, reason)
        study_id = self.storage.get_study_id_from_name(study.study_name)
        release_slot(self.storage, study_id)  # the retry takes its place
        self.retry(study, trial)

    def _run_of(self, study: optuna.Study, trial: FrozenTrial) -> TrialRun | None:
        """The lost trial's MLflow run: the one its worker recorded; else the one found by its
        tags (the worker died after creating it, before recording its id); else a new one (it
        died before creating it), so that MLflow still holds every trial."""
        recorded = trial.user_attrs.get("mlflow_run_id")
        if recorded is not None:
            return TrialRun.existing(trial.number, recorded)
        parent_id = study.user_attrs.get(PARENT_ATTR)
        if parent_id is None:
            return None
        found = self.tracker.trial_run(parent_id, trial.number)
        if found is not None:
            return TrialRun.existing(trial.number, found)
        return self.tracker.start_trial(parent_id, trial.number, trial.params, {})


def storage_with_heartbeats(url: str, tracker: Tracker, block: StudyBlock) -> BaseStorage:
    """The study's storage, its trials beating every `heartbeat_interval` s; a trial silent for
    `grace_period` s is handed to a `StaleTrialHandler`."""
    on_stale = StaleTrialHandler(tracker, block.grace_period)
    on_stale.storage = make_storage(
        url,
        on_stale,
        heartbeat_interval=block.heartbeat_interval,
        grace_period=block.grace_period,
    )
    return on_stale.storage
