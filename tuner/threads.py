"""Intra-op torch threads per trial, chosen by the network's size (docs/performance.md, "Threads").

The same rule sets how many workers `rnn-tuner run` starts when not told (`default_workers`):
one per core, since each trial of a small network keeps one core busy.

Measured by `python -m benchmarks --only threads`: on a quiet machine a second thread buys
little for networks of the quickstart's size (t(2)/t(1) 0.93 at 51k parameters) and a lot from a
few hundred thousand parameters up (0.63 at 266k, 0.63 for the small word-level LM); beside a
busy process it costs (1.19 at 51k, 1.03 at 266k, 1.10 for the word LM). So a trial trains on
one thread unless its network has at least SECOND_THREAD_FROM parameters, and then on at most
its worker's share of the cores. The user's OMP_NUM_THREADS fixes the count for every trial
instead. The OpenMP wait policy (passive:
idle threads sleep rather than spin against other processes) must be set before torch starts;
tuner.cli does it. Nothing heavy is imported here.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

# About the smallest network measured where a second thread clearly pays on a quiet machine
# (the 266k-parameter LSTM: 0.63 of one thread's time) and costs little beside a busy process
# (1.03); below it, one thread (2026-12-06, docs/performance.md "Threads per trial").
SECOND_THREAD_FROM = 250_000
# Memory set aside per default worker: a process with torch, Lightning and MLflow imported and a
# small network training stays well under it (a budget, not a measurement of every study).
WORKER_MEMORY = 1 << 30


def cores() -> int:
    """The cores this process may run on (a taskset or cgroup cpuset counts, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(fixed_threads: int | None, trials: int | None) -> int:
    """Workers for `rnn-tuner run` without --workers, on a storage several processes share: one
    per core (a trial below SECOND_THREAD_FROM parameters trains on one thread; a fixed
    OMP_NUM_THREADS=k takes k cores per worker), at most one per WORKER_MEMORY of memory, and
    no more than the `trials` there are to run."""
    n = cores() // (fixed_threads or 1)
    with contextlib.suppress(ValueError, OSError, AttributeError):  # sysconf where it exists
        n = min(n, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // WORKER_MEMORY)
    if trials is not None:
        n = min(n, trials)
    return max(1, n)


@dataclass(frozen=True)
class Threads:
    """How many intra-op threads a worker's trials use."""

    fixed: int | None = None  # the user's OMP_NUM_THREADS: every trial, whatever its size
    share: int = field(default_factory=lambda: os.cpu_count() or 1)  # this worker's cores

    def for_network(self, n_params: int) -> int:
        if self.fixed is not None:
            return self.fixed
        return max(1, self.share) if n_params >= SECOND_THREAD_FROM else 1
