"""Cross-validation (`task.cv_folds`): the folds, a trial's value as the folds' mean in Optuna and
MLflow, pruning after each fold, and retraining on all the training data for the folds' mean best
epoch. Real npz files, real training, a real SQLite study and MLflow store."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from models import NpzData
from models.data import task_data
from models.data.folds import cv_folds, pooled
from tests.conftest import default_study, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

N, TEST = 60, 12  # sequences in the file; test_fraction 0.2 takes 12 of them


def write_npz(path: Path, target: str = "classification", ragged: bool = False) -> Path:
    """N sequences whose first feature is their index, so a sequence is known wherever it goes;
    3 unequal classes (30, 20, 10) that a network can learn from the second feature."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 20 + [2] * 10)
    x = rng.normal(size=(N, 8, 2)).astype(np.float32)
    x[:, :, 0] = np.arange(N)[:, None]
    x[:, :, 1] += y[:, None]
    if ragged:
        xs = np.empty(N, dtype=object)
        xs[:] = [x[i, : 4 + i % 5] for i in range(N)]
        x = xs
    targets = y if target == "classification" else y.astype(np.float32) + rng.normal(size=N)
    np.savez(path, X=x, y=targets)
    return path


def ids(split) -> list[int]:
    return [int(v) for v in split.inputs[:, 0, 0]]


@pytest.mark.parametrize("ragged", [False, True])
def test_folds_are_disjoint_cover_the_training_data_and_are_stratified(tmp_path, ragged):
    data = task_data(NpzData(path=str(write_npz(tmp_path / "d.npz", ragged=ragged)),
                             target="classification", test_fraction=0.2))  # fmt: skip
    training = set(ids(data.train)) | set(ids(data.val))
    folds = cv_folds(data, 4, seed=0)
    parts = [ids(f.val) for f in folds]
    assert sorted(i for p in parts for i in p) == sorted(training)  # disjoint, and cover them
    assert len(training) == N - TEST and not training & set(ids(data.test))
    classes = dict(zip(ids(data.train) + ids(data.val),
                       [*data.train.targets.tolist(), *data.val.targets.tolist()], strict=True))  # fmt: skip
    share = Counter(classes.values())
    for fold, part in zip(folds, parts, strict=True):
        assert sorted(ids(fold.train)) == sorted(training - set(part))
        assert ids(fold.test) == ids(data.test)
        assert fold.info.n_train == len(fold.train.inputs)
        counts = Counter(classes[i] for i in part)
        for c, total in share.items():  # each class within one sequence of its share
            assert abs(counts[c] - total / 4) < 1
        # a sequence keeps its label and, ragged, its length
        assert all(
            classes[i] == int(t) for i, t in zip(ids(fold.val), fold.val.targets, strict=True)
        )
        if ragged:
            assert [4 + i % 5 for i in ids(fold.val)] == fold.val.lengths.tolist()
    assert parts == [ids(f.val) for f in cv_folds(data, 4, seed=0)]  # seeded
    assert parts != [ids(f.val) for f in cv_folds(data, 4, seed=1)]


def test_regression_folds_cover_the_data_and_pooled_is_all_of_it(tmp_path):
    data = task_data(NpzData(path=str(write_npz(tmp_path / "r.npz", "regression")),
                             target="regression", test_fraction=0.2))  # fmt: skip
    parts = [ids(f.val) for f in cv_folds(data, 5, seed=0)]
    assert sorted(i for p in parts for i in p) == sorted(ids(data.train) + ids(data.val))
    assert sorted(len(p) for p in parts) == [9, 9, 10, 10, 10]
    everything = pooled(data)
    assert sorted(ids(everything.train)) == sorted(ids(data.train) + ids(data.val))
    assert len(everything.val.inputs) == 0 and everything.info.n_train == N - TEST


