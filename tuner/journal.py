"""Optuna's journal storage, the study kept as a log of operations that every worker appends to
and replays: in a PostgreSQL table (`journal+postgresql+psycopg://USER@HOST/DB`, many workers on
many machines) or in a file on this machine (`journal:///FILE`, several local workers, a file
lock between them).

A worker reads only the log entries written since its last read, where Optuna's RDB storage
re-reads every running trial: at 16 workers with short trials the PostgreSQL journal ran 3.4x
the RDB storage's throughput (docs/performance.md, "Stress"). Optuna's journal has no
heartbeats: `JournalStudyStorage` adds them in a table of its own, next to the budget table
(tuner.budget) that every storage of rnn-tuner keeps in an SQL database: the PostgreSQL
database of the log, or an SQLite file beside the log file (`FILE-workers.db`).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Container
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.storages.journal._base import BaseJournalSnapshot
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.study import FirstSeenBeats, StartedTrials, keep_beating

# Table names: apart from Optuna's RDB tables and rnn-tuner's RDB budget in the same database.
PREFIX = "rnn_tuner_journal"
_LOG, _SNAPSHOT, _HEARTBEAT = PREFIX, f"{PREFIX}_snapshot", f"{PREFIX}_heartbeat"
_CREATE_LOCK, _APPEND_LOCK = 7317, 7318  # PostgreSQL advisory lock keys


class PostgresJournalBackend(BaseJournalBackend, BaseJournalSnapshot):
    """The log in a PostgreSQL table, one row per entry, numbered from 0 without gaps. A read
    fetches the entries since the last read; an append takes an advisory lock for its
    transaction, so numbers are given and committed in order. Entries are JSON text, as in
    Optuna's file journal (jsonb would refuse the NaN and Infinity a trial may report). A
    snapshot of the replayed log (Optuna saves one every 100 trials) spares a new worker the
    replay of a long study."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_CREATE_LOCK})"))
            conn.execute(
                sa.text(f"CREATE TABLE IF NOT EXISTS {_LOG} (n bigint PRIMARY KEY, log text)")
            )
            conn.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS {_SNAPSHOT} (id int PRIMARY KEY, snapshot bytea)"
                )
            )

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT log FROM {_LOG} WHERE n >= :n ORDER BY n"), {"n": log_number_from}
            )
            return [json.loads(r[0]) for r in rows]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK})"))
            first = conn.execute(sa.text(f"SELECT coalesce(max(n) + 1, 0) FROM {_LOG}"))
            n0 = int(first.scalar_one())
            conn.execute(
                sa.text(f"INSERT INTO {_LOG} (n, log) VALUES (:n, :log)"),
                [{"n": n0 + i, "log": json.dumps(log)} for i, log in enumerate(logs)],
            )

    def save_snapshot(self, snapshot: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {_SNAPSHOT} (id, snapshot) VALUES (0, :s) "
                    "ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot"
                ),
                {"s": snapshot},
            )

    def load_snapshot(self) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(f"SELECT snapshot FROM {_SNAPSHOT} WHERE id = 0")).first()
            return None if row is None else bytes(row[0])


_HEARTBEATS = sa.Table(
    _HEARTBEAT,
    sa.MetaData(),
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("beat", sa.Float, nullable=False),  # seconds, by the database's clock
)


def _database_seconds(engine: sa.Engine) -> Any:
    """The database's clock in seconds: one clock for workers on machines whose clocks differ."""
    if engine.dialect.name == "postgresql":
        return sa.literal_column("extract(epoch from clock_timestamp())")
    return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")


