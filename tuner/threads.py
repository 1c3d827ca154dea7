"""Intra-op torch threads per trial, chosen by the network's size (docs/performance.md, "Threads").

Measured by `python -m benchmarks --only threads`: a second thread buys nothing for networks of
the quickstart's size or the classic small word-level LSTM language model, and costs a lot as
soon as another process wants a core. So a trial trains on one thread unless its network has at
least SECOND_THREAD_FROM parameters, and then on at most its worker's share of the cores. The
user's OMP_NUM_THREADS fixes the count for every trial instead. The OpenMP wait policy (passive:
idle threads sleep rather than spin against other processes) must be set before torch starts;
tuner.cli does it. Nothing heavy is imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# The smallest network measured where a second thread was not slower; below it, one thread.
SECOND_THREAD_FROM = 20_000_000


@dataclass(frozen=True)
class Threads:
    """How many intra-op threads a worker's trials use."""

    fixed: int | None = None  # the user's OMP_NUM_THREADS: every trial, whatever its size
    share: int = field(default_factory=lambda: os.cpu_count() or 1)  # this worker's cores

    def for_network(self, n_params: int) -> int:
        if self.fixed is not None:
            return self.fixed
        return max(1, self.share) if n_params >= SECOND_THREAD_FROM else 1