def cv_study(path: Path, **overrides) -> dict:
    study = {
        "study": {"name": "cv"},
        "task": {"source": "npz", "path": str(path), "target": "classification",
                 "test_fraction": 0.2, "cv_folds": 3},
        "fixed": {"batch_size": 16, "hidden_size": 8, "patience": None},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
        "objective": "val_loss",
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_epochs": 3},
    }  # fmt: skip
    return study | overrides


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def runs(workdir: Path, role: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("cv").experiment_id
    found = client.search_runs([experiment], f"tags.`rnn_tuner.role` = '{role}'")
    return client, found


def curve(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_a_trial_is_worth_the_mean_of_its_folds_and_retrain_uses_all_training_data(workdir):
    study = cv_study(write_npz(workdir / "d.npz"), budget={"n_trials": 2, "max_epochs": 4})
    study["fixed"] |= {"scheduler": "cosine"}  # indexed by epoch over max_epochs
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0
    study = default_study("cv", workdir)
    client, trials = runs(workdir, "trial")
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    for trial in study.trials:
        run = next(r for r in trials if r.data.tags["rnn_tuner.trial"] == str(trial.number))
        folds = [curve(client, run.info.run_id, f"fold{k}/val_loss") for k in range(3)]
        assert all([step for step, _ in c] == [0, 1, 2, 3] for c in folds)  # step = epoch
        best = [min(v for _, v in c) for c in folds]  # each fold's best epoch
        assert trial.value == pytest.approx(statistics.fmean(best))
        assert run.data.metrics["objective_val_loss"] == pytest.approx(trial.value)
        epochs = [min(c, key=lambda p: p[1])[0] for c in folds]
        assert trial.user_attrs["cv_best_epochs"] == epochs
        running = [statistics.fmean(best[: k + 1]) for k in range(3)]
        assert [v for _, v in curve(client, run.info.run_id, "cv_val_loss")] == pytest.approx(
            running
        )
        assert list(trial.intermediate_values.values()) == pytest.approx(running)  # step = fold
        assert "val_loss" not in run.data.metrics  # only per-fold keys: no split is "the" curve

    result = run_cli("retrain", "cv")
    assert result.exit_code == 0, result.output
    _, (retrained,) = runs(workdir, "retrain")
    assert retrained.data.metrics["train_sequences"] == N - TEST  # train and val splits, pooled
    best_trial = study.best_trial
    want = round(statistics.fmean(e + 1 for e in best_trial.user_attrs["cv_best_epochs"]))
    assert len(curve(client, retrained.info.run_id, "train_loss")) == want
    # the schedule keeps its horizon: the retraining's epochs run at the folds' rates
    best_run = next(r for r in trials if r.data.tags["rnn_tuner.trial"] == str(best_trial.number))
    fold_lr = curve(client, best_run.info.run_id, "fold0/lr")
    assert curve(client, retrained.info.run_id, "lr") == fold_lr[:want]
    assert "test_acc" in retrained.data.metrics
    assert f"retrained on all {N - TEST} training sequences" in result.output


def test_pruning_judges_the_running_mean_after_each_fold(workdir):
    # a threshold no value stays under: every trial is pruned once its first fold is done
    study = cv_study(
        write_npz(workdir / "d.npz"), pruner={"name": "threshold", "options": {"upper": -1.0}}
    )
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0
    trials = default_study("cv", workdir).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [0] for t in trials)
    client, found = runs(workdir, "trial")
    for run in found:
        assert len(curve(client, run.info.run_id, "fold0/val_loss")) == 3  # the whole first fold
        assert curve(client, run.info.run_id, "fold1/val_loss") == []


def test_the_default_pruners_can_judge_from_the_first_fold(tmp_path):
    from tuner.config import parse_study
    from tuner.study import first_prunable_epoch, make_pruner

    cfg = parse_study(cv_study(write_npz(tmp_path / "d.npz"), pruner={"name": "median"}))
    assert make_pruner(cfg)._n_warmup_steps == 0 == first_prunable_epoch(cfg)
    cfg = parse_study(cv_study(write_npz(tmp_path / "d.npz"), pruner={"name": "hyperband"}))
    assert make_pruner(cfg)._max_resource == 3


def test_time_ordered_and_impossible_folds_are_refused_by_validate(workdir):
    from tests.conftest import ROOT

    csv = {"study": {"name": "c"}, "task": {"source": "csv", "path": str(ROOT / "studies/data/load.csv"),
                                            "target": "load", "cv_folds": 5}}  # fmt: skip
    result = run_cli("validate", str(write_study(workdir / "c.yaml", csv)))
    assert result.exit_code == 2
    assert "task.cv_folds: csv series are time-ordered" in result.output
    text = {"study": {"name": "t"}, "task": {"source": "text", "path": str(ROOT / "studies/data/stories.txt"),
                                             "cv_folds": 5}}  # fmt: skip
    result = run_cli("validate", str(write_study(workdir / "t.yaml", text)))
    assert (
        result.exit_code == 2
        and "task.cv_folds: a text is one time-ordered stream" in result.output
    )

    npz = write_npz(workdir / "d.npz")
    for folds, fixed, message in (
        (1, {}, "task.cv_folds: at least 2 folds (got 1)"),
        (49, {}, "task.cv_folds: 49 folds need at least 49 sequences outside the test split; the data has 48"),
        (2, {"batch_size": 30}, "fixed.batch_size: batch_size 30 is larger than the training set (24 sequences) of a fold"),
    ):  # fmt: skip
        study = cv_study(npz, fixed=fixed)
        study["task"] = study["task"] | {"cv_folds": folds}
        result = run_cli("validate", str(write_study(workdir / "s.yaml", study)))
        assert result.exit_code == 2 and message in result.output, result.output


LOADER = '''
import numpy as np


def load(path, kind="classification"):
    """The npz file's sequences, 48 to train and 12 to validate, as the contract has them."""
    with np.load(path) as f:
        order = np.random.default_rng(0).permutation(60)  # every class in every split
        x, y = f["X"][order], f["y"][order]
    if kind == "tagging":
        y = np.repeat(y[:, None], x.shape[1], axis=1)
    split = lambda s: {"inputs": x[s], "targets": y[s]}
    return {"task": kind, "train": split(slice(0, 36)), "val": split(slice(36, 48)),
            "test": split(slice(48, 60))}
'''


def test_a_python_loader_is_cross_validated_without_seeing_cv_folds(workdir):
    (workdir / "myloader.py").write_text(LOADER)
    npz = write_npz(workdir / "d.npz")
    study = cv_study(npz, budget={"n_trials": 1, "max_epochs": 2})
    study["task"] = {"source": "python", "loader": "myloader:load", "path": str(npz), "cv_folds": 2}
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0
    (trial,) = default_study("cv", workdir).trials
    assert trial.state.name == "COMPLETE" and list(trial.intermediate_values) == [0, 1]

    study["task"] |= {"kind": "tagging"}
    result = run_cli("validate", str(write_study(workdir / "t.yaml", study)))
    assert result.exit_code == 2
    assert "task.cv_folds: cross-validation is for classification and regression" in result.output


def test_retrain_after_cv_stops_at_the_folds_mean_best_epoch_with_the_schedule_horizon_kept(
    tmp_path,
):
    from tuner.config import parse_study
    from tuner.retrain import training_plan

    study = cv_study(write_npz(tmp_path / "d.npz"), budget={"n_trials": 1, "max_epochs": 6})
    cfg = parse_study(study | {"fixed": study["fixed"] | {"scheduler": "cosine", "patience": 2}})
    trial = optuna.trial.create_trial(
        params={"lr": 0.01},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)},
        value=0.5,
        user_attrs={"cv_best_epochs": [0, 1, 3]},  # epochs 1, 2 and 4 counted from one
    )
    settings, data, stop_after = training_plan(cfg, trial)
    assert stop_after == 2 and settings.max_epochs == 6 and settings.patience is None
    assert settings.scheduler == "cosine" and settings.lr == 0.01
    assert len(data.train.inputs) == N - TEST and len(data.val.inputs) == 0
