"""The worker's budget, timeout, signal and dead-worker logic on every storage: SQLite always (a
developer needs no database server), PostgreSQL too when one is reachable. Workers run as real
`rnn-tuner run` commands: in-process, or as their own process where one is signalled or killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, open_storage, tiny_study, wait_for_training, write_study
from tuner.cli import main
from tuner.study import PARENT_ATTR, make_storage
from tuner.worker import UNSTARTED

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(
    params=[
        "sqlite",
        "journal-file",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("journal-postgresql", marks=pytest.mark.postgres),
    ]
)
def storage(request: pytest.FixtureRequest, workdir: Path) -> str:
    """Every storage rnn-tuner runs on: Optuna's RDB storage on SQLite and PostgreSQL, its
    journal in a file and in a PostgreSQL table (tuner.journal)."""
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/rnn_tuner.db"
    if request.param == "journal-file":
        return f"journal:///{workdir}/rnn_tuner.log"
    url = request.getfixturevalue("postgres_url")
    return url if request.param == "postgresql" else f"journal+{url}"


@pytest.fixture
def rdb_storage(storage: str) -> str:
    """The tests that cut the connection at one of Optuna's RDB statements: the journal's
    statements are its own (the dropped-connection test of tests/test_team.py covers it)."""
    if storage.startswith("journal"):
        pytest.skip("cuts Optuna's RDB statements")
    return storage


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
    opened = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened).trials
    finally:
        opened.engine.dispose()


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


class CutConnection:
    """The study database drops the connection, `times` times, when the worker sends a
    statement that starts with `prefix` (what a database restart does to a connection in use),
    from the first statement that starts with `after` on (from the start without it); a dropped
    connection reaches the worker as SQLAlchemy's OperationalError."""

    def __init__(
        self, storage: str, prefix: tuple[str, ...], times: int, after: tuple[str, ...] = ()
    ) -> None:
        self.database, self.prefix, self.after = sa.make_url(storage).database, prefix, after
        self.left, self.cuts = times, 0

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        said = statement.lstrip().upper()
        if self.after and said.startswith(self.after):
            self.after = ()
        cut = self.left and not self.after and said.startswith(self.prefix)
        if cut and conn.engine.url.database == self.database:
            self.left, self.cuts = self.left - 1, self.cuts + 1
            lost = Exception("connection lost")
            raise sa.exc.OperationalError(statement, parameters, lost, connection_invalidated=True)


# Optuna's stale-trial check before each ask (`now()` on PostgreSQL, on SQLite its spelling);
# trial creation itself Optuna retries five times before the worker sees an error.
STALE_CHECK = ("SELECT NOW()", "SELECT CURRENT_TIMESTAMP")
TELL_VALUE = ("INSERT INTO TRIAL_VALUES ",)
# At a worker's start: Optuna looks for its tables (SQLite, PostgreSQL), then checks their version.
TABLE_CHECK = ("PRAGMA MAIN.TABLE_INFO(", "SELECT PG_CATALOG.PG_CLASS.RELNAME")
SCHEMA_CHECK = ("SELECT VERSION_INFO.",)
PARAM_WRITE = ("INSERT INTO TRIAL_PARAMS ",)  # a sampled value, written before training
STUDY_ATTR_WRITE = ("INSERT INTO STUDY_USER_ATTRIBUTES ",)  # the creator's parent run id
# The last statement of Optuna's trial creation, and its reading the new trial back (its ask)
TRIAL_CREATED, TRIAL_READ = ("UPDATE TRIALS SET NUMBER",), ("SELECT TRIALS.",)


