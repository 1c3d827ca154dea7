"""The winners kept: a trial among the study's best k logs its best epoch's network to its run;
the parent run names the best; the decision is the study's, also when two workers finish at once.
Real tiny studies, a real SQLite study database and a real MLflow store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

import tuner
from models import SequenceModule, evaluate, train
from models.data import task_data
from tests.conftest import tiny_study
from tuner.config import parse_study
from tuner.keep import (
    BEST_TRIAL_TAG,
    BEST_URI_TAG,
    MODEL_TAG,
    BestWeights,
    KeepBest,
    NoKeptModel,
)
from tuner.tracking import Tracker

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def runs_by_trial(directory: Path, study: optuna.Study) -> dict[int, dict[str, str]]:
    """Each trial's MLflow run tags, by trial number."""
    client = MlflowClient(tracking_uri=f"sqlite:///{directory}/mlflow.db")
    return {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).data.tags for t in study.trials}


def validation_value(study_dict: dict, trial: optuna.trial.FrozenTrial, net) -> float:
    """The trial's metric on the validation split, computed afresh with the given network."""
    cfg = parse_study(study_dict)
    data = task_data(cfg.task)
    settings = replace(cfg.base_settings(), **trial.params)
    module = SequenceModule(settings, data.info)
    module.net = net
    return evaluate(module, data, "val")["val_mse"]


@pytest.mark.slow
def test_the_best_trials_model_loads_and_reproduces_its_validation_value(workdir: Path):
    study_dict = tiny_study(budget={"n_trials": 4, "max_epochs": 3})
    study = tuner.run(study_dict, progress=False)
    best = study.best_trial
    net = tuner.best_model("tiny")
    assert isinstance(net, torch.nn.Module) and not net.training
    # the weights of the best epoch, not the last: the value the study recorded
    assert validation_value(study_dict, best, net) == pytest.approx(best.value, rel=1e-5)
    assert 0 <= best.user_attrs["best_epoch"] < 3

    tags = runs_by_trial(workdir, study)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"]).data.tags
    assert parent[BEST_TRIAL_TAG] == str(best.number)
    assert parent[BEST_URI_TAG] == tags[best.number][MODEL_TAG]
    # keep_best 1: exactly the trials that were the best when they ended kept a model
    expected, best_so_far = set(), float("inf")
    for t in study.trials:
        if t.value < best_so_far:
            expected.add(t.number)
            best_so_far = t.value
    assert {n for n, t in tags.items() if MODEL_TAG in t} == expected


@pytest.mark.slow
def test_keep_best_two_keeps_each_trial_that_ranked_second_or_better(workdir: Path):
    study_dict = tiny_study(
        tracking={"keep_best": 2},
        sampler={"name": "random", "options": {"seed": 3}},
        budget={"n_trials": 5, "max_epochs": 2},
    )
    study = tuner.run(study_dict, progress=False)
    done = study.trials
    expected = {
        t.number
        for t in done
        if sum(o.value < t.value for o in done[: t.number]) < 2  # top 2 of those ended so far
    }
    tags = runs_by_trial(workdir, study)
    assert {n for n, t in tags.items() if MODEL_TAG in t} == expected
    second = sorted(done, key=lambda t: t.value)[1]
    assert second.number in expected  # the current runner-up always has its model
    net = tuner.best_model("tiny", trial=second.number)
    assert validation_value(study_dict, second, net) == pytest.approx(second.value, rel=1e-5)

    missing = set(range(5)) - expected  # seeded: some trial ended outside the top 2
    assert missing
    kept = ", ".join(map(str, sorted(expected)))
    with pytest.raises(NoKeptModel, match=f"trials with a model: {kept}"):
        tuner.best_model("tiny", trial=min(missing))


def test_keep_best_zero_keeps_nothing_and_says_what_to_do(workdir: Path):
    study = tiny_study(tracking={"keep_best": 0}, budget={"n_trials": 1, "max_epochs": 1})
    tuner.run(study, progress=False)
    assert MODEL_TAG not in runs_by_trial(workdir, tuner.load("tiny"))[0]
    with pytest.raises(NoKeptModel, match="has kept no model yet.*rnn-tuner retrain tiny"):
        tuner.best_model("tiny")


def test_two_workers_that_finish_at_once_do_not_both_keep_as_best(workdir: Path):
    """Worker A's trial (0.5) and worker B's (0.4) are both recorded before either keeper runs:
    each keeper reads the study, so only B's network is kept and named; a stale parent tag
    left by A is put right by A's own reading of the study."""
    cfg = parse_study(tiny_study(budget={"n_trials": 2, "max_epochs": 1}))
    data = task_data(cfg.task)
    tracker = Tracker(f"sqlite:///{workdir}/mlflow.db", "race")
    parent = tracker.create_parent("race", {})
    study = optuna.create_study(storage=f"sqlite:///{workdir}/race.db", study_name="race")
    keepers, runs = [], []
    for _ in range(2):  # A, then B: each trains and offers its network before either is told
        trial = study.ask()
        run_id = tracker.start_trial(parent, trial.number, {}, {}).wait()
        trial.set_user_attr("mlflow_run_id", run_id)
        weights = BestWeights(cfg.objectives[0])
        result = train(cfg.base_settings(), data, callbacks=[weights])
        keeper = KeepBest(tracker, parent, primary=0, k=1)
        keeper.offer(trial.number, run_id, result, weights, data)
        keepers.append(keeper)
        runs.append(run_id)
    study.tell(0, 0.5)
    study.tell(1, 0.4)
    for number, keeper in enumerate(keepers):
        keeper(study, study.trials[number])
    assert MODEL_TAG not in tracker.run_tags(runs[0]) and MODEL_TAG in tracker.run_tags(runs[1])
    assert tracker.run_tags(parent)[BEST_TRIAL_TAG] == "1"

    tracker.set_tags(parent, {BEST_TRIAL_TAG: "0"})  # a stale write by A...
    keepers[0].tag_parent(study)  # ...and A's tagging, which reads the study
    assert tracker.run_tags(parent)[BEST_TRIAL_TAG] == "1"
    assert tracker.run_tags(parent)[BEST_URI_TAG] == tracker.run_tags(runs[1])[MODEL_TAG]
