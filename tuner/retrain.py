"""`rnn-tuner retrain STUDY`: the best configuration trained again, tested once, registered.

    rnn-tuner retrain quickstart
    net = mlflow.pytorch.load_model("models:/rnn-tuner-quickstart/1")   # anywhere, later
    net(inputs)                                 # (batch, time, features) -> predictions

1. The best trial: the study's best (multi-objective: of the Pareto front, the one best on the
   first validation metric). Its settings are the study file's `fixed:` settings and defaults
   with the trial's parameters on top, seed included, so training repeats the trial's.
2. Training on the training split, validating each epoch; the best validation epoch's weights
   are kept, as the study valued the trial by its best epoch.
3. One evaluation on the test split, which the study never saw.
4. A run `retrain` nested under the study's parent run: parameters, per-epoch metrics, the test
   metrics, the checkpoint (`checkpoint/model.ckpt`, loads with
   `SequenceModule.load_from_checkpoint`), and the network as an MLflow model: the plain
   `nn.Module` (`SequenceNet`) with an input example, a signature and the `models` code beside it,
   registered as a new version of `rnn-tuner-<study>`.

The study file gives the task and its data: `--study-file`, else the copy that `rnn-tuner run`
logged in the parent run.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna

from models import (
    TaskData,
    TrainResult,
    evaluate,
    train,
)
from models.config import Settings
from models.data import task_data
from models.data.folds import pooled
from tuner.config import Objective as ObjectiveSpec
from tuner.config import StudyConfig, load_study_file
from tuner.crossval import retrain_epochs
from tuner.errors import BadInput
from tuner.keep import BestWeights, log_network
from tuner.study import best_trial as study_best_trial
from tuner.tracking import Tracker


class NoStudyFile(BadInput, LookupError):
    """Neither --study-file nor a study file logged in the parent run."""


class NoBestTrial(BadInput, LookupError):
    """The study has no complete trial to retrain."""


@dataclass
class Retrained:
    study: str
    trial: int
    metric: str  # the validation metric the study optimised, e.g. val_mse
    study_value: float  # the trial's best validation value in the study
    value: float  # the retrained model's best validation value (its kept epoch)
    test: dict[str, float]  # test_<metric>: the one evaluation on the test split
    epochs: int
    seconds: float
    model_name: str
    version: str
    model_uri: str
    run_id: str
    train_sequences: int  # sequences the model trained on (after cross-validation: all of them)

    def text(self) -> str:
        test_metric = "test_" + self.metric.removeprefix("val_")
        others = ", ".join(f"{k} {v:.5g}" for k, v in self.test.items() if k != test_metric)
        return "\n".join(
            [
                f"retrained trial {self.trial} of study {self.study!r}: {self.epochs} epoch(s), "
                f"{self.seconds:.1f} s",
                f"  validation {self.metric}: {self.study_value:.5g} in the study, "
                + (
                    f"{self.value:.5g} retrained"
                    if math.isfinite(self.value)  # else no validation split: cross-validated
                    else f"the folds' mean; retrained on all {self.train_sequences} training "
                    "sequences"
                ),
                self._test_line(test_metric, others),
                f"registered model {self.model_name!r} version {self.version} "
                f"(models:/{self.model_name}/{self.version}), run {self.run_id}",
            ]
        )

    def _test_line(self, test_metric: str, others: str) -> str:
        if not self.test:
            return "  test       none: the study file names no task.test file, so nothing is scored"
        value = self.test.get(test_metric, float("nan"))
        return f"  test       {test_metric}: {value:.5g}" + (f" ({others})" if others else "")


def model_name(study_name: str) -> str:
    """The registered model's name: `rnn-tuner-<study>`, with unusual characters as `-`."""
    return "rnn-tuner-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", study_name)


def study_config(tracker: Tracker, parent_id: str, study_file: Path | None) -> StudyConfig:
    """The study file given, else the one logged in the parent run (its only YAML artifact)."""
    if study_file is not None:
        return load_study_file(study_file, read_test=True)
    logged = [p for p in tracker.artifact_paths(parent_id) if p.endswith((".yaml", ".yml"))]
    if len(logged) != 1:
        raise NoStudyFile(
            f"the study's parent run {parent_id} holds {len(logged)} study file(s) "
            f"({', '.join(logged) or 'none'}); pass the study file with --study-file"
        )
    with tempfile.TemporaryDirectory(prefix="rnn-tuner-") as tmp:
        return load_study_file(tracker.download_artifact(parent_id, logged[0], tmp), read_test=True)


