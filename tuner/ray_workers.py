"""`rnn-tuner run FILE --ray [ADDRESS]`: the study's workers as actors on a Ray cluster.

Each actor is one worker running the same loop as a `--workers` process
(tuner.launch.run_indexed -> tuner.worker.run_worker): the same storage and MLflow store, the
same exact budget, heartbeats and retries. Ray places each actor on a node that has the
resources it reserves (`cluster.resources`) and starts again one whose process died
(`cluster.ray.max_restarts`); the trial that process was running fails by the heartbeat path and
is queued again. One small coordinating actor passes a signal to the command on to every worker
and counts the command's own trials (`--n-trials`) across them.

Ray is an optional extra (`pip install 'rnn-tuner[ray]'`), imported only here, only for --ray.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from tuner.config import Resources
from tuner.errors import ENVIRONMENT, INTERRUPTED, BadInput
from tuner.request import RunRequest

EXTRA = "pip install 'rnn-tuner[ray]'"
# A local Ray's object store: the workers pass nothing through it, and Ray's smallest is 75 MiB.
LOCAL_OBJECT_STORE_BYTES = 80 * 1024 * 1024
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's head node before the run is an error
STOP_SIGNAL = signal.SIGINT  # what each worker gets: its running trial fails and is recorded


class RayUnreachable(RuntimeError):
    """The Ray cluster could not be reached or started (exit code 1)."""


@dataclass
class RayPlan:
    """Where and how the workers run, as the command line and the study file say."""

    address: str | None  # None: a Ray on this machine, started for the run
    workers: int | None  # None: as many as the cluster fits
    max_restarts: int = 2
    resources: Resources = field(default_factory=Resources)
    env: dict[str, str] = field(default_factory=dict)  # this shell's variables the workers need


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise BadInput(
            f"--ray (or cluster.ray in the study file) needs Ray, which is not installed "
            f"({e}): {EXTRA}; or run without Ray (--workers N on this machine)"
        ) from None
    return ray


def run_on_ray(req: RunRequest, plan: RayPlan) -> int:
    """Start the workers on the cluster, wait for them, and return the command's exit code."""
    ray = import_ray()
    _connect(ray, plan.address)
    try:
        n_workers = _worker_count(ray, plan)
        coordinator_name = f"rnn-tuner-{uuid.uuid4().hex[:12]}"
        coordinator = ray.remote(num_cpus=0)(Coordinator).options(name=coordinator_name).remote()
        actor = ray.remote(RnnTunerWorker).options(
            num_cpus=plan.resources.cpus,
            num_gpus=plan.resources.gpus,
            max_restarts=plan.max_restarts,
            max_task_retries=plan.max_restarts,  # a restarted worker runs its loop again
        )
        workers = [actor.remote(coordinator_name) for _ in range(n_workers)]
        cores, env = plan.resources.cpus, plan.env
        refs = [w.run.remote(req, i, n_workers, cores, env) for i, w in enumerate(workers)]
        signum = _wait(ray, refs, coordinator, req.handle_signals)
        outcomes = [_outcome(ray, ref, i, plan.max_restarts) for i, ref in enumerate(refs)]
    finally:
        ray.shutdown()
    for code, line in outcomes:
        print(line, file=sys.stdout if code in (0, INTERRUPTED) else sys.stderr, flush=True)
    codes = [code for code, _ in outcomes]
    if signum is not None:  # SIGTERM stops the run as `docker stop` stops a worker: exit 0
        return (
            INTERRUPTED
            if signum == signal.SIGINT
            else max((c for c in codes if c != INTERRUPTED), default=0)
        )
    return max(codes, key=lambda c: (c == INTERRUPTED, c != 0, c))


def _connect(ray: Any, address: str | None) -> None:
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is not None:
        _reachable(address)
    try:
        if address is None:  # "local": never an existing cluster this machine happens to run
            ray.init(
                address="local",
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                **quiet,
            )
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = "start a local Ray" if address is None else f"reach the Ray cluster at {address}"
        raise RayUnreachable(
            f"could not {where}: {e}. Check the address (`ray status --address {address or 'auto'}` "
            "on a node of the cluster), or give none to run on a Ray started on this machine"
        ) from None


def _reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on is an error within seconds: Ray itself would try to
    reach it again and again, for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # `auto`, or a form Ray checks itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise RayUnreachable(
            f"could not reach the Ray cluster at {address} ({e}). Check the address: the head "
            "node's `ray start --head --port PORT` and its host, as the machine running this "
            "command reaches it; or give none to run on a Ray started on this machine"
        ) from None


