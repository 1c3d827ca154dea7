"""A real one-node Slurm cluster for tests: munged, slurmctld and slurmd on 127.0.0.1.

Everything lives in one directory (configuration, munge key and socket, state, logs); the daemons
run in the foreground, each in its own process group, and are stopped when the context exits.

    with slurm_cluster(tmp_path / "slurm") as env:   # env: {"SLURM_CONF": ...}
        subprocess.run(["sbatch", "--wait", "job.sh"], env={**os.environ, **env})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers import ServerError, _tail, free_port, stop_group

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")

SLURM_CONF = """\
ClusterName=rnntest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# bind to 127.0.0.1, the address localhost resolves to, instead of every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
# no cgroups (a container may not have them): plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2048 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> list[str]:
    """The Slurm and munge programs this machine lacks (Debian: slurmctld slurmd slurm-client
    munge)."""
    return [name for name in DAEMONS if shutil.which(name) is None]


@contextlib.contextmanager
def slurm_cluster(root: Path, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start the cluster under `root`; yield the environment that Slurm commands need."""
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            root=root, ctld_port=free_port(), slurmd_port=free_port(), cpus=os.cpu_count() or 1
        )
    )
    env = {"SLURM_CONF": str(conf)}
    munge = f"{root}/munge"
    commands = {
        "munged": [
            "munged",
            "-F",
            "-f",
            f"--socket={munge}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/seed",
            f"--log-file={root}/log/munged.log",
        ],  # fmt: skip
        "slurmctld": ["slurmctld", "-D", "-i", "-L", f"{root}/log/slurmctld.log"],
        "slurmd": ["slurmd", "-D", "-N", "localhost", "-L", f"{root}/log/slurmd.log"],
    }
    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        for name, argv in commands.items():
            procs.append((name, _start(argv, root / "log" / f"{name}.out", env)))
            if name == "munged":
                _wait(lambda: (root / "munge" / "munge.socket").exists(), timeout, procs, root)
        _wait(lambda: _node_state(env) == "idle", timeout, procs, root)
        yield env
    finally:
        left = [p for _, proc in reversed(procs) for p in stop_group(proc)]
        if left:
            raise ServerError(f"Slurm processes left after the test: {left}")


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )


def _node_state(env: dict[str, str]) -> str:
    found = subprocess.run(
        ["sinfo", "--noheader", "--format=%T"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=10,
    )
    return found.stdout.strip()


def _wait(ready, timeout: float, procs: list, root: Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs:
            if proc.poll() is not None:
                logs = _tail(root / "log" / f"{name}.out") + _tail(root / "log" / f"{name}.log")
                raise ServerError(f"{name} exited with code {proc.returncode}" + logs)
        if ready():
            return
        time.sleep(0.3)
    logs = "".join(_tail(root / "log" / f"{n}.log") for n, _ in procs)
    raise ServerError(f"the Slurm cluster was not ready within {timeout:.0f} s" + logs)
