"""Running workers on a cluster: the worker index a cluster hands each worker, the Kubernetes
manifests (validated against the Kubernetes schemas, offline) and the Slurm array script
(shellcheck, and a real two-task array on a one-node Slurm cluster where Slurm is installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, tiny_study, write_study
from tests.servers import executable
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


def test_a_slurm_array_task_s_index_tags_trial_runs_and_output(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
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
    assert list(workdir.iterdir()) == [study_file]  # no study storage, no MLflow store


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


# ---------------------------------------------------------------------------------- Kubernetes

KUBE = ROOT / "deploy" / "kubernetes"
# backoffLimitPerIndex is GA from 1.33 on: the oldest version the Job is for, and the newest known
KUBE_VERSIONS = ("1.33.0", kubernetes_validate.utils.latest_version())


def manifests() -> dict[str, dict]:
    """Every resource under deploy/kubernetes, by kind."""
    found = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[doc["kind"]] = doc
    return found


def worker_container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_kubernetes_manifests_validate_against_the_schemas(version: str):
    found = manifests()
    assert sorted(found) == ["ConfigMap", "Job", "Secret"]
    for resource in found.values():
        # strict: an unknown or misspelt field is an error, not ignored
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_gpu_example_validates_once_uncommented():
    text = (KUBE / "job.yaml").read_text(encoding="utf-8")
    assert "# nvidia.com/gpu: 1" in text
    job = yaml.safe_load(text.replace("# nvidia.com/gpu: 1", "nvidia.com/gpu: 1"))
    assert worker_container(job)["resources"]["limits"]["nvidia.com/gpu"] == 1
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


def test_a_schema_error_is_caught():
    """The check above can fail: a misspelt field and a wrong type are both reported."""
    job = manifests()["Job"]
    job["spec"]["parallelizm"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_VERSIONS[0], strict=True)
    job = manifests()["Job"]
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "60s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_VERSIONS[0], strict=True)


def test_the_job_wires_secret_configmap_and_index_to_the_worker():
    from tuner.cli import STORAGE_ENV, TRACKING_ENV

    found = manifests()
    job, secret, config = found["Job"], found["Secret"], found["ConfigMap"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = worker_container(job)
    assert spec["completionMode"] == "Indexed"  # Kubernetes sets JOB_COMPLETION_INDEX
    assert spec["parallelism"] == spec["completions"]
    # every key of the Secret is a variable the worker reads (MLflow reads its credentials)
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    known = {STORAGE_ENV, TRACKING_ENV, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert set(secret["stringData"]) <= known
    assert {STORAGE_ENV, TRACKING_ENV} <= set(secret["stringData"])
    # the study file in the command is the ConfigMap's key, where it is mounted
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert volume == {"name": mount["name"], "configMap": {"name": config["metadata"]["name"]}}
    study_path = Path(container["command"][-1])
    assert container["command"][:2] == ["rnn-tuner", "run"]
    assert study_path.parent == Path(mount["mountPath"]) and study_path.name in config["data"]
    # time to record a SIGTERMed trial (measured 9-10 s); Kubernetes' default is 30 s
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert "USER 10001" in (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_configmap_s_study_file_validates(tmp_path: Path):
    study = manifests()["ConfigMap"]["data"]["study.yaml"]
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "study.yaml")])
    assert result.exit_code == 2  # no file yet: the check is real
    (tmp_path / "study.yaml").write_text(study, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "study.yaml")])
    assert result.exit_code == 0, result.output
    assert "study 'cluster-quickstart'" in result.output


@pytest.mark.slow
def test_a_worker_pod_s_command_runs_one_trial_tagged_with_its_index(tmp_path: Path):
    """What a pod of the Job runs, here: its command, its environment (the Secret's keys, with
    local stores as values, and the index Kubernetes sets), the ConfigMap's file at its path."""
    found = manifests()
    container = worker_container(found["Job"])
    mount = tmp_path / "etc-rnn-tuner"  # stands for the mountPath
    mount.mkdir()
    for key, text in found["ConfigMap"]["data"].items():
        study = yaml.safe_load(text)  # shrunk to one short trial; the wiring is what is tested
        study["task"] |= {"n_train": 200, "n_val": 64, "n_test": 64}
        study["budget"] = {"max_trials": 1, "max_epochs": 1}
        (mount / key).write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    command = [
        executable(container["command"][0]),
        *container["command"][1:-1],
        str(mount / Path(container["command"][-1]).name),
    ]
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOB_COMPLETION_INDEX": "2"}
    env |= {e["name"]: e["value"] for e in container.get("env", [])}
    env |= found["Secret"]["stringData"]
    env |= {"RNN_TUNER_STORAGE": f"sqlite:///{tmp_path}/study.db", "MLFLOW_TRACKING_URI": tracking}
    proc = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = trial_runs(tracking, "cluster-quickstart")
    assert run.data.tags["rnn_tuner.worker"] == "2"
    assert "[w2] trial 0 " in proc.stderr


