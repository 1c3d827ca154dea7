"""Start-up: wall time of `rnn-tuner --help` and `rnn-tuner validate studies/quickstart.yaml`
against `python -c pass`, each a fresh process, interleaved over rounds (order rotating), medians.

    python -m benchmarks --only startup [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import median, paired_ratio, row

ROOT = Path(__file__).resolve().parent.parent
HELP_LIMIT_S = 0.5


def commands() -> dict[str, list[str]]:
    """The installed console script when there is one (what users type), else `python -m tuner`."""
    script = Path(sys.executable).with_name("rnn-tuner")
    tuner = [str(script)] if script.exists() else [sys.executable, "-m", "tuner"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "rnn-tuner --help": [*tuner, "--help"],
        "rnn-tuner validate": [*tuner, "validate", str(ROOT / "studies" / "quickstart.yaml")],
    }


def wall_time(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(quick: bool) -> list[dict[str, Any]]:
    cmds = commands()
    rounds = 4 if quick else 12
    for cmd in cmds.values():  # warm the file cache: every round then starts alike
        wall_time(cmd)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    names = list(cmds)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(wall_time(cmds[name]))
    base = times["python -c pass"]
    rows = []
    for name in names[1:]:
        med = median(times[name])
        is_help = name.endswith("--help")
        rows.append(
            row(
                f"{name} vs python -c pass",
                paired_ratio(base, times[name]),
                f"<= {HELP_LIMIT_S} s" if is_help else "-",
                med <= HELP_LIMIT_S if is_help else None,
                summary=f"{med:.3f} s vs {median(base):.3f} s",
                median_s=med,
                python_s=median(base),
                rounds=rounds,
            )
        )
    return rows
