"""What TPE reads of a study's history, and at what cost: rnn-tuner's `tpe` sampler.

TPE samples from two mixtures built on the study's finished trials, the good ones and the rest.
Optuna's TPESampler re-reads, re-sorts and re-converts every trial of the study at every sample;
at 10,000 trials that was most of a trial's fixed cost (docs/performance.md, "Growth").

- `IncrementalTPESampler` (the default, `sampler: {name: tpe}`): every trial, each taken in once;
  the same draws as Optuna's TPESampler, and only the mixtures' numpy work grows with the study.
- `CappedTPESampler` (`sampler: {name: tpe, history: N}`): only the N best complete trials, the N
  most recently finished ones (complete or pruned) and the running ones (the constant liar's).
  Its "good" group is the best min(ceil(0.1 n), 25) of the n trials it reads, so with N >= 250
  that group is the same trials as without the cap; what changes is the "bad" group it is
  compared with: the recent and best trials instead of all. The selection is kept up to date
  incrementally: a call costs O(N + running trials), not O(trials).
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
from collections.abc import Container
from typing import Any

import numpy as np
import optuna
from optuna.samplers._tpe import sampler as tpe
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

_FINISHED_READ = (TrialState.COMPLETE, TrialState.PRUNED)  # what TPE learns from


class BestAndRecent:
    """The trials of one study that TPE may read: the `n` best complete ones (feasible before
    infeasible, then by value), the `n` most recently finished complete or pruned ones, and every
    trial not finished yet."""

    def __init__(self, n: int, direction: StudyDirection) -> None:
        self.n, self.sign = n, -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        self.scanned = 0  # trials [0, scanned) are finished and taken in
        self.seen: set[int] = set()  # finished trials past `scanned`, taken in already
        self.best: list[tuple[tuple[float, float, int], FrozenTrial]] = []  # sorted, <= n
        self.recent: collections.deque[FrozenTrial] = collections.deque(maxlen=n)

    def select(self, trials: list[FrozenTrial], states: Container[TrialState] | None) -> list:
        """Of `trials` (all of the study's, in number order), those TPE reads, in number order."""
        while self.scanned < len(trials) and trials[self.scanned].state.is_finished():
            self._take(trials[self.scanned])
            self.scanned += 1
        self.seen = {number for number in self.seen if number >= self.scanned}
        unfinished = []
        for trial in trials[self.scanned :]:
            if not trial.state.is_finished():
                unfinished.append(trial)
            elif trial.number not in self.seen:
                self.seen.add(trial.number)
                self._take(trial)
        chosen = {t.number: t for _, t in self.best}
        chosen.update((t.number, t) for t in self.recent)
        chosen.update((t.number, t) for t in unfinished)
        return [
            chosen[number]
            for number in sorted(chosen)
            if states is None or chosen[number].state in states
        ]

    def _take(self, trial: FrozenTrial) -> None:
        if trial.state not in _FINISHED_READ:
            return
        self.recent.append(trial)
        if trial.state != TrialState.COMPLETE:
            return
        violation = sum(max(v, 0.0) for v in trial.constraints.values())
        value = trial.value if trial.value is not None else math.nan
        key = (violation, self.sign * value if not math.isnan(value) else math.inf, trial.number)
        if len(self.best) < self.n or key < self.best[-1][0]:
            bisect.insort(self.best, (key, trial), key=lambda entry: entry[0])
            del self.best[self.n :]


class _StudyView:
    """The study as TPE sees it: every attribute its own, but its trials capped."""

    def __init__(self, study: optuna.Study, history: BestAndRecent) -> None:
        self._study, self._history = study, history

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
        return self._history.select(trials, states)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)


class CappedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPESampler reading `history` best and `history` most recent finished trials
    (`BestAndRecent`); every other argument is TPESampler's."""

    def __init__(self, *args: Any, history: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if history < self._n_startup_trials:  # fewer and TPE would never leave its random start
            raise ValueError(
                f"history ({history}) must be at least n_startup_trials ({self._n_startup_trials})"
            )
        self.history = history
        self._views: dict[tuple[int, int], _StudyView] = {}

    def _view(self, study: optuna.Study) -> Any:
        if len(study.directions) > 1:
            raise ValueError("sampler.history works for one objective only")
        key = (id(study._storage), study._study_id)
        if key not in self._views:
            self._views[key] = _StudyView(study, BestAndRecent(self.history, study.direction))
        view = self._views[key]
        view._study = study  # the same study loaded again: the history still holds
        return view

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return super().sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return super().sample_independent(self._view(study), trial, param_name, param_distribution)


_COMPLETE, _PRUNED, _INFEASIBLE = 0, 1, 2  # TPE's split groups of finished trials, in its order
_COLUMNS_KEPT = 64  # parameter columns kept per study (see _FinishedTrials.column)


class _Column:
    """One parameter, in TPE's internal form under one distribution, for every finished trial
    (by row), and whether the trial has it."""

    def __init__(self) -> None:
        self.values, self.has = np.empty(0), np.empty(0, dtype=bool)


class _FinishedTrials:
    """What TPE learns from each finished trial of one study, taken in once: its split group and
    sort keys, and its parameters in TPE's internal form, as arrays by row (first seen first).

    A finished trial never changes and never leaves the list TPE asks for (its states are
    complete, pruned and, with the constant liar, running), so a trial is looked at once; the
    list's leading finished trials are recognised by the number of the last of them."""

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.prefix, self.last = 0, -1  # the last list's trials[:prefix] were finished, the
        # last of them numbered `last`
        self.rows: dict[int, int] = {}  # trial number -> row
        self.params: list[dict[str, Any]] = []  # by row
        self.pending: list[tuple[int, int, float, float]] = []  # rows not in the arrays yet
        self.numbers = np.empty(0, dtype=np.int64)
        self.group = np.empty(0, dtype=np.int8)
        self.key = np.empty((0, 2))  # sort keys: value, or (-last step, last value), or score
        self.columns: dict[tuple[str, Any], _Column] = {}

    def update(self, trials: list[FrozenTrial], study: optuna.Study) -> list[FrozenTrial] | None:
        """Take in the finished trials of `trials` (number order) not seen before; the running
        ones, or None if `trials` lacks a finished trial seen before (an older list)."""
        start = self.prefix
        if start and (len(trials) < start or trials[start - 1].number != self.last):
            start = 0  # a trial came in below the known prefix (finished out of order)
        end = start
        while end < len(trials) and trials[end].state != TrialState.RUNNING:
            if trials[end].number not in self.rows:
                self._take(trials[end], study)
            end += 1
        self.prefix, self.last = end, trials[end - 1].number if end else -1
        running, finished = [], end
        for trial in trials[end:]:
            if trial.state == TrialState.RUNNING:
                running.append(trial)
                continue
            finished += 1
            if trial.number not in self.rows:
                self._take(trial, study)
        self._flush()
        return running if finished == len(self.rows) else None

    def _take(self, trial: FrozenTrial, study: optuna.Study) -> None:
        # the groups and keys of TPE's own split (optuna.samplers._tpe.sampler._split_trials)
        score = tpe._get_infeasible_trial_score(trial)
        if score > 0:
            group, key = _INFEASIBLE, (score, 0.0)
        elif trial.state == TrialState.COMPLETE:
            group, key = _COMPLETE, (self.sign * float(trial.value), 0.0)  # type: ignore[arg-type]
        else:
            group, key = _PRUNED, tpe._get_pruned_trial_score(trial, study)
        self.rows[trial.number] = len(self.params)
        self.params.append(trial.params)
        self.pending.append((trial.number, group, *key))

    def _flush(self) -> None:
        if not self.pending:
            return
        numbers, groups, first, second = zip(*self.pending, strict=True)
        self.numbers = np.concatenate([self.numbers, np.asarray(numbers, dtype=np.int64)])
        self.group = np.concatenate([self.group, np.asarray(groups, dtype=np.int8)])
        self.key = np.concatenate([self.key, np.column_stack([first, second])])
        self.pending = []

    def column(self, name: str, distribution: Any) -> _Column:
        """`name` under `distribution` for every row, brought up to date. The most recently
        used columns are kept: a study file's space has one distribution per parameter, but a
        space that changes from trial to trial must not keep a column per distribution."""
        column = self.columns.pop((name, distribution), None) or _Column()
        self.columns[(name, distribution)] = column
        if len(self.columns) > _COLUMNS_KEPT:
            del self.columns[next(iter(self.columns))]
        if len(column.values) < len(self.params):
            new = self.params[len(column.values) :]
            has = np.fromiter((name in p for p in new), dtype=bool, count=len(new))
            values = [distribution.to_internal_repr(p[name]) if name in p else 0 for p in new]
            column.values = np.concatenate([column.values, np.asarray(values, dtype=float)])
            column.has = np.concatenate([column.has, has])
        return column

    def split(self, n_below: int) -> tuple[np.ndarray, np.ndarray]:
        """TPE's good and bad rows: the `n_below` best complete trials (stable by number), then
        the best pruned ones and the least infeasible ones while `n_below` is not reached."""
        below = []
        for group in (_COMPLETE, _PRUNED, _INFEASIBLE):
            rows = np.flatnonzero(self.group == group)
            take = min(n_below, len(rows))
            if take:
                order = np.lexsort((self.numbers[rows], self.key[rows, 1], self.key[rows, 0]))
                below.append(rows[order[:take]])
            n_below = max(0, n_below - take)
        chosen = np.concatenate(below) if below else np.empty(0, dtype=np.int64)
        above = np.ones(len(self.numbers), dtype=bool)
        above[chosen] = False
        return chosen, np.flatnonzero(above)


class IncrementalTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPESampler on the whole history, drawing the same parameters from the same
    trials, without re-reading every trial at every sample.

    Optuna's TPE walks the whole study in Python at each sample: it sorts every finished trial
    to split good from bad and converts every trial's parameters to its internal form (at
    10,000 trials about 150 ms a sample, most of a trial's fixed cost). Here each finished trial
    is taken in once (`_FinishedTrials`) and a sample is numpy work on arrays, plus the running
    trials the constant liar reads. The mixture estimators, the draws and the acquisition are
    Optuna's own, fed the same observations in the same order. Several objectives: Optuna's
    sample, unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._finished: dict[tuple[int, int], _FinishedTrials] = {}
        self._lock = threading.Lock()  # one study's arrays, grown by one sample at a time

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        if study._is_multi_objective():
            return super()._sample(study, trial, search_space)
        # the list Optuna's TPE reads
        states = [TrialState.COMPLETE, TrialState.PRUNED]
        if self._constant_liar:
            states.append(TrialState.RUNNING)
        trials = study._get_trials(deepcopy=False, states=states, use_cache=not self._constant_liar)
        key = (id(study._storage), study._study_id)
        with self._lock:
            finished = self._finished.get(key)
            running = None if finished is None else finished.update(trials, study)
            if running is None:  # the first sample, or not the list read before (another
                # study under a reused key, an older list): take this list in from scratch
                sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
                finished = self._finished[key] = _FinishedTrials(sign)
                running = finished.update(trials, study)
                assert running is not None
            return self._sample_from(study, trial, search_space, finished, running)

    def _sample_from(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, Any],
        finished: _FinishedTrials,
        running: list[FrozenTrial],
    ) -> dict[str, Any]:
        running = [t for t in running if t.number != trial.number]
        if self._gamma is None:
            self._gamma = tpe.default_gamma
        below, above = finished.split(self._gamma(len(finished.rows)))
        estimators = [
            self._parzen_estimator_cls(
                self._observations(study, finished, rows, extra, search_space),
                search_space,
                self._parzen_estimator_parameters,
            )
            for rows, extra in ((below, []), (above, running))
        ]
        if not all(isinstance(e, _ParzenEstimator) for e in estimators):
            raise RuntimeError("_parzen_estimator_cls must override _ParzenEstimator.")
        samples = estimators[0].sample(self._rng.rng, self._n_ei_candidates)
        chosen = self._compare(samples, self._compute_acquisition_func(samples, *estimators))
        return {name: d.to_external_repr(chosen[name]) for name, d in search_space.items()}

    def _observations(
        self,
        study: optuna.Study,
        finished: _FinishedTrials,
        rows: np.ndarray,
        running: list[FrozenTrial],
        search_space: dict[str, Any],
    ) -> dict[str, np.ndarray]:
        """Optuna's `_get_internal_repr` of `rows` and `running` together, in number order: the
        parameters of those trials that have every one in `search_space`."""
        columns = {name: finished.column(name, d) for name, d in search_space.items()}
        keep = np.ones(len(rows), dtype=bool)
        for column in columns.values():
            keep &= column.has[rows]
        rows = rows[keep]
        values = {name: column.values[rows] for name, column in columns.items()}
        numbers = finished.numbers[rows]
        extra = [(t.number, self._get_params(t, study)) for t in running]
        extra = [(number, p) for number, p in extra if search_space.keys() <= p.keys()]
        if extra:
            more = np.asarray([number for number, _ in extra], dtype=np.int64)
            numbers = np.concatenate([numbers, more])
            for name, d in search_space.items():
                reprs = [d.to_internal_repr(p[name]) for _, p in extra]
                values[name] = np.concatenate([values[name], np.asarray(reprs, dtype=float)])
        order = np.argsort(numbers, kind="stable")
        return {name: v[order] for name, v in values.items()}
