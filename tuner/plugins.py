"""Samplers and pruners by name: the one table that `validate` checks a study file against and
that tuner.study builds the study's sampler and pruner from.

Optuna's own classes are the plug-in interface; an entry only adds our defaults, and the study
file's `options:` are passed on as keyword arguments (they win over the defaults). Optuna is
imported when a sampler or pruner is built, not when a study file is validated.
"""

from __future__ import annotations

import builtins
import inspect
import warnings
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


Options = dict[str, Any]


@dataclass(frozen=True)
class Plugin:
    """An Optuna class by name, with our defaults (the study file's options win over them)."""

    cls: str  # in optuna.samplers or optuna.pruners
    defaults: Callable[[Defaults], Options] = lambda d: {}
    args: Callable[[Defaults], tuple[Any, ...]] = lambda d: ()  # positional: the grid's space
    # An option that is itself a pruner block `{name, options}`, and the argument it is built
    # into: the patient pruner's `wrapped` -> `wrapped_pruner`.
    nested: tuple[str, str] | None = None

    def optuna_class(self, kind: str) -> type:
        import optuna

        return getattr(optuna.samplers if kind == "sampler" else optuna.pruners, self.cls)


def _seeded(d: Defaults) -> Options:
    return {"seed": d.seed}


SAMPLERS: dict[str, Plugin] = {
    # Constant liar: parallel workers do not all receive the same promising parameters.
    "tpe": Plugin("TPESampler", lambda d: {"constant_liar": True, "seed": d.seed}),
    "random": Plugin("RandomSampler", _seeded),
    "grid": Plugin("GridSampler", _seeded, lambda d: (d.grid(),)),
    "cmaes": Plugin("CmaEsSampler", _seeded),
    "qmc": Plugin("QMCSampler", _seeded),
    "gp": Plugin("GPSampler", _seeded),
    "nsgaii": Plugin("NSGAIISampler", _seeded),
    "nsgaiii": Plugin("NSGAIIISampler", _seeded),  # many objectives
}
# Samplers that handle several objectives (a Pareto front).
MULTI_OBJECTIVE_SAMPLERS = ("nsgaii", "nsgaiii", "tpe", "random", "grid", "qmc", "gp")

PRUNERS: dict[str, Plugin] = {
    "median": Plugin(
        "MedianPruner", lambda d: {"n_startup_trials": 4, "n_warmup_steps": d.warmup_epochs}
    ),
    "percentile": Plugin(
        "PercentilePruner",
        lambda d: {"percentile": 25.0, "n_startup_trials": 4, "n_warmup_steps": d.warmup_epochs},
    ),
    "successive-halving": Plugin("SuccessiveHalvingPruner"),
    "hyperband": Plugin("HyperbandPruner", lambda d: {"max_resource": d.max_steps}),
    "threshold": Plugin("ThresholdPruner"),  # {upper: 1.0}: stop diverging trials
    # {patience: 3, wrapped: {name: median}}: only once a trial has not improved for 3 epochs;
    # without `wrapped`, early stopping on that alone.
    "patient": Plugin(
        "PatientPruner", lambda d: {"wrapped": None}, nested=("wrapped", "wrapped_pruner")
    ),
    # The trial's curve against the best trial's, epoch by epoch (or fold by fold).
    "wilcoxon": Plugin("WilcoxonPruner"),
    "none": Plugin("NopPruner"),
}
# Pruners that wait `n_warmup_steps` epochs before they can prune.
WARMUP_PRUNERS = ("median", "percentile")


