"""Team mode on the machine's real PostgreSQL: many workers, one study, crashes survived.

Workers run as real `rnn-tuner run` processes; each test creates and drops its own database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, open_storage, tiny_study, write_study
from tests.servers import mlflow_server
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def start(
    workdir: Path, study_file: Path, storage: str, *args: str, tracking: str | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(study_file), "--storage", storage, *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MLFLOW_TRACKING_URI": tracking or f"sqlite:///{workdir}/mlflow.db",
        },
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """The command's output once it ended with 0; one still running after `timeout` is stopped
    (SIGINT, which it passes on to its workers) and its output so far is the failure."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"still running after {timeout:.0f} s; its output:\n{out}") from None
    assert proc.returncode == 0, out
    return out


def runs(
    workdir: Path, experiment: str = "tiny", tracking: str | None = None
) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(tracking_uri=tracking or f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in all_runs if r.data.tags.get("rnn_tuner.role") == "study"]
    children = [r for r in all_runs if r.data.tags.get("rnn_tuner.role") == "trial"]
    return client, parents, children


def wait_until(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running_trials(storage: str, name: str = "tiny") -> list:
    return [t for t in trials(storage, name) if t.state.name == "RUNNING"]


def trials(storage: str, name: str = "tiny") -> list:
    opened = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened).trials
    except KeyError:  # not created yet
        return []
    finally:
        opened.engine.dispose()


# The team's storages on PostgreSQL: Optuna's RDB tables, or its journal in a table of ours.
BACKENDS = pytest.mark.parametrize("backend", ["", "journal+"], ids=["rdb", "journal"])


@pytest.mark.slow
@pytest.mark.postgres
@BACKENDS
def test_four_workers_share_one_study_with_an_exact_global_cap(
    workdir: Path, postgres_databases, backend: str
):
    """The team set-up: study and MLflow server both on PostgreSQL, runs logged over HTTP."""
    postgres_url, mlflow_db = backend + postgres_databases(), postgres_databases()
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    with mlflow_server(mlflow_db, workdir / "artifacts") as server:
        out = finish(
            start(
                workdir,
                study_file,
                postgres_url,
                "--workers",
                "4",
                "--max-trials",
                "7",
                tracking=server,
            )
        )
        _, parents, children = runs(workdir, tracking=server)

    found = trials(postgres_url)
    assert len(found) == 7, out
    assert sorted(t.number for t in found) == list(range(7))
    assert all(t.state.name == "COMPLETE" for t in found)
    # every worker reported its summary (its trial lines carry the [wN] prefix too)
    assert len(re.findall(r"^\[w\d+\] study 'tiny': ", out, re.M)) == 4, out
    assert len(parents) == 1
    assert sorted(int(r.data.tags["rnn_tuner.trial"]) for r in children) == list(range(7))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    # parallel TPE (constant liar) does not hand two workers the same parameters
    assert len({tuple(sorted(t.params.items())) for t in found}) == 7


@pytest.mark.slow
@pytest.mark.postgres
@BACKENDS
def test_workers_carry_on_when_the_database_drops_their_connections(
    workdir: Path, postgres_url: str, backend: str
):
    study = tiny_study(
        task={"source": "adding", "seq_len": 20, "n_train": 600, "n_val": 64, "n_test": 64},
        budget={"max_epochs": 2},
    )
    storage = backend + postgres_url
    proc = start(
        workdir,
        write_study(workdir / "s.yaml", study),
        storage,
        "--workers",
        "2",
        "--max-trials",
        "8",
    )
    admin = sa.create_engine(
        postgres_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )
    database = postgres_url.rsplit("/", 1)[1]
    killed = 0
    try:
        # two workers import torch, Lightning and MLflow first: minutes on a loaded machine
        wait_until(lambda: running_trials(storage), timeout=300, what="a trial to start")
        for _ in range(3):  # what a database restart does to every open connection
            with admin.connect() as conn:
                killed += len(
                    conn.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": database},
                    ).all()
                )
            time.sleep(1.5)  # no signal follows: the cuts are spread over the workers' trials
    finally:
        admin.dispose()
    out = finish(proc)
    assert killed > 0
    found = trials(storage)
    assert len(found) == 8 and not [t for t in found if t.state.name == "RUNNING"], out
    assert sum(t.state.name == "COMPLETE" for t in found) >= 6, [t.state.name for t in found]


