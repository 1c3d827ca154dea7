"""A worker's progress: a bar on a terminal, one line per trial otherwise (logs, CI, containers)."""

from __future__ import annotations

import sys
import time

from optuna.trial import FrozenTrial, TrialState

from tuner.request import RunSummary


class Progress:
    def __init__(self, total: int | None, summary: RunSummary, worker_index: int | None) -> None:
        from tqdm import tqdm

        self.summary = summary
        self.prefix = "" if worker_index is None else f"[w{worker_index}] "
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="trial", disable=not self.tty, file=sys.stderr)
        self.started = time.perf_counter()

    def update(self, trial: FrozenTrial, best: FrozenTrial | None) -> None:
        states = self.summary.states
        counts = f"complete {states['COMPLETE']} pruned {states['PRUNED']} failed {states['FAIL']}"
        best_text = "-" if best is None else f"{_fmt(best.values)} (trial {best.number})"
        if self.tty:
            self.bar.set_postfix_str(f"{counts} | best {best_text}")
            self.bar.update(1)
            return
        value = "" if trial.values is None else f" {_fmt(trial.values)}"
        reason = trial.user_attrs.get("fail_reason", "") if trial.state == TrialState.FAIL else ""
        print(
            f"{self.prefix}trial {trial.number} {trial.state.name}{value}{' - ' + reason if reason else ''} | "
            f"{counts} | best {best_text} | {time.perf_counter() - self.started:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        self.bar.close()


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.5g}" for v in values)
