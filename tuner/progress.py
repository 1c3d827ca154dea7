"""A worker's progress: live bars on a terminal, one line per trial otherwise (logs, CI, containers).

On a terminal (stderr a TTY, one worker drawing) two tqdm bars: the trials done / budget with
the ETA and the best value so far, and under it the running trial's epoch / max_epochs with its
last validation value, redrawn after each epoch; each finished trial's line scrolls above them.
Elsewhere, and for `--workers N` (N processes on one terminal would redraw over each other), one
line per trial, plus one per epoch with `verbose` (`rnn-tuner run --verbose`), each prefixed
`[wN]` where the worker has an index.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from tuner.request import RunSummary


@dataclass
class Budget:
    """What the ETA counts down to: a number of trials, a deadline (time.monotonic()), both or
    neither (then no ETA)."""

    trials: int | None = None
    deadline: float | None = None


class Progress:
    def __init__(
        self,
        summary: RunSummary,
        budget: Budget,
        max_epochs: int,
        metrics: list[str],
        worker_index: int | None = None,
        bars: bool = True,
        verbose: bool = False,
    ) -> None:
        """`metrics`: the objectives' metrics, shown per epoch where logged; `bars`: draw bars
        if stderr is a terminal (False where several workers share it)."""
        self.summary, self.budget, self.max_epochs = summary, budget, max_epochs
        self.metrics, self.verbose = metrics, verbose
        self.prefix = "" if worker_index is None else f"[w{worker_index}] "
        self.bars = _Bars(budget.trials, max_epochs) if bars and sys.stderr.isatty() else None
        self.started = self.last_done = time.monotonic()
        self.done = 0  # trials finished by this worker
        self.best_text = "-"

    def start_trial(self, number: int) -> None:
        if self.bars:
            self.bars.start_trial(number, self._trials_text())

    def epoch(self, number: int, row: dict[str, float]) -> None:
        """After each epoch of trial `number`: its row of metrics (tuner.objective.EpochRecorder)."""
        epoch = int(row["epoch"]) + 1
        shown = [m for m in self.metrics if m in row] or sorted(k for k in row if "val_" in k)[:1]
        values = " ".join(f"{m} {row[m]:.5g}" for m in shown)
        if self.bars:
            self.bars.epoch(number, epoch, values, self._trials_text())
        if self.verbose:
            self._print(f"trial {number} epoch {epoch}/{self.max_epochs} {values}")

    def update(self, trial: FrozenTrial, best: FrozenTrial | None) -> None:
        """After each trial of this worker, with the study's best trial."""
        self.done, self.last_done = self.done + 1, time.monotonic()
        self.best_text = "-" if best is None else f"{_fmt(best.values)} (trial {best.number})"
        states = self.summary.states
        counts = f"complete {states['COMPLETE']} pruned {states['PRUNED']} failed {states['FAIL']}"
        value = "" if trial.values is None else f" {_fmt(trial.values)}"
        reason = trial.user_attrs.get("fail_reason", "") if trial.state == TrialState.FAIL else ""
        broken = [text for text, violation in trial.constraints.items() if violation > 0]
        if broken:  # tuner.constraints: never the best
            value += f" infeasible ({', '.join(broken)})"
        self._print(
            f"trial {trial.number} {trial.state.name}{value}{' - ' + reason if reason else ''} | "
            f"{counts} | best {self.best_text} | {time.monotonic() - self.started:.0f}s"
        )
        if self.bars:
            self.bars.trial_done(self._trials_text())

    def close(self) -> None:
        if self.bars:
            self.bars.close()

    def eta(self) -> float | None:
        """Seconds left, from the mean time of this worker's trials so far (None: no budget, or
        no trial finished yet)."""
        if self.done == 0:
            return None
        now = time.monotonic()
        mean = (self.last_done - self.started) / self.done  # a trial, with its overheads
        running = now - self.last_done  # into the running trial
        left = []
        if self.budget.trials is not None:
            left.append(max(self.budget.trials - self.done, 0) * mean - running)
        if self.budget.deadline is not None:  # the last trial starts before it and runs on
            left.append(max(self.budget.deadline - now, 0.0) + mean - running)
        return max(min(left), 0.0) if left else None

    def _trials_text(self) -> str:
        eta = self.eta()
        eta_text = "" if eta is None else f"ETA {_clock(eta)} | "
        return f"{eta_text}best {self.best_text}"

    def _print(self, line: str) -> None:
        if self.bars:
            self.bars.write(self.prefix + line)
        else:
            print(self.prefix + line, file=sys.stderr, flush=True)


class _Bars:
    """The two tqdm bars: trials (kept on screen at the end) and the running trial's epochs.
    Each one's changing text is its tqdm `desc`, drawn after the bar (tqdm's postfix would
    start with a comma)."""

    def __init__(self, total: int | None, max_epochs: int) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        budget = "{n_fmt}/{total_fmt} |{bar:20}|" if total else "{n_fmt} done |"
        self.trials = tqdm(
            total=total, desc="best -", file=sys.stderr, position=0,
            bar_format="trials " + budget + " {desc}",
        )  # fmt: skip
        self.epochs = tqdm(
            total=max_epochs, desc="waiting for a trial", file=sys.stderr, position=1,
            leave=False, bar_format="epoch  {n_fmt}/{total_fmt} |{bar:20}| {desc}",
        )  # fmt: skip

    def start_trial(self, number: int, trials_text: str) -> None:
        self.epochs.reset()
        self.epochs.set_description_str(f"trial {number}")
        self.trials.set_description_str(trials_text)

    def epoch(self, number: int, epoch: int, values: str, trials_text: str) -> None:
        self.epochs.n = epoch
        self.epochs.set_description_str(f"trial {number} {values}")  # refreshes
        self.trials.set_description_str(trials_text)

    def trial_done(self, trials_text: str) -> None:
        self.trials.set_description_str(trials_text, refresh=False)
        self.trials.update(1)

    def write(self, line: str) -> None:
        self.tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.epochs.close()
        self.trials.close()


def _clock(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.5g}" for v in values)
