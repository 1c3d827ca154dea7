"""The `patient` and `wilcoxon` pruners in real small studies: two enqueued configurations, a
good one first (it completes and sets the bar) and a poor one, which must be pruned at the epoch
the pruner's rule says."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tests.conftest import default_study, tiny_study, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

GOOD = {"lr": 0.03, "hidden_size": 16, "cell": "gru"}  # val_mse by epoch 0.30 0.18 0.13 0.15


def run_study(workdir: Path, pruner: dict, poor: dict) -> list[optuna.trial.FrozenTrial]:
    study = tiny_study(pruner=pruner, budget={"n_trials": 2, "max_epochs": 4})
    study["search"]["lr"]["high"] = 0.3
    study["enqueue"] = [GOOD, poor]
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output
    return default_study("tiny").trials


def test_patient_prunes_only_after_a_trial_stops_improving(workdir: Path):
    # The wrapped pruner would prune every trial at its first epoch (a threshold no value stays
    # under: tests/test_run.py); patience 1 holds it back while a trial still improves.
    poor = {"lr": 0.3, "hidden_size": 4, "cell": "gru"}  # 0.13 0.25 0.22 ...: 2 epochs no better
    always = {"name": "threshold", "options": {"upper": -1.0}}
    trials = run_study(
        workdir, {"name": "patient", "options": {"patience": 1, "wrapped": always}}, poor
    )
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert sorted(trials[1].intermediate_values) == [0, 1, 2]


def test_wilcoxon_prunes_a_trial_worse_than_the_best_at_every_epoch(workdir: Path):
    poor = {"lr": 0.001, "hidden_size": 4, "cell": "rnn"}  # val_mse 1.35 1.29 ...
    # Two epochs, both worse than the best trial's: one-sided p = 0.25
    wilcoxon = {"name": "wilcoxon", "options": {"p_threshold": 0.3, "n_startup_steps": 2}}
    trials = run_study(workdir, wilcoxon, poor)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert sorted(trials[1].intermediate_values) == [0, 1]
