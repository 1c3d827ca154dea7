"""The instruction counts `python -m benchmarks --only instructions` rests on, under real valgrind:
the client requests built from `benchmarks/callgrind_requests.c` zero and dump callgrind's
counters from Python, the dumps are read back by name, and the counts repeat and scale with the
work. Needs valgrind (with its headers) and a C compiler: skipped without them, except in CI,
where `.ci/run` installs valgrind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_instructions
from benchmarks.common import Skip

# A loop of pure Python: the interpreter's instructions, no library of varying speed.
SCRIPT = """
import ctypes, sys
requests = ctypes.CDLL(sys.argv[1])
assert requests.cg_running()

def work(n):
    total = 0
    for i in range(n):
        total += i & 7  # small ints: the same work at every step
    return total

zero, dump = requests.cg_zero, requests.cg_dump  # ctypes makes each on first use
work(20_000)  # the first call's allocations
requests.cg_start()
for name, n in (("once", 20_000), ("twice", 40_000), ("once again", 20_000)):
    zero()
    work(n)
    dump(name.encode())
"""


@pytest.fixture
def library() -> Path:
    try:
        return bench_instructions.requests_library()
    except Skip as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the instruction counts must be tested in CI: {e}")
        pytest.skip(str(e))


def test_counts_repeat_and_scale_with_the_work(library: Path, tmp_path: Path) -> None:
    script = tmp_path / "work.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [
            shutil.which("valgrind") or "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp_path}/callgrind.%p",
            sys.executable,
            str(script),
            str(library),
        ],
        env={**os.environ, **bench_instructions.COUNTED_ENVIRONMENT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pid = int(done.stderr.split("==", 2)[1])  # valgrind prefixes its lines with ==PID==
    counts = bench_instructions.dump_totals(tmp_path, pid)

    assert set(counts) == {"once", "twice", "once again"}
    assert counts["once"] > 20_000 * 10  # a Python loop step is tens of instructions
    assert abs(counts["once again"] / counts["once"] - 1) < bench_instructions.REPEATS_WITHIN
    assert counts["twice"] / counts["once"] == pytest.approx(2, rel=0.01)


def test_the_library_is_built_once(library: Path) -> None:
    built = library.stat().st_mtime_ns
    assert bench_instructions.requests_library() == library
    assert library.stat().st_mtime_ns == built
