"""Running workers on a cluster: the worker index a cluster hands each worker, the Kubernetes
manifests (validated against the Kubernetes schemas, offline) and the Slurm array script
(shellcheck, and a real two-task array on a one-node Slurm cluster where Slurm is installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, tiny_study, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

INDEX_ENVS = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")


@pytest.fixture(autouse=True)
def no_cluster_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests here run inside a Slurm job or a pod too: start from no index."""
    for var in INDEX_ENVS:
        monkeypatch.delenv(var, raising=False)


def trial_runs(tracking_uri: str, experiment: str = "tiny") -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], "tags.rnn_tuner.role = 'trial'")
    return sorted(found, key=lambda r: int(r.data.tags["rnn_tuner.trial"]))


@pytest.mark.parametrize("var", INDEX_ENVS)
def test_a_cluster_s_worker_index_tags_trial_runs_and_output(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, var: str
):
    monkeypatch.setenv(var, "3")
    study = tiny_study(budget={"n_trials": 1, "max_epochs": 1})
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output

    (run,) = trial_runs(f"sqlite:///{workdir}/mlflow.db")  # read back from the real store
    assert run.data.tags["rnn_tuner.worker"] == "3"
    assert "[w3] trial 0 COMPLETE" in result.output
    assert "[w3] study 'tiny': 1 complete here" in result.output


def test_without_a_cluster_index_a_single_worker_has_no_worker_tag(workdir: Path):
    study = tiny_study(budget={"n_trials": 1, "max_epochs": 1})
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output
    (run,) = trial_runs(f"sqlite:///{workdir}/mlflow.db")
    assert "rnn_tuner.worker" not in run.data.tags
    assert "[w" not in result.output


def test_a_malformed_worker_index_is_refused_before_anything_is_recorded(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "three")
    study_file = write_study(workdir / "s.yaml", tiny_study())
    result = CliRunner().invoke(main, ["run", str(study_file)])
    assert result.exit_code == 2
    assert "SLURM_ARRAY_TASK_ID='three' is not a worker index" in result.output
    assert "Traceback" not in result.output
    assert not (workdir / "rnn_tuner.db").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_local_workers_under_a_cluster_index_get_indices_unique_across_tasks(
    workdir: Path, postgres_url: str
):
    """Array task 1 running --workers 2: its workers are 2 and 3 (task 0's would be 0 and 1)."""
    study_file = write_study(workdir / "s.yaml", tiny_study(budget={"max_epochs": 1}))
    tracking = f"sqlite:///{workdir}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": tracking}
    env["SLURM_ARRAY_TASK_ID"] = "1"
    argv = [sys.executable, "-m", "tuner", "run", str(study_file), "--storage", postgres_url]
    proc = subprocess.run(
        [*argv, "--workers", "2", "--max-trials", "4"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = trial_runs(tracking)
    assert len(runs) == 4
    assert {r.data.tags["rnn_tuner.worker"] for r in runs} <= {"2", "3"}
    assert "[w2] study 'tiny'" in proc.stdout and "[w3] study 'tiny'" in proc.stdout
