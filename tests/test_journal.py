"""Optuna's journal storage (tuner.journal): in a file for several workers on one machine, in a
PostgreSQL table for many machines; read by Optuna's own tools and reached from an RDB study by
`rnn-tuner migrate`. The worker's budget, signal and dead-worker tests run on it in
tests/test_worker.py, the team tests in tests/test_team.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tests.conftest import (
    DEFAULT_JOURNAL,
    ROOT,
    default_storage,
    open_storage,
    tiny_study,
    write_study,
)
from tests.servers import free_port, serve
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(params=["file", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal(request: pytest.FixtureRequest, workdir: Path) -> str:
    if request.param == "file":
        return f"journal:///{workdir}/rnn_tuner.log"
    return "journal+" + request.getfixturevalue("postgres_url")


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result


def trials(storage: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    opened = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened).trials
    finally:
        opened.engine.dispose()


@pytest.mark.slow
def test_local_workers_share_a_journal_with_an_exact_budget(workdir: Path, journal: str):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(study_file), "--storage", journal]
        + ["--workers", "2", "--max-trials", "5"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = trials(journal)
    assert sorted(t.number for t in found) == list(range(5)), proc.stdout
    assert all(t.state.name == "COMPLETE" for t in found)
    assert proc.stdout.count("study 'tiny': ") == 2  # both workers ran and reported
    # the study's budget is spent: another run starts nothing
    again = invoke("run", str(study_file), "--storage", journal, "--max-trials", "5")
    assert "no trials here" in again.output and len(trials(journal)) == 5


def test_a_sqlite_study_migrates_to_a_journal_and_carries_on(workdir: Path, journal: str):
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    old = f"sqlite:///{workdir}/rnn_tuner.db"
    invoke("run", str(study_file), "--storage", old, "--n-trials", "2")
    out = invoke("migrate", "tiny", "--from", old, "--to", journal).output
    assert "copied study 'tiny' (2 trials)" in out
    moved, kept = trials(journal), trials(old)
    assert [t.params for t in moved] == [t.params for t in kept]
    assert [t.values for t in moved] == [t.values for t in kept]
    # the same MLflow parent run, and the study goes on where it was
    invoke("run", str(study_file), "--storage", journal, "--max-trials", "3")
    after = trials(journal)
    assert [t.number for t in after] == [0, 1, 2]
    assert optuna.load_study(study_name="tiny", storage=open_storage(journal)).user_attrs == (
        optuna.load_study(study_name="tiny", storage=old).user_attrs
    )
    again = invoke("migrate", "tiny", "--from", old, "--to", journal, code=2).output
    assert "already holds a study 'tiny'" in again


def test_stock_optuna_cli_reads_a_journal(workdir: Path, journal: str):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 2, "max_epochs": 1})
    )
    invoke("run", str(study_file), "--storage", journal)
    listed = invoke("optuna", "trials", "--storage", journal, "--study-name", "tiny", "-f", "json")
    assert [t["state"] for t in json.loads(listed.output)] == ["COMPLETE", "COMPLETE"]
    if journal.startswith("journal:"):  # a journal file: the stock command as installed
        optuna_cli = Path(sys.executable).with_name("optuna")
        stock = subprocess.run(
            [str(optuna_cli), "trials", "--storage", "rnn_tuner.log", "--study-name", "tiny"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stock.returncode == 0, stock.stderr
        assert stock.stdout.count("COMPLETE") == 2


def test_optuna_dashboard_serves_a_journal_study(workdir: Path, journal: str):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 1, "max_epochs": 1})
    )
    invoke("run", str(study_file), "--storage", journal)
    port = free_port()
    argv = [sys.executable, "-m", "tuner", "dashboard", "--storage", journal, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    env = {"PYTHONPATH": str(ROOT)}
    with (
        serve(argv, url, ready_path="/api/studies", env=env, cwd=workdir, timeout=120),
        urllib.request.urlopen(f"{url}/api/studies", timeout=10) as response,
    ):
        studies = json.load(response)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"]


def test_a_journal_url_that_cannot_work_is_a_clear_error(workdir: Path):
    bad = invoke("status", "--storage", "journal:///nowhere/x.log", code=2).output
    assert "no study journal at" in bad
    mysql = invoke("status", "--storage", "journal+mysql://u:hunter2@h/db", code=2).output
    assert "journal+postgresql+psycopg://" in mysql and "hunter2" not in mysql


@pytest.mark.slow
def test_run_on_the_default_storage_starts_one_worker_per_core_with_an_exact_budget(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: the default is one worker")
    monkeypatch.delenv("RNN_TUNER_WORKERS")  # the user's default, not the tests' one worker
    journal = default_storage(workdir)  # no --storage: the journal file the README names
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(study_file), "--max-trials", "5"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = min(cores, 5)
    assert f"study 'tiny' in {journal}; MLflow" in proc.stderr
    assert f"; {expected} workers" in proc.stderr
    assert len(set(re.findall(r"^\[w(\d+)\] study 'tiny': ", proc.stdout, re.M))) == expected
    assert sorted(t.number for t in trials(journal)) == list(range(5))
    # --workers 1 is one worker, and SQLite (one process) stays at one without being asked
    one = invoke(
        "run", str(study_file), "--storage", f"sqlite:///{workdir}/x.db", "--n-trials", "1"
    )
    assert "workers" not in one.output.split("\n")[0]


def test_the_journal_gives_every_trial_query_the_answer_of_optunas_own_replay(journal: str):
    """`JournalStudyStorage` keeps the finished trials at the front of a study rather than
    walking every trial at every query: two workers' trials in every state, one left running in
    the middle (the front stops there), an enqueued one, a tie for the best, and a worker that
    reads the log afresh, each checked against Optuna's JournalStorage on the same log."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState as S

    from tuner.journal import PostgresJournalBackend
    from tuner.urls import journal_file

    one, two = open_storage(journal), open_storage(journal)
    path = journal_file(journal)
    backend = JournalFileBackend(path) if path else PostgresJournalBackend(one.engine)
    study = optuna.create_study(storage=one, study_name="kept")
    other = optuna.load_study(study_name="kept", storage=two)
    queries = [None, (S.COMPLETE,), (S.COMPLETE, S.PRUNED), (S.RUNNING,), (S.WAITING,)]
    queries += [(S.COMPLETE, S.PRUNED, S.RUNNING), (S.FAIL, S.COMPLETE)]

    def agree(*storages) -> None:
        reference = JournalStorage(backend)
        for storage in storages:
            for states in queries:
                got = storage.get_all_trials(study._study_id, deepcopy=False, states=states)
                want = reference.get_all_trials(study._study_id, states=states)
                assert [t.number for t in got] == [t.number for t in want], states
            best = reference.get_best_trial(study._study_id)
            assert storage.get_best_trial(study._study_id).number == best.number

    for value in (3.0, 1.0, 2.0):
        study.tell(study.ask(), value)
    study.tell(study.ask(), state=S.PRUNED)
    study.tell(study.ask(), state=S.FAIL)
    agree(one, two)
    running = other.ask()  # the other worker's trial, running in the middle of the study
    for value in (5.0, 1.0, 0.5, 0.5):  # 0.5 twice: the first is the best
        study.tell(study.ask(), value)
    study.enqueue_trial({})
    agree(one, two)
    other.tell(running, 0.25)  # the front moves past it, and it is the new best
    study.tell(study.ask(), 7.0)  # the enqueued trial
    agree(one, two, open_storage(journal))
    with pytest.raises(KeyError):  # Optuna's answer for a study that is not there
        one.get_all_trials(study._study_id + 1)
    for storage in (one, two):
        storage.engine.dispose()