def best_trial(study: optuna.Study, cfg: StudyConfig) -> tuple[optuna.trial.FrozenTrial, int]:
    """The trial to retrain, and the index of the validation objective it is judged by."""
    trial = study_best_trial(study, cfg.primary_index)
    if trial is None:
        raise NoBestTrial(
            f"study {study.study_name!r} has no complete trial yet; "
            f"see `rnn-tuner status {study.study_name}`"
        )
    return trial, cfg.primary_index


def retrain(study: optuna.Study, cfg: StudyConfig, tracker: Tracker, parent_id: str) -> Retrained:
    started = time.perf_counter()
    trial, index = best_trial(study, cfg)
    metric = cfg.objectives[index].metric
    settings, data, stop_after = training_plan(cfg, trial)
    name = model_name(study.study_name)
    params = {**settings.params(), **{f"task.{k}": v for k, v in asdict(cfg.task).items()}}
    tags = {"rnn_tuner.study": study.study_name, "rnn_tuner.best_trial": str(trial.number)}
    run_id = tracker.start_retrain(parent_id, params, tags)
    try:
        with tempfile.TemporaryDirectory(prefix="rnn-tuner-retrain-") as tmp:
            checkpoint = Path(tmp) / "checkpoint"
            result = _fit(settings, data, cfg.objectives[index], checkpoint, stop_after)
            # the one look at the test split; none when pre-split files name no test file
            test = {} if data.test is None else evaluate(result.module, data, "test")
            summary = {**test, f"study_{metric}": trial.values[index], "n_params": result.n_params}
            summary["train_sequences"] = len(result.trainer.train_dataloader.dataset)
            tracker.log_metrics(run_id, result.history, summary)
            tracker.log_artifacts(run_id, str(checkpoint), "checkpoint")
            model_uri, version = log_network(tracker, run_id, result.module.net, data, name)
        tracker.set_tags(run_id, {"rnn_tuner.model": f"{name}/{version}"})
        tracker.end_run(run_id)
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    seconds = time.perf_counter() - started
    return Retrained(
        study.study_name, trial.number, metric, trial.values[index], result.best_value, test,
        result.epochs, seconds, name, version, model_uri, run_id,
        int(summary["train_sequences"]),
    )  # fmt: skip


def training_plan(
    cfg: StudyConfig, trial: optuna.trial.FrozenTrial
) -> tuple[Settings, TaskData, int | None]:
    """The trial's settings, the data to train them on and the epoch to stop after (None: as
    the trial did). After cross-validation: every sequence outside the test split, no
    validation, stopped after the folds' mean best epoch; `max_epochs` stays the budget, so an
    epoch-indexed schedule (cosine) runs those epochs exactly as in the folds."""
    settings = cfg.base_settings().with_values(trial.params)
    data = task_data(cfg.task, with_test=True)  # the only reader of a separate test file
    if not cfg.cv_folds:
        return settings, data, None
    best_epochs = trial.user_attrs.get("cv_best_epochs")
    if not best_epochs:
        raise NoBestTrial(
            f"trial {trial.number} has no best epochs of its folds (`cv_best_epochs`): it ran "
            "without task.cv_folds; retrain with the study file it ran with (--study-file)"
        )
    return replace(settings, patience=None), pooled(data), retrain_epochs(best_epochs)


def _fit(
    settings: Settings,
    data: TaskData,
    objective: ObjectiveSpec,
    checkpoint_dir: Path,
    stop_after: int | None,
) -> TrainResult:
    """Train as the trial did; the result's module holds its best validation epoch's weights
    (without a validation split, the last epoch's), also left as `checkpoint_dir/model.ckpt`."""
    keep = BestWeights(objective)
    options = None if stop_after is None else {"limit_val_batches": 0, "max_epochs": stop_after}
    result = train(
        settings, data, monitor=objective.metric, callbacks=[keep], trainer_kwargs=options
    )
    if keep.state is not None:  # else never a finite value: keep the last epoch
        result.module.load_state_dict(keep.state)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    result.trainer.save_checkpoint(checkpoint_dir / "model.ckpt", weights_only=False)
    return result
