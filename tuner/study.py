"""Storage URL, sampler, pruner and heartbeat -> an Optuna study, created once and loaded by
every other worker that names the same storage and study.

Samplers and pruners are plain dicts from name to Optuna constructor: Optuna's own classes are the
plug-in interface. The study file's `options:` are passed as keyword arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage

from tuner.config import StudyConfig
from tuner.space import grid_space
from tuner.urls import is_sqlite, redact

PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute shared by every worker


class StorageError(RuntimeError):
    """The study database cannot be reached or used."""


def make_sampler(cfg: StudyConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    s = optuna.samplers
    options = dict(cfg.sampler.options)
    seeded = {"seed": options.pop("seed", seed)}
    table: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        # Constant liar: parallel workers do not all receive the same promising parameters.
        "tpe": lambda: s.TPESampler(**{"constant_liar": True, **seeded, **options}),
        "random": lambda: s.RandomSampler(**seeded, **options),
        "grid": lambda: s.GridSampler(grid_space(cfg), **seeded, **options),
        "cmaes": lambda: s.CmaEsSampler(**seeded, **options),
        "qmc": lambda: s.QMCSampler(**seeded, **options),
        "gp": lambda: s.GPSampler(**seeded, **options),
        "nsgaii": lambda: s.NSGAIISampler(**seeded, **options),
    }
    return _build("sampler", cfg.sampler.name, table)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    p = optuna.pruners
    options = dict(cfg.pruner.options) if cfg.pruner else {}
    table: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "median": lambda: p.MedianPruner(
            **{"n_startup_trials": 4, "n_warmup_steps": warmup_epochs(cfg), **options}
        ),
        "percentile": lambda: p.PercentilePruner(
            **{
                "percentile": 25.0,
                "n_startup_trials": 4,
                "n_warmup_steps": warmup_epochs(cfg),
                **options,
            }
        ),
        "successive-halving": lambda: p.SuccessiveHalvingPruner(**options),
        "hyperband": lambda: p.HyperbandPruner(
            **{"max_resource": cfg.budget.max_epochs, **options}
        ),
        "threshold": lambda: p.ThresholdPruner(
            **options
        ),  # e.g. {upper: 1.0}: stop diverging trials
        "none": lambda: p.NopPruner(**options),
    }
    return _build("pruner", cfg.pruner_name, table)


def first_prunable_epoch(cfg: StudyConfig) -> int:
    """The first epoch at which the study's pruner can prune (its warm-up), 0 if unknown."""
    if cfg.pruner_name not in ("median", "percentile"):
        return 0
    options = cfg.pruner.options if cfg.pruner else {}
    return int(options.get("n_warmup_steps", warmup_epochs(cfg)))


def warmup_epochs(cfg: StudyConfig) -> int:
    """Epochs a median or percentile pruner waits before judging: half the budget, at least 2.

    A recurrent network often sits on a plateau for a few epochs before its loss drops (the
    adding problem at the mean's MSE); judged at epoch 2, such late starters were pruned, and
    the default search needed 0.59 of random search's epochs to match it, against 0.32 with
    half of max_epochs (benchmarks/bench_search.py, 5 seeds, max_epochs 6)."""
    return max(2, cfg.budget.max_epochs // 2)


def _build(kind: str, name: str, table: dict[str, Callable[[], Any]]) -> Any:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(table)}")
    try:
        return table[name]()
    except TypeError as e:  # a misspelt option reaches Optuna's constructor
        raise ValueError(f"{kind} {name}: bad option ({e}); see Optuna's documentation") from e


def make_storage(
    url: str,
    stale_trial_callback: Callable[..., None] | None = None,
    *,
    heartbeat_interval: int = 10,
    grace_period: int = 60,
) -> RDBStorage:
    """An RDB storage with heartbeats; PostgreSQL connections pre-pinged and pooled."""
    if is_sqlite(url):
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}}
    else:
        engine_kwargs = {
            "pool_pre_ping": True,  # a restarted server or an idle timeout costs one reconnect
            "pool_size": 2,
            "max_overflow": 2,
            "pool_recycle": 1800,
            "connect_args": {"connect_timeout": 10},
        }
    for attempt in range(_SCHEMA_RACE_RETRIES):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback,
            )
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as e:
            # Workers that start together on an empty database (a Slurm array, an Indexed Job)
            # all create Optuna's tables; the losers hit a duplicate. The tables exist next time.
            if attempt == _SCHEMA_RACE_RETRIES - 1:
                raise _open_error(url, e) from e
            time.sleep(1.0)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary by backend
            raise _open_error(url, e) from e
    raise AssertionError("unreachable")


_SCHEMA_RACE_RETRIES = 5


def _open_error(url: str, e: Exception) -> StorageError:
    return StorageError(
        f"cannot open the study database {redact(url)}: {redact(str(e).splitlines()[0])}. "
        "Check that the server is running and the URL (--storage, RNN_TUNER_STORAGE or "
        "study.storage) is right."
    )


def open_study(cfg: StudyConfig, storage: RDBStorage, name: str) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; returns (study, created_here)."""
    pruner = make_pruner(cfg)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=make_sampler(cfg, cfg.seed),
            pruner=pruner,
            directions=cfg.directions,
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        # A joining or resuming worker must not replay the creator's seeded random draws.
        sampler = make_sampler(cfg, seed=None)
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
    existing = [d.name.lower() for d in study.directions]
    if existing != cfg.directions:
        raise ValueError(
            f"study {name!r} already exists with directions {existing}, but the study file asks "
            f"for {cfg.directions}; pick another --study-name or restore the objective"
        )
    return study, False


def wait_for_attr(study: optuna.Study, key: str, timeout: float = 30.0) -> Any:
    """Poll a user attribute that the study's creator sets right after creating it."""
    deadline = time.monotonic() + timeout
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(0.2)
