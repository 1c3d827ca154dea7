"""The pruning callback on a real Trainer: it reports every epoch and refuses a metric that is
never logged instead of silently never pruning."""

from __future__ import annotations

import optuna
import pytest

from models import AddingData, Settings, train
from models.data import task_data
from tuner.objective import MetricNotLoggedError, PruningCallback

TINY = Settings(hidden_size=4, batch_size=16, max_epochs=3, patience=None)


@pytest.fixture(scope="module")
def data():
    return task_data(AddingData(seq_len=5, n_train=32, n_val=16, n_test=16))


def test_a_monitored_metric_that_is_never_logged_is_an_error(data):
    trial = optuna.create_study().ask()
    with pytest.raises(MetricNotLoggedError, match="'val_acc' is never logged; logged: .*val_mse"):
        train(TINY, data, callbacks=[PruningCallback(trial, "val_acc")])


def test_every_epoch_is_reported_and_the_pruner_is_asked_only_after_warm_up(data, monkeypatch):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    asked = []
    monkeypatch.setattr(trial, "should_prune", lambda: asked.append(True) or False)
    train(TINY, data, callbacks=[PruningCallback(trial, "val_mse", first_prunable_epoch=2)])
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1, 2]
    assert len(asked) == 1  # epoch 2 only


def test_default_pruners_wait_half_the_epoch_budget_before_judging():
    from tests.conftest import tiny_study
    from tuner.config import parse_study
    from tuner.study import first_prunable_epoch, make_pruner

    for max_epochs, warmup in ((3, 2), (6, 3), (20, 10)):
        cfg = parse_study(
            tiny_study(pruner={"name": "median"}, budget={"n_trials": 1, "max_epochs": max_epochs})
        )
        assert make_pruner(cfg)._n_warmup_steps == warmup == first_prunable_epoch(cfg)
    cfg = parse_study(tiny_study(pruner={"name": "median", "options": {"n_warmup_steps": 1}}))
    assert make_pruner(cfg)._n_warmup_steps == 1 == first_prunable_epoch(cfg)


def test_a_patient_pruner_wraps_the_pruner_built_with_our_defaults_and_waits_its_warm_up():
    from tests.conftest import tiny_study
    from tuner.config import parse_study
    from tuner.study import first_prunable_epoch, make_pruner

    patient = {"patience": 2, "wrapped": {"name": "median"}}
    cfg = parse_study(
        tiny_study(
            pruner={"name": "patient", "options": patient},
            budget={"n_trials": 1, "max_epochs": 6},
        )
    )
    pruner = make_pruner(cfg)
    assert pruner._patience == 2 and pruner._wrapped_pruner._n_warmup_steps == 3
    assert first_prunable_epoch(cfg) == 3