def test_an_older_rnn_tuner_db_stays_the_default_with_a_note_until_it_is_migrated(workdir: Path):
    """A directory where an rnn-tuner from before the journal default left rnn_tuner.db: its
    studies are not hidden behind a new, empty journal; the note says how to keep or move them."""
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    old = "sqlite:///rnn_tuner.db"
    invoke("run", str(study_file), "--storage", old, "--n-trials", "1")
    note = "rnn-tuner migrate NAME --from sqlite:///rnn_tuner.db"

    status = invoke("status", "tiny").output
    assert "1 trial(s): 1 complete" in status and note in status
    assert f"--storage {old}" in status and f"RNN_TUNER_STORAGE={old}" in status
    ran = invoke("run", str(study_file), "--n-trials", "1").output  # adds to the old study
    assert note in ran and f"study 'tiny' in sqlite:///{workdir}/rnn_tuner.db" in ran
    assert len(trials(f"sqlite:///{workdir}/rnn_tuner.db")) == 2
    assert not any(workdir.glob(f"{DEFAULT_JOURNAL}*"))

    moved = invoke("migrate", "tiny", "--from", old).output  # --to: the default journal
    assert f"copied study 'tiny' (2 trials) to {default_storage(workdir)}" in moved
    status = invoke("status", "tiny").output  # the journal exists: it is the default now
    assert "2 trial(s): 2 complete" in status and "note:" not in status
    # the stock optuna command through rnn-tuner, given no --storage, reads the same default
    listed = invoke("optuna", "trials", "--study-name", "tiny", "-f", "json").output
    assert [t["state"] for t in json.loads(listed)] == ["COMPLETE", "COMPLETE"]


def test_without_a_study_the_default_storage_is_read_but_never_created(workdir: Path):
    for args in (["status"], ["best", "tiny"], ["optuna", "studies"], ["dashboard"]):
        out = invoke(*args, code=2).output
        assert f"no study journal at {workdir / DEFAULT_JOURNAL}" in out, args
        assert "Traceback" not in out
    assert list(workdir.iterdir()) == []
