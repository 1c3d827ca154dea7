"""Search space -> `trial.suggest_*` calls; fixed + sampled values -> the trial's `Settings`.

Parameters are suggested in the study file's order, so a `when:` condition can look at a value
sampled above it; a parameter whose condition does not hold is not suggested at all and the
trial uses the fixed value or the default (e.g. momentum only for SGD).
"""

from __future__ import annotations

from typing import Any

import optuna

from models.config import Settings
from tuner.config import CategoricalDist, FloatDist, IntDist, StudyConfig, condition_holds


def suggest(trial: optuna.Trial, cfg: StudyConfig) -> tuple[Settings, dict[str, Any]]:
    """Sample this trial's parameters; returns (settings, sampled values by name)."""
    base = cfg.base_settings()
    sampled: dict[str, Any] = {}
    for name, dist in cfg.search.items():
        if dist.when and not condition_holds(dist.when, {**base.params(), **sampled}):
            continue
        sampled[name] = _suggest_one(trial, name, dist)
    return base.with_values(sampled), sampled


def _suggest_one(trial: optuna.Trial, name: str, dist: Any) -> Any:
    if isinstance(dist, FloatDist):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDist):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    assert isinstance(dist, CategoricalDist)
    return trial.suggest_categorical(name, dist.choices)


def grid_space(cfg: StudyConfig) -> dict[str, list[Any]]:
    """The grid sampler's search space: every categorical choice."""
    return {name: list(d.choices) for name, d in cfg.search.items()}  # type: ignore[union-attr]
