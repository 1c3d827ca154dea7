"""Real servers for tests: an MLflow tracking server and optuna-dashboard, on loopback.

Each server runs in its own process group (its own session), and leaving the context manager
stops the whole group, then checks that no process of it is left: a server that forks workers
would otherwise leave them running after the test, holding ports and database connections.
Output goes to a log file whose tail is quoted when a server fails to start.

    with mlflow_server("postgresql+psycopg://...", tmp_path / "artifacts") as url:
        client = mlflow.MlflowClient(tracking_uri=url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 120.0  # an MLflow server's first start migrates a fresh database: ~20 s on 2 cores
STOP_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A server exited or never answered; the message quotes its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
    """The HTTP status of a GET (an error status is returned, not raised)."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_http(
    url: str,
    timeout: float = 60.0,
    *,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> int:
    """Poll `url` until it gives any HTTP answer below 500; return that status.

    Raises ServerError at once if `proc` exits meanwhile, or after `timeout` seconds; either
    message ends with the tail of `log`.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"server exited with code {proc.returncode} before {url} answered" + _tail(log)
            )
        try:
            status = http_status(url, timeout=2.0)
            if status < 500:
                return status
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as e:  # not listening yet
            last = e
        time.sleep(0.2)
    raise ServerError(f"{url} did not answer within {timeout:.0f} s (last: {last})" + _tail(log))


@dataclass
class Server:
    proc: subprocess.Popen
    url: str  # base URL, no trailing slash
    log: Path


@contextlib.contextmanager
def serve(
    argv: Sequence[str],
    base_url: str,
    *,
    ready_path: str = "/",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[Server]:
    """Run `argv` in a new process group until `base_url + ready_path` answers; stop it on exit.

    `env` is added to this process's environment. Without `log`, output goes to a temporary
    file, removed on exit. Raises ServerError if a process of the group outlives the stop.
    """
    own_tmp = None
    if log is None:
        own_tmp = Path(tempfile.mkdtemp(prefix="rnn-tuner-server-"))
        log = own_tmp / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd or log.parent,
            start_new_session=True,  # its own process group: one killpg stops every worker
        )
    try:
        wait_http(base_url.rstrip("/") + ready_path, timeout, proc=proc, log=log)
        yield Server(proc, base_url.rstrip("/"), log)
    finally:
        left = stop_group(proc)
        if left:
            raise ServerError(f"processes left after stopping {argv[0]}: {left}" + _tail(log))
        if own_tmp is not None:
            shutil.rmtree(own_tmp, ignore_errors=True)


def stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM the process group led by `proc`, SIGKILL it after `timeout`; return what is left."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader; orphaned children are reaped by init
            if not group_members(pgid):
                return []
            time.sleep(0.1)
    proc.wait(timeout=1)
    return group_members(pgid)


def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, as 'pid command'; Linux /proc only."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # exited while we looked
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{entry.name} {cmdline}")
    return found


def executable(name: str) -> str:
    """A console script of this interpreter's environment (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name} not found beside {sys.executable} nor on PATH")
    return found


# Job execution starts a separate job-runner process tree that a test never needs.
MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    log: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[str]:
    """An MLflow tracking server with one worker, serving artifacts from `artifacts_dir`.

    Yields its base URL, e.g. http://127.0.0.1:41234. `backend_uri` is an SQLAlchemy URL
    (postgresql+psycopg://..., sqlite:///...). `extra_args` go after the defaults, e.g.
    ("--allowed-hosts", "mlflow:5000") or ("--gunicorn-opts", "--threads 4").
    """
    port = free_port()
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        executable("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts_dir),
        *extra_args,
    ]
    url = f"http://127.0.0.1:{port}"
    with serve(argv, url, ready_path="/health", env=MLFLOW_ENV, log=log, timeout=timeout) as server:
        yield server.url


@contextlib.contextmanager
def optuna_dashboard(
    storage_url: str, *, log: Path | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """optuna-dashboard on a study database; yields its base URL (the UI is at /dashboard)."""
    port = free_port()
    argv = [executable("optuna-dashboard"), storage_url, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serve(argv, url, ready_path="/api/studies", log=log, timeout=timeout) as server:
        yield server.url


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(text)} lines of {log} ---\n" + "\n".join(text)
