"""Seeing the results: the plots a study leaves in MLflow, and the best model retrained, tested
once and registered. Real studies on tiny data, driven through the `rnn-tuner` command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient

from models import AddingData, SequenceModule, evaluate, load_task
from tests.conftest import ROOT, default_study, enter, tiny_study, write_study
from tuner.cli import REPORT_ENV, main
from tuner.figures import TrialRecord, curves_figure, drawing, study_figures
from tuner.tracking import LIVE_INTERVAL_S, Tracker

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

STUDY_PLOTS = {"history", "importances", "parallel", "slice", "curves", "cells"}
# Pruning after each epoch from the second trial on: some trials end early, others complete.
PRUNED_SOMETIMES = {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}}


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def studied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small real study (4 trials, cells searched, some pruned) in its own directory."""
    directory = tmp_path_factory.mktemp("studied")
    with pytest.MonkeyPatch.context() as mp:
        enter(directory, mp)
        mp.delenv(REPORT_ENV)  # run's default: the plots at the study's end
        study = tiny_study(pruner=PRUNED_SOMETIMES, budget={"n_trials": 4, "max_epochs": 3})
        cli("run", str(write_study(directory / "s.yaml", study)))
    return directory


@pytest.fixture
def in_studied(studied: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter(studied, monkeypatch)


def parent_and_trials(directory: Path, name: str = "tiny") -> tuple[MlflowClient, str, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{directory}/mlflow.db")
    study = default_study(name, directory)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    experiment = client.get_run(parent_id).info.experiment_id
    trials = client.search_runs([experiment], "tags.`rnn_tuner.role` = 'trial'", max_results=1000)
    return client, parent_id, trials


def plot_names(client: MlflowClient, parent_id: str) -> set[str]:
    return {Path(a.path).stem for a in client.list_artifacts(parent_id, "plots")}


# ---------------------------------------------------------------- plots


def test_a_run_leaves_the_study_plots_in_its_parent_and_curves_in_each_trial(in_studied: Path):
    client, parent_id, trials = parent_and_trials(in_studied)
    assert STUDY_PLOTS | {"interactive"} <= plot_names(client, parent_id)
    assert "pareto" not in plot_names(client, parent_id)  # one objective
    png = Path(client.download_artifacts(parent_id, "plots/curves.png", str(in_studied / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000

    states = {t.data.tags["optuna.state"] for t in trials}
    assert len(trials) == 4 and "PRUNED" in states and "COMPLETE" in states
    for run in trials:
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["curves.png"]
        assert run.data.tags["rnn_tuner.curves"] == "curves.png"
        # the gradient norm reaching each of the 10 time steps, from the trial's last epoch
        profile = client.get_metric_history(run.info.run_id, "grad_norm_by_step")
        assert sorted(m.step for m in profile) == list(range(10))
        assert all(m.value > 0 for m in profile)


def test_no_report_closes_the_study_without_plots_which_report_draws_later(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(REPORT_ENV)
    study = tiny_study(budget={"n_trials": 2, "max_epochs": 1})
    cli("run", str(write_study(workdir / "s.yaml", study)), "--no-report")
    client, parent_id, trials = parent_and_trials(workdir)
    assert client.get_run(parent_id).info.status == "FINISHED" and len(trials) == 2
    assert plot_names(client, parent_id) == set()
    assert not any(client.list_artifacts(r.info.run_id) for r in trials)
    cli("report", "tiny")
    assert plot_names(client, parent_id) >= STUDY_PLOTS


def test_report_again_adds_no_trial_plot_twice(in_studied: Path):
    out = cli("report", "tiny").output
    assert "0 trial plot(s) added" in out
    assert "plots/importances.png" in out


def test_report_on_a_study_without_complete_trials_draws_curves_and_notes_the_rest(
    workdir: Path,
):
    study = tiny_study(  # a threshold no value stays under: pruned after the first epoch
        pruner={"name": "threshold", "options": {"upper": -1.0}},
        budget={"n_trials": 2, "max_epochs": 2},
    )
    cli("run", str(write_study(workdir / "s.yaml", study)), "--report")
    client, parent_id, trials = parent_and_trials(workdir)
    assert plot_names(client, parent_id) == {"curves", "notes"}
    notes = Path(client.download_artifacts(parent_id, "plots/notes.txt", str(workdir / "dl")))
    assert "no complete trial yet" in notes.read_text()
    assert all(client.list_artifacts(r.info.run_id) for r in trials)  # pruned trials: curves too

    failed = CliRunner().invoke(main, ["retrain", "tiny"])
    assert failed.exit_code == 2 and "has no complete trial yet" in failed.output


def test_a_multi_objective_study_gets_a_pareto_front(workdir: Path):
    study = tiny_study(
        objective=[{"metric": "val_mse"}, {"metric": "n_params"}],
        sampler={"name": "nsgaii"},
        budget={"n_trials": 3, "max_epochs": 1},
    )
    cli("run", str(write_study(workdir / "s.yaml", study)), "--report")
    client, parent_id, _ = parent_and_trials(workdir)
    assert {"pareto", "history", "importances", "parallel", "slice"} <= plot_names(
        client, parent_id
    )


def test_importances_need_two_complete_trials_and_say_so():
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.01},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)},
            value=0.5,
        )
    )
    figures, notes = study_figures(study, ["val_mse"], [])
    assert set(figures) == {"history"}
    assert "importances: need 2 complete trials, the study has 1" in notes
    assert "curves: no finished trial yet" in notes


def test_a_parameter_with_one_value_draws_without_a_warning():
    """A searched parameter every trial took at the same value (a narrow range, a study's first
    trials) made matplotlib warn about a singular axis on the user's terminal at report time."""
    study = optuna.create_study()
    distributions = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
        "hidden_size": optuna.distributions.IntDistribution(16, 64),
    }
    for lr, value in [(0.01, 0.5), (0.02, 0.4), (0.03, 0.45)]:
        params = {"lr": lr, "hidden_size": 32}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning the drawing lets through is caught
        with drawing():
            figures, _ = study_figures(study, ["val_mse"], [])
    assert {"parallel", "slice"} <= set(figures)
    assert [str(w.message) for w in caught] == []