def build(
    kind: str,
    table: dict[str, Plugin],
    name: str,
    options: Options,
    defaults: Defaults,
    subclass: type | None = None,
) -> Any:
    """`table[name]` built with `options`; a clear ValueError for an unknown name or option.
    `subclass`: one of ours in place of Optuna's class, taking its options and more."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(table)}")
    problems = option_problems(kind, table[name], options, defaults, subclass)
    if problems:
        raise ValueError("; ".join(problems))
    return _construct(kind, table[name], options, defaults, subclass)


def _construct(
    kind: str, plugin: Plugin, options: Options, defaults: Defaults, subclass: type | None = None
) -> Any:
    import optuna

    cls = subclass or plugin.optuna_class(kind)
    options = {**plugin.defaults(defaults), **options}
    if plugin.nested is not None:  # a pruner block inside: built from the same table
        key, argument = plugin.nested
        block = options.pop(key)
        options[argument] = None if block is None else _construct(
            kind, PRUNERS[block["name"]], dict(block.get("options") or {}), defaults
        )  # fmt: skip
    with warnings.catch_warnings():  # patient, wilcoxon: chosen in the study file, documented
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(*plugin.args(defaults), **options)


def option_problems(
    kind: str, plugin: Plugin, options: Options, defaults: Defaults, subclass: type | None = None
) -> list[str]:
    """What Optuna's class would refuse of `options`, each as `kind.options...: why`: a name
    its constructor does not take, a value of the wrong type, a required one missing, a bad
    nested pruner block, or what the constructor raises."""
    cls = plugin.optuna_class(kind)
    params = _options_of(cls, len(plugin.args(defaults)), plugin.nested)
    if subclass is not None:  # ours adds keyword-only options to Optuna's
        params.update(_options_of(subclass, 0))
    unknown = [name for name in options if name not in params]
    if unknown:
        valid = ", ".join(params) or "none"
        return [
            f"{kind}.options.{name}: {cls.__name__} takes no option {name!r}; valid: {valid}"
            for name in unknown
        ]
    problems = [
        f"{kind}.options.{name}: {cls.__name__} expects {expected} (got {value!r})"
        for name, value in options.items()
        if (expected := _type_problem(params[name], value))
    ]
    given = {**plugin.defaults(defaults), **options}
    problems += [
        f"{kind}.options.{name}: {cls.__name__} needs it (no default)"
        for name, param in params.items()
        if param.default is inspect.Parameter.empty and name not in given
    ]
    if plugin.nested is not None:
        problems += _nested_problems(kind, plugin.nested[0], given[plugin.nested[0]], defaults)
    if problems:
        return problems
    try:
        _construct(kind, plugin, options, defaults, subclass)
    except Exception as e:  # noqa: BLE001 - whatever the constructor refuses, said by Optuna
        return [f"{kind}.options: {cls.__name__} refuses them: {e}"]
    return []


def _nested_problems(kind: str, key: str, block: Any, defaults: Defaults) -> list[str]:
    """A nested pruner block (`{name: median, options: {...}}`, or null) checked like the
    pruner block itself, its problems under `kind.options.<key>`."""
    where = f"{kind}.options.{key}"
    if block is None:
        return []
    if not isinstance(block, dict) or not isinstance(block.get("name"), str):
        return [f"{where}: a pruner block `{{name: ..., options: {{...}}}}` (got {block!r})"]
    extra = sorted(set(block) - {"name", "options"})
    if extra:
        return [f"{where}: takes `name` and `options` only (got {', '.join(extra)})"]
    if block["name"] not in PRUNERS:
        return [f"{where}.name: unknown pruner {block['name']!r}; valid: {', '.join(PRUNERS)}"]
    options = block.get("options") or {}
    if not isinstance(options, dict):
        return [f"{where}.options: a mapping of option names to values (got {options!r})"]
    return option_problems(where, PRUNERS[block["name"]], options, defaults)


def _options_of(
    cls: type, n_positional: int, nested: tuple[str, str] | None = None
) -> dict[str, inspect.Parameter]:
    """The keyword arguments a constructor takes, after the ones we pass by position; a nested
    pruner's argument under the study file's name for it."""
    takes = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in inspect.signature(cls).parameters.values() if p.kind in takes]
    if nested is None:
        return {p.name: p for p in params[n_positional:]}
    key, argument = nested
    return {key if p.name == argument else p.name: p for p in params[n_positional:]}


def _type_problem(param: inspect.Parameter, value: Any) -> str | None:
    """The expected type, if `value` is not of it; only plain annotations (int, float | None,
    bool, str) are checked: Optuna's callables and samplers cannot come from YAML anyway."""
    annotation = param.annotation
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"__builtins__": builtins})  # noqa: S307 - Optuna's own
        except Exception:  # noqa: BLE001 - a typing construct: not checked
            return None
    if annotation is inspect.Parameter.empty or not _plain(annotation):
        return None
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(annotation).validate_python(value, strict=True)
    except ValidationError:
        return str(annotation).replace("<class '", "").replace("'>", "")
    return None


def _plain(annotation: Any) -> bool:
    parts = getattr(annotation, "__args__", (annotation,))
    return all(p in (int, float, bool, str, type(None)) for p in parts)