# ---------------------------------------------------------------------------------------- Slurm

SBATCH = ROOT / "deploy" / "slurm" / "rnn-tuner-array.sbatch"


def test_the_slurm_script_passes_shellcheck():
    found = subprocess.run(
        [executable("shellcheck"), "--severity=style", str(SBATCH)], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stdout + found.stderr


def test_shellcheck_catches_a_broken_script(tmp_path: Path):
    """The check above can fail: an unquoted argument list is reported."""
    broken = tmp_path / "broken.sbatch"
    broken.write_text(
        SBATCH.read_text().replace('exec rnn-tuner run "$@"', "exec rnn-tuner run $@")
    )
    found = subprocess.run([executable("shellcheck"), str(broken)], capture_output=True, text=True)
    assert found.returncode != 0 and "SC2068" in found.stdout


def test_the_slurm_script_asks_one_gpu_per_task_and_execs_the_worker():
    directives = [
        line.removeprefix("#SBATCH ").strip()
        for line in SBATCH.read_text().splitlines()
        if line.startswith("#SBATCH ")
    ]
    assert "--gres=gpu:1" in directives
    assert any(d.startswith("--array=") for d in directives)
    # SIGTERM before the time limit, to the batch shell, which exec made the worker
    assert "--signal=B:TERM@120" in directives
    assert SBATCH.read_text().rstrip().endswith('exec rnn-tuner run "$@"')


@pytest.fixture
def slurm_env():
    """A one-node Slurm cluster on 127.0.0.1; skipped where Slurm is not installed or not root,
    unless RNN_TUNER_REQUIRE_SLURM is set (CI, which installs it)."""
    import tempfile

    from tests.slurm import missing, slurm_cluster

    lacking = missing() + ([] if os.geteuid() == 0 else ["root (slurmd runs jobs as their user)"])
    if lacking:
        if os.environ.get("RNN_TUNER_REQUIRE_SLURM"):
            pytest.fail(f"Slurm is required here but this machine lacks {', '.join(lacking)}")
        pytest.skip(f"no Slurm cluster possible here: lacks {', '.join(lacking)}")
    # short: the munge socket's path must fit in a Unix socket address (108 bytes)
    root = Path(tempfile.mkdtemp(prefix="slurm-"))
    try:
        with slurm_cluster(root) as env:
            yield env
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_two_task_slurm_array_runs_one_study(workdir: Path, postgres_url: str, slurm_env):
    """The shipped script, submitted to a real Slurm cluster: two array tasks, one worker each,
    share one study; each task's index tags its trial runs. CPU only: --gres=none overrides the
    script's GPU request, and the task asks what this machine has."""
    study_file = write_study(
        workdir / "s.yaml", tiny_study(budget={"max_trials": 4, "max_epochs": 1})
    )
    tracking = f"sqlite:///{workdir}/mlflow.db"
    MlflowClient(tracking_uri=tracking).search_experiments()  # create the store before 2 writers
    env = {**os.environ, **slurm_env, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": tracking}
    env["RNN_TUNER_STORAGE"] = postgres_url
    env["PATH"] = f"{Path(executable('rnn-tuner')).parent}{os.pathsep}{env['PATH']}"
    options = ["--array=0-1", "--gres=none", "--cpus-per-task=1", "--mem=0", "--wait"]
    submitted = subprocess.run(
        ["sbatch", *options, "--parsable", str(SBATCH), study_file.name],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outputs = {p.name: p.read_text() for p in workdir.glob("rnn-tuner-*.out")}
    assert submitted.returncode == 0, f"{submitted.stderr}\n{outputs}"
    job = submitted.stdout.strip()
    assert sorted(outputs) == [f"rnn-tuner-{job}_0.out", f"rnn-tuner-{job}_1.out"]
    for task in (0, 1):
        assert f"[w{task}] study 'tiny'" in outputs[f"rnn-tuner-{job}_{task}.out"]

    trials = optuna.load_study(study_name="tiny", storage=postgres_url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # the study's cap, not 4 per task
    runs = trial_runs(tracking)
    assert len(runs) == 4 and {r.data.tags["rnn_tuner.worker"] for r in runs} <= {"0", "1"}


@pytest.mark.postgres
def test_workers_starting_together_on_an_empty_database_all_open_it(postgres_url: str):
    """An array's tasks start at once, and each creates Optuna's tables: none may fail on the
    duplicate (seen for real: one of two Slurm tasks died on pg_type's unique index)."""
    import threading

    from tuner.study import make_storage

    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            make_storage(postgres_url).engine.dispose()
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
