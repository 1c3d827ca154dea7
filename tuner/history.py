"""TPE on a capped history (`sampler: {name: tpe, history: N}`): it reads only the N best
complete trials, the N most recently finished ones (complete or pruned) and the running ones
(the constant liar's), instead of every trial of the study.

TPE re-reads and re-sorts the whole history at every sample; at 10,000 trials that was most of a
trial's fixed cost (docs/performance.md, "Growth"). Its "good" group is the best
min(ceil(0.1 n), 25) of the n trials it reads, so with N >= 250 that group is the same trials as
without the cap; what changes is the "bad" group it is compared with: the recent and best trials
instead of all.

The selection is kept up to date incrementally: a finished trial never changes, so each is
looked at once; a call costs O(N + running trials), not O(trials).
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Container
from typing import Any

import optuna
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
