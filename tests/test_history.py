"""What TPE reads (tuner.history). `sampler: {name: tpe, history: N}`: the N best complete trials,
the N most recently finished complete or pruned ones and the running ones, and no other trial.
Without a cap: every trial, taken in once, with the draws of Optuna's own TPESampler."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.samplers._tpe import sampler as tpe
from optuna.trial import TrialState

from tests.conftest import open_storage, tiny_study
from tuner.config import load_study_file, parse_study
from tuner.history import IncrementalTPESampler
from tuner.space import suggest
from tuner.study import make_sampler

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _read_by_tpe(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The trials TPE splits into good and bad at each sample, by number."""
    read: list[set[int]] = []
    split = tpe._split_trials

    def spy(study, trials, n_below):  # noqa: ANN001, ANN202 - TPE's own arguments
        read.append({t.number for t in trials})
        return split(study, trials, n_below)

    sample_from = IncrementalTPESampler._sample_from

    def spy_whole(self, study, trial, space, finished, running):  # noqa: ANN001, ANN202
        read.append(set(finished.numbers.tolist()) | {t.number for t in running} - {trial.number})
        return sample_from(self, study, trial, space, finished, running)

    monkeypatch.setattr(tpe, "_split_trials", spy)  # the capped sampler: Optuna's split
    monkeypatch.setattr(IncrementalTPESampler, "_sample_from", spy_whole)
    return read


@pytest.mark.parametrize("history", [10, None])
def test_tpe_with_a_history_reads_the_best_the_recent_and_the_running(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, history: int | None
):
    sampler = {"name": "tpe"} if history is None else {"name": "tpe", "history": history}
    cfg = parse_study(tiny_study(sampler=sampler))
    storage = open_storage(f"journal:///{workdir}/study.log")
    study = optuna.create_study(storage=storage, study_name="s", sampler=make_sampler(cfg, 0))
    values = {}
    for i in range(50):  # values in a shuffled order; every 6th pruned, every 7th failed
        trial = study.ask()
        suggest(trial, cfg)
        if i % 6 == 5:
            trial.report(1.0, 0)
            study.tell(trial, state=TrialState.PRUNED)
        elif i % 7 == 6:
            study.tell(trial, state=TrialState.FAIL)
        else:
            values[trial.number] = (i * 37) % 50 / 10
            study.tell(trial, values[trial.number])
    other = optuna.load_study(
        study_name="s", storage=open_storage(f"journal:///{workdir}/study.log")
    )
    running = other.ask().number  # another worker's: the constant liar reads it

    read = _read_by_tpe(monkeypatch)
    suggest(study.ask(), cfg)

    finished = [
        t.number for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    if history is None:
        expected = set(finished) | {running}
    else:
        best = sorted(values, key=lambda n: (values[n], n))[:history]
        expected = set(best) | set(finished[-history:]) | {running}
        assert len(expected) < len(finished)  # the cap leaves trials out
    assert read and all(numbers == expected for numbers in read)
    storage.engine.dispose()


class _Twin(IncrementalTPESampler):
    """rnn-tuner's TPE, checked at every sample against Optuna's on the same study, trial and
    random state."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.stock = optuna.samplers.TPESampler(**options)
        self.samples = 0

    def _sample(self, study, trial, search_space):  # noqa: ANN001, ANN202 - TPE's own arguments
        self.stock._rng.rng.set_state(self._rng.rng.get_state())
        expected = self.stock._sample(study, trial, search_space)
        found = super()._sample(study, trial, search_space)
        assert found == expected, f"trial {trial.number}: {found} != Optuna's {expected}"
        self.samples += 1
        return found


QUICKSTART = Path(__file__).parents[1] / "studies" / "quickstart.yaml"  # its search space


@pytest.mark.parametrize("liar", [True, False], ids=["constant-liar", "no-liar"])
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_tpe_on_the_whole_history_draws_what_optunas_tpe_draws(
    workdir: Path, liar: bool, direction: str
):
    """Same parameters as Optuna's TPESampler at every sample, on a history with ties, pruned
    trials (with and without reports, NaN included), failed and infeasible ones, trials that
    finish out of order, late enqueued ones and a conditional parameter; on a journal file, as
    a worker reads it (a second process's trials arrive through the log)."""
    cfg = load_study_file(QUICKSTART)
    url = f"journal:///{workdir}/study.log"
    twin = _Twin(constant_liar=liar, seed=3, n_startup_trials=5)
    study = optuna.create_study(
        storage=open_storage(url), study_name="s", sampler=twin, direction=direction
    )
    other = optuna.load_study(  # a second worker; seeded, so the history is the same each run
        study_name="s", storage=open_storage(url), sampler=optuna.samplers.RandomSampler(seed=1)
    )
    rng = random.Random(0)
    open_trials: list[optuna.Trial] = []
    for i in range(160):
        if i % 40 == 10:  # enqueued now, asked later: a small number finishing late
            other.enqueue_trial({"cell": "gru", "lr": 0.01, "batch_size": 64})
        who = study if rng.random() < 0.7 else other
        trial = who.ask()
        suggest(trial, cfg)
        open_trials.append(trial)
        while len(open_trials) > rng.randint(0, 4):  # up to four running, told in any order
            done = open_trials.pop(rng.randrange(len(open_trials)))
            _finish(done, rng)
    for done in open_trials:
        _finish(done, rng)
    assert twin.samples > 90  # ~110 relative samples, and the conditional dropout's on 2 layers


def _finish(trial: optuna.Trial, rng: random.Random) -> None:
    study, roll = trial.study, rng.random()
    if roll < 0.1:
        study.tell(trial, state=TrialState.FAIL)
    elif roll < 0.25:
        for step in range(rng.randint(0, 3)):
            trial.report(math.nan if rng.random() < 0.2 else rng.random(), step)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        if roll < 0.3:
            trial.set_constraint("memory", rng.random() - 0.5)  # feasible or not
        study.tell(trial, round(rng.random(), 1))  # ties


def test_a_space_that_changes_every_trial_keeps_optunas_draws_and_few_columns(workdir: Path):
    """A parameter whose range moves with the trial (a distribution per trial): the draws are
    still Optuna's, and the sampler keeps a bounded number of converted columns, not one per
    distribution it ever saw."""
    from tuner.history import _COLUMNS_KEPT

    twin = _Twin(seed=5, n_startup_trials=3)
    study = optuna.create_study(sampler=twin)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0 + trial.number)  # independent: not in the
        return (x - 0.5) ** 2 + trial.suggest_float("y", -1.0, 1.0) ** 2  # intersection

    study.optimize(objective, n_trials=_COLUMNS_KEPT + 30)
    assert twin.samples > _COLUMNS_KEPT
    (finished,) = twin._finished.values()
    assert len(finished.columns) <= _COLUMNS_KEPT