def test_learning_curves_mark_each_pruned_trial_where_it_stopped():
    records = [
        TrialRecord(0, "COMPLETE", "a", [(0, 1.0), (1, 0.5), (2, 0.4)], True),
        TrialRecord(1, "PRUNED", "b", [(0, 1.2)], True),
        TrialRecord(2, "PRUNED", "c", [(0, 0.9), (1, 0.8)], True),
    ]
    fig = curves_figure(records, "val_mse", optuna.study.StudyDirection.MINIMIZE)
    ax = fig.axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert sorted(tuple(line.get_xydata()[0]) for line in crosses) == [(0, 1.2), (1, 0.8)]


def test_a_long_gradient_profile_fits_the_trial_batch(in_studied: Path):
    tracker = Tracker(f"sqlite:///{in_studied}/mlflow.db", "profiles")
    run = tracker.start_trial(tracker.create_parent("p", {}), 0, {}, {})
    profile = [1.0 + t for t in range(1000)]
    tracker.finish_trial(run, "COMPLETE", [], {}, profiles={"grad_norm_by_step": profile})
    tracker.flush()  # the worker waits for its queued writes before it ends
    steps = sorted(m.step for m in tracker.client.get_metric_history(run.id, "grad_norm_by_step"))
    assert len(steps) <= 256 and steps[0] == 0 and steps[-1] == 999
    assert all(b - a <= 4 for a, b in zip(steps, steps[1:], strict=False))  # evenly spread


def test_a_trial_starts_without_waiting_for_its_run_which_a_busy_store_makes_later(
    in_studied: Path,
):
    """The run is made by the sender: the trial goes on while the store is busy, and a store that
    refuses it at the start gets it made at the trial's end, with its epochs."""
    tracker = Tracker(f"sqlite:///{in_studied}/mlflow.db", "deferred")
    parent = tracker.create_parent("p", {})
    held = threading.Event()
    tracker.sender.submit(held.wait)
    run = tracker.start_trial(parent, 0, {"lr": 0.1}, {})
    assert run.id is None and not run.made.is_set()
    held.set()
    assert run.wait(timeout=30) is not None
    assert tracker.client.get_run(run.id).data.params == {"lr": "0.1"}

    create_run = tracker.client.create_run
    tracker.client.create_run = lambda *a, **k: (_ for _ in ()).throw(OSError("store away"))
    refused = tracker.start_trial(parent, 1, {"lr": 0.2}, {})
    assert refused.wait(timeout=30) is None
    tracker.client.create_run = create_run
    row = {"epoch": 0, "val_loss": 0.5, "time_ms": 1000.0}
    tracker.log_epoch(refused, row)
    tracker.finish_trial(refused, "COMPLETE", [row], {"epochs": 1})
    tracker.flush()
    assert refused.id is not None and tracker.trial_run(parent, 1) == refused.id
    assert tracker.metric_history(refused.id, "val_loss") == [(0, 0.5)]


