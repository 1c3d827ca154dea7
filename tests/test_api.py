"""The Python API as a notebook uses it: docs/python.md's example run as it stands, in a fresh
interpreter; a run from a thread that is not the main one; Ctrl-C as a KeyboardInterrupt."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT, default_study, tiny_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def doc_example() -> str:
    """The first Python block under "## Example" in docs/python.md."""
    text = (ROOT / "docs" / "python.md").read_text(encoding="utf-8")
    section = text.split("## Example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def python(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter, importing this checkout as an installed package would."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RNN_TUNER_STORAGE", "MLFLOW_TRACKING_URI")
    }
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def study_at(directory: Path, name: str) -> optuna.Study:
    return default_study(name, directory)


@pytest.mark.slow
def test_the_documented_example_runs_in_a_fresh_interpreter(workdir: Path):
    done = python(doc_example(), workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    study = study_at(workdir, "notebook")
    best = study.best_trial
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert f"best {best.number} {best.value}" in done.stdout
    # the table: a row per trial with its metric, parameters and best epoch
    rows = [
        line.split()
        for line in done.stdout.splitlines()
        if re.match(r"^\d+\s+\d+\s+COMPLETE", line)
    ]
    assert [int(r[1]) for r in rows] == [0, 1, 2]
    for row, trial in zip(rows, study.trials, strict=True):
        assert float(row[3]) == pytest.approx(trial.value, rel=1e-4)
        assert row[4] == trial.params["cell"] and int(row[5]) == trial.params["hidden_size"]
        assert int(row[7]) == trial.user_attrs["best_epoch"]
    assert "torch.Size" not in done.stdout and re.search(r"tensor\(\[\[.*\]\]\)", done.stdout, re.S)


@pytest.mark.slow
def test_a_run_from_another_thread_installs_no_signal_handler(workdir: Path):
    code = textwrap.dedent(
        f"""
        import signal, threading
        import tuner

        before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        found = {{}}
        def work():
            found["study"] = tuner.run({tiny_study(budget={"n_trials": 2, "max_epochs": 1})!r})
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        print("handlers unchanged", before == after)
        print("trials", [t.state.name for t in found["study"].trials])
        print("table rows", len(tuner.results("tiny")))
        """
    )
    done = python(code, workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "handlers unchanged True" in done.stdout
    assert "trials ['COMPLETE', 'COMPLETE']" in done.stdout and "table rows 2" in done.stdout


@pytest.mark.slow
def test_ctrl_c_records_the_running_trial_as_failed_and_raises_keyboard_interrupt(workdir: Path):
    long_trials = tiny_study(budget={"n_trials": 3, "max_epochs": 500})
    code = textwrap.dedent(
        f"""
        import signal
        import tuner

        try:
            tuner.run({long_trials!r})
        except KeyboardInterrupt:
            print("KeyboardInterrupt raised", flush=True)
        print("SIGINT handler is Python's", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("RNN_TUNER_STORAGE", "MLFLOW_TRACKING_URI")
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = wait_for_training(workdir)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "KeyboardInterrupt raised" in out and "SIGINT handler is Python's True" in out
    [trial] = study_at(workdir, "tiny").trials  # no further trial started
    assert trial.state.name == "FAIL"
    # in training (Lightning's fit) or just around it: the trial fails either way
    assert "KeyboardInterrupt" in trial.user_attrs["fail_reason"]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    assert (
        client.get_run(study_at(workdir, "tiny").user_attrs["mlflow_parent_run_id"]).info.status
        == "FINISHED"
    )


def wait_for_training(directory: Path, timeout: float = 180) -> str:
    """The running trial's MLflow run id, a few seconds after its run opened (in training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            trials = study_at(directory, "tiny").trials
        except Exception:  # noqa: BLE001 - the study does not exist yet
            continue
        run_id = trials[0].user_attrs.get("mlflow_run_id") if trials else None
        if run_id:
            time.sleep(3)  # 500 epochs of a tiny network: well inside them
            return run_id
    raise AssertionError("the trial did not start in time")


def test_a_stopping_rule_ends_tuner_run_and_names_itself_on_the_study(workdir: Path):
    import tuner

    # any finished trial reaches a val_mse of 10: the rule holds after the first
    easy = tiny_study(budget={"n_trials": 5, "max_epochs": 1, "target": 10.0})
    study = tuner.run(easy, progress=False)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert study.user_attrs["stopped"]["rule"] == "budget.target"
    assert study_at(workdir, "tiny").user_attrs["stopped"]["rule"] == "budget.target"


def test_a_stop_between_the_run_s_creation_and_training_closes_the_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    """A stop that lands while the trial records its MLflow run id (a Ray actor's stop arrives as
    a signal raising wherever the worker is): the run is closed as FAILED, none stays RUNNING."""
    import tuner

    record = optuna.Trial.set_user_attr

    def stopped_there(trial: optuna.Trial, key: str, value: object) -> None:
        if key == "mlflow_run_id":
            raise KeyboardInterrupt  # what the SIGINT handler raises at that line
        record(trial, key, value)

    monkeypatch.setattr(optuna.Trial, "set_user_attr", stopped_there)
    with pytest.raises(KeyboardInterrupt):
        tuner.run(tiny_study(budget={"n_trials": 2, "max_epochs": 1}), progress=False)
    [trial] = study_at(workdir, "tiny").trials
    assert trial.state.name == "FAIL"
    assert "KeyboardInterrupt" in trial.user_attrs["fail_reason"]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("rnn_tuner.role") == "trial"]
    assert [(r.info.status, r.data.tags["optuna.state"]) for r in trial_runs] == [
        ("FAILED", "FAIL")
    ]