class JournalStudyStorage(StartedTrials, FirstSeenBeats, JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with heartbeats: a row per running trial, beaten every
    `heartbeat_interval` s by Optuna's heartbeat thread; a running trial silent for
    `grace_period` s is stale (one that never beat: from when a stale check first saw it,
    `FirstSeenBeats`), and Optuna fails it and calls `on_stale` (as with its RDB storage).
    `engine` holds these side tables and the budget's."""

    table_prefix = PREFIX  # tuner.budget's table: f"{table_prefix}_budget"

    def __init__(
        self,
        backend: BaseJournalBackend,
        engine: sa.Engine,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int = 60,
        on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(backend)
        self.engine, self.grace_period, self.on_stale = engine, grace_period, on_stale
        self.heartbeat_interval = heartbeat_interval
        self._finished: dict[tuple[int, int], _FinishedPrefix] = {}
        # Workers starting together race to create the table: the loser's error says it exists.
        with contextlib.suppress(
            sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError
        ):
            _HEARTBEATS.create(engine, checkfirst=True)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """Optuna's, without its walk over every trial of the study at every call (the sampler,
        the pruner, the stale-trial check and the best trial each ask several times a trial):
        the finished trials at the front of the study, which never change again, are kept per
        `states` asked for, and only the trials after them are looked at."""
        with self._thread_lock:
            self._sync_with_backend()
            replay = self._replay_result
            trials = None
            if study_id in replay._studies:
                ids = replay._study_id_to_trial_ids[study_id]
                trials = self._prefix(study_id).trials(ids, replay._trials, states)
        if trials is None:  # Optuna's error for a study that is not there (its lock: not held)
            return super().get_all_trials(study_id, deepcopy, states)
        return copy.deepcopy(trials) if deepcopy else trials

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """Optuna's (the first complete trial of the best value), kept up to date as trials
        finish instead of found anew among all of them at every call."""
        directions = self.get_study_directions(study_id)
        if len(directions) > 1:
            return super().get_best_trial(study_id)
        sign = -1.0 if directions[0] == StudyDirection.MAXIMIZE else 1.0
        with self._thread_lock:
            self._sync_with_backend()
            replay = self._replay_result
            ids = replay._study_id_to_trial_ids[study_id]
            best = self._prefix(study_id).best(ids, replay._trials, sign)
        if best is None:
            raise ValueError("No trials are completed yet.")
        return best

    def _prefix(self, study_id: int) -> _FinishedPrefix:
        """The study's `_FinishedPrefix`; a restored snapshot is a new replay: start over."""
        key = (id(self._replay_result), study_id)
        if key not in self._finished:
            mine = id(self._replay_result)
            self._finished = {k: v for k, v in self._finished.items() if k[0] == mine}
            self._finished[key] = _FinishedPrefix()
        return self._finished[key]

    @keep_beating
    def record_heartbeat(self, trial_id: int) -> None:
        dialect = sa.dialects.postgresql if self.engine.dialect.name == "postgresql" else None
        insert = (dialect or sa.dialects.sqlite).insert(_HEARTBEATS)
        now = _database_seconds(self.engine)
        with self.engine.begin() as conn:
            conn.execute(
                insert.values(trial_id=trial_id, beat=now).on_conflict_do_update(
                    index_elements=["trial_id"], set_={"beat": now}
                )
            )

    def _beats(self, study_id: int) -> tuple[list[int], list[int]]:
        """Of the running trials: those whose last beat is older than `grace_period`, and those
        that never beat; one query."""
        running = [
            t._trial_id
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        ]
        if not running:
            return [], []
        oldest = _database_seconds(self.engine) - self.grace_period
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_HEARTBEATS.c.trial_id, _HEARTBEATS.c.beat < oldest).where(
                    _HEARTBEATS.c.trial_id.in_(running)
                )
            )
            old = {trial_id: bool(is_old) for trial_id, is_old in rows}
        stale = [trial_id for trial_id in running if old.get(trial_id)]
        return stale, [trial_id for trial_id in running if trial_id not in old]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
        return self.on_stale


class _FinishedPrefix:
    """One study's trials, for `JournalStudyStorage.get_all_trials`: the leading run of finished
    trials (a finished trial is never written again) filtered once per set of states asked."""

    def __init__(self) -> None:
        self.done = 0  # trials [0, done) of the study are finished
        self.by_states: dict[Any, tuple[list[FrozenTrial], int]] = {}  # states -> (kept, upto)
        self.best_done: tuple[FrozenTrial | None, int] = (None, 0)  # best of [0, upto), upto

    def _advance(self, ids: list[int], by_id: dict[int, FrozenTrial]) -> None:
        while self.done < len(ids) and by_id[ids[self.done]].state.is_finished():
            self.done += 1

    def best(self, ids: list[int], by_id: dict[int, FrozenTrial], sign: float) -> Any:
        """The first complete trial of the lowest `sign * value`, or None."""
        self._advance(ids, by_id)
        best, upto = self.best_done

        def better(trial: FrozenTrial, than: FrozenTrial | None) -> bool:
            if trial.state != TrialState.COMPLETE:
                return False
            return than is None or sign * trial.value < sign * than.value

        for trial_id in ids[upto : self.done]:
            if better(by_id[trial_id], best):
                best = by_id[trial_id]
        self.best_done = (best, self.done)
        for trial_id in ids[self.done :]:
            if better(by_id[trial_id], best):
                best = by_id[trial_id]
        return best

    def trials(
        self, ids: list[int], by_id: dict[int, FrozenTrial], states: Container[TrialState] | None
    ) -> list[FrozenTrial]:
        self._advance(ids, by_id)
        key = None if states is None else frozenset(states)
        kept, upto = self.by_states.get(key, ([], 0))
        for trial_id in ids[upto : self.done]:
            if key is None or by_id[trial_id].state in key:
                kept.append(by_id[trial_id])
        self.by_states[key] = (kept, self.done)
        tail = (by_id[i] for i in ids[self.done :])
        return kept + [t for t in tail if key is None or t.state in key]


def postgres_journal(engine: sa.Engine, **heartbeats: Any) -> JournalStudyStorage:
    return JournalStudyStorage(PostgresJournalBackend(engine), engine, **heartbeats)


def file_journal(path: str, **heartbeats: Any) -> JournalStudyStorage:
    """The log in `path` (Optuna's file journal: appends under a lock file beside it); the side
    tables in `path`-workers.db, an SQLite file whose own file locks serialise its writes."""
    engine = sa.create_engine(f"sqlite:///{side_file(path)}", connect_args={"timeout": 30})
    return JournalStudyStorage(JournalFileBackend(path), engine, **heartbeats)


def side_file(path: str) -> str:
    """Where a file journal keeps its budget and heartbeats."""
    return f"{path}-workers.db"
