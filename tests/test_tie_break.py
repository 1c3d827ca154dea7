"""`objective: {metric: val_acc, tie_break: val_loss}`: trials with equal accuracy are ordered by
their loss, different accuracies are never reordered, and MLflow keeps the true accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tests.conftest import default_study, tiny_study, write_study
from tuner.cli import main
from tuner.config import Objective, StudyFileError, parse_study

pytestmark = pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\):FutureWarning")


def test_equal_accuracies_are_ordered_by_loss_and_different_ones_never_reordered():
    obj = Objective(metric="val_acc", tie_break="val_loss")
    assert obj.score({"val_acc": 0.8, "val_loss": 0.3}) > obj.score({"val_acc": 0.8, "val_loss": 0.4})  # fmt: skip
    # one item apart on a validation set of ten million: still ordered by accuracy, whatever loss
    n = 10_000_000
    worse = obj.score({"val_acc": 0.5, "val_loss": 0.0})
    better = obj.score({"val_acc": 0.5 + 1 / n, "val_loss": 1e30})
    assert better > worse
    assert obj.score({"val_acc": 0.8, "val_loss": 5.0}) == pytest.approx(0.8, abs=1e-8)
    # a minimised metric broken by a maximised one: the higher accuracy gives the lower value
    low = Objective(metric="val_loss", tie_break="val_acc")
    assert low.score({"val_loss": 0.3, "val_acc": 0.9}) < low.score({"val_loss": 0.3, "val_acc": 0.8})  # fmt: skip
    assert Objective(metric="val_acc").score({"val_acc": 0.8, "val_loss": 9.0}) == 0.8


def test_a_tie_break_must_be_another_metric_the_task_measures():
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(objective={"metric": "val_mse", "tie_break": "val_acc"}))
    assert "objective.tie_break: 'val_acc' is not measured for a regression task" in str(e.value)
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(objective={"metric": "val_mse", "tie_break": "val_mse"}))
    assert "objective.tie_break: the metric itself" in str(e.value)


def _separable(path: Path) -> Path:
    """Constant sequences of +1 or -1, labelled by their sign: every trial reaches accuracy 1."""
    rng = np.random.default_rng(0)
    sign = rng.choice([-1.0, 1.0], size=120)
    x = np.repeat(sign[:, None, None], 6, axis=1).astype(np.float32)  # (N, T, 1)
    np.savez(path, X=x, y=(sign > 0).astype(np.int64))
    return path


def test_two_trials_with_equal_accuracy_are_ordered_by_their_loss(workdir: Path):
    study = tiny_study(
        task={
            "source": "npz",
            "path": str(_separable(workdir / "sign.npz")),
            "target": "classification",
        },  # fmt: skip
        fixed={"batch_size": 16, "patience": None, "cell": "gru", "lr": 0.05},
        search={"hidden_size": {"type": "int", "low": 2, "high": 16}},
        enqueue=[{"hidden_size": 2}, {"hidden_size": 16}],
        objective={"metric": "val_acc", "tie_break": "val_loss"},
        budget={"n_trials": 2, "max_epochs": 4},
    )
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output

    trials = default_study("tiny").trials
    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    runs = {
        int(r.data.tags["rnn_tuner.trial"]): r for r in runs if "rnn_tuner.trial" in r.data.tags
    }
    losses = {}
    for t in trials:
        run_id = runs[t.number].info.run_id
        acc = [m.value for m in client.get_metric_history(run_id, "val_acc")]
        loss = [m.value for m in client.get_metric_history(run_id, "val_loss")]
        assert max(acc) == 1.0  # recorded as the true accuracy, every epoch
        losses[t.number] = min(v for a, v in zip(acc, loss, strict=True) if a == 1.0)
        assert runs[t.number].data.metrics["objective_val_acc"] == 1.0
        assert 1.0 - 1e-8 < t.value < 1.0  # Optuna's number: the accuracy, a hair below for loss
    assert losses[0] != losses[1]
    by_loss = sorted(trials, key=lambda t: losses[t.number])
    by_value = sorted(trials, key=lambda t: t.value, reverse=True)
    assert [t.number for t in by_value] == [t.number for t in by_loss]
    best = default_study("tiny").best_trial
    assert best.number == by_loss[0].number


def test_retrain_keeps_the_weights_of_the_epoch_the_tie_break_chose(tmp_path: Path):
    from models import NpzData, Settings, evaluate, train
    from models.data import task_data
    from tuner.retrain import BestWeights

    data = task_data(NpzData(path=str(_separable(tmp_path / "sign.npz")), target="classification"))
    keep = BestWeights(Objective(metric="val_acc", tie_break="val_loss"))
    settings = Settings(cell="gru", hidden_size=8, lr=0.05, batch_size=16, patience=None, max_epochs=5)  # fmt: skip
    result = train(settings, data, callbacks=[keep])
    rows = result.history
    assert [r["val_acc"] for r in rows].count(1.0) >= 2  # a tie the loss has to break
    chosen = min((r for r in rows if r["val_acc"] == 1.0), key=lambda r: r["val_loss"])
    assert chosen is not rows[[r["val_acc"] for r in rows].index(1.0)]  # not the first to tie
    result.module.load_state_dict(keep.state)
    assert evaluate(result.module, data, "val")["val_loss"] == pytest.approx(chosen["val_loss"])


def test_the_pruner_is_told_the_same_number_as_the_trial_value():
    from models import AddingData, Settings, train
    from models.data import task_data
    from tuner.objective import PruningCallback

    data = task_data(AddingData(seq_len=5, n_train=32, n_val=16, n_test=16))
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    objective = Objective(metric="val_mse", tie_break="val_mae")
    settings = Settings(hidden_size=4, batch_size=16, max_epochs=2, patience=None)
    result = train(settings, data, callbacks=[PruningCallback(study.ask(), objective)])
    reported = study.trials[0].intermediate_values
    for row in result.history:
        assert reported[row["epoch"]] == objective.score(row) != row["val_mse"]
        assert reported[row["epoch"]] == pytest.approx(row["val_mse"], abs=1e-8)
