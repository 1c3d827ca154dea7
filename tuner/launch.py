"""`rnn-tuner run --workers N`: N worker processes on this machine, one study.

The workers are forked from a fork server that imported the heavy modules once (PRELOAD). Each
worker gets its share of the cores (the most threads a trial may use: tuner.threads) and, where
GPUs exist, its own device (round robin).
This module imports nothing heavy at the top, so the parent process stays light.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from typing import Any

from tuner.request import RunRequest

# Imported once, by the fork server, before it forks the workers: importing torch, Lightning and
# MLflow takes a process about 9 s of CPU here and 0.5 GB, which N spawned workers paid N times.
# The server imports and runs nothing else, so a worker starts with no torch threads, no CUDA
# state and no open connection, as a fresh interpreter would; the OpenMP settings in the
# environment (tuner.cli) are set before the server starts, and torch reads them at import.
PRELOAD = ["tuner.worker", "tuner.objective", "models.training"]


def run_workers(req: RunRequest, n_workers: int) -> int:
    """Start the workers, pass SIGINT/SIGTERM on to them, and return the command's exit code."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    shared = ProcessCount(ctx.Value("i", 0))
    procs = [
        ctx.Process(target=_worker, args=(req, i, n_workers, shared), name=f"worker-{i}")
        for i in range(n_workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    _join(procs, forward, req.handle_signals)
    codes = [p.exitcode or 0 for p in procs]
    return max(codes, key=lambda c: (c == 130, c != 0, c))


def _join(procs: list[Any], forward: Any, handle_signals: bool) -> None:
    """Wait for the workers. The command passes SIGINT/SIGTERM on as they come; from tuner.api
    (no handlers: a notebook), a KeyboardInterrupt here is passed on as SIGINT."""
    installed = handle_signals and threading.current_thread() is threading.main_thread()
    sigs = (signal.SIGINT, signal.SIGTERM) if installed else ()
    previous = {sig: signal.signal(sig, forward) for sig in sigs}
    try:
        for p in procs:
            try:
                p.join()
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
                p.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ProcessCount:
    """The trials this command's worker processes have started, in shared memory (budget.Slots)."""

    def __init__(self, value: Any) -> None:
        self.value = value  # a multiprocessing.Value("i")

    def add(self, step: int, limit: int) -> bool:
        with self.value.get_lock():
            if self.value.value + step > limit:
                return False
            self.value.value += step
            return True


def _worker(req: RunRequest, index: int, n_workers: int, shared: Any) -> None:
    cores = max(1, (os.cpu_count() or 1) // n_workers)
    code, line = run_indexed(req, index, n_workers, shared, cores)
    print(line, file=sys.stderr if code not in (0, 130) else sys.stdout, flush=True)
    sys.exit(code)


def run_indexed(
    req: RunRequest, index: int, n_workers: int, shared: Any, cores: int
) -> tuple[int, str]:
    """Worker `index` of `n_workers` started by one command (here or as a Ray actor), with
    `cores` for its trials' threads; returns its exit code and its last line (the summary, or
    the error that stopped it)."""
    from dataclasses import replace

    from tuner.cli import quiet_libraries
    from tuner.urls import hide_secrets
    from tuner.worker import run_worker

    quiet_libraries()  # as the command itself is: no Optuna log lines among ours
    hide_secrets(req.storage, req.tracking_uri)  # and its output's redaction

    # The most threads one trial may take; small networks take one (tuner.threads).
    req.threads = replace(req.threads, share=cores)

    # Its GPU, where there are GPUs, and its tag; under a cluster's index k (a Slurm array task
    # or Indexed Job pod running --workers N), k*N + index, unique across the study's workers.
    base = req.worker_index
    req.handle_signals = True  # the main thread of a process of its own, never a notebook's
    req.bars = False  # N processes redrawing bars on one terminal garble it: a line per trial
    req.worker_index = index if base is None else base * n_workers + index
    try:
        summary = run_worker(req, shared)
    except Exception as e:  # one line and the exit code, never a child's traceback
        from tuner.errors import exit_code
        from tuner.urls import redact

        return exit_code(e), f"[w{req.worker_index}] error: {redact(str(e))}"
    return (
        130 if summary.interrupted_by == "SIGINT" else 0,
        f"[w{req.worker_index}] {summary.line()}",
    )
