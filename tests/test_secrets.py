"""No password of any URL reaches anything rnn-tuner prints or writes: a study whose storage and
tracking URLs both carry a password, given in the study file and as flags, then everything
printed and the whole MLflow store (its database and its artifacts) searched for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import ROOT, tiny_study, write_study
from tuner.cli import main

SECRET = "s3cr3t-Zq81/@x"  # a slash and an @ as real passwords have them
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]


def with_password(url: str) -> str:
    from urllib.parse import quote

    return url.replace("postgres@", f"postgres:{quote(SECRET, safe='')}@", 1)


def database_text(url: str) -> str:
    """Every row of every table, as text."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        rows = [str(row) for table in meta.sorted_tables for row in conn.execute(table.select())]
    engine.dispose()
    return "\n".join(rows)


def files_text(directory: Path, skip: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in directory.rglob("*")
        if p.is_file() and p != skip
    )


def test_no_password_is_printed_logged_or_stored(workdir: Path, postgres_databases):
    storage, tracking = postgres_databases(), postgres_databases()
    secret_storage, secret_tracking = with_password(storage), with_password(tracking)
    study = tiny_study(
        study={"name": "tiny", "storage": secret_storage},
        tracking={"uri": secret_tracking},
        # a diverging first trial: its failure reason is stored and logged too
        search={"lr": {"type": "categorical", "choices": [1e12, 1e-2]}},
        fixed={"batch_size": 32, "patience": None, "optimizer": "sgd", "clip_norm": None},
        enqueue=[{"lr": 1e12}, {"lr": 1e-2}],
        budget={"n_trials": 2, "max_epochs": 1},
    )
    study_file = write_study(workdir / "s.yaml", study)
    assert SECRET.split("/")[0] in study_file.read_text()
    flags = ["--storage", secret_storage, "--tracking-uri", secret_tracking]
    printed = []
    for args in (
        ["validate", str(study_file)],
        ["run", str(study_file)],
        ["run", str(study_file), "--n-trials", "1", *flags],
        ["status", "tiny", "--storage", secret_storage],
        ["best", "tiny", "--storage", secret_storage],
        ["report", "tiny", *flags],
        ["status", "tiny", "--storage", secret_storage.replace("5432", "1")],  # unreachable
        ["run", str(study_file), "--tracking-uri", with_password("http://postgres@127.0.0.1:9")],
    ):
        result = CliRunner().invoke(main, args, prog_name="rnn-tuner")
        printed.append(result.output)
        assert "Traceback" not in result.output, result.output
    assert [t.state.name for t in _trials(storage)][:2] == ["FAIL", "COMPLETE"]
    assert "***" in printed[1]  # the URLs were shown, redacted

    everything = "\n".join(
        [*printed, database_text(storage), database_text(tracking)]
    ) + files_text(workdir, skip=study_file)
    for form in {SECRET, SECRET.replace("/", "%2F").replace("@", "%40"), "s3cr3t-Zq81"}:
        assert form not in everything
    logged_study = next(workdir.rglob("artifacts/s.yaml")).read_text()
    assert "postgres:***@" in logged_study and "name: tiny" in logged_study


def test_worker_processes_print_no_password_and_no_traceback(workdir: Path, postgres_databases):
    """`--workers 2`: each worker is a process of its own, forked from a server that never saw
    the command's settings; what the workers print (here, Optuna's log of a diverging trial)
    is redacted and without a library's traceback as the command's own output is."""
    storage, tracking = postgres_databases(), postgres_databases()
    study = tiny_study(
        study={"name": "tiny"},
        search={"lr": {"type": "categorical", "choices": [1e12, 1e-2]}},
        fixed={"batch_size": 32, "patience": None, "optimizer": "sgd", "clip_norm": None},
        enqueue=[{"lr": 1e12}, {"lr": 1e-2}],
        budget={"n_trials": 2, "max_epochs": 1},
    )
    study_file = write_study(workdir / "s.yaml", study)
    flags = ["--storage", with_password(storage), "--tracking-uri", with_password(tracking)]
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(study_file), "--workers", "2", *flags],
        cwd=workdir, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert sorted(t.state.name for t in _trials(storage)) == ["COMPLETE", "FAIL"]
    assert "[w0]" in printed and "[w1]" in printed and "diverged" in printed.lower(), printed
    assert "Traceback" not in printed, printed
    for form in {SECRET, SECRET.replace("/", "%2F").replace("@", "%40"), "s3cr3t-Zq81"}:
        assert form not in printed


def _trials(storage: str) -> list:
    import optuna

    return optuna.load_study(study_name="tiny", storage=storage).trials
