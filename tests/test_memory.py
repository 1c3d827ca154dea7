"""A worker keeps the memory its training steps free (tuner.memory): the large tensors a step
frees and allocates again are not handed back to the system and faulted in again at every step
(measured on the word LM: 107k-176k minor faults in 30 steps by default, 6k-7k kept; counts
that move with the machine's load, so the test checks what glibc keeps instead)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, tiny_study, write_study

# What glibc's malloc keeps after a 100 MB block is freed (`mallinfo2`'s free bytes, in MB). By
# default a block past 32 MB is mapped alone and unmapped when freed: nothing kept, and a training
# step that frees and allocates its large tensors again faults all their pages in again each time.
KEPT_AFTER_FREE = """
import ctypes


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]


libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
block = libc.malloc(100 << 20)
ctypes.memset(block, 1, 100 << 20)
libc.free(block)
print("kept", libc.mallinfo2().fordblks >> 20)
"""


def kept_mb(code: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + KEPT_AFTER_FREE],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return int(done.stdout.rsplit("kept", 1)[1])


def test_after_a_run_the_worker_process_reuses_freed_memory(workdir: Path):
    study = write_study(workdir / "s.yaml", tiny_study(budget={"n_trials": 1, "max_epochs": 1}))
    ran_a_study = f"""
        from tuner.cli import main

        try:
            main(["run", {str(study)!r}, "--workers", "1"])
        except SystemExit as e:
            assert e.code == 0, e.code
    """
    assert kept_mb(ran_a_study) >= 100  # the worker's process keeps the freed block
    assert kept_mb("") < 100  # glibc's defaults: a process of its own gives it back
    assert kept_mb(ran_a_study, MALLOC_TRIM_THRESHOLD_="131072") < 100  # the user's setting wins
