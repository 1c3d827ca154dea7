"""The winners kept: the best epoch's network of each trial that ranks among the study's best k.

A trial that completes offers its network with the weights of its best epoch (the epoch the
study values it by). Once Optuna has recorded the trial, the study itself, in the storage every
worker shares, decides whether it ranks among the best `tracking.keep_best` complete trials by
the primary objective; no worker trusts its own memory of the study. A trial that does logs the
network to its own MLflow run as a model: the plain `SequenceNet`, pickled, with an input example,
a signature and the `models` code beside it, as `retrain` logs it; the model's URI is the run's tag
`rnn_tuner.model_uri`. Nothing another trial logged is replaced; a trial that later falls out of
the top k keeps its model (artifact stores do not delete).

The parent run's tags `rnn_tuner.best_model_trial` and `rnn_tuner.best_model_uri` name the
study's best trial and its model. Two workers finishing at once may both write them; each reads
the study again after writing and writes again if the best has moved, so the last write names
the study's best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

import models
from models import EpochCallback, TaskData, TrainResult
from models.network import SequenceNet
from tuner.config import Objective as ObjectiveSpec
from tuner.study import best_trials
from tuner.tracking import Tracker

MODEL_TAG = "rnn_tuner.model_uri"  # on a trial's run: its kept model
BEST_TRIAL_TAG = "rnn_tuner.best_model_trial"  # on the parent run: the best trial with a model
BEST_URI_TAG = "rnn_tuner.best_model_uri"


def top_trials(study: optuna.Study, primary: int, k: int) -> list[FrozenTrial]:
    """The study's best k complete trials by objective `primary`, best first, as the storage
    holds them now (ties: the earlier trial first); infeasible ones (tuner.constraints) never."""
    if k == 1 and len(study.directions) == 1:  # the storage's best: no walk over every trial
        return best_trials(study)
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(violation <= 0 for violation in t.constraints.values())
    ]
    sign = -1.0 if study.directions[primary] == StudyDirection.MAXIMIZE else 1.0
    return sorted(done, key=lambda t: (sign * t.values[primary], t.number))[:k]


class BestWeights(EpochCallback):
    """Keeps (in memory) the weights of the best validation epoch so far, copied on each
    improvement only: the study valued a trial by its best epoch (the objective's value, with its
    tie-break), so that is the network to keep, to test and to export."""

    def __init__(self, objective: ObjectiveSpec, copy: bool = True) -> None:
        """`copy=False`: only find the best epoch (no network is kept)."""
        self.objective, self.mode, self.copy = objective, objective.resolved_direction, copy
        self.best = math.nan
        self.epoch: int | None = None  # the epoch whose weights `state` holds
        self.state: dict[str, torch.Tensor] | None = None  # the module's state_dict then

    def on_epoch(self, result: TrainResult) -> None:
        row = result.history[-1]
        if not math.isfinite(row.get(self.objective.metric, math.nan)):
            return
        value = self.objective.score(row)
        if self.epoch is None or (
            value > self.best if self.mode == "maximize" else value < self.best
        ):
            self.best, self.epoch = value, int(row["epoch"])
            if self.copy:
                state = result.module.state_dict()
                self.state = {k: v.detach().clone() for k, v in state.items()}


@dataclass
class Candidate:
    number: int
    run_id: str
    net: SequenceNet  # on the CPU, with its best epoch's weights


class KeepBest:
    """Offered each complete trial's result by the objective; as an Optuna callback (after the
    trial is recorded), logs the network if the study ranks the trial among its best k."""

    def __init__(self, tracker: Tracker, parent_id: str, primary: int, k: int) -> None:
        self.tracker, self.parent_id, self.primary, self.k = tracker, parent_id, primary, k
        self.candidate: Candidate | None = None
        self.data: TaskData | None = None

    @property
    def wanted(self) -> bool:
        """Whether training should keep a copy of the best epoch's weights."""
        return self.k > 0

    def offer(
        self,
        number: int,
        run_id: str | None,
        result: TrainResult,
        best: BestWeights,
        data: TaskData,
    ) -> None:
        """A complete trial's network, with the weights `best` kept, to keep if it ranks."""
        self.candidate = None
        if not self.wanted or run_id is None or best.state is None:
            return
        result.module.load_state_dict(best.state)
        self.candidate = Candidate(number, run_id, result.module.net.cpu().eval())
        self.data = data

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        found, self.candidate = self.candidate, None
        if found is None or found.number != trial.number or trial.state != TrialState.COMPLETE:
            return
        if trial.number not in [t.number for t in top_trials(study, self.primary, self.k)]:
            return
        assert self.data is not None
        logged = self.tracker.safely(log_network, self.tracker, found.run_id, found.net, self.data)
        if logged is not None:
            self.tracker.safely(self.tracker.set_tags, found.run_id, {MODEL_TAG: logged[0]})
            self.tracker.safely(self.tag_parent, study)

    def tag_parent(self, study: optuna.Study) -> None:
        """Name the study's best trial and its model on the parent run, until the best read
        after the write is the one written (another worker may have moved it meanwhile)."""
        for _ in range(5):
            best = top_trials(study, self.primary, 1)
            run_id = best[0].user_attrs.get("mlflow_run_id") if best else None
            uri = self.tracker.run_tags(run_id).get(MODEL_TAG) if run_id else None
            if uri is None:  # not logged yet: its worker tags the parent when it is
                return
            tags = {BEST_TRIAL_TAG: str(best[0].number), BEST_URI_TAG: uri}
            self.tracker.set_tags(self.parent_id, tags)
            if top_trials(study, self.primary, 1)[0].number == best[0].number:
                return


