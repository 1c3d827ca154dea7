"""The metric table (models.metrics) is the one source: what the module records, what train()
accepts as a monitor and what a study file may name as its objective all follow it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from models.metrics import METRIC_MODES, METRICS, TASKS, summarize, val_metric_names
from tests.conftest import ROOT, tiny_study
from tuner.config import StudyFileError, parse_study

# the summed counts `evaluate_batch` produces, per task
SUMS = {
    "classification": {"loss_sum": 6.0, "correct": 3, "count": 4},
    "tagging": {"loss_sum": 6.0, "correct": 3, "count": 4},
    "regression": {"loss_sum": 2.0, "sq_sum": 2.0, "abs_sum": 1.0, "count": 4},
    "language_model": {"loss_sum": 6.0, "correct": 3, "count": 4},
}


@pytest.mark.parametrize("task,level", [(t, None) for t in TASKS] + [("language_model", "char")])
def test_the_metrics_computed_are_the_tables_and_nothing_else(task, level):
    computed = summarize(SUMS[task], task, level, "val_")
    assert tuple(computed) == val_metric_names(task, level)
    assert all(math.isfinite(v) for v in computed.values())


def test_a_forecast_adds_its_naive_baselines_and_the_relative_mse():
    baselines = {"val_mse_naive": 2.0, "val_mse_snaive": 1.0, "test_mse_naive": 4.0}
    computed = summarize(SUMS["regression"], "regression", None, "val_", baselines)
    assert tuple(computed) == val_metric_names("regression", None, ("naive", "snaive"))
    assert computed["val_mse"] == 0.5 and computed["val_mse_naive"] == 2.0
    assert computed["val_mse_rel"] == 0.5  # over the better baseline, the seasonal one
    test = summarize(SUMS["regression"], "regression", None, "test_", baselines)
    assert (test["test_mse_naive"], test["test_mse_rel"]) == (4.0, 0.125)
    assert "test_mse_snaive" not in test


def test_every_task_has_a_loss_and_every_metric_a_direction_and_a_meaning():
    for task in TASKS:
        assert val_metric_names(task)[0] == "val_loss"
    assert {m.name for m in METRICS} == set(METRIC_MODES)
    assert all(m.mode in ("min", "max") and m.meaning for m in METRICS)


def test_a_study_objective_takes_its_direction_and_validity_from_the_table():
    cfg = parse_study(tiny_study(task={"source": "copy"}, objective={"metric": "val_acc"}))
    assert cfg.directions == ["maximize"]
    cfg = parse_study(tiny_study(objective=[{"metric": "val_mae"}, {"metric": "n_params"}]))
    assert cfg.directions == ["minimize", "minimize"]
    with pytest.raises(StudyFileError, match="valid: val_loss, val_mse, val_mae, n_params"):
        parse_study(tiny_study(objective={"metric": "val_acc"}))


def test_a_metric_recorded_only_at_one_level_says_which(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat\n" * 50, encoding="utf-8")
    task = {"source": "text", "path": str(corpus), "level": "word", "seq_len": 5}
    with pytest.raises(StudyFileError, match="objective.metric: val_bpc needs task.level: char"):
        parse_study(tiny_study(task=task, objective={"metric": "val_bpc"}))


def test_reading_the_table_and_a_synthetic_study_does_not_import_torch():
    code = (
        "import sys; from tests.conftest import tiny_study; from tuner.config import parse_study; "
        "parse_study(tiny_study()); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
