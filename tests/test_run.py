"""`rnn-tuner run` end to end on the embedded defaults: a real SQLite study, a real MLflow store,
real training on small data. Optuna's record and MLflow's must agree trial for trial."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import (
    DEFAULT_JOURNAL,
    ROOT,
    default_storage,
    default_study,
    tiny_study,
    wait_for_training,
    write_study,
)
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def run_cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def load(workdir: Path, name: str) -> optuna.Study:
    return default_study(name, workdir)


def mlflow_runs(workdir: Path, experiment: str) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("rnn_tuner.role") == "study"]
    children = [r for r in runs if r.data.tags.get("rnn_tuner.role") == "trial"]
    return client, parents, children


def test_a_study_is_recorded_trial_for_trial_in_optuna_and_mlflow(workdir: Path):
    study_file = write_study(workdir / "s.yaml", tiny_study())
    result = run_cli("run", str(study_file))
    assert result.exit_code == 0, result.output

    trials = load(workdir, "tiny").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    client, parents, children = mlflow_runs(workdir, "tiny")
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert load(workdir, "tiny").user_attrs["mlflow_parent_run_id"] == parent.info.run_id

    by_number = {int(r.data.tags["rnn_tuner.trial"]): r for r in children}
    assert sorted(by_number) == [t.number for t in trials]
    for t in trials:
        run = by_number[t.number]
        assert run.info.run_name == f"trial-{t.number}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.state"] == "COMPLETE" and run.info.status == "FINISHED"
        for name, value in t.params.items():  # sampled values under the study file's names
            assert run.data.params[name] == str(value)
        assert run.data.params["batch_size"] == "32"  # fixed values too
        assert run.data.params["max_epochs"] == "2"
        assert run.data.params["task.source"] == "adding"
        history = client.get_metric_history(run.info.run_id, "val_mse")
        assert [m.step for m in history] == [0, 1]  # one point per epoch, step = epoch
        assert min(m.value for m in history) == pytest.approx(t.value)  # best, not last
        for metric in ("train_loss", "grad_norm_mean", "grad_norm_max", "grad_flow", "lr"):
            assert len(client.get_metric_history(run.info.run_id, metric)) == 2, metric
        assert run.data.metrics["epochs"] == 2 and run.data.metrics["n_params"] > 0

    best = min(trials, key=lambda t: t.value)
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    assert {k: parent.data.tags[f"best.{k}"] for k in best.params} == {
        k: str(v) for k, v in best.params.items()
    }


def test_resume_adds_trials_to_the_same_study_and_parent_run(workdir: Path):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 2, "max_epochs": 1})
    )
    assert run_cli("run", str(study_file)).exit_code == 0
    assert run_cli("run", str(study_file), "--n-trials", "1").exit_code == 0

    study = load(workdir, "tiny")
    assert len(study.trials) == 3
    _, parents, children = mlflow_runs(workdir, "tiny")
    assert len(parents) == 1 and len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    # the resumed worker does not replay the creator's seeded draws
    assert study.trials[2].params != study.trials[0].params


def test_a_diverging_trial_fails_with_its_reason_recorded_and_the_study_goes_on(workdir: Path):
    study = tiny_study(
        fixed={"batch_size": 32, "patience": None, "optimizer": "sgd", "clip_norm": None},
        search={"lr": {"type": "categorical", "choices": [1e12, 1e-2]}},
        # first a learning rate no network survives, then one that trains
        enqueue=[{"lr": 1e12}, {"lr": 1e-2}],
        budget={"n_trials": 2, "max_epochs": 2},
    )
    result = run_cli("run", str(write_study(workdir / "s.yaml", study)))
    assert result.exit_code == 0, result.output

    trials = load(workdir, "tiny").trials
    assert trials[0].state.name == "FAIL" and trials[1].state.name != "FAIL"
    reason = trials[0].user_attrs["fail_reason"]
    assert reason.startswith("DivergenceError: training diverged at epoch 0, step")
    _, _, children = mlflow_runs(workdir, "tiny")
    failed = next(r for r in children if r.data.tags["rnn_tuner.trial"] == "0")
    assert failed.info.status == "FAILED" and failed.data.tags["optuna.state"] == "FAIL"
    assert failed.data.tags["fail_reason"] == reason
    assert "trial 0 FAIL" in result.output and "DivergenceError" in result.output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failed_trial_is_said_once_in_our_words(workdir: Path, workers: str):
    """Our line for the trial, not Optuna's two warnings besides (its parameters and error again,
    then "failed with value None"), in one worker or in several (each configures its logging)."""
    study = tiny_study(
        fixed={"batch_size": 32, "patience": None, "optimizer": "sgd", "clip_norm": None},
        search={"lr": {"type": "float", "low": 1e11, "high": 1e12, "log": True}},
        budget={"n_trials": 1, "max_epochs": 1},
    )
    command = [sys.executable, "-m", "tuner", "run", str(write_study(workdir / "s.yaml", study))]
    done = subprocess.run(
        [*command, "--workers", workers],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.count("DivergenceError") == 1 and "trial 0 FAIL - DivergenceError" in out, out
    assert "failed with" not in out, out


def test_optunas_reason_for_a_value_it_refused_still_shows(caplog: pytest.LogCaptureFixture):
    """Not every failed trial is ours to describe: a value Optuna refuses (NaN) raised nothing."""
    from tuner.cli import quiet_libraries

    quiet_libraries()
    study = optuna.create_study()
    with caplog.at_level("WARNING", logger="optuna"):
        study.optimize(lambda trial: float("nan"), n_trials=1)
    assert "because of the following error: The value nan is not acceptable" in caplog.text


def test_pruning_really_prunes(workdir: Path):
    # a threshold no value can stay under: every trial is pruned after its first epoch
    study = tiny_study(
        pruner={"name": "threshold", "options": {"upper": -1.0}},
        budget={"n_trials": 2, "max_epochs": 3},
    )
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0

    trials = load(workdir, "tiny").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [0] for t in trials)
    client, _, children = mlflow_runs(workdir, "tiny")
    for run in children:
        assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
        assert len(client.get_metric_history(run.info.run_id, "val_mse")) == 1


def test_best_round_trips_into_a_study_file(workdir: Path):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 2, "max_epochs": 1})
    )
    assert run_cli("run", str(study_file)).exit_code == 0
    out = run_cli("best", "tiny").output
    best = load(workdir, "tiny").best_trial

    pasted = yaml.safe_load(out)["fixed"]
    assert pasted == best.params
    again = tiny_study(
        name="again",
        fixed={"batch_size": 32, "patience": None, **pasted},
        search={"weight_decay": {"type": "float", "low": 0.0, "high": 0.01}},
        budget={"n_trials": 1, "max_epochs": 1},
    )
    result = run_cli("run", str(write_study(workdir / "again.yaml", again)))
    assert result.exit_code == 0, result.output
    _, _, children = mlflow_runs(workdir, "again")
    assert {k: children[0].data.params[k] for k in pasted} == {k: str(v) for k, v in pasted.items()}


def test_status_lists_states_and_the_best_trial(workdir: Path):
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 2, "max_epochs": 1})
    )
    run_cli("run", str(study_file))
    out = run_cli("status", "tiny").output
    best = load(workdir, "tiny").best_trial
    assert "study 'tiny': 2 trial(s): 2 complete" in out
    assert f"best: trial {best.number} value {best.value:.6g}" in out
    missing = CliRunner().invoke(main, ["status", "nope"])
    assert (
        missing.exit_code == 2 and "no study 'nope'" in missing.output and "tiny" in missing.output
    )


def test_multi_objective_study_records_both_values(workdir: Path):
    study = tiny_study(
        objective=[{"metric": "val_mse"}, {"metric": "n_params"}],
        sampler={"name": "nsgaii"},
        pruner=None,
    )
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0
    trials = load(workdir, "tiny").trials
    _, parents, children = mlflow_runs(workdir, "tiny")
    assert all(len(t.values) == 2 for t in trials)
    for run in children:
        t = trials[int(run.data.tags["rnn_tuner.trial"])]
        assert run.data.metrics["objective_n_params"] == t.values[1] == run.data.metrics["n_params"]
    assert "best_value_0" in parents[0].data.metrics


def test_enqueued_configurations_run_first(workdir: Path):
    study = tiny_study(
        enqueue=[{"lr": 0.02, "hidden_size": 5, "cell": "gru"}],
        budget={"n_trials": 2, "max_epochs": 1},
    )
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0
    assert load(workdir, "tiny").trials[0].params == {"lr": 0.02, "hidden_size": 5, "cell": "gru"}


def test_ctrl_c_fails_the_running_trial_everywhere_and_the_study_resumes(workdir: Path):
    study = tiny_study(
        task={"source": "adding", "seq_len": 40, "n_train": 4000, "n_val": 64, "n_test": 64},
        budget={"n_trials": 5, "max_epochs": 50},
    )
    study_file = write_study(workdir / "s.yaml", study)
    proc = start_run(workdir, study_file)
    wait_for_training(default_storage(workdir), "tiny", proc, proc.stdout.read)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out

    trials = load(workdir, "tiny").trials
    assert [t.state.name for t in trials] == ["FAIL"]
    assert trials[0].user_attrs["fail_reason"] == "TrialInterrupted: interrupted by SIGINT"
    _, _, children = mlflow_runs(workdir, "tiny")
    assert children[0].info.status == "FAILED"
    assert children[0].data.tags["fail_reason"] == "TrialInterrupted: interrupted by SIGINT"

    resumed = tiny_study(budget={"n_trials": 1, "max_epochs": 1})
    assert run_cli("run", str(write_study(workdir / "s.yaml", resumed))).exit_code == 0
    assert [t.state.name for t in load(workdir, "tiny").trials] == ["FAIL", "COMPLETE"]


def start_run(
    workdir: Path, study_file: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`rnn-tuner run` as its own process, to be signalled or to outlive a server."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(study_file), *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_no_password_reaches_mlflow(workdir: Path, postgres_url: str):
    with_password = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@", 1)
    assert "s3cr3t-pw" in with_password  # trust authentication accepts any password
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": 1, "max_epochs": 1})
    )
    result = run_cli("run", str(study_file), "--storage", with_password)
    assert result.exit_code == 0, result.output
    assert "s3cr3t-pw" not in result.output
    dump = "\n".join(sqlite3.connect(workdir / "mlflow.db").iterdump())
    assert "postgres:***@" in dump  # the storage is recorded, redacted
    assert "s3cr3t-pw" not in dump


def test_an_unreachable_tracking_server_is_a_clear_error_before_any_trial(workdir: Path):
    study_file = write_study(workdir / "s.yaml", tiny_study())
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["run", str(study_file), "--tracking-uri", "http://127.0.0.1:9"]
    )
    assert time.monotonic() - started < 30
    assert result.exit_code == 1
    assert "cannot use the MLflow tracking store at http://127.0.0.1:9" in result.output
    assert "Start the server or fix MLFLOW_TRACKING_URI" in result.output
    assert not any(workdir.glob(f"{DEFAULT_JOURNAL}*"))  # nothing half-started


@pytest.mark.slow
def test_a_tracking_server_that_drops_out_loses_nothing_on_the_optuna_side(workdir: Path):
    from tests.servers import mlflow_server

    # trials of a few seconds each: the server must go while the study still has work to do
    # (1000 sequences trained so fast that all three trials ended before the server was stopped)
    study = tiny_study(
        task={"source": "adding", "seq_len": 20, "n_train": 6000, "n_val": 64, "n_test": 64},
        budget={"n_trials": 3, "max_epochs": 2},
    )
    study_file = write_study(workdir / "s.yaml", study)
    backend = f"sqlite:///{workdir}/server.db"
    with mlflow_server(backend, workdir / "artifacts") as server:
        # each call to the gone server fails at once: its retries' waits (3 s a call by
        # tuner.cli.mlflow_defaults) were two thirds of this test's time, and are not its subject
        no_retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        proc = start_run(workdir, study_file, "--tracking-uri", server, env=no_retries)
        wait_for_training(default_storage(workdir), "tiny", proc, proc.stdout.read)
    # the server is gone for the rest of the study
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert [t.state.name for t in load(workdir, "tiny").trials] == ["COMPLETE"] * 3
    assert "MLflow call" in out and "the Optuna study keeps the trial" in out
