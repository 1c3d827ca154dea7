"""Every case of tests/bad_inputs/ against the contract of the README's "exit codes" table.

Each case runs in-process (click's CliRunner) in its own working directory, with the embedded
defaults pointed at one store that already holds a study of the same name: the case must exit
with its code, name its problem, print no traceback and no password, stay short, and leave that
study, the MLflow store and its own directory exactly as they were.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.bad_inputs import Case, base_study, commands, data_files, dump, study_files
from tests.conftest import enter
from tuner.cli import main

CASES: list[Case] = study_files.CASES + data_files.CASES + commands.CASES
MAX_OUTPUT_CHARS, MAX_OUTPUT_LINES = 8000, 70

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_the_corpus_holds_over_a_hundred_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids are unique"
    assert len(ids) >= 100
    assert sum(c.also_run for c in CASES) >= 100  # refused by `validate` and `run` alike


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Databases holding a study named like every case's, with trials (and a deleted MLflow
    experiment `gone`), made by the real `run`."""
    from mlflow import MlflowClient

    store = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    enter(store, mp)
    try:
        (store / "kept.yaml").write_text(dump(base_study()), encoding="utf-8")
        # SQLite, named: every case runs against this store (RNN_TUNER_STORAGE in `_invoke`)
        run = ["run", "kept.yaml", "--storage", "sqlite:///rnn_tuner.db"]
        result = CliRunner().invoke(main, run)
        assert result.exit_code == 0, result.output
        client = MlflowClient(f"sqlite:///{store}/mlflow.db")
        client.delete_experiment(client.create_experiment("gone"))
        shutil.copytree(store, store.parent / "pristine")
        shutil.move(store.parent / "pristine", store / "pristine")
    finally:
        mp.undo()
    return store


def snapshot(store: Path) -> dict[str, list[str]]:
    """Everything in the store: each database's full SQL dump, and the list of files."""
    dumps = {
        db.name: list(sqlite3.connect(f"file:{db}?mode=ro", uri=True).iterdump())
        for db in sorted(store.glob("*.db"))
    }
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if "pristine" not in p.parts)
    return {**dumps, "files": files}


def _materialise(case: Case, directory: Path, store: Path) -> None:
    for name, content in case.files.items():
        content = content() if callable(content) else content
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content.replace("{store}", str(store)), encoding="utf-8")
    (directory / "notes.txt").write_text("not a database\n", encoding="utf-8")


def _invoke(case: Case, args: tuple[str, ...], store: Path):
    env = {
        "RNN_TUNER_STORAGE": f"sqlite:///{store}/rnn_tuner.db",
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
        **{k: v if v is None else v.replace("{store}", str(store)) for k, v in case.env.items()},
    }
    args = tuple(a.replace("{store}", str(store)) for a in args)
    return CliRunner().invoke(main, list(args), env=env, prog_name="rnn-tuner")


def _broken_contract(case: Case, code: int, out: str) -> str | None:
    """What the output breaks of the contract, if anything."""
    if code != case.code:
        return f"exited {code}, not {case.code}"
    if not re.search(case.expect, out, re.IGNORECASE | re.DOTALL):
        return f"does not match {case.expect!r}"
    if "Traceback" in out:
        return "printed a traceback"
    if commands.SECRET in out:
        return "printed the password"
    if len(out) >= MAX_OUTPUT_CHARS or out.count("\n") >= MAX_OUTPUT_LINES:
        return f"printed {len(out)} characters in {out.count(chr(10))} lines"
    return None


@pytest.fixture(scope="module")
def kept(store: Path) -> dict[str, list[str]]:
    snap = snapshot(store)
    assert any('INSERT INTO "trials"' in line for line in snap["rnn_tuner.db"])
    return snap


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_clear_error_and_changes_nothing(
    case: Case, store: Path, kept: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    enter(tmp_path, monkeypatch)
    _materialise(case, tmp_path, store)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    commands_run = [case.args]
    if case.also_run:
        commands_run.append(("run", *case.args[1:]))
    for args in commands_run:
        result = _invoke(case, args, store)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"uncaught {result.exception!r}") from result.exception
        problem = _broken_contract(case, result.exit_code, result.output)
        if problem:
            pytest.fail(
                f"`rnn-tuner {' '.join(args)[:80]}` {problem}; it said:\n{result.output[:3000]}"
            )
    changed = snapshot(store) != kept
    if changed:  # put the store back, so the next cases are judged on their own
        for path in store.iterdir():
            if path.name != "pristine":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        shutil.copytree(store / "pristine", store, dirs_exist_ok=True)
    assert not changed, "the existing study and MLflow store are untouched"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing created"
