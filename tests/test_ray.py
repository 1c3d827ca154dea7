"""`rnn-tuner run FILE --ray`: workers as actors on a real Ray cluster, on loopback only.

Ray looks for the machine's network address (it probes a public resolver) even when told
127.0.0.1, so the cluster tests run inside a network namespace that has only loopback, and a PID
namespace of their own: `test_ray_on_a_loopback_only_cluster` runs this file again there
(`unshare --net --pid`, as root), where the tests marked `ray` start a head node and a second
node, run studies on them and stop them. When that namespace ends, the kernel ends every
process still in it. PostgreSQL is reached through its Unix socket (the namespace's loopback has
no server); MLflow is a SQLite store in the test's directory (every node is this machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import ROOT, tiny_study, wait_for_training, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

INSIDE = os.environ.get("RNN_TUNER_RAY_NAMESPACE") == "1"  # set for the run inside unshare
SOCKET_DIR = "/var/run/postgresql"
EXTRA = "pip install 'rnn-tuner[ray]'"
# The four tests inside the namespace start a cluster each: minutes on a quiet 2-core machine,
# well over ten when other jobs share it.
INNER_TIMEOUT = 1200
inside_only = pytest.mark.skipif(
    not INSIDE, reason="runs inside the namespace of test_ray_on_a_loopback_only_cluster"
)


def socket_url(database: str) -> str:
    return f"postgresql+psycopg://postgres@/{database}?host={SOCKET_DIR}"


def ray_study(name: str, **overrides) -> dict:
    """A study whose trials take a few seconds each: long enough to be caught training."""
    return tiny_study(
        study={"name": name, "heartbeat_interval": 1, "grace_period": 4},
        task={"source": "adding", "seq_len": 30, "n_train": 1500, "n_val": 64, "n_test": 64},
        budget={"max_epochs": 2},
        **overrides,
    )


# ------------------------------------------------------------------ outside any cluster


def test_without_ray_installed_ray_is_an_error_naming_the_extra(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    study_file = write_study(workdir / "s.yaml", tiny_study())
    result = CliRunner().invoke(main, ["run", str(study_file), "--ray"])
    assert result.exit_code == 2, result.output
    assert EXTRA in result.output and "Traceback" not in result.output
    assert list(workdir.iterdir()) == [study_file]  # no study storage, no MLflow store

    # the study file's cluster.ray asks for Ray just the same
    study_file = write_study(workdir / "c.yaml", tiny_study(cluster={"ray": {"address": "auto"}}))
    result = CliRunner().invoke(main, ["run", str(study_file)])
    assert result.exit_code == 2 and EXTRA in result.output, result.output


@pytest.mark.parametrize(
    "storage,what",
    [
        ("sqlite:///rnn_tuner.db", "is SQLite"),
        ("journal:///x.log", "is a journal file on this machine"),
        (None, "is a journal file on this machine"),  # the default storage
    ],
)
def test_ray_workers_on_a_storage_in_a_local_file_are_refused_before_anything_is_made(
    workdir: Path, storage: str | None, what: str
):
    pytest.importorskip("ray")
    study_file = write_study(workdir / "s.yaml", tiny_study())
    args = ["run", str(study_file), "--ray"] + (["--storage", storage] if storage else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert what in result.output and "Traceback" not in result.output
    for fix in ("--storage postgresql+psycopg://", "--storage journal+postgresql+psycopg://"):
        assert fix in result.output
    assert list(workdir.iterdir()) == [study_file]  # no study storage, no MLflow store


def test_cluster_keys_are_validated_together(workdir: Path):
    bad = tiny_study(
        cluster={"ray": {"max_restarts": -1, "adress": "auto"}, "resources": {"cpus": 0}}
    )
    result = CliRunner().invoke(main, ["validate", str(write_study(workdir / "s.yaml", bad))])
    assert result.exit_code == 2, result.output
    for key in ("cluster.ray.max_restarts", "cluster.ray.adress", "cluster.resources.cpus"):
        assert key in result.output, result.output


# ------------------------------------------------------------------ the namespace


def _namespace_problem() -> str | None:
    if importlib_missing("ray"):
        return f"Ray is not installed ({EXTRA})"
    if os.geteuid() != 0:
        return "needs root, for `unshare --net --pid`"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs `unshare` (util-linux) and `ip` (iproute2)"
    if not Path(SOCKET_DIR).is_dir():
        return f"needs PostgreSQL's Unix socket in {SOCKET_DIR}"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare --net` fails here: {probe.stderr.strip()}"
    return None


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(INSIDE, reason="this test starts the namespace; inside it, the others run")
def test_ray_on_a_loopback_only_cluster(postgres_databases, tmp_path: Path):
    problem = _namespace_problem()
    if problem:
        if os.environ.get("RNN_TUNER_REQUIRE_RAY"):
            pytest.fail(f"the Ray tests are required here: {problem}")
        pytest.skip(problem)
    databases = [postgres_databases().rsplit("/", 1)[1] for _ in range(2)]
    marker = tempfile.mkdtemp(prefix="rnnray", dir="/tmp")  # short: Ray's socket paths
    # -v: a timeout's partial output then names the test that was running
    inner = [sys.executable, "-m", "pytest", __file__, "-m", "ray", "-p", "no:cacheprovider", "-v"]
    env = {
        **os.environ,
        "RNN_TUNER_RAY_NAMESPACE": "1",
        "RNN_TUNER_RAY_DATABASES": ",".join(databases),
        "RNN_TUNER_RAY_TMP": marker,
        "PYTHONPATH": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Token authentication, as Ray 2.60 sets up a local cluster by default, with a token
        # of the test's own: else Ray writes one to ~/.ray/auth_token, which later nodes use.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    script = 'ip link set lo up && exec "$@"'
    argv = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh"]
    try:
        try:
            done = subprocess.run(
                argv + inner + ["--basetemp", str(tmp_path / "inner")],
                env=env,
                capture_output=True,
                text=True,
                timeout=INNER_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            said = e.stdout or b""  # bytes even with text=True (subprocess.run's timeout path)
            said = said.decode(errors="replace") if isinstance(said, bytes) else said
            pytest.fail(
                f"the Ray tests ran past {INNER_TIMEOUT} s; their output so far:\n{said[-6000:]}"
            )
        assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
        assert " passed" in done.stdout and " skipped" not in done.stdout, done.stdout[-3000:]
        # nothing of this cluster outlived the namespace
        assert not _processes_mentioning(marker)
    finally:
        shutil.rmtree(marker, ignore_errors=True)


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line holds `text` (the test's own Ray temp directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


# ------------------------------------------------------------------ inside the namespace


def ray_processes(*names: str) -> list[int]:
    """Processes of this PID namespace (only this test's) whose command starts with a name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        command = cmdline.split(" ", 1)[0]
        if any(command.endswith(name) or command.startswith(name) for name in names):
            found.append(int(entry.name))
    return found


RAY_DAEMONS = ("raylet", "gcs_server")
WORKER_ACTOR = "ray::RnnTunerWorker"


def _ray(*args: str) -> None:
    done = subprocess.run(["ray", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ray {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, one CPU each, on 127.0.0.1; stopped after the tests."""
    from tests.servers import free_port

    port = free_port()
    address = f"127.0.0.1:{port}"
    small = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1"]
    small += ["--object-store-memory", str(80 * 1024 * 1024), "--disable-usage-stats"]
    tmp = os.environ["RNN_TUNER_RAY_TMP"]
    try:
        _ray("start", "--head", "--port", str(port), "--include-dashboard=false", *small,
             "--temp-dir", tmp)  # fmt: skip
        _ray("start", "--address", address, *small)
        yield address
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)
        deadline = time.monotonic() + 30
        while ray_processes(*RAY_DAEMONS) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes(*RAY_DAEMONS), "a raylet or gcs_server outlived `ray stop`"


def databases() -> list[str]:
    return os.environ["RNN_TUNER_RAY_DATABASES"].split(",")


def start_run(workdir: Path, study_file: Path, storage: str, *args: str) -> subprocess.Popen:
    """The command as a user's shell runs it: without the one-worker default of conftest's
    `workdir` (RNN_TUNER_WORKERS=1), so --ray starts as many workers as the cluster fits."""
    env = {k: v for k, v in os.environ.items() if k != "RNN_TUNER_WORKERS"}
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(study_file), "--storage", storage, *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"},
    )


def trial_runs(workdir: Path, experiment: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.rnn_tuner.role = 'trial'", max_results=500)


@pytest.mark.ray
@inside_only
def test_every_node_of_the_cluster_is_on_loopback(cluster: str):
    import ray

    ray.init(address=cluster, logging_level="ERROR")
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    assert len(nodes) == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}


@pytest.mark.ray
@inside_only
def test_trials_spread_over_both_nodes_with_an_exact_cap(cluster: str, workdir: Path):
    storage = socket_url(databases()[0])
    study_file = write_study(workdir / "s.yaml", ray_study("spread"))
    proc = start_run(workdir, study_file, storage, "--ray", cluster, "--max-trials", "5")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "2 worker(s) of cpus: 1, gpus: 0" in out  # as many as the cluster fits

    trials = optuna.load_study(study_name="spread", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(5)), out
    assert all(t.state.name == "COMPLETE" for t in trials), out
    runs = trial_runs(workdir, "spread")
    assert sorted(int(r.data.tags["rnn_tuner.trial"]) for r in runs) == list(range(5))
    assert len({r.data.tags["rnn_tuner.ray_node"] for r in runs}) == 2, out  # both nodes
    assert {r.data.tags["rnn_tuner.worker"] for r in runs} == {"0", "1"}
    assert {r.data.tags["rnn_tuner.host"] for r in runs} == {"127.0.0.1"}
    assert out.count("study 'spread': ") == 2, out  # each worker's summary line


def _in_training(storage: str, name: str) -> int:
    query = sa.text(
        "SELECT count(*) FROM trials JOIN studies USING (study_id)"
        " JOIN trial_heartbeats h ON h.trial_id = trials.trial_id"
        " WHERE study_name = :name AND state = 'RUNNING'"
    )
    engine = sa.create_engine(storage)
    try:
        with engine.connect() as conn:
            return int(conn.execute(query, {"name": name}).scalar())
    except sa.exc.ProgrammingError:  # no tables yet
        return 0
    finally:
        engine.dispose()


def _wait(predicate, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended while waiting for {what}"
        if predicate():
            return
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}:\n{proc.communicate()[0]}")


@pytest.mark.ray
@inside_only
def test_a_killed_worker_is_restarted_and_ctrl_c_stops_every_worker(cluster: str, workdir: Path):
    storage = socket_url(databases()[1])
    name = "killed"
    study_file = write_study(
        workdir / "s.yaml", ray_study(name, cluster={"ray": {"max_restarts": 1}})
    )
    proc = start_run(workdir, study_file, storage, "--ray", cluster, "--max-trials", "40")
    wait_for_training(storage, name, proc, timeout=240)
    _wait(lambda: _in_training(storage, name) == 2, proc, "both workers training")
    (victim, other) = sorted(ray_processes(WORKER_ACTOR))
    os.kill(victim, signal.SIGKILL)  # mid-trial: its trial stays RUNNING, its heartbeat stops

    def retried() -> bool:
        found = optuna.load_study(study_name=name, storage=storage).trials
        lost = [t for t in found if t.state.name == "FAIL"]
        return bool(lost) and any(
            t.system_attrs.get("failed_trial") == lost[0].number and t.state.name == "COMPLETE"
            for t in found
        )

    _wait(retried, proc, "the lost trial's retry to complete")
    restarted = sorted(ray_processes(WORKER_ACTOR))
    assert len(restarted) == 2 and victim not in restarted and other in restarted
    _wait(lambda: _in_training(storage, name) == 2, proc, "both workers training again")

    proc.send_signal(signal.SIGINT)  # Ctrl-C on the driver
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "running trials were recorded as failed" in out

    found = optuna.load_study(study_name=name, storage=storage).trials
    failed = [t for t in found if t.state.name == "FAIL"]
    assert not [t for t in found if t.state.name == "RUNNING"], out
    runs = {r.data.tags["rnn_tuner.trial"]: r for r in trial_runs(workdir, name)}
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    assert all(runs[str(t.number)].info.status == "FAILED" for t in failed)
    reasons = sorted(runs[str(t.number)].data.tags["fail_reason"] for t in failed)
    lost = [r for r in reasons if r.startswith("worker lost")]
    stopped = [r for r in reasons if not r.startswith("worker lost")]
    assert len(lost) == 1 and lost[0].startswith("worker lost: no heartbeat for 4 s"), reasons
    # each worker's trial in training, unless the stop reached that worker between two trials
    # (its trial had just ended COMPLETE, and it started no other)
    assert 1 <= len(stopped) <= 2, reasons
    assert set(stopped) == {"TrialInterrupted: interrupted by SIGINT"}, reasons
    deadline = time.monotonic() + 30  # the driver's actors end with it
    while ray_processes(WORKER_ACTOR) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(WORKER_ACTOR)


@pytest.mark.ray
@inside_only
def test_without_an_address_a_local_ray_is_started_and_stopped(workdir: Path):
    """--workers N actors on a Ray of this machine, sharing the command's --n-trials."""
    before = set(ray_processes(*RAY_DAEMONS))  # the cluster fixture's, when it runs too
    storage = socket_url(databases()[1])
    study = tiny_study(name="local", budget={"max_epochs": 1})
    study_file = write_study(workdir / "s.yaml", study)
    proc = start_run(workdir, study_file, storage, "--ray", "--workers", "2", "--n-trials", "3")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    trials = optuna.load_study(study_name="local", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, out  # 3 in all, not 3 each
    assert out.count("study 'local': ") == 2, out
    assert set(ray_processes(*RAY_DAEMONS)) <= before  # its own Ray stopped with it


@pytest.mark.ray
@inside_only
def test_an_unreachable_cluster_is_a_clear_error(workdir: Path):
    from tests.servers import free_port

    study_file = write_study(workdir / "s.yaml", tiny_study(name="away"))
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = start_run(workdir, study_file, socket_url(databases()[1]), "--ray", address)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert f"could not reach the Ray cluster at {address}" in out and "Traceback" not in out