@pytest.fixture
def cut_connection(rdb_storage: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("tuner.study._DB_RETRY_WAIT", 0.0)  # the retries' waits, not their count
    installed: list[CutConnection] = []

    def install(prefix: tuple[str, ...], times: int, after: tuple[str, ...] = ()) -> CutConnection:
        installed.append(CutConnection(rdb_storage, prefix, times, after))
        sa.event.listen(sa.Engine, "before_cursor_execute", installed[-1])
        return installed[-1]

    yield install
    for cut in installed:
        sa.event.remove(sa.Engine, "before_cursor_execute", cut)


@pytest.mark.parametrize("budget", ["--max-trials", "--n-trials"])
def test_a_connection_dropped_before_the_trial_exists_loses_no_slot(
    workdir: Path, storage: str, cut_connection, budget: str
):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    cut = cut_connection(STALE_CHECK, times=2)  # the slot is claimed, the trial not created
    run(study_file, storage, budget, "3")
    assert cut.cuts == 2
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"] * 3


def test_a_worker_that_gives_up_on_the_database_gives_its_slot_back(
    workdir: Path, storage: str, cut_connection
):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    cut = cut_connection(STALE_CHECK, times=1000)  # a lasting outage, after the claim only
    result = CliRunner().invoke(
        main, ["run", str(study_file), "--storage", storage, "--max-trials", "2"]
    )
    assert result.exit_code == 1 and "the study database stayed unreachable" in result.output
    assert cut.cuts > 1 and trials(storage) == []
    cut.left = 0  # the database is back: the study still gets every trial of its budget
    run(study_file, storage, "--max-trials", "2")
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"] * 2


def test_a_trial_whose_result_the_database_lost_is_told_again_not_trained_again(
    workdir: Path, storage: str, cut_connection
):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    cut = cut_connection(TELL_VALUE, times=1)  # the first trial trained; its tell fails
    result = run(study_file, storage, "--max-trials", "3")
    assert cut.cuts == 1
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"] * 3  # none left RUNNING
    assert "3 complete here" in result.output
    assert [r.info.status for r in trial_runs(workdir)] == ["FINISHED"] * 3


@pytest.mark.parametrize("cut_at", [TABLE_CHECK, SCHEMA_CHECK], ids=["tables", "schema"])
def test_a_worker_starting_while_the_database_drops_connections_waits_for_it(
    workdir: Path, storage: str, cut_connection, cut_at: tuple[str, ...]
):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    run(study_file, storage, "--max-trials", "1")  # the tables exist: a start checks them
    cut = cut_connection(cut_at, times=1)
    run(study_file, storage, "--max-trials", "2")
    assert cut.cuts == 1
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"] * 2


def test_a_connection_dropped_as_the_study_gets_its_parent_run_is_retried(
    workdir: Path, storage: str, cut_connection
):
    """The creator records the parent run's id in the new study: one drop there no longer ends
    the run (and deletes the study it had just made)."""
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    cut = cut_connection(STUDY_ATTR_WRITE, times=1)
    run(study_file, storage, "--max-trials", "2")
    assert cut.cuts == 1
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"] * 2
    opened = open_storage(storage)
    parent = optuna.load_study(study_name="tiny", storage=opened).user_attrs[PARENT_ATTR]
    opened.engine.dispose()
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs(workdir)} == {parent}


def test_a_connection_dropped_before_training_fails_that_trial_only(
    workdir: Path, storage: str, cut_connection
):
    """Not the error a study file or data set makes, which every trial would meet: the run goes on."""
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    cut = cut_connection(PARAM_WRITE, times=1)
    run(study_file, storage, "--max-trials", "3")
    assert cut.cuts == 1
    assert [t.state.name for t in trials(storage)] == ["FAIL", "COMPLETE", "COMPLETE"]


def test_a_trial_created_just_before_the_connection_dropped_is_failed_not_left_running(
    workdir: Path, storage: str, cut_connection
):
    """Optuna's ask created the trial, then lost the connection: no worker would ever run it, and
    without a heartbeat it would never go stale, so the workers (their budget spent) waited for
    it for good (once seen in CI). The worker fails it and goes on; the budget stays exact.
    (`--timeout` ends the run that would wait.)"""
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    cut = cut_connection(TRIAL_READ, times=1, after=TRIAL_CREATED)
    run(study_file, storage, "--max-trials", "3", "--timeout", "60")
    assert cut.cuts == 1
    found = trials(storage)
    assert [t.state.name for t in found] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert found[0].user_attrs["fail_reason"] == UNSTARTED and not found[0].params


def test_a_heartbeat_lost_with_its_connection_is_not_the_last(
    workdir: Path, storage: str, cut_connection
):
    """Optuna's heartbeat thread ended at its first error: the trial trained on unseen, and
    after `grace_period` another worker would have failed it and trained it again."""
    study = tiny_study(
        study={"name": "tiny", "heartbeat_interval": 1}, task=LONG_TASK, budget={"max_epochs": 6}
    )
    study_file = write_study(workdir / "s.yaml", study)
    cut = cut_connection(("INSERT INTO TRIAL_HEARTBEATS ",), times=1)  # the trial's first beat
    run(study_file, storage, "--n-trials", "1")
    assert cut.cuts == 1
    (trial,) = trials(storage)
    assert trial.state.name == "COMPLETE"
    engine = sa.create_engine(storage)
    try:
        with engine.connect() as conn:
            beats = conn.execute(sa.text("SELECT trial_id FROM trial_heartbeats")).all()
    finally:
        engine.dispose()
    assert beats == [(trial._trial_id,)]  # a later beat made it


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_run_again(
    workdir: Path, storage: str
):
    """A worker killed in the milliseconds between Optuna's ask and its trial's first heartbeat
    leaves a running trial that never beat, which Optuna never calls stale: a run whose budget
    it holds waited for it until its timeout. The stale check now times such a trial from when
    it first sees it: after the grace period the trial is failed and run again."""
    beating = {"name": "tiny", "heartbeat_interval": 1, "grace_period": 2}
    study_file = write_study(
        workdir / "s.yaml", tiny_study(study=beating, budget={"max_epochs": 1})
    )
    run(study_file, storage, "--max-trials", "1")  # the study's budget, spent
    opened = open_storage(storage)
    try:
        optuna.load_study(study_name="tiny", storage=opened).ask()  # what the killed worker left
    finally:
        opened.engine.dispose()
    started = time.monotonic()
    run(study_file, storage, "--max-trials", "1", "--timeout", "120")
    assert time.monotonic() - started < 60  # not the timeout
    done = trials(storage)
    assert [t.state.name for t in done] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(done[2]) == 1


