"""Constraints on trials: `sampler.constraints: ["n_params <= 1e5"]` in a study file.

Each is `NAME <= NUMBER` or `NAME >= NUMBER`; NAME is a figure every trial records (`n_params`,
`epochs`, `wall_time_s`) or a validation metric the task logs (its best value over the epochs).
When a trial completes, each constraint's violation (above 0: violated) goes to Optuna as the
trial's constraint (`Trial.set_constraint`, keyed by the constraint's text), where Optuna 5's
samplers (tpe, nsgaii, gp) steer by it and `best_trial` / the Pareto front leave infeasible
trials out, in every command that reads the study.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

RECORDED = ("n_params", "epochs", "wall_time_s")  # tuner.objective.TrialRecord.summary
_FORM = re.compile(r"^\s*([A-Za-z_][\w/]*)\s*(<=|>=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    text: str  # as written: the trial's constraint key
    name: str
    op: str  # "<=" or ">="
    bound: float

    def violation(self, figures: Mapping[str, float]) -> float:
        """How far the trial's figure is over the bound (<= 0: satisfied)."""
        value = figures.get(self.name, math.inf)  # never so: validate checks the names
        return value - self.bound if self.op == "<=" else self.bound - value


def parse(text: str) -> Constraint:
    """One constraint from its text; ValueError saying the form if it is not one."""
    match = _FORM.match(text) if isinstance(text, str) else None
    bound = _number(match[3]) if match else None
    if match is None or bound is None:
        raise ValueError(
            f"{text!r} is not a constraint; write NAME <= NUMBER or NAME >= NUMBER, "
            "e.g. 'n_params <= 1e5'"
        )
    return Constraint(text, match[1], match[2], bound)


def figures(summary: Mapping[str, float], last_row: Mapping[str, float]) -> dict[str, float]:
    """What constraints can name: the trial's summary (`RECORDED`) and, from its last epoch's
    row, each validation metric's best value so far (`best_<metric>`)."""
    best = {key.removeprefix("best_"): v for key, v in last_row.items() if key.startswith("best_")}
    return {**best, **{name: float(summary[name]) for name in RECORDED}}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