def _worker_count(ray: Any, plan: RayPlan) -> int:
    """`plan.workers`, or as many as the cluster's nodes fit; a worker no node can ever hold is
    an error (exit code 2) rather than a run that waits forever."""
    need = plan.resources
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = sum(_fits(node, need) for node in nodes)
    have = ", ".join(f"{n.get('CPU', 0):g} CPUs {n.get('GPU', 0):g} GPUs" for n in nodes)
    if fits == 0:
        raise BadInput(
            f"no node of the Ray cluster can hold a worker of cpus: {need.cpus}, gpus: "
            f"{need.gpus:g} (cluster.resources); its nodes have {have or 'nothing'}. Lower "
            "cluster.resources or add a node that has them"
        )
    n = plan.workers or fits
    print(
        f"Ray cluster {ray.get_runtime_context().gcs_address}: {len(nodes)} node(s) ({have}); "
        f"{n} worker(s) of cpus: {need.cpus}, gpus: {need.gpus:g}",
        file=sys.stderr,
        flush=True,
    )
    if n > fits:
        print(
            f"warning: the cluster fits {fits} of the {n} workers now; the others start as "
            "resources free up (or as Ray's autoscaler adds nodes)",
            file=sys.stderr,
            flush=True,
        )
    return n


def _fits(node: dict[str, float], need: Resources) -> int:
    count = int(node.get("CPU", 0) // need.cpus)
    if need.gpus:
        count = min(count, int(node.get("GPU", 0) // need.gpus))
    return count


def _wait(ray: Any, refs: list[Any], coordinator: Any, handle_signals: bool) -> int | None:
    """Wait for every worker; the first SIGINT/SIGTERM (or Ctrl-C from tuner.api) is passed on
    to all of them. Returns the signal received, if any."""
    received: list[int] = []
    installed = handle_signals and threading.current_thread() is threading.main_thread()
    sigs = (signal.SIGINT, signal.SIGTERM) if installed else ()
    previous = {sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in sigs}
    try:
        pending, passed_on = list(refs), False
        while pending:
            try:
                _, pending = ray.wait(pending, timeout=0.5)
            except KeyboardInterrupt:
                received.append(signal.SIGINT)
            if received and not passed_on:
                coordinator.stop.remote(int(STOP_SIGNAL))
                passed_on = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None


def _outcome(ray: Any, ref: Any, index: int, max_restarts: int) -> tuple[int, str]:
    """A worker's exit code and last line; a worker that died for good is an environment error."""
    from tuner.config import shorten
    from tuner.urls import redact

    try:
        return ray.get(ref)
    except Exception as e:
        reason = shorten(
            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 300
        )
        return ENVIRONMENT, (
            f"[w{index}] error: the worker's Ray actor ended after {max_restarts} restart(s) "
            f"(cluster.ray.max_restarts): {redact(reason)}"
        )


class Coordinator:
    """One per run, as a Ray actor on any node: the stop signal for every worker, and the
    command's trial count (`--n-trials` across all the workers)."""

    def __init__(self) -> None:
        import asyncio

        self.stopped, self.signum, self.count = asyncio.Event(), 0, 0

    async def stop(self, signum: int) -> None:
        self.signum = signum
        self.stopped.set()

    async def stop_signal(self) -> int:
        await self.stopped.wait()
        return self.signum

    async def add(self, step: int, limit: int) -> bool:
        if self.count + step > limit:
            return False
        self.count += step
        return True


class RayCount:
    """The command's trial count (budget.Slots), kept by the run's Coordinator."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    def add(self, step: int, limit: int) -> bool:
        import ray

        return ray.get(self.coordinator.add.remote(step, limit))


class RnnTunerWorker:
    """One worker of the study, as a Ray actor; Ray starts it again if its process dies."""

    def __init__(self, coordinator_name: str) -> None:
        import ray

        self.coordinator = ray.get_actor(coordinator_name)
        threading.Thread(target=self._pass_stop_on, daemon=True, name="rnn-tuner-stop").start()

    def _pass_stop_on(self) -> None:
        """The run's stop, as a signal to the thread that runs trials (the actor's main thread),
        where tuner.interrupts fails the running trial and records it."""
        import ray

        try:
            signum = ray.get(self.coordinator.stop_signal.remote())
        except Exception:  # the run is over and its coordinator gone: nothing to stop
            return
        signal.pthread_kill(threading.main_thread().ident, signum)

    def run(
        self, req: RunRequest, index: int, n_workers: int, cores: int, env: dict[str, str]
    ) -> tuple[int, str]:
        import ray

        from tuner.launch import run_indexed

        os.environ.update(env)  # before torch and MLflow start here: threads, login
        req.where = {
            "rnn_tuner.ray_node": ray.get_runtime_context().get_node_id(),
            "rnn_tuner.host": ray.util.get_node_ip_address(),
        }
        # Ray blocks SIGINT in its workers; this one's trials must see the run's stop.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            return run_indexed(req, index, n_workers, RayCount(self.coordinator), cores)
        except KeyboardInterrupt:  # stopped while it was still starting, before any trial
            return INTERRUPTED, f"[w{index}] stopped before its first trial"
