"""`sampler: {name: tpe, history: N}` (tuner.history): TPE reads the N best complete trials, the N
most recently finished complete or pruned ones and the running ones, and no other trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.samplers._tpe import sampler as tpe
from optuna.trial import TrialState

from tests.conftest import open_storage, tiny_study
from tuner.config import parse_study
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

    monkeypatch.setattr(tpe, "_split_trials", spy)
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
