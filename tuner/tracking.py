"""The only module that imports mlflow: one experiment per study, one parent run per study, one
child run per trial.

Calls are few and batched: a trial costs `create_run`, one `log_batch` with every parameter and
every per-epoch metric, and `set_terminated`. After the study has started, a tracking failure is
logged as a warning and never fails a trial: the Optuna side of the study is the record that must
not be lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from tuner.urls import redact

log = logging.getLogger(__name__)

# Optuna trial state -> MLflow run status.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


class TrackingError(RuntimeError):
    """The tracking store could not be reached or used at the start of a study."""


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
            self.experiment_id = self._experiment(experiment)
        except (MlflowException, OSError) as e:
            raise TrackingError(
                f"cannot use the MLflow tracking store at {redact(tracking_uri)}: {e}. "
                "Start the server or fix MLFLOW_TRACKING_URI / tracking.uri."
            ) from e

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # ------------------------------------------------------------------ the study's parent run

    def create_parent(self, study_name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={"rnn_tuner.role": "study", "rnn_tuner.study": study_name, **tags},
        )
        return run.info.run_id

    def has_run(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def reopen_parent(self, run_id: str) -> None:
        self._safely(self.client.update_run, run_id, status="RUNNING")

    def close_parent(self, run_id: str) -> None:
        self._safely(self.client.set_terminated, run_id, "FINISHED")

    def update_best(self, parent_id: str, best: Mapping[str, Any], n_finished: int) -> None:
        """Keep the parent's best value(s) and parameters current (params are immutable: tags)."""
        now = _now_ms()
        metrics = [
            Metric(f"best_{k}", float(v), now, n_finished) for k, v in best["values"].items()
        ]
        tags = [RunTag("best_trial", str(best["number"]))]
        tags += [RunTag(f"best.{k}", _text(v)) for k, v in best["params"].items()]
        self._safely(self.client.log_batch, parent_id, metrics=metrics, tags=tags)

    # ------------------------------------------------------------------ one run per trial

    def start_trial(
        self, parent_id: str, number: int, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str | None:
        """Open the trial's run with its parameters, so it shows as running in the UI."""
        run_tags = {
            "mlflow.parentRunId": parent_id,
            "rnn_tuner.role": "trial",
            "rnn_tuner.trial": str(number),
            "optuna.state": "RUNNING",
            **tags,
        }
        run = self._safely(
            self.client.create_run, self.experiment_id, run_name=f"trial-{number}", tags=run_tags
        )
        if run is None:
            return None
        run_id = run.info.run_id
        self._safely(
            self.client.log_batch, run_id, params=[Param(k, _text(v)) for k, v in params.items()]
        )
        return run_id

    def finish_trial(
        self,
        run_id: str | None,
        state: str,
        history: Iterable[Mapping[str, float]],
        summary: Mapping[str, float],
        reason: str | None = None,
    ) -> None:
        """Per-epoch metrics (step = epoch), final figures, state tags, then the run status."""
        if run_id is None:
            return
        metrics = [
            Metric(key, float(value), int(row.get("time_ms", 0)) or _now_ms(), int(row["epoch"]))
            for row in history
            for key, value in row.items()
            if key not in ("epoch", "time_ms")
        ]
        now = _now_ms()
        metrics += [Metric(k, float(v), now, 0) for k, v in summary.items()]
        tags = [RunTag("optuna.state", state)]
        if reason:
            tags.append(RunTag("fail_reason", reason[:4000]))
        for i in range(0, max(len(metrics), 1), _BATCH):
            self._safely(
                self.client.log_batch,
                run_id,
                metrics=metrics[i : i + _BATCH],
                tags=tags if i == 0 else [],
            )
        self._safely(self.client.set_terminated, run_id, RUN_STATUS[state])

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        self._safely(self.client.log_artifact, run_id, path, artifact_path)

    def _safely(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never fail a trial
            log.warning(
                "MLflow call %s failed (%s); the Optuna study keeps the trial",
                fn.__name__,
                redact(str(e)),
            )
            return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return "null" if value is None else str(value)
