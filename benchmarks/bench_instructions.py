"""The overhead benchmark's cases counted in CPU instructions, a measure that repeats.

On the shared 2-core machines here one round of the overhead benchmark moves by 10 to 45% and a
median of nine rounds by a few percent (its noise-floor row): as much as is left to cut. callgrind
(valgrind) counts the instructions a process executes; the same code on the same inputs gives the
same count to a few in 100,000 whatever else the machine runs (torch on one thread: an OpenMP
thread spinning in its wait adds instructions as the scheduler pleases).

One callgrind process imports and warms up uninstrumented, then runs each case of
`bench_overhead` (not the word LM: hours under callgrind) as its bare loop and as one rnn-tuner
trial, with the overhead rows' own functions, and the first case's bare loop a second time
(the repeat row). A client request (`callgrind_requests.c`, built here with the machine's C
compiler) zeroes the counters where the overhead rows start their clock and dumps them at the
first epoch's end, the last epoch's end and where the clock stops, so each side splits like the
time rows: instructions per epoch after the first (`steady_epoch_ratio`) and per trial beyond its
epochs (`fixed_per_trial`).

What a count leaves out: waiting (an fsync, a lock, the MLflow sender's reply), cache misses and
the cost of an instruction, so an fsync-heavy change must still be judged by the time rows; and
the MLflow sender process, which works on the other core (its CPU share is in the overhead
benchmark's live-curves row). The trial's threads (the heartbeat) are counted.

    python -m benchmarks --only instructions       # needs valgrind with its headers and gcc
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Skip, row

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(__file__).with_name("callgrind_requests.c")
LIBRARY = Path.home() / ".cache" / "rnn-tuner" / "callgrind" / "libcallgrind_requests.so"
TARGET = 1.05  # the overhead benchmark's target, in instructions
# Counts of the same run repeat to a few in 100,000 (two runs of one script); the bare loop
# against itself must come within this of 1, or the counts are not to be trusted.
REPEATS_WITHIN = 0.001
BARE, TRIAL, BARE_AGAIN = "bare", "trial", "bare again"  # the sides counted (the first case: all)
COUNTED_ENVIRONMENT = {
    # one torch thread: OpenMP's workers spin while they wait, and spinning is counted
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # oneDNN's and MKL's AVX2 kernels (their choice under valgrind, which hides AVX-512) run
    # 20 to 50 times slower under valgrind than their AVX ones: four training steps of an
    # LSTM-64 (oneDNN) took 69 s, not 2 s; of a GRU-64 (MKL's matrix products) 50 s, not 3 s
    "ONEDNN_MAX_CPU_ISA": "AVX",
    "MKL_ENABLE_INSTRUCTIONS": "AVX",
    "PYTHONHASHSEED": "0",  # the same set and dict orders in every run
}
PARTS = ("first", "epochs", "end")
PROGRESS = "counted: "  # the child's line as each case is done  # start to first epoch end, to last epoch end, to the end


def run(quick: bool) -> list[dict[str, Any]]:
    library = requests_library()
    with tempfile.TemporaryDirectory(prefix="rnn-tuner-callgrind-") as tmp:
        out = Path(tmp)
        log = out / "callgrind.log"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",  # the imports run uninstrumented: minutes saved
            f"--callgrind-out-file={out}/callgrind.%p",
            sys.executable,
            "-m",
            "benchmarks.bench_instructions",
            "--child",
            "quick" if quick else "full",
            str(out),
            str(library),
        ]
        env = {**os.environ, **COUNTED_ENVIRONMENT}
        with (
            log.open("w") as sink,
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ) as child,
        ):
            assert child.stdout is not None
            for line in child.stdout:  # a full run takes most of an hour: say where it is
                sink.write(line)
                if line.startswith(PROGRESS):
                    print(line.rstrip(), file=sys.stderr, flush=True)
        if child.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the callgrind run failed (exit {child.returncode}):\n{tail}")
        plan = json.loads((out / "plan.json").read_text())
        counts = dump_totals(out, plan["pid"])
    return rows(plan["cases"], counts)


def requests_library() -> Path:
    """The client requests as a shared library, built once per change of its source."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if shutil.which("valgrind") is None or compiler is None:
        raise Skip("needs valgrind and a C compiler: apt-get install valgrind gcc")
    if LIBRARY.exists() and LIBRARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return LIBRARY
    LIBRARY.parent.mkdir(parents=True, exist_ok=True)
    building = LIBRARY.with_suffix(f".{os.getpid()}.so")
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(building), str(SOURCE)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise Skip(
            "cannot build callgrind's client requests (valgrind's headers, "
            f"valgrind/callgrind.h, come with Debian's valgrind package): {done.stderr.strip()}"
        )
    building.replace(LIBRARY)
    return LIBRARY


def dump_totals(out: Path, pid: int) -> dict[str, int]:
    """The instruction total of each client-request dump of process `pid`, by its name."""
    totals = {}
    for path in out.glob(f"callgrind.{pid}.*"):
        name = total = None
        with path.open() as f:
            for line in f:
                if line.startswith("desc: Trigger: Client Request: "):
                    name = line.split(": ", 3)[3].strip()
                elif line.startswith("totals: "):
                    total = int(line.split()[1])
        if name is not None and total is not None:
            totals[name] = total
    return totals


