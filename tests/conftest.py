"""Shared fixtures: study files shrunk for tests, in a temporary working directory."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"

# Torch in the test processes as `rnn-tuner run` has it (tuner.cli sets it before torch starts):
# idle OpenMP threads sleep. Under `pytest -n auto` the tests that train in-process share the
# cores with the other workers, where spinning threads wait on each other (test_train's LSTM on
# the adding problem, beside two busy processes: 33 s spinning, 21 s sleeping). The tests of the
# policy itself start their commands without it (tests/test_threads.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# No end-of-study plots (`run --no-report`) unless a test asks for them (tests/test_results.py,
# tests/test_browser.py): about 4 s of matplotlib for each 3-trial study a test runs to its
# end, for figures no other test looks at. A third of the suite's CPU: 15:53 -> 11:01 on 2 cores.
os.environ.setdefault("RNN_TUNER_REPORT", "0")


# What `rnn-tuner run` makes in its working directory when given no storage (README, "Where
# things are kept"): a journal file, its budget and heartbeats in a side file beside it.
DEFAULT_JOURNAL = "rnn_tuner.log"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` tests first (otherwise in file order): README's `pytest -n auto` hands tests
    out in order, so a minutes-long test never starts last while the other workers sit idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def default_storage(directory: Path | None = None) -> str:
    """The URL of the study storage `run` uses in `directory` (default: here) given none."""
    return f"journal:///{(directory or Path.cwd()).resolve() / DEFAULT_JOURNAL}"


def default_study(name: str, directory: Path | None = None):  # noqa: ANN201 - optuna.Study
    """Study `name` in the default storage of `directory` (default: here)."""
    import optuna

    from tuner.study import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(default_storage(directory)))


def enter(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in `directory` on the embedded defaults (rnn_tuner.log, mlflow.db land there), one
    worker per command unless a test asks for more (the default is one per core on a storage
    several processes share: tests/test_journal.py)."""
    monkeypatch.chdir(directory)
    for var in ("RNN_TUNER_STORAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RNN_TUNER_WORKERS", "1")
    return directory


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory on the embedded defaults."""
    return enter(tmp_path, monkeypatch)


def tiny_study(name: str = "tiny", **overrides) -> dict:
    """A study that trains in seconds: short adding problem, tiny networks, few epochs."""
    study = {
        "study": {"name": name},
        "task": {"source": "adding", "seq_len": 10, "n_train": 128, "n_val": 64, "n_test": 64},
        "fixed": {"batch_size": 32, "patience": None},
        "search": {
            "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "hidden_size": {"type": "int", "low": 4, "high": 16},
            "cell": {"type": "categorical", "choices": ["rnn", "lstm", "gru"]},
        },
        "objective": {"metric": "val_mse"},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 3, "max_epochs": 2},
    }
    study.update(overrides)  # whole blocks: a test names every key of a block it replaces
    return {k: v for k, v in study.items() if v is not None}


def write_study(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def postgres_base_url() -> str:
    """The test server's URL, as a superuser, on its maintenance database."""
    return os.environ.get(
        "RNN_TUNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )


def postgres_admin():  # noqa: ANN201 - sqlalchemy.Engine, imported lazily
    """An AUTOCOMMIT engine on the test server as a superuser; skips the test without a server
    unless RNN_TUNER_REQUIRE_POSTGRES is set (CI), where a missing server fails the test."""
    import sqlalchemy as sa

    base = postgres_base_url()
    admin = sa.create_engine(
        base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect():
            pass
    except Exception as e:  # noqa: BLE001
        if os.environ.get("RNN_TUNER_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here but unreachable at {base}: {e}")
        pytest.skip(f"no PostgreSQL at {base} (set RNN_TUNER_TEST_POSTGRES_URL): {e}")
    return admin


@pytest.fixture
def postgres_databases():
    """A factory of fresh PostgreSQL databases, all dropped after the test."""
    import uuid

    import sqlalchemy as sa

    admin = postgres_admin()
    base = admin.url.render_as_string(hide_password=False)
    names: list[str] = []

    def create() -> str:
        name = f"rnn_tuner_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return base.rsplit("/", 1)[0] + f"/{name}"

    yield create
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_databases) -> str:
    """One fresh PostgreSQL database for the test."""
    return postgres_databases()


def wait_for_training(
    storage: str,
    study: str,
    proc: subprocess.Popen,
    output: Callable[[], str] = lambda: "",
    timeout: float = 120,
) -> None:
    """Until a trial of `study` is in training: RUNNING, its MLflow run open (the trial's
    `mlflow_run_id` attribute, set right before training) and its first heartbeat written (a
    worker killed before that would leave a trial no one can declare dead). Fails at once if
    `proc` exits meanwhile. Plain SQL: opening an Optuna storage would create the tables that
    the worker is creating at the same moment."""
    import sqlalchemy as sa

    if storage.startswith("journal"):
        return _wait_for_journal_training(storage, study, proc, output, timeout)
    query = sa.text(
        "SELECT count(*) FROM trials"
        " JOIN studies ON studies.study_id = trials.study_id"
        " JOIN trial_user_attributes a ON a.trial_id = trials.trial_id"
        " JOIN trial_heartbeats h ON h.trial_id = trials.trial_id"
        " WHERE studies.study_name = :name AND trials.state = 'RUNNING'"
        " AND a.key = 'mlflow_run_id'"
    )
    engine = sa.create_engine(storage)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, output()
            try:
                with engine.connect() as conn:
                    if conn.execute(query, {"name": study}).scalar():
                        return
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no tables yet
                pass
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise AssertionError(f"no trial of {study!r} started training\n" + output())


def open_storage(url: str):  # noqa: ANN201 - an Optuna storage, imported lazily
    """The study storage behind `url`, as rnn-tuner opens it (RDB or journal)."""
    from tuner.study import make_storage

    return make_storage(url)


def _wait_for_journal_training(
    storage: str, study: str, proc: subprocess.Popen, output: Callable[[], str], timeout: float
) -> None:
    """`wait_for_training` on a journal storage: its trials through Optuna, its heartbeats in
    their SQL table."""
    import optuna
    import sqlalchemy as sa

    beats = sa.text("SELECT count(*) FROM rnn_tuner_journal_heartbeat WHERE trial_id = :t")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, output()
        opened = open_storage(storage)
        try:
            running = optuna.load_study(study_name=study, storage=opened).get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            )
            with opened.engine.connect() as conn:
                if any(
                    "mlflow_run_id" in t.user_attrs
                    and conn.execute(beats, {"t": t._trial_id}).scalar()
                    for t in running
                ):
                    return
        except (KeyError, sa.exc.OperationalError, sa.exc.ProgrammingError):  # not there yet
            pass
        finally:
            opened.engine.dispose()
        time.sleep(0.3)
    raise AssertionError(f"no trial of {study!r} started training\n" + output())
