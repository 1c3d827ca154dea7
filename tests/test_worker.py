"""The worker's budget, timeout, signal and dead-worker logic on every storage: SQLite always (a
developer needs no database server), PostgreSQL too when one is reachable. Workers run as real
`rnn-tuner run` commands: in-process, or as their own process where one is signalled or killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, tiny_study, wait_for_training, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, workdir: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/rnn_tuner.db"
    return request.getfixturevalue("postgres_url")


def run(study_file: Path, storage: str, *args: str):
    result = CliRunner().invoke(
        main, ["run", str(study_file), "--storage", storage, *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result


def start(workdir: Path, study_file: Path, storage: str, *args: str) -> subprocess.Popen:
    """`rnn-tuner run` as its own process, to be signalled or killed."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(study_file), "--storage", storage, *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def trials(storage: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).trials


def trial_runs(workdir: Path, experiment: str = "tiny") -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in found if r.data.tags.get("rnn_tuner.role") == "trial"]


# A long trial: a signal or a kill lands while it trains.
LONG_TASK = {"source": "adding", "seq_len": 40, "n_train": 4000, "n_val": 64, "n_test": 64}


def test_max_trials_is_the_study_s_total_across_runs(workdir: Path, storage: str):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    run(study_file, storage, "--max-trials", "2")
    assert len(trials(storage)) == 2
    again = run(study_file, storage, "--max-trials", "2")  # spent: no trial
    assert len(trials(storage)) == 2 and "no trials here" in again.output
    run(study_file, storage, "--max-trials", "5", "--n-trials", "2")  # this run's own cap first
    run(study_file, storage, "--max-trials", "5", "--n-trials", "9")  # then the study's
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"] * 5


def test_no_trial_starts_after_the_timeout(workdir: Path, storage: str):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 40, "max_epochs": 1})
    )
    timeout = 3.0
    run(study_file, storage, "--timeout", str(timeout))
    found = trials(storage)
    assert 1 <= len(found) < 40
    assert all(t.state.name == "COMPLETE" for t in found)  # the last trial is finished, not cut
    # the deadline is set before the first trial starts, so no start is later than this
    first = found[0].datetime_start
    late = [t.number for t in found if (t.datetime_start - first).total_seconds() > timeout]
    assert not late, late


def test_sigterm_fails_the_trial_in_both_records_and_exits_cleanly(workdir: Path, storage: str):
    study = tiny_study(task=LONG_TASK, budget={"n_trials": 5, "max_epochs": 50})
    proc = start(workdir, write_study(workdir / "s.yaml", study), storage)
    wait_for_training(storage, "tiny", proc, proc.stdout.read)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out

    found = trials(storage)
    assert [t.state.name for t in found] == ["FAIL"], out
    assert found[0].user_attrs["fail_reason"] == "TrialInterrupted: interrupted by SIGTERM"
    (run_,) = trial_runs(workdir)
    assert run_.info.status == "FAILED"
    assert run_.data.tags["fail_reason"] == "TrialInterrupted: interrupted by SIGTERM"


@pytest.mark.slow
def test_a_killed_worker_s_trial_fails_and_is_retried_by_a_survivor(workdir: Path, storage: str):
    study = tiny_study(
        study={"name": "tiny", "heartbeat_interval": 1, "grace_period": 4},
        task={**LONG_TASK, "n_train": 3000},
        budget={"max_epochs": 4},
    )
    study_file = write_study(workdir / "s.yaml", study)
    victim = start(workdir, study_file, storage, "--max-trials", "3")
    wait_for_training(storage, "tiny", victim, victim.stdout.read)
    victim.kill()  # no signal handler runs: the trial stays RUNNING until its heartbeat is stale
    victim.wait()

    survivor = start(workdir, study_file, storage, "--max-trials", "3")
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out

    found = trials(storage)
    states = [t.state.name for t in found]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 3, states
    dead = next(t for t in found if t.state.name == "FAIL")
    retry = next(t for t in found if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state.name == "COMPLETE" and retry.params == dead.params

    runs = trial_runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    dead_run = next(r for r in runs if r.data.tags["rnn_tuner.trial"] == str(dead.number))
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags["fail_reason"].startswith("worker lost: no heartbeat for 4 s")
