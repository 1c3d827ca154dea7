"""Stopping a whole study: the study file's `budget.stop_after_no_improvement`, `budget.target`
and `budget.wall_time`. (models.stopping is another thing: early stopping inside one trial.)

Each rule is decided from the study's trials in its database, never from one worker's memory, so
every worker on every machine, on any storage, stops at the same point: a worker asks before it
claims a slot for its next trial (tuner.worker.run_trials), and one that finds a rule fired
claims none; trials already running finish normally. The first worker to see it records the
rule in the study (user attribute `stopped`, which `rnn-tuner status` prints) and on the MLflow
parent run (tags `stop_rule`, `stop_reason`).

The rules read the study as it is, so a later run with a looser value in the study file (a higher
patience, a harder target, a longer wall time) carries on where the study stopped, and clears
the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.config import StudyConfig
from tuner.study import best_trial

STOPPED_ATTR = "stopped"  # study user attribute: {"rule": ..., "reason": ...}
STOP_TAGS = ("stop_rule", "stop_reason")  # on the MLflow parent run
_ENDED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Stop:
    rule: str  # the study-file key, e.g. budget.target
    reason: str

    def line(self) -> str:
        return f"{self.rule}: {self.reason}"


class StopRules:
    """The rules a study file sets; `check(study)` says which one fired, if any."""

    def __init__(
        self,
        direction: str,
        primary: int = 0,
        patience: int | None = None,
        target: float | None = None,
        wall_time: float | None = None,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        """`direction` of objective `primary`; `clock` as Optuna stamps trials (local time)."""
        self.direction, self.primary = direction, primary
        self.patience, self.target, self.wall_time = patience, target, wall_time
        self.clock = clock

    @classmethod
    def of(cls, cfg: StudyConfig) -> StopRules:
        b = cfg.budget
        return cls(
            cfg.directions[cfg.primary_index],
            cfg.primary_index,
            b.stop_after_no_improvement,
            b.target,
            b.wall_time,
        )

    def __bool__(self) -> bool:
        return any(r is not None for r in (self.patience, self.target, self.wall_time))

    def check(self, study: optuna.Study) -> Stop | None:
        if not self:
            return None
        trials = study.get_trials(deepcopy=False)
        best = best_trial(study, self.primary)
        return self._wall_time(trials) or self._target(best) or self._patience(trials, best)

    def _wall_time(self, trials: list[Any]) -> Stop | None:
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        if self.wall_time is None or not starts:
            return None
        elapsed = (self.clock() - min(starts)).total_seconds()
        if elapsed < self.wall_time:
            return None
        return Stop(
            "budget.wall_time",
            f"{_duration(elapsed)} since the study's first trial started "
            f"(wall_time {_duration(self.wall_time)})",
        )

    def _target(self, best: Any) -> Stop | None:
        if self.target is None or best is None:
            return None
        value = best.values[self.primary]
        reached = value <= self.target if self.direction == "minimize" else value >= self.target
        if not reached:
            return None
        return Stop(
            "budget.target", f"trial {best.number} reached {value:.6g} (target {self.target:g})"
        )

    def _patience(self, trials: list[Any], best: Any) -> Stop | None:
        if self.patience is None:
            return None
        since = None if best is None else best.datetime_complete
        # In the order trials ended: with several workers, numbers are not that order.
        after = [
            t
            for t in trials
            if t.state in _ENDED
            and t.datetime_complete is not None
            and (since is None or t.datetime_complete > since)
        ]
        if len(after) < self.patience:
            return None
        held = "no trial has completed" if best is None else f"best still trial {best.number}"
        return Stop(
            "budget.stop_after_no_improvement",
            f"{len(after)} trial{'s' * (len(after) != 1)} ended without a better best ({held}; "
            f"stop_after_no_improvement {self.patience})",
        )


def _duration(seconds: float) -> str:
    """7384.2 -> `2h03m04s`."""
    s = round(seconds)
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def stop_record(study: optuna.Study) -> Stop | None:
    """The rule recorded as having stopped the study, if any (and not cleared by a resume)."""
    record = study.user_attrs.get(STOPPED_ATTR)
    return Stop(record["rule"], record["reason"]) if record else None


class StudyStopper:
    """A worker's side of the rules: asked before each claim, records a fired rule once (in
    the study and on the parent run), and at the start clears a record that no longer holds."""

    def __init__(self, rules: StopRules, study: optuna.Study, tracker: Any, parent_id: str):
        self.rules, self.study, self.tracker, self.parent_id = rules, study, tracker, parent_id
        self.fired: Stop | None = None
        if stop_record(study) is not None and rules.check(study) is None:
            study.set_user_attr(STOPPED_ATTR, None)  # Optuna cannot delete an attribute
            tracker.safely(tracker.delete_tags, parent_id, STOP_TAGS)

    def __call__(self) -> bool:
        """Whether the study is stopped: no more trials start."""
        if not self.rules:
            return False
        fired = self.rules.check(self.study)
        if fired is not None and self.fired is None:
            self.fired = fired
            if stop_record(self.study) is None:  # the first worker to see it
                self.study.set_user_attr(STOPPED_ATTR, {"rule": fired.rule, "reason": fired.reason})
                tags = dict(zip(STOP_TAGS, (fired.rule, fired.reason), strict=True))
                self.tracker.safely(self.tracker.set_tags, self.parent_id, tags)
        return fired is not None
