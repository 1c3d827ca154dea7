"""Storage URL, sampler, pruner and heartbeat -> an Optuna study, created once and loaded by
every other worker that names the same storage and study.

Samplers and pruners come from the tables in tuner.plugins. The second half reads a study back:
its best trial(s), whether any trial runs, and a retry for calls that meet a database outage.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.config import StudyConfig
from tuner.plugins import PRUNERS, SAMPLERS, WARMUP_PRUNERS, Defaults, build
from tuner.space import grid_space
from tuner.urls import is_journal, is_sqlite, journal_database, journal_file, redact

log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute shared by every worker


class StorageError(RuntimeError):
    """The study database cannot be reached or used."""


class StartedTrials:
    """Remembers the last trial this process set RUNNING (`last_started`): created by Optuna's
    ask, or a waiting one (a retry, an enqueued trial) taken. A dropped connection between that
    and the objective's start leaves a trial that no worker runs and that Optuna never calls
    stale (it has no heartbeat yet): tuner.worker.LastTrial fails it. Mixed into the study's
    storages (this module's RDB storage, tuner.journal's)."""

    last_started: int | None = None

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)  # type: ignore[misc]
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self.last_started = trial_id
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)  # type: ignore[misc]
        if changed and state == TrialState.RUNNING:
            self.last_started = trial_id
        return changed


class FirstSeenBeats:
    """A running trial that never beat (its worker died in the milliseconds between Optuna's ask
    and the trial's first heartbeat) is never stale to Optuna, and a study whose budget it holds
    waits for it for good. The stale check gives such a trial a heartbeat when it first sees it:
    its worker, if alive, beats over it; if not, the trial is stale `grace_period` s later and
    is failed and queued again like any lost worker's. Mixed into the study's storages, each of
    which says, of its running trials, which last beat too long ago and which never beat
    (`_beats`)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale, never_beaten = self._beats(study_id)
        for trial_id in never_beaten:
            self.record_heartbeat(trial_id)  # type: ignore[attr-defined]
        return stale

    def _beats(self, study_id: int) -> tuple[list[int], list[int]]:
        raise NotImplementedError


def keep_beating(beat: Callable[[Any, int], None]) -> Callable[[Any, int], None]:
    """A storage's `record_heartbeat` that a database error does not end: Optuna's heartbeat
    thread stops at its first exception, and the trial, still training, would look dead after
    `grace_period` (another worker would fail it and train it again). The error is logged; the
    next beat tries again."""

    @functools.wraps(beat)
    def record_heartbeat(storage: Any, trial_id: int) -> None:
        try:
            beat(storage, trial_id)
        except _DB_ERRORS as e:
            log.warning(
                "heartbeat of trial id %d not recorded (%s); next beat", trial_id, _first_line(e)
            )

    return record_heartbeat


class StudyRDBStorage(StartedTrials, FirstSeenBeats, RDBStorage):
    """Optuna's RDB storage that remembers the trial it last started (`StartedTrials`), keeps
    beating through a dropped connection (`keep_beating`) and times a trial that never beat from
    when it is first seen (`FirstSeenBeats`)."""

    record_heartbeat = keep_beating(RDBStorage.record_heartbeat)

    def _beats(self, study_id: int) -> tuple[list[int], list[int]]:
        return RDBStorage._get_stale_trial_ids(self, study_id), self._never_beaten(study_id)

    def _never_beaten(self, study_id: int) -> list[int]:
        from optuna.storages._rdb import models  # Optuna's own tables (its version is pinned)

        trials, beats = models.TrialModel, models.TrialHeartbeatModel
        query = (
            sa.select(trials.trial_id)
            .outerjoin(beats, beats.trial_id == trials.trial_id)
            .where(trials.study_id == study_id, trials.state == TrialState.RUNNING)
            .where(beats.trial_id.is_(None))
        )
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        # what Optuna's cache in front of this storage calls to create a trial
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:
            self.last_started = trial._trial_id
        return trial


def make_sampler(cfg: StudyConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    defaults = plugin_defaults(cfg, seed)
    options = dict(cfg.sampler.options)
    if cfg.sampler.name != "tpe":
        return build("sampler", SAMPLERS, cfg.sampler.name, options, defaults)
    from tuner.history import CappedTPESampler, IncrementalTPESampler

    if cfg.sampler.history is None:  # the whole history: Optuna's draws, at less cost
        return build("sampler", SAMPLERS, "tpe", options, defaults, IncrementalTPESampler)
    options["history"] = cfg.sampler.history  # checked at validate: tpe, one objective
    return build("sampler", SAMPLERS, "tpe", options, defaults, CappedTPESampler)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    options = dict(cfg.pruner.options) if cfg.pruner else {}
    return build("pruner", PRUNERS, cfg.pruner_name, options, plugin_defaults(cfg, cfg.seed))


def plugin_defaults(cfg: StudyConfig, seed: int | None) -> Defaults:
    """What the sampler and pruner tables' defaults take from the study file."""
    # A trial reports per epoch, or per fold with cross-validation (tuner.crossval).
    steps = cfg.cv_folds or cfg.budget.max_epochs
    return Defaults(seed, steps, warmup_epochs(cfg), lambda: grid_space(cfg))


def first_prunable_epoch(cfg: StudyConfig) -> int:
    """The first epoch at which the study's pruner can prune (its warm-up), 0 if unknown."""
    name, options = cfg.pruner_name, dict(cfg.pruner.options) if cfg.pruner else {}
    if name == "patient":  # it prunes where the pruner it wraps would, and no earlier
        wrapped = options.get("wrapped") or {}
        name, options = wrapped.get("name"), dict(wrapped.get("options") or {})
    if name not in WARMUP_PRUNERS:
        return 0
    return int(options.get("n_warmup_steps", warmup_epochs(cfg)))


def warmup_epochs(cfg: StudyConfig) -> int:
    """Epochs a median or percentile pruner waits before judging: half the budget, at least 2.

    A recurrent network often sits on a plateau for a few epochs before its loss drops (the
    adding problem at the mean's MSE); judged at epoch 2, such late starters were pruned, and
    the default search needed 0.59 of random search's epochs to match it, against 0.32 with
    half of max_epochs (benchmarks/bench_search.py, 5 seeds, max_epochs 6).

    With cross-validation the steps are folds, each a complete training judged by its best
    epoch: none to wait for (tuner.crossval)."""
    if cfg.cv_folds:
        return 0
    return max(2, cfg.budget.max_epochs // 2)


def make_storage(
    url: str,
    stale_trial_callback: Callable[..., None] | None = None,
    *,
    heartbeat_interval: int = 10,
    grace_period: int = 60,
) -> BaseStorage:
    """The study's storage, chosen by the URL: Optuna's RDB storage for a database URL, its
    journal for a `journal` URL (tuner.journal); both with heartbeats, their SQL tables (the
    budget's, the heartbeats') reached through `.engine`. PostgreSQL connections are
    pre-pinged and pooled."""
    for attempt in range(_SCHEMA_RACE_RETRIES):
        try:
            return _storage(url, stale_trial_callback, heartbeat_interval, grace_period)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary by backend
            if not _passing_at_open(e) or attempt == _SCHEMA_RACE_RETRIES - 1:
                raise _open_error(url, e) from e
            time.sleep(1.0)
    raise AssertionError("unreachable")


_SCHEMA_RACE_RETRIES = 5


def _storage(
    url: str, on_stale: Callable[..., None] | None, heartbeat_interval: int, grace_period: int
) -> BaseStorage:
    if is_journal(url):
        from tuner.journal import file_journal, postgres_journal

        beats: dict[str, Any] = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "on_stale": on_stale,
        }
        path = journal_file(url)
        if path is not None:
            return file_journal(path, **beats)
        return postgres_journal(
            sa.create_engine(journal_database(url), **_engine_kwargs(url)), **beats
        )
    return StudyRDBStorage(
        url,
        engine_kwargs=_engine_kwargs(url),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=on_stale,
    )


def _engine_kwargs(url: str) -> dict[str, Any]:
    if is_sqlite(url):
        return {"connect_args": {"timeout": 30}}
    return {
        "pool_pre_ping": True,  # a restarted server or an idle timeout costs one reconnect
        "pool_size": 2,
        "max_overflow": 2,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 10},
    }


def _passing_at_open(e: Exception) -> bool:
    """Workers that start together on an empty database (a Slurm array, an Indexed Job) all
    create Optuna's tables; the losers hit a duplicate: the tables exist next time. A connection
    dropped while in use (a database restart; Optuna wraps it as StorageInternalError) is back
    next time too. A server that refuses connections is not retried: that error comes at once."""
    passing = (
        sa.exc.IntegrityError,
        sa.exc.ProgrammingError,
        optuna.exceptions.StorageInternalError,
    )
    if isinstance(e, passing) or getattr(e, "connection_invalidated", False):
        return True
    # psycopg's words for a connection the server dropped while in use, which SQLAlchemy does
    # not always mark as invalidated (a worker opening the journal as its connection was killed)
    return isinstance(e, sa.exc.OperationalError) and any(words in str(e) for words in _DROPPED)


_DROPPED = ("server closed the connection unexpectedly", "terminating connection due to")


def _open_error(url: str, e: Exception) -> StorageError:
    return StorageError(
        f"cannot open the study database {redact(url)}: {redact(str(e).splitlines()[0])}. "
        "Check that the server is running and the URL (--storage, RNN_TUNER_STORAGE or "
        "study.storage) is right."
    )


def open_study(cfg: StudyConfig, storage: BaseStorage, name: str) -> tuple[optuna.Study, bool]:
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
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in cfg.objectives])  # tuner.results' columns
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
        value = retrying(lambda: study.user_attrs.get(key))
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