SENDER_PROCESS = """
import json, sys
from tuner.tracking import Tracker

tracker = Tracker(f"sqlite:///{sys.argv[1]}/mlflow.db", "forked")
parent = tracker.create_parent("p", {})
create_run, refused = tracker.client.create_run, []

def create_once(*args, **kwargs):  # the store refuses the second trial's run at its start
    if kwargs["run_name"] == "trial-1" and not refused:
        refused.append(1)
        raise OSError("store away")
    return create_run(*args, **kwargs)

tracker.client.create_run = create_once  # the sender process inherits it
forked = tracker.send_from_process()
rows = [{"epoch": e, "val_loss": 1.0 / (e + 1), "time_ms": 1000.0 + e} for e in range(3)]
runs = []
for number in (0, 1):
    run = tracker.start_trial(parent, number, {"lr": 0.1}, {})
    made = run.wait(timeout=60)
    for row in rows:
        tracker.log_epoch(run, row)
    tracker.finish_trial(run, "COMPLETE", rows, {"epochs": 3})
    runs.append((run, made))
tracker.update_best(parent, __import__("optuna").trial.create_trial(value=0.25, params={}), 2)
tracker.close()
print(json.dumps({
    "forked": forked,
    "made": [made for _, made in runs],
    "ids": [run.id for run, _ in runs],
    "curves": [tracker.metric_history(run.id, "val_loss") for run, _ in runs],
    "status": [tracker.client.get_run(run.id).info.status for run, _ in runs],
    "params": [tracker.client.get_run(run.id).data.params for run, _ in runs],
    "best": tracker.client.get_run(parent).data.metrics,
}))
"""


