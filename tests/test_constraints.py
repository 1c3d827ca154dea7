"""`sampler.constraints` in real small studies: two enqueued networks, a large one that learns
well and a small one that does not; `n_params <= 500` makes the large one infeasible, and no
command may then call it the best."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import default_study, tiny_study, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

LARGE = {"lr": 0.03, "hidden_size": 16, "cell": "gru"}  # 977 parameters, val_mse 0.18
SMALL = {"lr": 0.001, "hidden_size": 4, "cell": "rnn"}  # 37 parameters, val_mse 1.29
CONSTRAINT = "n_params <= 500"


def run_study(workdir: Path, **blocks) -> tuple[optuna.Study, str]:
    study = tiny_study(budget={"n_trials": 2, "max_epochs": 2}, **blocks)
    study["enqueue"] = [LARGE, SMALL]
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output
    return default_study("tiny"), result.output


def parent_tags(workdir: Path) -> dict[str, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`rnn_tuner.role` = 'study'")
    return runs[0].data.tags


def test_an_infeasible_trial_is_never_the_best(workdir: Path):
    study, output = run_study(workdir, sampler={"name": "tpe", "constraints": [CONSTRAINT]})
    large, small = study.trials
    assert large.value < small.value  # the large network learns better...
    assert large.constraints == {CONSTRAINT: 977 - 500}  # ...and breaks the constraint
    assert small.constraints == {CONSTRAINT: 37 - 500}
    assert study.best_trial.number == small.number
    tags = parent_tags(workdir)
    assert tags["best_trial"] == tags["rnn_tuner.best_model_trial"] == str(small.number)
    assert f"trial 0 COMPLETE {large.value:.5g} infeasible ({CONSTRAINT})" in output

    status = CliRunner().invoke(main, ["status", "tiny"])
    assert re.search(rf"best: trial {small.number} value", status.output), status.output


def test_the_pareto_front_of_a_multi_objective_study_holds_feasible_trials_only(workdir: Path):
    both = [{"metric": "val_mse"}, {"metric": "n_params"}]
    sampler = {"name": "nsgaii", "constraints": [CONSTRAINT]}
    study, _ = run_study(workdir, objective=both, sampler=sampler)
    # Unconstrained, both are on the front (better val_mse, or fewer parameters).
    assert [t.number for t in study.best_trials] == [1]
    assert parent_tags(workdir)["best_trial"] == "1"
