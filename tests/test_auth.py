"""The team stack lets only the team in: MLflow's logins, accounts and roles, PostgreSQL's role.

One MLflow server runs for the whole module, started with the mlflow service's own command and
auth config from docker-compose.yml (.env.example's settings), on databases that the db-init
service's SQL made on the test server, logging in as the application role. Accounts are made
with the same REST calls that docs/team.md shows as curl commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, postgres_admin, tiny_study, write_study
from tests.servers import executable, http_status
from tests.test_compose import (
    admin_login,
    basic_auth,
    compose,
    env_example,
    mlflow_from_compose,
    on_test_host,
    run_db_init,
    service_env,
    stack_databases,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

# Teammates (the team's role) and a viewer (no role: the server's default, READ).
PASSWORDS = {
    "alice": "alice-Tr0ub4dor-horse",
    "bob": "bob-correct-battery-staple",
    "carol": "carol-only-looks-4321",
}
TEAM_ROLE = "tuners"


@dataclass(frozen=True)
class Stack:
    url: str  # the MLflow server
    storage: str  # the study database, as the application role
    env: Mapping[str, str]  # the .env overrides of stack_databases()
    log: Path  # the MLflow server's output


def call(url: str, path: str, body: dict | None, login: Mapping[str, str]) -> tuple[int, dict]:
    """One REST call (POST with a JSON body, else GET): (HTTP status, JSON answer or {})."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **login}
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}


def ok(status_and_answer: tuple[int, dict]) -> dict:
    status, answer = status_and_answer
    assert status == 200, status
    return answer


def as_user(name: str) -> dict[str, str]:
    return basic_auth(name, PASSWORDS[name])


def add_accounts(url: str) -> None:
    """docs/team.md, Accounts: the team's role once, then one account per person."""
    admin = basic_auth(*admin_login().values())
    role = ok(call(url, "/api/3.0/mlflow/roles/create", {"workspace": "default", "name": TEAM_ROLE}, admin))  # fmt: skip
    role_id = role["role"]["id"]
    for resource in ("experiment", "registered_model"):
        grant = {"role_id": role_id, "resource_type": resource, "resource_pattern": "*"}
        ok(call(url, "/api/3.0/mlflow/roles/permissions/add", {**grant, "permission": "EDIT"}, admin))  # fmt: skip
    for name, password in PASSWORDS.items():
        ok(call(url, "/api/2.0/mlflow/users/create", {"username": name, "password": password}, admin))  # fmt: skip
        if name != "carol":
            ok(call(url, "/api/3.0/mlflow/roles/assign", {"username": name, "role_id": role_id}, admin))  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    postgres_admin().dispose()  # skips the module without a server
    tmp = tmp_path_factory.mktemp("auth")
    with (
        stack_databases() as env,
        mlflow_from_compose(env, tmp / "artifacts", tmp / "mlflow.log") as server,
    ):
        add_accounts(server.url)
        storage = service_env(compose(**env)["services"]["worker"])["RNN_TUNER_STORAGE"]
        yield Stack(server.url, on_test_host(storage), env, server.log)


def run_worker(
    stack: Stack, tmp_path: Path, study: str, login: Mapping[str, str]
) -> subprocess.CompletedProcess:
    """`rnn-tuner run` as a teammate's machine runs it: server, study database and login in
    the environment (and nothing inherited from this one's)."""
    study_file = write_study(
        tmp_path / f"{study}.yaml", tiny_study(study, budget={"n_trials": 2, "max_epochs": 1})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        PYTHONPATH=str(ROOT),
        RNN_TUNER_STORAGE=stack.storage,
        MLFLOW_TRACKING_URI=stack.url,
        **login,
    )
    argv = [executable("rnn-tuner"), "run", str(study_file)]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)


