"""glibc's malloc in a worker: memory a training step frees is kept for the next step.

By default glibc hands the top of its heap back to the system once more than a threshold is free
there, and serves large blocks by mmap, unmapped again when freed; the threshold moves with what
the process frees. A training step frees and reallocates the same large tensors at every step
(a word-level LM's 16 MB of logits and their gradient), so the memory went back and forth and
every page of it was faulted in again: the word LM trial took 1.0-1.16 million minor faults for
2 epochs of 60k tokens, the bare loop of benchmarks/bench_overhead.py 0.4-0.9 million, and that
was the trial's 4-29% (`python -m benchmarks --only overhead`, docs/performance.md). With the
thresholds fixed high, both take almost none (0-1,500) and the trial is within 0.3-1.8% of the
loop. The price: a worker keeps the memory of its largest step until it exits (the peak it
needed anyway); the user's own MALLOC_* or GLIBC_TUNABLES settings win.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_FROM = 256 << 20  # blocks this large are still mapped and unmapped alone
TRIM_FROM = 1 << 30  # free memory at the heap's top kept up to this much
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds for this process (see above); whether they were set: not on other
    C libraries or systems, nor when the user tuned malloc through the environment."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; musl has none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_FROM)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_FROM))
