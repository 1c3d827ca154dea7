"""Threads per trial (tuner.threads): `rnn-tuner run` trains small networks on one intra-op thread
with a passive OpenMP wait policy, in its own process and in every `--workers` process, unless the
user's OMP_NUM_THREADS says otherwise. Real commands in their own processes: the policy must be in
place before torch starts, which an in-process run cannot show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, tiny_study, write_study
from tuner.threads import SECOND_THREAD_FROM, Threads

# A loader that notes, in the worker process that calls it, the OpenMP wait policy torch started
# with and its process id, then returns a small regression task.
PROBE = """
import json, os
import numpy as np

def load(n=64):
    with open("probe.jsonl", "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "policy": os.environ.get("OMP_WAIT_POLICY")}) + "\\n")
    rng = np.random.default_rng(0)
    split = lambda k: {"inputs": rng.normal(size=(k, 5, 2)), "targets": rng.normal(size=(k, 1))}
    return {"task": "regression", "train": split(n), "val": split(16)}
"""


def run_study(workdir: Path, storage: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    (workdir / "probe.py").write_text(PROBE)
    study = tiny_study(task={"source": "python", "loader": "probe:load"})
    study["budget"] = {"n_trials": 2, "max_epochs": 1}
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    return subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(write_study(workdir / "s.yaml", study))]
        + ["--storage", storage, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": f"{ROOT}{os.pathsep}{workdir}", **env},
    )


def probes(workdir: Path) -> list[dict]:
    lines = (workdir / "probe.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def torch_threads(storage: str) -> list[int]:
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(trials)
    return [t.user_attrs["torch_threads"] for t in trials]


def test_a_small_network_trains_on_one_thread_that_sleeps_when_idle(workdir: Path) -> None:
    storage = f"sqlite:///{workdir}/optuna.db"
    done = run_study(workdir, storage)
    assert done.returncode == 0, done.stderr
    assert torch_threads(storage) == [1, 1]
    assert [p["policy"] for p in probes(workdir)] == ["PASSIVE"]


def test_the_user_s_omp_num_threads_and_wait_policy_are_honoured(workdir: Path) -> None:
    storage = f"sqlite:///{workdir}/optuna.db"
    done = run_study(workdir, storage, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")
    assert done.returncode == 0, done.stderr
    assert torch_threads(storage) == [2, 2]
    assert [p["policy"] for p in probes(workdir)] == ["ACTIVE"]


@pytest.mark.slow
@pytest.mark.postgres
def test_every_local_worker_process_gets_the_policy(workdir: Path, postgres_url: str) -> None:
    done = run_study(workdir, postgres_url, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert torch_threads(postgres_url) == [1, 1]
    seen = probes(workdir)  # each worker process that ran a trial loaded the data once
    assert seen and all(p["policy"] == "PASSIVE" for p in seen), seen


def test_a_bad_omp_num_threads_is_refused_before_any_trial(workdir: Path) -> None:
    storage = f"sqlite:///{workdir}/optuna.db"
    done = run_study(workdir, storage, OMP_NUM_THREADS="two")
    assert done.returncode == 2
    assert "OMP_NUM_THREADS='two' is not a thread count" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (workdir / "probe.jsonl").exists()


def test_only_a_network_past_the_measured_size_gets_the_worker_s_cores() -> None:
    assert Threads(share=4).for_network(SECOND_THREAD_FROM - 1) == 1
    assert Threads(share=4).for_network(SECOND_THREAD_FROM) == 4
    assert Threads(share=0).for_network(SECOND_THREAD_FROM) == 1
    assert Threads(fixed=3, share=1).for_network(10) == 3