def login_env(user: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def every_password() -> list[str]:
    env = env_example()
    return [*PASSWORDS.values(), env["MLFLOW_ADMIN_PASSWORD"], env["POSTGRES_PASSWORD"]]


def assert_no_password(text: str) -> None:
    for password in every_password():
        assert password not in text


def study_names(stack: Stack) -> list[str]:
    import optuna

    return optuna.get_all_study_names(stack.storage)


# --- the server -------------------------------------------------------------------------------


def test_requests_without_a_valid_login_are_refused(stack: Stack):
    search = f"{stack.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert http_status(search) == 401
    assert http_status(search, headers=basic_auth("alice", "not-alices-password")) == 401
    assert http_status(search, headers=basic_auth("nobody", PASSWORDS["alice"])) == 401
    assert http_status(f"{stack.url}/", headers={}) == 401  # the UI too
    assert http_status(search, headers=as_user("alice")) == 200
    assert http_status(f"{stack.url}/health") == 200  # compose's healthcheck needs no login


def test_the_team_writes_in_each_others_experiments_and_a_viewer_only_reads(stack: Stack):
    url = stack.url
    experiment = ok(call(url, "/api/2.0/mlflow/experiments/create", {"name": "shared"}, as_user("alice")))  # fmt: skip
    in_it = {"experiment_id": experiment["experiment_id"]}
    run = ok(call(url, "/api/2.0/mlflow/runs/create", in_it, as_user("bob")))  # not bob's own
    run_id = run["run"]["info"]["run_id"]
    metric = {"run_id": run_id, "key": "val_mse", "value": 0.5, "timestamp": 0, "step": 0}
    ok(call(url, "/api/2.0/mlflow/runs/log-metric", metric, as_user("alice")))

    # The viewer sees everything and changes nothing of the team's.
    search = {"experiment_ids": [experiment["experiment_id"]]}
    found = ok(call(url, "/api/2.0/mlflow/runs/search", search, as_user("carol")))
    assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
    assert call(url, "/api/2.0/mlflow/runs/create", in_it, as_user("carol"))[0] == 403
    assert call(url, "/api/2.0/mlflow/runs/log-metric", metric, as_user("carol"))[0] == 403
    assert call(url, "/api/2.0/mlflow/runs/delete", {"run_id": run_id}, as_user("carol"))[0] == 403  # fmt: skip
    # ... nor anyone's account: that is the admin's.
    newcomer = {"username": "mallory", "password": "mallory-wants-in-123"}
    assert call(url, "/api/2.0/mlflow/users/create", newcomer, as_user("carol"))[0] == 403
    assert call(url, "/api/2.0/mlflow/users/create", newcomer, as_user("alice"))[0] == 403


# --- workers ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_with_its_login_records_its_trials(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import optuna
    from mlflow import MlflowClient

    done = run_worker(stack, tmp_path, "team-run", login_env("bob", PASSWORDS["bob"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_password(done.stdout + done.stderr)

    trials = optuna.load_study(study_name="team-run", storage=stack.storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for key, value in login_env("carol", PASSWORDS["carol"]).items():  # read back as a viewer
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=stack.url)
    runs = client.search_runs([client.get_experiment_by_name("team-run").experiment_id])
    assert sorted(r.data.tags["rnn_tuner.role"] for r in runs) == ["study", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_no_password(repr([(r.data.params, r.data.tags) for r in runs]))


@pytest.mark.parametrize(
    "login",
    [login_env("bob", "not-bobs-password-at-all"), {}],
    ids=["wrong password", "no login"],
)
def test_a_refused_login_stops_the_worker_at_start(stack: Stack, tmp_path: Path, login: dict):
    done = run_worker(stack, tmp_path, "refused", login)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # the environment (the server's accounts), not the file
    assert f"MLflow tracking server at {stack.url} refused the login (HTTP 401)" in out
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out
    assert "Traceback" not in out
    assert_no_password(out)
    assert login.get("MLFLOW_TRACKING_PASSWORD", "unset") not in out
    assert "refused" not in study_names(stack)  # stopped before the study was made


def test_a_viewer_worker_is_told_it_may_only_read(stack: Stack, tmp_path: Path):
    """The team's experiment exists; a viewer's worker joining it cannot record a run."""
    admin = basic_auth(*admin_login().values())
    ok(call(stack.url, "/api/2.0/mlflow/experiments/create", {"name": "watched"}, admin))
    done = run_worker(stack, tmp_path, "watched", login_env("carol", PASSWORDS["carol"]))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "MLFLOW_TRACKING_USERNAME read but not record runs (HTTP 403)" in out
    assert "the team's role" in out and "Traceback" not in out
    assert_no_password(out)


def test_the_server_log_holds_no_password(stack: Stack):
    # after the module's other tests: logins, refusals and runs have all been logged
    assert stack.log.read_text().strip()
    assert_no_password(stack.log.read_text())


# --- PostgreSQL -------------------------------------------------------------------------------


def test_db_init_makes_an_application_role_that_is_no_superuser(stack: Stack):
    import optuna
    import sqlalchemy as sa

    role = stack.env["POSTGRES_USER"]
    databases = [stack.env[k] for k in ("POSTGRES_DB", "MLFLOW_DB", "MLFLOW_AUTH_DB")]
    admin = postgres_admin()
    try:
        with admin.connect() as conn:
            flags = conn.execute(
                sa.text(
                    "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword"
                    " FROM pg_authid WHERE rolname = :r"
                ),
                {"r": role},
            ).one()
            owned = conn.execute(
                sa.text(
                    "SELECT datname, pg_get_userbyid(datdba), datacl::text FROM pg_database"
                    " WHERE datname = ANY(:d) ORDER BY datname"
                ),
                {"d": databases},
            ).all()
    finally:
        admin.dispose()
    assert tuple(flags[:4]) == (False, False, False, True)
    assert flags.rolpassword.startswith("SCRAM-SHA-256$")  # a salted hash, never md5 or clear
    assert [(name, owner) for name, owner, _ in owned] == [(d, role) for d in sorted(databases)]
    for _, _, acl in owned:  # PUBLIC (an entry with no grantee before '=') may not connect
        assert not any(entry.startswith("=") for entry in acl.strip("{}").split(","))

    # Every `docker compose up` runs it again: no error, and what the databases hold stays.
    optuna.create_study(study_name="kept", storage=stack.storage)  # as the application role
    again = run_db_init(stack.env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_no_password(again.stdout + again.stderr)
    assert "kept" in study_names(stack)
