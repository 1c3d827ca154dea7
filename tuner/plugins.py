"""Samplers and pruners by name: the one table that `validate` checks a study file against and
that tuner.study builds the study's sampler and pruner from.

Optuna's own classes are the plug-in interface; an entry only adds our defaults, and the study
file's `options:` are passed on as keyword arguments (they win over the defaults). Optuna is
imported when a sampler or pruner is built, not when a study file is validated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Defaults:
    """What the tables' defaults depend on, taken from the study file."""

    seed: int | None  # None: a joining worker must not replay the creator's seeded draws
    max_steps: int  # the last step a trial reports: max_epochs, or the folds of cross-validation
    warmup_epochs: int  # see tuner.study.warmup_epochs
    grid: Callable[[], dict[str, list[Any]]]  # the grid sampler's space


def _samplers() -> Any:
    import optuna

    return optuna.samplers


def _pruners() -> Any:
    import optuna

    return optuna.pruners


Options = dict[str, Any]

SAMPLERS: dict[str, Callable[[Options, Defaults], Any]] = {
    # Constant liar: parallel workers do not all receive the same promising parameters.
    "tpe": lambda o, d: _samplers().TPESampler(**{"constant_liar": True, "seed": d.seed, **o}),
    "random": lambda o, d: _samplers().RandomSampler(**{"seed": d.seed, **o}),
    "grid": lambda o, d: _samplers().GridSampler(d.grid(), **{"seed": d.seed, **o}),
    "cmaes": lambda o, d: _samplers().CmaEsSampler(**{"seed": d.seed, **o}),
    "qmc": lambda o, d: _samplers().QMCSampler(**{"seed": d.seed, **o}),
    "gp": lambda o, d: _samplers().GPSampler(**{"seed": d.seed, **o}),
    "nsgaii": lambda o, d: _samplers().NSGAIISampler(**{"seed": d.seed, **o}),
}
# Samplers that handle several objectives (a Pareto front).
MULTI_OBJECTIVE_SAMPLERS = ("nsgaii", "tpe", "random", "grid", "qmc", "gp")

PRUNERS: dict[str, Callable[[Options, Defaults], Any]] = {
    "median": lambda o, d: _pruners().MedianPruner(
        **{"n_startup_trials": 4, "n_warmup_steps": d.warmup_epochs, **o}
    ),
    "percentile": lambda o, d: _pruners().PercentilePruner(
        **{"percentile": 25.0, "n_startup_trials": 4, "n_warmup_steps": d.warmup_epochs, **o}
    ),
    "successive-halving": lambda o, d: _pruners().SuccessiveHalvingPruner(**o),
    "hyperband": lambda o, d: _pruners().HyperbandPruner(**{"max_resource": d.max_steps, **o}),
    "threshold": lambda o, d: _pruners().ThresholdPruner(**o),  # {upper: 1.0}: stop divergers
    "none": lambda o, d: _pruners().NopPruner(**o),
}
# Pruners that wait `n_warmup_steps` epochs before they can prune.
WARMUP_PRUNERS = ("median", "percentile")


def build(
    kind: str,
    table: dict[str, Callable[[Options, Defaults], Any]],
    name: str,
    options: Options,
    defaults: Defaults,
) -> Any:
    """`table[name]` built with `options`; a clear ValueError for an unknown name or option."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(table)}")
    try:
        return table[name](options, defaults)
    except TypeError as e:  # a misspelt option reaches Optuna's constructor
        raise ValueError(f"{kind} {name}: bad option ({e}); see Optuna's documentation") from e