def test_a_worker_s_sender_process_records_trials_as_the_thread_did(tmp_path: Path):
    """The writes a worker sends to its sender process: each run made and its id told back (a
    run the store refused at the start is made at the trial's end, and the worker learns it),
    every epoch, the final figures, the status, the parent's best."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SENDER_PROCESS, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["forked"] is True
    assert got["made"][0] == got["ids"][0] and got["made"][1] is None  # refused at the start...
    assert None not in got["ids"]  # ... made at the trial's end, and the worker knows its id
    curve = [[e, 1.0 / (e + 1)] for e in range(3)]
    assert got["curves"] == [curve, curve]
    assert got["status"] == ["FINISHED", "FINISHED"]
    assert got["params"] == [{"lr": "0.1"}, {"lr": "0.1"}]
    assert got["best"] == {"best_value": 0.25}
    assert "store away" in done.stderr  # the refusal is a warning, from the sender process


def test_where_other_threads_run_the_writes_stay_in_a_thread_and_are_the_same(
    in_studied: Path,
):
    """A worker forks its MLflow sender (tests/test_live.py sees the process); where another
    thread runs (a notebook's kernel, a Ray actor) forking is unsafe, so the tracker keeps its
    thread, and a trial's run is recorded the same."""
    tracker = Tracker(f"sqlite:///{in_studied}/mlflow.db", "threads")
    running = threading.Event()
    other = threading.Thread(target=running.wait)
    other.start()
    try:
        assert tracker.send_from_process() is False
    finally:
        running.set()
        other.join()
    run = tracker.start_trial(tracker.create_parent("p", {}), 0, {"lr": 0.1}, {})
    tracker.log_epoch(run, {"epoch": 0, "val_loss": 0.5, "time_ms": 1000.0})
    tracker.finish_trial(run, "COMPLETE", [{"epoch": 0, "val_loss": 0.5, "time_ms": 1000.0}], {})
    tracker.close()
    assert tracker.metric_history(run.id, "val_loss") == [(0, 0.5)]
    assert tracker.client.get_run(run.id).info.status == "FINISHED"


def test_epochs_still_queued_at_a_trial_s_end_go_in_its_final_batch(in_studied: Path):
    """Epochs the sender has not written when the trial ends (a slow store) are written once,
    with the final figures, in one call: not a call each before them."""
    tracker = Tracker(f"sqlite:///{in_studied}/mlflow.db", "queued")
    run = tracker.start_trial(tracker.create_parent("p", {}), 0, {"lr": 0.1}, {})
    tracker.flush()
    held = threading.Event()
    tracker.sender.submit(held.wait)  # the store is busy: what follows waits in the queue
    rows = [{"epoch": e, "val_loss": 1.0 / (e + 1), "time_ms": 1000.0 + e} for e in range(3)]
    for row in rows:
        tracker.log_epoch(run, row)
    tracker.finish_trial(run, "COMPLETE", rows, {"epochs": 3})
    calls = []
    log_batch = tracker.client.log_batch
    tracker.client.log_batch = lambda *a, **k: calls.append(a) or log_batch(*a, **k)
    held.set()
    tracker.flush()
    assert len(calls) == 1
    assert tracker.metric_history(run.id, "val_loss") == [(e, 1.0 / (e + 1)) for e in range(3)]
    finished = tracker.client.get_run(run.id)
    assert finished.info.status == "FINISHED" and finished.data.params == {"lr": "0.1"}


def test_short_epochs_share_a_write_and_none_waits_longer_than_the_interval(in_studied: Path):
    """A run's curve is written at most once per LIVE_INTERVAL_S: the first epoch at once, the
    short epochs after it together when the interval is up (no flush needed), and a flush
    writes whatever still waits."""
    tracker = Tracker(f"sqlite:///{in_studied}/mlflow.db", "coalesced")
    run = tracker.start_trial(tracker.create_parent("p", {}), 0, {"lr": 0.1}, {})
    tracker.flush()
    writes: list[list[int]] = []
    log_batch = tracker.client.log_batch

    def counted(run_id, metrics=(), **kwargs):  # noqa: ANN001, ANN202
        writes.append(sorted({m.step for m in metrics if m.key == "val_loss"}))
        return log_batch(run_id, metrics=metrics, **kwargs)

    tracker.client.log_batch = counted
    rows = [{"epoch": e, "val_loss": 1.0 / (e + 1), "time_ms": 1000.0 + e} for e in range(12)]
    started = time.monotonic()
    for row in rows[:10]:
        tracker.log_epoch(run, row)
    while len(tracker.metric_history(run.id, "val_loss")) < 10:
        assert time.monotonic() - started < LIVE_INTERVAL_S + 30, writes
        time.sleep(0.02)
    assert writes == [[0], list(range(1, 10))]
    assert time.monotonic() - started >= LIVE_INTERVAL_S  # the nine waited for the interval
    for row in rows[10:]:
        tracker.log_epoch(run, row)
    tracker.flush()
    assert writes[-1] == [10, 11]
    curve = tracker.metric_history(run.id, "val_loss")
    assert curve == [(e, 1.0 / (e + 1)) for e in range(12)]
    tracker.close()


# ---------------------------------------------------------------- the best model


def test_retrain_registers_a_version_that_loads_and_predicts_the_same(
    in_studied: Path, monkeypatch: pytest.MonkeyPatch
):
    client, parent_id, _ = parent_and_trials(in_studied)
    best = default_study("tiny").best_trial
    out = cli("retrain", "tiny").output  # the study file: the copy logged in the parent run
    assert f"retrained trial {best.number} of study 'tiny'" in out
    assert f"validation val_mse: {best.value:.5g} in the study, {best.value:.5g} retrained" in out  # fmt: skip

    version = client.get_model_version("rnn-tuner-tiny", "1")
    run = client.get_run(version.run_id)
    assert run.info.run_name == "retrain" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.tags["rnn_tuner.retrain_of"] == parent_id
    test_mse = run.data.metrics["test_mse"]
    assert f"test       test_mse: {test_mse:.5g}" in out
    assert run.data.metrics["study_val_mse"] == pytest.approx(best.value)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_studied}/mlflow.db")  # for models:/
    net = mlflow.pytorch.load_model("models:/rnn-tuner-tiny/1")
    checkpoint = client.download_artifacts(run.info.run_id, "checkpoint/model.ckpt", "ckpt")
    module = SequenceModule.load_from_checkpoint(checkpoint, map_location="cpu")
    data = load_task(AddingData(seq_len=10, n_train=128, n_val=64, n_test=64))
    with torch.no_grad():
        assert torch.equal(net(data.test.inputs), module.net.eval()(data.test.inputs))
    module.net.load_state_dict(net.state_dict())  # the registered weights give the logged score
    assert evaluate(module, data, "test")["test_mse"] == pytest.approx(test_mse, rel=1e-6)
    pyfunc = mlflow.pyfunc.load_model("models:/rnn-tuner-tiny/1")  # served with its signature
    predicted = pyfunc.predict(data.test.inputs[:5].numpy())
    np.testing.assert_allclose(predicted, net(data.test.inputs[:5]).detach().numpy(), rtol=1e-6)

    again = cli("retrain", "tiny", "--study-file", "s.yaml").output
    assert "registered model 'rnn-tuner-tiny' version 2" in again
    second = client.get_run(client.get_model_version("rnn-tuner-tiny", "2").run_id)
    assert second.data.metrics["test_mse"] == test_mse  # seeded: the same model again
    assert not math.isnan(test_mse)