# ---------------------------------------------------------------- reading a study back


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial of a one-objective study, the Pareto front of a multi-objective one;
    empty before the first complete trial."""
    try:
        return [study.best_trial] if len(study.directions) == 1 else study.best_trials
    except ValueError:  # no complete trial yet
        return []


def best_trial(study: optuna.Study, primary: int = 0) -> FrozenTrial | None:
    """The study's best trial: of the Pareto front, the one best on objective `primary` (the
    first that is not n_params: `StudyConfig.primary_index`, `primary_index`)."""
    front = best_trials(study)
    if not front:
        return None
    pick = max if study.directions[primary] == StudyDirection.MAXIMIZE else min
    return pick(front, key=lambda t: t.values[primary])


def has_running_trials(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


# A restarted database or dropped connections: how long a worker waits before giving up.
_DB_RETRIES, _DB_RETRY_WAIT = 12, 5.0
_DB_ERRORS = (sa.exc.DBAPIError, optuna.exceptions.StorageInternalError)


def _first_line(e: BaseException) -> str:
    """A database error's first line, without a password (a driver's message can hold the URL)."""
    return redact(str(e).splitlines()[0]) if str(e) else type(e).__name__


def is_database_error(e: BaseException) -> bool:
    """An error of the study database (a dropped connection, an outage): not the trial's own."""
    return isinstance(e, _DB_ERRORS)


def retrying(action: Callable[[], T]) -> T:
    """`action()`, retried while the study database is unreachable; a lasting outage is fatal.

    Optuna reports a dropped connection as StorageInternalError, SQLAlchemy as DBAPIError."""
    for attempt in range(1, _DB_RETRIES + 1):
        try:
            return action()
        except (*_DB_ERRORS, AssertionError) as e:
            # Optuna's tell, failing on a dropped connection, ends in its own "Should not
            # reach" assertion; the trial it leaves RUNNING goes stale and is retried.
            if isinstance(e, AssertionError) and not isinstance(e.__context__, _DB_ERRORS):
                raise
            first_line = _first_line(e)
            if attempt == _DB_RETRIES:
                raise StorageError(
                    f"the study database stayed unreachable for {_DB_RETRIES * _DB_RETRY_WAIT:.0f}"
                    f" s: {first_line}"
                ) from e
            log.warning("study database error (%s); retrying in %.0f s", first_line, _DB_RETRY_WAIT)
            time.sleep(_DB_RETRY_WAIT)
    raise AssertionError("unreachable")
