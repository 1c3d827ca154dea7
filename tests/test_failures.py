"""A run that would only fail stops with one clear error: at the first trial that fails before
its first training step (every trial would), and after `budget.max_failures` failed trials in a
row. With no trial budget at all, never an endless loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import default_storage, default_study, tiny_study, write_study
from tuner.cli import main
from tuner.config import StudyConfig
from tuner.request import RunRequest
from tuner.worker import RecurringTrialFailure, run_worker

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
NO_BUDGET = {"max_epochs": 1}  # no n_trials, no timeout, no max_trials: until it stops itself


def trials(workdir: Path, name: str = "tiny") -> list:
    return default_study(name, workdir).trials


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args], prog_name="rnn-tuner")


def test_a_data_error_with_no_trial_budget_stops_the_run_with_one_clear_error(workdir: Path):
    """A worker given a study whose data `validate` never saw (checked for shape only): the
    first trial's loader fails before any training step, and the run stops there."""
    (workdir / "story.txt").write_bytes(b"\xff\xfe not text")
    study = tiny_study(
        task={"source": "text", "path": "story.txt", "seq_len": 8},
        objective={"metric": "val_loss"},
        budget=NO_BUDGET,
    )
    cfg = StudyConfig.model_validate(study)
    req = RunRequest(cfg, default_storage(workdir), f"sqlite:///{workdir}/mlflow.db",
                     "tiny", progress=False)  # fmt: skip
    with pytest.raises(RecurringTrialFailure) as stopped:
        run_worker(req)

    message = str(stopped.value)
    assert "trial 0 of study 'tiny' failed before its first training step" in message
    assert "story.txt, line 1: not valid UTF-8" in message and "rnn-tuner validate" in message
    assert [t.state.name for t in trials(workdir)] == ["FAIL"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert {r.data.tags["rnn_tuner.role"]: r.info.status for r in runs} == {
        "study": "FINISHED",  # the parent run is closed, not left running
        "trial": "FAILED",
    }


def test_settings_that_cannot_go_together_stop_the_run_at_the_first_trial_with_them(
    workdir: Path,
):
    study = tiny_study(
        search={
            "bidirectional": {"type": "categorical", "choices": [False, True]},
            "truncation": {"type": "categorical", "choices": [None, 5]},
        },
        sampler={"name": "grid"},
        budget=NO_BUDGET,
    )
    result = run(str(write_study(workdir / "s.yaml", study)))
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert "failed before its first training step, so every trial would" in result.output
    assert "truncation needs a unidirectional network" in result.output
    states = [t.state.name for t in trials(workdir)]
    assert states[-1] == "FAIL" and states.count("FAIL") == 1 and len(states) <= 4


def test_max_failures_trials_failing_in_a_row_stop_the_run(workdir: Path):
    study = tiny_study(  # every trial diverges after its first steps
        fixed={"batch_size": 32, "patience": None, "optimizer": "sgd", "clip_norm": None},
        search={"lr": {"type": "float", "low": 1e11, "high": 1e12, "log": True}},
        budget={"max_epochs": 1, "max_failures": 2},
    )
    result = run(str(write_study(workdir / "s.yaml", study)))
    assert result.exit_code == 1, result.output
    assert "2 trials of study 'tiny' failed in a row (budget.max_failures: 2)" in result.output
    assert "DivergenceError" in result.output and "Traceback" not in result.output
    assert [t.state.name for t in trials(workdir)] == ["FAIL", "FAIL"]