@pytest.mark.postgres
def test_stock_optuna_cli_reads_the_study(workdir: Path, postgres_url: str):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 2, "max_epochs": 1})
    )
    result = CliRunner().invoke(main, ["run", str(study_file), "--storage", postgres_url])
    assert result.exit_code == 0, result.output
    optuna_cli = Path(sys.executable).with_name("optuna")
    listed = subprocess.run(
        [str(optuna_cli), "trials", "--storage", postgres_url, "--study-name", "tiny"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("COMPLETE") == 2


def test_an_unreachable_database_is_a_clear_error_within_seconds(workdir: Path):
    study_file = write_study(workdir / "s.yaml", tiny_study())
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(study_file),
            "--storage",
            "postgresql+psycopg://bob:hunter2@127.0.0.1:1/nowhere",
        ],
    )
    assert time.monotonic() - started < 20
    assert result.exit_code == 1
    assert (
        "cannot open the study database postgresql+psycopg://bob:***@127.0.0.1:1/nowhere"
        in result.output
    )
    assert "hunter2" not in result.output


def test_several_workers_on_sqlite_are_refused_with_the_alternative(workdir: Path):
    study_file = write_study(workdir / "s.yaml", tiny_study())
    sqlite = f"sqlite:///{workdir / 'study.db'}"
    result = CliRunner().invoke(
        main, ["run", str(study_file), "--workers", "2", "--storage", sqlite]
    )
    assert result.exit_code == 2
    assert "SQLite, which is for one process" in result.output
    assert "postgresql+psycopg://" in result.output


@pytest.mark.postgres
def test_a_connection_dropped_while_a_worker_opens_the_journal_is_retried(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
):
    """The server ends the worker's connection as it opens the journal (as a database restart,
    or the connection-killing test above, may): the open is retried, not a fatal error."""
    import sqlalchemy as sa

    from tuner import journal, study

    real, opened = journal.PostgresJournalBackend.__init__, []

    def dropped_once(self, engine: sa.Engine) -> None:  # noqa: ANN001
        opened.append(engine)
        if len(opened) == 1:  # the server ends the connection in the middle of a query
            with engine.connect() as conn:
                pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
                threading.Timer(0.5, terminate, [pid]).start()
                conn.execute(sa.text("SELECT pg_sleep(10)"))
        real(self, engine)

    def terminate(pid: int) -> None:
        with sa.create_engine(postgres_url).connect() as admin:
            admin.execute(sa.text(f"SELECT pg_terminate_backend({pid})"))

    monkeypatch.setattr(journal.PostgresJournalBackend, "__init__", dropped_once)
    storage = study.make_storage("journal+" + postgres_url)
    assert len(opened) == 2
    assert storage.get_all_studies() == []


def test_a_dropped_connection_is_told_from_a_refused_one_at_open():
    """psycopg's message for a connection the server dropped in use, which SQLAlchemy did not
    mark as invalidated in a CI run (the worker's open failed for good), is retried at open;
    a refused connection is still a clear error at once."""
    import psycopg

    from tuner.study import _passing_at_open

    def error(message: str) -> sa.exc.OperationalError:
        return sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))

    dropped = error("consuming input failed: server closed the connection unexpectedly")
    assert not dropped.connection_invalidated and _passing_at_open(dropped)
    refused = error('connection failed: connection to server at "127.0.0.1", port 1 failed')
    assert not _passing_at_open(refused)
