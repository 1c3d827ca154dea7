"""Whether a worker may start one more trial: `--max-trials M` (the study's total, shared by every
worker on every machine: exactly M trials, however many workers race for the last ones) and
`--n-trials N` (this command's own trials, shared by its local workers).

The count lives in a one-row-per-study table next to Optuna's own, in the same database (a
journal storage's SQL tables: tuner.journal); a slot is claimed by one atomic conditional UPDATE,
so no lock is held while a trial runs.
"""

from __future__ import annotations

import contextlib
import enum
from typing import Any

import sqlalchemy as sa
from optuna.trial import TrialState

from tuner.study import has_running_trials

_TABLES: dict[str, sa.Table] = {}


def _table(storage: Any) -> sa.Table:
    """The budget table of `storage`: `rnn_tuner_budget` beside Optuna's RDB tables; a journal
    storage's own (its study ids are numbered apart from the RDB studies' in one database)."""
    name = getattr(storage, "table_prefix", "rnn_tuner") + "_budget"
    if name not in _TABLES:
        _TABLES[name] = sa.Table(
            name,
            sa.MetaData(),
            sa.Column("study_id", sa.Integer, primary_key=True),
            sa.Column("claimed", sa.Integer, nullable=False),
        )
    return _TABLES[name]


class TrialBudget:
    def __init__(self, storage: Any, study_id: int, limit: int, already_run: int) -> None:
        """`storage`: the study's (its SQL tables at `storage.engine`). `already_run` counts
        the study's trials from before any budget: they use slots too."""
        self.storage, self.study_id, self.limit = storage, study_id, limit
        self.engine, self.table = storage.engine, _table(storage)
        # Workers starting together race to create the table and the row: the loser's error
        # only says that the winner did it.
        with contextlib.suppress(sa.exc.ProgrammingError, sa.exc.IntegrityError):
            self.table.create(self.engine, checkfirst=True)
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
            table = self.table
            row = conn.execute(sa.select(table.c.study_id).where(table.c.study_id == study_id))
            if row.first() is None:
                conn.execute(table.insert().values(study_id=study_id, claimed=already_run))

    def claim(self) -> bool:
        """Take one slot if any is left."""
        table = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                table.update()
                .where(table.c.study_id == self.study_id, table.c.claimed < self.limit)
                .values(claimed=table.c.claimed + 1)
            )
            return result.rowcount == 1

    def release(self) -> None:
        """Give back a slot whose trial never ran."""
        release_slot(self.storage, self.study_id)

    @property
    def claimed(self) -> int:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.table.c.claimed).where(self.table.c.study_id == self.study_id)
            )
            return int(row.scalar_one())


def release_slot(storage: Any, study_id: int) -> None:
    """Give a slot back (no-op for a study without a budget): its trial never ran, or died with
    its worker and is queued again."""
    table = _table(storage)
    with storage.engine.begin() as conn:
        if not sa.inspect(conn).has_table(table.name):
            return
        conn.execute(
            table.update()
            .where(table.c.study_id == study_id, table.c.claimed > 0)
            .values(claimed=table.c.claimed - 1)
        )


def trials_counted(study) -> int:  # noqa: ANN001 - optuna.Study
    """Trials that use a slot: all but those waiting to run (enqueued ones and retries)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


class Claim(enum.Enum):
    RUN = "run"  # a slot is taken: start a trial
    WAIT = "wait"  # spent, unless a running trial's worker dies and its retry needs a worker
    STOP = "stop"  # spent: this worker is done


class Slots:
    """Both budgets at once: the study's (`budget`, None without --max-trials) and this
    command's (`limit` trials, counted in `shared`, the count of all the command's workers, or in
    this process alone). `shared.add(step, limit)` moves that count by `step` at once unless it
    would pass `limit`, and says whether it did (tuner.launch.ProcessCount for local processes,
    tuner.ray_workers.RayCount for Ray actors).

    A slot is held from its claim until a trial starts on it (`spend`). Between the two, Optuna
    still reads and writes the database (its stale-trial check, its ask); when a dropped
    connection fails that, the worker tries again and its next claim returns the held slot
    instead of taking a second one that no trial would use."""

    def __init__(
        self, budget: TrialBudget | None, limit: int | None, shared: Any, study: Any
    ) -> None:
        self.budget, self.limit, self.shared, self.study = budget, limit, shared, study
        self.local = 0
        self.held_local = self.held_study = False  # taken, no trial started on it yet

    def claim(self) -> Claim:
        # This command's slot first: it needs no database, so no dropped connection loses it.
        if not self.held_local:
            if not self._count_local(+1):
                return Claim.STOP
            self.held_local = True
        if self.budget is not None and not self.held_study:
            if not self.budget.claim():
                return Claim.WAIT if has_running_trials(self.study) else Claim.STOP
            self.held_study = True
        return Claim.RUN

    def spend(self) -> None:
        """A trial started on the held slot: it counts, however the trial ends."""
        self.held_local = self.held_study = False

    def release(self) -> None:
        """Give back a held slot that no trial will use: this worker stops."""
        if self.held_study and self.budget is not None:
            # After a lasting outage this fails too: the error that stopped the worker matters.
            with contextlib.suppress(sa.exc.DBAPIError):
                self.budget.release()
        if self.held_local:
            self._count_local(-1)
        self.spend()

    def _count_local(self, step: int) -> bool:
        """Move this command's count by `step` unless that passes `limit`."""
        if self.limit is None:
            return True
        if self.shared is not None:
            return bool(self.shared.add(step, self.limit))
        if self.local + step > self.limit:
            return False
        self.local += step
        return True