STARTING_A_TRIAL = 1.0  # seconds from the worker's last deadline check to the trial's creation


def test_no_trial_starts_after_the_timeout(workdir: Path, storage: str):
    # a budget the timeout always cuts: 40 one-epoch trials once took 15 s, and fitted in the 3 s
    # on the journal file after the training step got faster (2026-12-06)
    budget = 1000
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": budget, "max_epochs": 1})
    )
    timeout = 3.0
    run(study_file, storage, "--timeout", str(timeout))
    found = trials(storage)
    assert 1 <= len(found) < budget
    assert all(t.state.name == "COMPLETE" for t in found)  # the last trial is finished, not cut
    # The deadline is set before the first trial starts, so no start is later than this, give or
    # take the database work between the last check and the trial's creation (its stale-trial
    # check and ask, which CI's parallel load stretched past a strict bound on PostgreSQL).
    # A worker that missed the deadline would go on for many seconds (the budget's trials).
    first = found[0].datetime_start
    after = {t.number: (t.datetime_start - first).total_seconds() - timeout for t in found}
    late = {n: round(s, 2) for n, s in after.items() if s > STARTING_A_TRIAL}
    assert not late, f"started this many seconds past the timeout: {late}"


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


@pytest.mark.parametrize("made", [False, True], ids=["before-its-run", "before-it-recorded-it"])
def test_a_trial_lost_before_its_run_was_recorded_is_still_failed_in_mlflow(
    workdir: Path, made: bool
):
    """A worker can die between Optuna's ask and recording the trial's MLflow run id (before
    creating the run, or just after): the survivor that fails the lost trial closes that run, or
    makes it, so MLflow still holds every trial, once."""
    study = tiny_study(
        study={"name": "tiny", "heartbeat_interval": 1, "grace_period": 2},
        budget={"max_epochs": 1},
    )
    study_file = write_study(workdir / "s.yaml", study)
    storage = f"journal:///{workdir}/rnn_tuner.log"
    run(study_file, storage, "--n-trials", "1")  # the study and its parent run
    opened = make_storage(storage, heartbeat_interval=1, grace_period=2)
    loaded = optuna.load_study(study_name="tiny", storage=opened)
    lost = loaded.ask()  # as the dead worker's ask: RUNNING, beating, no run id recorded
    opened.record_heartbeat(lost._trial_id)
    parent = loaded.user_attrs[PARENT_ATTR]
    if made:  # the dead worker's run, created as the worker creates it, its id never recorded
        client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
        client.create_run(
            client.get_experiment_by_name("tiny").experiment_id,
            run_name=f"trial-{lost.number}",
            tags={
                "mlflow.parentRunId": parent,
                "rnn_tuner.role": "trial",
                "rnn_tuner.trial": str(lost.number),
                "optuna.state": "RUNNING",
            },
        )
    opened.engine.dispose()
    time.sleep(3)  # past the grace period: the next worker finds the trial stale

    run(study_file, storage, "--n-trials", "1")
    found = trials(storage)
    assert found[lost.number].state.name == "FAIL"
    retry = next(t for t in found if t.system_attrs.get("failed_trial") == lost.number)
    assert retry.state.name == "COMPLETE"
    runs = trial_runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (lost_run,) = [r for r in runs if r.data.tags["rnn_tuner.trial"] == str(lost.number)]
    assert lost_run.info.status == "FAILED"
    assert lost_run.data.tags["mlflow.parentRunId"] == parent
    assert lost_run.data.tags["fail_reason"].startswith("worker lost: no heartbeat for 2 s")
    assert len(runs) == len(found)  # every trial in MLflow, once