def rows(cases: list[dict[str, Any]], counts: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for case in cases:
        n = case["epochs"]
        bare, trial = (_split(counts, case["name"], side, n) for side in (BARE, TRIAL))
        ratio = trial["total"] / bare["total"]
        out.append(
            row(
                f"instructions: {case['name']}",
                ratio,
                f"<= {TARGET}",
                ratio <= TARGET,
                summary=(
                    f"{trial['total'] / n / 1e6:.0f} M an epoch against {bare['total'] / n / 1e6:.0f} M;"
                    f" an epoch after the first {trial['steady'] / bare['steady']:.3f},"
                    f" {trial['fixed'] / 1e6:.0f} M a trial beyond its epochs"
                ),
                epochs=n,
                bare_instructions=bare["total"],
                trial_instructions=trial["total"],
                steady_epoch_ratio=trial["steady"] / bare["steady"],
                fixed_per_trial=trial["fixed"],
                bare_fixed=bare["fixed"],
            )
        )
    first = cases[0]
    once, again = (
        _split(counts, first["name"], side, first["epochs"]) for side in (BARE, BARE_AGAIN)
    )
    ratio = again["total"] / once["total"]
    out.append(
        row(
            f"instructions repeat: the bare loop against itself ({first['name']})",
            ratio,
            f"within {REPEATS_WITHIN:.1%} of 1",
            abs(ratio - 1) <= REPEATS_WITHIN,
            summary=f"the two counts differ by {abs(ratio - 1):.4%}",
            bare_instructions=once["total"],
            again_instructions=again["total"],
        )
    )
    return out


def _split(counts: dict[str, int], case: str, side: str, epochs: int) -> dict[str, float]:
    """A side's total, its instructions per epoch after the first, and what it costs beyond
    `epochs` such epochs (set-up, the first epoch's extra, the end)."""
    first, rest, end = (counts[_dump_name(case, side, part)] for part in PARTS)
    total = first + rest + end
    steady = rest / (epochs - 1)
    return {"total": total, "steady": steady, "fixed": total - epochs * steady}


def _dump_name(case: str, side: str, part: str) -> str:
    return f"{case} | {side} | {part}"


# ---------------------------------------------------------------- inside callgrind


def _child(mode: str, out: str, library: str) -> None:
    from dataclasses import replace

    from benchmarks import bench_overhead as overhead
    from models.data import task_data
    from models.data.config import AddingData

    requests = ctypes.CDLL(library)
    # ctypes makes a function on its first use: not inside the first side counted
    requests.cg_zero, requests.cg_dump  # noqa: B018
    if not requests.cg_running():
        raise SystemExit("run me through `python -m benchmarks --only instructions`")
    quick = mode == "quick"
    overhead.like_a_worker()  # as the overhead benchmark does: one torch thread
    workdir = Path(out) / "work"
    workdir.mkdir()
    # warm-up, uninstrumented: first calls, the MLflow store's tables, the sender process
    warm_data = AddingData(seq_len=10, n_train=256, n_val=64, n_test=64)
    warm = replace(overhead._cases(True)[0]["settings"], max_epochs=2)
    overhead.tuner_trial(warm, warm_data, workdir, -1)
    overhead.bare_loop(warm, task_data(warm_data))
    requests.cg_start()
    cases = []
    for i, case in enumerate(overhead._cases(quick)):
        s, name = case["settings"], case["name"]
        task = task_data(case["data"])
        sides = {
            BARE: lambda mark: overhead.bare_loop(s, task, mark=mark),  # noqa: B023
            TRIAL: lambda mark: overhead.tuner_trial(s, case["data"], workdir, i, mark=mark),  # noqa: B023
        }
        if i == 0:
            sides[BARE_AGAIN] = sides[BARE]
        for side, run_side in sides.items():
            run_side(_Marks(requests, name, side, s.max_epochs))
        cases.append({"name": name, "epochs": s.max_epochs})
        print(f"{PROGRESS}{name}", flush=True)
    overhead._close_trackers()
    plan = {"pid": os.getpid(), "cases": cases}
    (Path(out) / "plan.json").write_text(json.dumps(plan))


class _Marks:
    """`mark` for the overhead functions: zero the counters at "start", dump them at the first
    and the last epoch's end and at "end"."""

    def __init__(self, requests: ctypes.CDLL, case: str, side: str, epochs: int) -> None:
        self.requests, self.case, self.side, self.epochs = requests, case, side, epochs
        self.seen = 0

    def __call__(self, at: str) -> None:
        if at == "start":
            self.requests.cg_zero()
        elif at == "epoch":
            self.seen += 1
            if self.seen in (1, self.epochs):
                self._dump(PARTS[0] if self.seen == 1 else PARTS[1])
        elif at == "end":
            if self.seen != self.epochs:
                raise RuntimeError(
                    f"{self.case} {self.side}: {self.seen} epochs, not {self.epochs}"
                )
            self._dump(PARTS[2])

    def _dump(self, part: str) -> None:
        self.requests.cg_dump(_dump_name(self.case, self.side, part).encode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:5])
    else:
        print(run(quick=True))
