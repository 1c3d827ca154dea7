"""Team mode: docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

No engine runs here, so the compose file is validated against the compose spec, the Dockerfile
is linted, and the command each service would run is taken out of docker-compose.yml, resolved
with .env.example's values as compose would, pointed at loopback, and run for real against
PostgreSQL. What is left untested is only Docker itself: images, networks and volumes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.conftest import (
    ROOT,
    postgres_admin,
    postgres_base_url,
    tiny_study,
    wait_for_training,
    write_study,
)
from tests.servers import (
    ServerError,
    executable,
    free_port,
    http_status,
    mlflow_server,
    optuna_dashboard,
    serve,
)

COMPOSE = ROOT / "docker-compose.yml"
REMOTE_WORKERS = ROOT / "docker-compose.remote-workers.yml"  # opt-in: PostgreSQL published
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
TEAM_HOST = "tuner-box.lan"  # stands for the name teammates type; resolved to loopback here

# compose's interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ...
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


# --- reading the files as compose does ------------------------------------------------------


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["name"] or m["bare"]
        value, op, arg = env.get(name), m["op"], m["arg"]
        missing = value is None or (value == "" and op and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if missing else value
        if op in ("?", ":?"):
            if missing:
                raise KeyError(f"${{{name}}}: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if missing else arg
        return value or ""

    return _VAR.sub(one, text)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(x, env) for x in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


def compose(**overrides: str) -> dict:
    """docker-compose.yml as compose runs it with .env.example as .env (plus overrides)."""
    return resolve(yaml.safe_load(COMPOSE.read_text()), {**env_example(), **overrides})


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def set_flags(argv: Sequence[str], **values: str) -> list[str]:
    """Replace the value of each `--flag value` / `--flag=value` (flag_name -> --flag-name);
    a flag missing from `argv` is an error, so the test notices when compose drops one."""
    out, todo = list(argv), {"--" + k.replace("_", "-"): v for k, v in values.items()}
    for i, arg in enumerate(out):
        flag, eq, _ = arg.partition("=")
        if flag in todo:
            if eq:
                out[i] = f"{flag}={todo.pop(flag)}"
            else:
                out[i + 1] = todo.pop(flag)
    assert not todo, f"{sorted(todo)} not in the command {argv}"
    return out


def flags(argv: Sequence[str]) -> dict[str, str]:
    """`--flag value` and `--flag=value` pairs of a command; a bare flag maps to ''."""
    found = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            bare = eq == "" and (i + 1 == len(argv) or argv[i + 1].startswith("--"))
            found[flag] = value if eq else ("" if bare else argv[i + 1])
    return found


def on_test_server(compose_url: str, postgres_url: str) -> str:
    """The compose service's database URL, same driver, moved to the test server's database."""
    test = make_url(postgres_url)
    url = make_url(compose_url).set(
        host=test.host,
        port=test.port,
        username=test.username,
        password=test.password,
        database=test.database,
    )
    return url.render_as_string(hide_password=False)


def local_argv(argv: Sequence[str]) -> list[str]:
    """The same command with its program taken from this environment (the venv)."""
    return [executable(argv[0]), *argv[1:]]


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def _stages() -> dict[str, str]:
    """Dockerfile stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages, name = {}, None
    for line in text.splitlines():
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            name = m[1] or f"stage{len(stages)}"
            stages[name] = ""
        if name:
            stages[name] += line + "\n"
    return stages