def log_network(
    tracker: Tracker, run_id: str, net: SequenceNet, data: TaskData, registered: str | None = None
) -> tuple[str, str]:
    """The plain network as the run's MLflow model, with an input example from the test split
    (validation without one), registered as `registered` if given; returns its URI and
    registered version ("" if not registered)."""
    net = net.cpu().eval()
    example = input_example(data)
    with torch.no_grad():
        output = net(torch.as_tensor(example)).numpy()
    return tracker.log_model(
        run_id,
        net,
        example,
        output,
        registered,
        code_paths=[str(Path(models.__file__).parent)],  # loads without this project
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
    )


def input_example(data: TaskData) -> Any:
    """Two sequences as the model takes them: (2, T, F) floats or (2, T) token ids; a language
    model's one window (1, L) of the stream. From the test split, else validation."""
    split = (data.test or data.val).inputs
    if data.info.task == "language_model":
        return split[: data.info.max_len][None].numpy()  # (1, L)
    return np.ascontiguousarray(split[:2].numpy())


class NoKeptModel(LookupError):
    """The trial asked for kept no model (or the study kept none yet)."""


def kept_model_uri(
    study: optuna.Study, tracker: Tracker, parent_id: str | None, trial: int | None = None
) -> tuple[int, str]:
    """(trial number, model URI) of the kept model of trial `trial`, or of the study's best."""
    name = study.study_name
    if parent_id is None:
        raise NoKeptModel(f"study {name!r} has no MLflow parent run; run it with rnn-tuner")
    if trial is None:
        tags = tracker.run_tags(parent_id)
        if BEST_URI_TAG in tags:
            return int(tags[BEST_TRIAL_TAG]), tags[BEST_URI_TAG]
        raise NoKeptModel(
            f"study {name!r} has kept no model yet: a trial keeps one when it completes among "
            f"the study's best `tracking.keep_best` (0 keeps none); `rnn-tuner retrain {name}` "
            "trains and registers one"
        )
    found = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
    run_id = found[0].user_attrs.get("mlflow_run_id") if found else None
    uri = tracker.run_tags(run_id).get(MODEL_TAG) if run_id else None
    if uri is None:
        kept = sorted(
            int(r.tags["rnn_tuner.trial"])
            for r in tracker.child_runs(parent_id)
            if MODEL_TAG in r.tags and "rnn_tuner.trial" in r.tags
        )
        raise NoKeptModel(
            f"trial {trial} of study {name!r} kept no model: only a trial that completes among "
            f"the study's best `tracking.keep_best` keeps one; trials with a model: "
            f"{', '.join(map(str, kept)) or 'none'}"
        )
    return trial, uri