# --- the files themselves ---------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec(tmp_path: Path):
    check = [executable("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*check, str(COMPOSE), str(REMOTE_WORKERS)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    broken = COMPOSE.read_text().replace("service_healthy", "service_healty", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = subprocess.run([*check, str(tmp_path / "docker-compose.yml")], capture_output=True)
    assert result.returncode != 0, "the schema check must be able to fail"


def test_services_depend_on_defined_services_and_workers_can_scale():
    services = raw_compose()["services"]
    assert {"postgres", "mlflow", "dashboard", "worker"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on {dep!r}, which is not a service"

    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=4
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["mlflow"]["condition"] in {"service_started", "service_healthy"}
    assert _seconds(worker["stop_grace_period"]) >= 30  # time to record the interrupted trial
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:16")
    volumes = raw_compose()["volumes"]
    assert services["postgres"]["volumes"][0].split(":")[0] in volumes  # a named volume


def test_worker_runs_the_study_with_the_variables_the_cli_reads():
    from tuner.cli import STORAGE_ENV, TRACKING_ENV

    worker = compose()["services"]["worker"]
    assert worker["command"] == ["rnn-tuner", "run", "studies/quickstart.yaml"]
    assert (ROOT / worker["command"][2]).exists()
    env = service_env(worker)
    assert env[TRACKING_ENV] == "http://mlflow:5000"
    storage = make_url(env[STORAGE_ENV])
    assert (storage.drivername, storage.host, storage.port) == (
        "postgresql+psycopg",
        "postgres",
        5432,
    )
    assert storage.password == env_example()["POSTGRES_PASSWORD"]
    assert storage.database == env_example()["POSTGRES_DB"]
    assert compose(STUDY="other")["services"]["worker"]["command"][2] == "studies/other.yaml"


def test_credentials_come_only_from_env_file():
    text = COMPOSE.read_text()
    secrets = {k: v for k, v in env_example().items() if re.search("PASSWORD|SECRET", k)}
    assert len(secrets) == 4  # PostgreSQL's superuser and role, MLflow's admin, the Flask key
    for key, secret in secrets.items():
        assert secret not in text, key
    for user_password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", text):
        assert user_password.startswith("${POSTGRES_PASSWORD"), user_password
    for name, service in raw_compose()["services"].items():
        for key, value in service_env(service).items():
            if re.search("PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", value), f"{name}.{key}={value}"
    # the required ones stop compose with a message instead of an empty password
    assert "${POSTGRES_PASSWORD:?" in text
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        resolve(raw_compose(), {k: v for k, v in env_example().items() if k != "POSTGRES_PASSWORD"})


def test_only_mlflow_is_published_and_it_asks_for_a_login():
    services = compose()["services"]
    postgres = services["postgres"]
    assert "ports" not in postgres  # the stack's services only; opt-in below
    assert service_env(postgres)["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]  # no login, deletes studies
    assert services["mlflow"]["ports"] == [f"{env_example()['BIND_ADDRESS']}:5000:5000"]
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"mlflow", "dashboard"}

    # The superuser logs in from db-init only; everything else is the application role.
    superuser = service_env(postgres)["POSTGRES_USER"]
    role = env_example()["POSTGRES_USER"]
    assert role != superuser
    assert service_env(services["db-init"])["PGUSER"] == superuser
    logins = re.findall(r"postgresql\+psycopg://([^:@/]+):", str(compose()))
    assert len(logins) >= 4 and set(logins) == {role}  # the study db, MLflow's, MLflow's auth
    superuser_password = env_example()["POSTGRES_SUPERUSER_PASSWORD"]
    assert {n for n, s in services.items() if superuser_password in str(s)} == {"postgres", "db-init"}  # fmt: skip

    mlflow = services["mlflow"]
    assert flags(mlflow["command"])["--app-name"] == "basic-auth"
    # the login cache is invalidated at once only within one process
    ini = compose()["configs"]["mlflow-auth"]["content"]
    assert int(re.search(r"^auth_cache_ttl_seconds = (\d+)$", ini, re.M)[1]) > 0
    assert flags(mlflow["command"])["--workers"] == "1"
    env = service_env(mlflow)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == env_example()["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env_example()["MLFLOW_SECRET_KEY"]
    worker = service_env(services["worker"])
    assert worker["MLFLOW_TRACKING_USERNAME"] == env_example()["MLFLOW_ADMIN_USERNAME"]
    assert worker["MLFLOW_TRACKING_PASSWORD"] == env_example()["MLFLOW_ADMIN_PASSWORD"]

    override = resolve(yaml.safe_load(REMOTE_WORKERS.read_text()), {})
    assert override == {"services": {"postgres": {"ports": ["0.0.0.0:5432:5432"]}}}


def test_every_variable_compose_uses_is_in_env_example_and_every_one_there_is_used():
    used = {m["name"] or m["bare"] for m in _VAR.finditer(COMPOSE.read_text()) if not m["escaped"]}
    assert used, "no variables found: the pattern is wrong"
    assert sorted(used - set(env_example())) == []
    assert sorted(set(env_example()) - used) == []


def test_dockerfile_passes_hadolint():
    hadolint = executable("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = "FROM python\nRUN pip install mlflow\n"  # unpinned image and package
    result = subprocess.run(
        [hadolint, "--no-color", "-"], input=bad, capture_output=True, text=True
    )
    assert result.returncode != 0 and "DL3013" in result.stdout, "hadolint must be able to fail"


def test_images_pin_the_versions_the_tests_run_and_drop_root():
    from importlib.metadata import version

    stages = _stages()
    assert {"mlflow", "dashboard", "worker"} <= set(stages)
    assert DOCKERFILE.read_text().startswith("#")  # says what it builds and how
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE.read_text(), re.M)
    # tested-versions.txt: what CI installs (`-c`) and the images ship; the tests run them
    tested = dict(
        line.split("==")
        for line in (ROOT / "tested-versions.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name, pinned in tested.items():
        assert version(name) == pinned, f"{name} {version(name)} installed, {pinned} tested"
    pins = {
        "mlflow": [f"mlflow[auth]=={tested['mlflow']}", f"psycopg[binary]=={tested['psycopg']}"],
        "dashboard": [
            f"optuna=={tested['optuna']}",
            f"optuna-dashboard=={tested['optuna-dashboard']}",
            f"psycopg[binary]=={tested['psycopg']}",
        ],
        "worker": [f"optuna=={tested['optuna']}"],
    }
    for stage, needles in pins.items():
        for needle in needles:
            assert needle in stages[stage], f"stage {stage} lacks {needle}"
    # torch: the CPU build pinned to the tested version, installed before the project
    worker = stages["worker"]
    torch = version("torch").split("+")[0]
    assert re.search(rf"download\.pytorch\.org/whl/cpu\s+torch=={re.escape(torch)}\b", worker)
    project = re.search(r"^RUN pip install [^\n]*\s\.$", worker, re.M)
    assert project and worker.index(f"torch=={torch}") < project.start()
    for name in ("mlflow", "dashboard", "worker"):
        users = re.findall(r"^USER\s+(\S+)", stages[name], re.M)
        assert users and users[-1] not in {"root", "0"}, f"stage {name} runs as root"
    services = raw_compose()["services"]
    for name in ("mlflow", "dashboard", "worker"):
        assert services[name]["build"]["target"] in stages


def test_image_gets_what_it_copies_and_never_the_env_file():
    rules = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", ".dockerignore starts by excluding everything"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert not any(a.startswith(".env") for a in allowed)
    for sources in re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE.read_text(), re.M):
        for src in sources.split():
            if src.startswith("--"):
                continue
            assert src in allowed, f"COPY {src}: excluded by .dockerignore"
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"


# --- the server helpers (tests/servers.py) ----------------------------------------------------


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name} {cmdline}")
    return found


def test_mlflow_server_helper_leaves_no_process_behind(tmp_path: Path):
    import mlflow

    with mlflow_server(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "art") as url:
        port = url.rsplit(":", 1)[1]
        run = mlflow.MlflowClient(tracking_uri=url).create_run("0")
        assert run.info.status == "RUNNING"
        assert len(_processes_mentioning(f"--port {port}")) >= 2  # the CLI and its uvicorn
    assert _processes_mentioning(f"--port {port}") == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=2)


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path):
    nowhere = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    with (
        pytest.raises(ServerError, match=r"exited with code .*\n--- last \d+ lines of "),
        optuna_dashboard(nowhere, timeout=60),
    ):
        pass


def test_optuna_dashboard_helper_serves_a_sqlite_study(tmp_path: Path):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="helper", storage=storage)
    with optuna_dashboard(storage) as url:
        assert http_status(f"{url}/dashboard") == 200
        port = url.rsplit(":", 1)[1]
    assert _processes_mentioning(f"--port {port}") == []


# --- the services' commands, run for real -----------------------------------------------------


def pg_env(postgres_url: str) -> dict[str, str]:
    url = make_url(postgres_url)
    env = {"PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432)}
    env["PGUSER"] = url.username or "postgres"
    if url.password:
        env["PGPASSWORD"] = url.password
    return env


def on_test_host(compose_url: str) -> str:
    """A service's database URL moved to the test server's host and port; role, password and
    database stay as compose has them (db-init made them there)."""
    test = make_url(postgres_base_url())
    url = make_url(compose_url).set(host=test.host, port=test.port)
    return url.render_as_string(hide_password=False)


def run_db_init(stack: Mapping[str, str]) -> subprocess.CompletedProcess:
    """The db-init service's command, as the test server's superuser, with its SQL file
    mounted where the service's volume puts it."""
    service = compose(**stack)["services"]["db-init"]
    source, target = service["volumes"][0].split(":")[:2]
    argv = [str(ROOT / source) if arg == target else arg for arg in service["command"]]
    env = {**os.environ, **service_env(service), **pg_env(postgres_base_url())}
    env["PGDATABASE"] = make_url(postgres_base_url()).database or "postgres"
    return subprocess.run(argv, env=env, capture_output=True, text=True)


@contextlib.contextmanager
def stack_databases() -> Iterator[dict[str, str]]:
    """db-init run on the test server: .env.example's settings with the role and database names
    made unique. Yields those .env overrides; drops the databases and the role afterwards."""
    import uuid

    import sqlalchemy as sa

    admin = postgres_admin()
    if shutil.which("psql") is None:
        missing = "db-init needs PostgreSQL's client psql (15 or later) on PATH"
        if os.environ.get("RNN_TUNER_REQUIRE_POSTGRES"):
            pytest.fail(missing)
        pytest.skip(missing)
    tag = uuid.uuid4().hex[:8]
    stack = {
        "POSTGRES_USER": f"rnn_tuner_test_role_{tag}",
        "POSTGRES_DB": f"rnn_tuner_test_studies_{tag}",
        "MLFLOW_DB": f"rnn_tuner_test_mlflow_{tag}",
        "MLFLOW_AUTH_DB": f"rnn_tuner_test_auth_{tag}",
    }
    try:
        result = run_db_init(stack)
        assert result.returncode == 0, result.stdout + result.stderr
        yield stack
    finally:
        with admin.connect() as conn:
            for key in ("POSTGRES_DB", "MLFLOW_DB", "MLFLOW_AUTH_DB"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{stack[key]}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{stack["POSTGRES_USER"]}"'))
        admin.dispose()


def admin_login() -> dict[str, str]:
    """The MLflow admin account of .env.example, as the client's environment variables."""
    env = env_example()
    return {
        "MLFLOW_TRACKING_USERNAME": env["MLFLOW_ADMIN_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": env["MLFLOW_ADMIN_PASSWORD"],
    }


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def mlflow_from_compose(stack: Mapping[str, str], artifacts: Path, log: Path):
    """serve() the mlflow service's own command and auth config on loopback, on the databases
    of `stack_databases()`."""
    resolved = compose(TEAM_HOST=TEAM_HOST, **stack)
    service = resolved["services"]["mlflow"]
    env = service_env(service)
    (mount,) = service["configs"]
    assert mount["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]
    ini = resolved["configs"][mount["source"]]["content"]
    database_uri = re.search(r"^database_uri = (\S+)$", ini, re.M)[1]
    ini = ini.replace(database_uri, on_test_host(database_uri))
    config = log.parent / "basic_auth.ini"
    config.write_text(ini)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)

    argv = service["command"]
    port = free_port()
    argv = set_flags(
        argv,
        host="127.0.0.1",
        port=str(port),
        backend_store_uri=on_test_host(flags(argv)["--backend-store-uri"]),
        artifacts_destination=str(artifacts),
    )
    return serve(
        local_argv(argv), f"http://127.0.0.1:{port}", ready_path="/health", env=env, log=log
    )


@pytest.mark.postgres
def test_mlflow_service_records_runs_and_serves_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mlflow

    service = compose()["services"]["mlflow"]
    assert service_env(service)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert flags(service["command"])["--workers"] == "1"
    assert "--serve-artifacts" in service["command"]

    for key, value in admin_login().items():
        monkeypatch.setenv(key, value)
    login = basic_auth(*admin_login().values())
    artifacts = tmp_path / "artifacts"
    with (
        stack_databases() as stack,
        mlflow_from_compose(stack, artifacts, tmp_path / "mlflow.log") as server,
    ):
        url = server.url
        assert http_status(f"{url}/health") == 200
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=10"
        assert http_status(search, headers=login) == 200

        client = mlflow.MlflowClient(tracking_uri=url)
        run = client.create_run(client.create_experiment("compose-check"))
        client.log_param(run.info.run_id, "lr", 0.01)
        client.log_metric(run.info.run_id, "val_mse", 0.5, step=0)
        report = tmp_path / "report.txt"
        report.write_text("trial 0\n")
        client.log_artifact(run.info.run_id, str(report), "reports")
        client.set_terminated(run.info.run_id)

        stored = client.get_run(run.info.run_id)
        assert stored.data.params == {"lr": "0.01"} and stored.info.status == "FINISHED"
        assert stored.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through it
        assert list(artifacts.rglob("report.txt")), "the artifact is not in --artifacts-destination"
        back = client.download_artifacts(run.info.run_id, "reports/report.txt", str(tmp_path))
        assert Path(back).read_text() == "trial 0\n"

        # Containers reach it as mlflow:5000, teammates as TEAM_HOST; other names are refused.
        assert http_status(search, headers={**login, "Host": "mlflow:5000"}) == 200
        assert http_status(search, headers={**login, "Host": f"{TEAM_HOST}:5000"}) == 200
        assert http_status(search, headers={**login, "Host": "evil.example:5000"}) == 403
        # The UI opened at TEAM_HOST may write; a page from another origin may not.
        create = f"{url}/api/2.0/mlflow/experiments/create"
        ui = f"http://{TEAM_HOST}:5000"
        assert _post(create, {"name": "from-ui"}, origin=ui, headers=login) == 200
        assert _post(create, {"name": "from-evil"}, origin="http://evil.example", headers=login) == 403  # fmt: skip


def _post(url: str, body: dict, *, origin: str, headers: Mapping[str, str]) -> int:
    import json
    import urllib.error

    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Origin": origin, **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.postgres
def test_dashboard_service_shows_a_study(postgres_url: str, tmp_path: Path):
    import json

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="compose-dash", storage=postgres_url)
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2)

    service = compose()["services"]["dashboard"]
    port = free_port()
    argv = set_flags(service["command"], host="127.0.0.1", port=str(port))
    argv = [on_test_server(a, postgres_url) if "://" in a else a for a in argv]
    with serve(
        local_argv(argv),
        f"http://127.0.0.1:{port}",
        ready_path="/api/studies",
        log=tmp_path / "d.log",
    ) as server:
        with urllib.request.urlopen(f"{server.url}/api/studies", timeout=10) as resp:
            studies = json.load(resp)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["compose-dash"]
        detail = f"{server.url}/api/studies/{studies[0]['study_id']}"
        with urllib.request.urlopen(detail, timeout=10) as resp:
            assert len(json.load(resp)["trials"]) == 2
        assert http_status(f"{server.url}/dashboard") == 200


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_worker_command_records_trials_and_stops_within_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The worker service's command, with its environment, against the mlflow service's: trials
    recorded in both stores; then SIGTERM (`docker compose stop`) mid-trial: the worker records
    the trial as failed and exits before Docker would send SIGKILL."""
    import mlflow
    import optuna

    (tmp_path / "studies").mkdir()
    write_study(
        tmp_path / "studies" / "short.yaml",
        tiny_study("short", budget={"n_trials": 2, "max_epochs": 1}),
    )
    long_task = {"source": "adding", "seq_len": 40, "n_train": 4000, "n_val": 64, "n_test": 64}
    write_study(
        tmp_path / "studies" / "long.yaml",
        tiny_study("long", task=long_task, budget={"n_trials": 1, "max_epochs": 50}),
    )
    for key, value in admin_login().items():  # the test's own client; workers bring theirs
        monkeypatch.setenv(key, value)
    with (
        stack_databases() as stack,
        mlflow_from_compose(stack, tmp_path / "art", tmp_path / "mlflow.log") as server,
    ):
        client = mlflow.MlflowClient(tracking_uri=server.url)

        def worker(study: str) -> tuple[list[str], dict[str, str], float, str]:
            service = compose(STUDY=study, **stack)["services"]["worker"]
            env = service_env(service)
            storage = on_test_host(env["RNN_TUNER_STORAGE"])  # as the application role
            assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
            env.update(RNN_TUNER_STORAGE=storage, MLFLOW_TRACKING_URI=server.url)
            env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
            grace = _seconds(service["stop_grace_period"])
            return local_argv(service["command"]), env, grace, storage

        argv, env, _, storage = worker("short")
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        trials = optuna.load_study(study_name="short", storage=storage).trials
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
        exp = client.get_experiment_by_name("short")
        assert len(client.search_runs([exp.experiment_id])) == 3  # the study's run + 2 trials

        argv, env, grace, storage = worker("long")
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
        wait_for_training(storage, "long", proc, log.read_text)
        proc.send_signal(signal.SIGTERM)  # what `docker compose stop` sends first
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the worker outlived stop_grace_period ({grace:.0f} s): SIGKILL")
        out = log.read_text()
        trials = optuna.load_study(study_name="long", storage=storage).trials
        assert [t.state.name for t in trials] == ["FAIL"], out
        assert "SIGTERM" in trials[0].user_attrs.get("fail_reason", ""), trials[0].user_attrs
        exp = client.get_experiment_by_name("long")
        statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
        assert statuses.get("trial-0") == "FAILED", statuses
