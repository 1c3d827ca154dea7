"""Study files: every shipped file validates; a bad file gets one message listing every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import STUDIES, tiny_study, write_study
from tuner.cli import main
from tuner.config import StudyFileError, load_study_file, parse_study


def validate(path: Path):
    return CliRunner().invoke(main, ["validate", str(path)])


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_validates_and_says_how_to_run_it(path: Path, monkeypatch):
    monkeypatch.chdir(STUDIES.parent)  # data paths in shipped files are relative to the repo root
    text = path.read_text()
    assert text.startswith("#"), "a study file opens with a comment saying what it is"
    assert f"rnn-tuner run studies/{path.name}" in text.split("\n\n")[0]
    result = validate(path)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_quickstart_searches_the_six_settings_and_the_cell():
    cfg = load_study_file(STUDIES / "quickstart.yaml")
    assert {
        "lr",
        "batch_size",
        "hidden_size",
        "num_layers",
        "dropout",
        "truncation",
        "cell",
    } <= set(cfg.search)
    assert None in cfg.search["truncation"].choices  # full BPTT is one of the options


def test_a_file_with_many_mistakes_gets_one_message_naming_each(tmp_path: Path):
    study = tiny_study(
        task={"source": "adding", "seq_len": 20, "n_train": 100, "bogus": 3},
        fixed={"cell": "lstmx", "lrr": 1},
        search={
            "lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True},
            "hidden_size": {"type": "int", "low": 64, "high": 16},
            "truncation": {"type": "categorical", "choices": [None, 50]},
            "batch_size": {"type": "categorical", "choices": [32, 500]},
            "dropout": {
                "type": "float",
                "low": 0.0,
                "high": 0.5,
                "when": {"num_layers": {"gt": 1}},
            },
        },
        objective={"metric": "val_acc"},
        sampler={"name": "bogus"},
        budget={"n_trials": 0},
    )
    study["typo_block"] = 1
    result = validate(write_study(tmp_path / "bad.yaml", study))
    assert result.exit_code == 2
    expected = [
        "task.bogus: unknown key",
        "typo_block: unknown key",
        "budget.n_trials:",
        "fixed.lrr: unknown setting",
        "fixed.cell: Input should be 'rnn', 'lstm' or 'gru' (got 'lstmx')",
        "search.lr: a log range needs a positive low bound (got low=0.0, high=0.1)",
        "search.hidden_size: low (64) is above high (16)",
        "search.truncation.choices.1: truncation 50 is longer than the sequences (20 steps)",
        "search.batch_size.choices.1: batch_size 500 is larger than the training set (100 sequences)",
        "search.dropout.when.num_layers: a condition must name a parameter searched above dropout",
        "sampler.name: unknown sampler 'bogus'; valid: tpe, random, grid, cmaes, qmc, gp, nsgaii",
    ]
    for line in expected:
        assert line in result.output, f"missing {line!r} in:\n{result.output}"
    # the objective could not be checked against a broken task block, so it is not reported twice
    assert result.output.count("problem(s)") == 1


def test_objective_metric_must_be_measured_by_the_task(tmp_path: Path):
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(objective={"metric": "val_acc"}))
    assert "objective.metric: 'val_acc' is not measured for a regression task" in str(e.value)
    assert "valid: val_loss, val_mse, val_mae, n_params" in str(e.value)


def test_multi_objective_refuses_a_pruner():
    with pytest.raises(StudyFileError, match="cannot prune multi-objective"):
        parse_study(
            tiny_study(
                objective=[{"metric": "val_mse"}, {"metric": "n_params"}], pruner={"name": "median"}
            )
        )
    cfg = parse_study(
        tiny_study(
            objective=[{"metric": "val_mse"}, {"metric": "n_params"}],
            pruner=None,
            sampler={"name": "nsgaii"},
        )
    )
    assert cfg.directions == ["minimize", "minimize"] and cfg.pruner_name == "none"


def test_missing_data_file_names_the_path(tmp_path: Path):
    with pytest.raises(StudyFileError) as e:
        parse_study(
            tiny_study(
                task={
                    "source": "npz",
                    "path": str(tmp_path / "nope.npz"),
                    "target": "classification",
                },
                objective={"metric": "val_acc"},
            )
        )
    assert "task.path: data file not found" in str(e.value) and "nope.npz" in str(e.value)


def test_setting_in_both_fixed_and_search_is_an_error():
    with pytest.raises(StudyFileError, match="search.lr: also in fixed"):
        parse_study(tiny_study(fixed={"lr": 0.01}))


def test_budget_keys_live_in_budget():
    with pytest.raises(StudyFileError, match="fixed.max_epochs: set it as budget.max_epochs"):
        parse_study(tiny_study(fixed={"max_epochs": 3}))


def test_unreadable_yaml_and_missing_file(tmp_path: Path):
    (tmp_path / "broken.yaml").write_text("study: [unclosed\n")
    assert "not valid YAML" in validate(tmp_path / "broken.yaml").output
    result = validate(tmp_path / "absent.yaml")
    assert result.exit_code == 2 and "no such file" in result.output


def test_objective_shorthands_are_one_item_lists():
    cfg = parse_study(tiny_study(objective="val_mae"))
    assert [o.metric for o in cfg.objectives] == ["val_mae"] and cfg.directions == ["minimize"]
    assert yaml.safe_dump(cfg.model_dump(mode="json"))  # a config serialises back to plain data


def test_a_file_without_objective_optimises_the_validation_loss():
    study = tiny_study()
    del study["objective"]
    cfg = parse_study(study)
    assert [o.metric for o in cfg.objectives] == ["val_loss"] and cfg.directions == ["minimize"]


@pytest.mark.parametrize("metrics", [["n_params", "n_params"], ["val_mse", "val_mse"]])
def test_an_objective_named_twice_is_refused_before_any_trial(tmp_path: Path, metrics):
    study = tiny_study(objective=[{"metric": m} for m in metrics], pruner=None)
    result = validate(write_study(tmp_path / "twice.yaml", study))
    assert result.exit_code == 2, result.output
    assert f"objective.1.metric: '{metrics[0]}' is already objective.0" in result.output
    assert "Traceback" not in result.output


def test_the_primary_objective_is_the_first_that_is_not_the_network_size():
    def primary(*metrics):
        return parse_study(
            tiny_study(objective=[{"metric": m} for m in metrics], pruner=None)
        ).primary_metric

    assert primary("val_mse") == "val_mse"
    assert primary("n_params", "val_mae") == "val_mae"
    assert primary("val_mae", "n_params", "val_mse") == "val_mae"


def test_when_conditions_accept_exactly_the_operators_the_sampler_applies():
    from tuner.config import COMPARISONS

    study = tiny_study(
        fixed={"batch_size": 32, "patience": None, "optimizer": "sgd"},
        search={
            "num_layers": {"type": "int", "low": 1, "high": 3},
            "dropout": {
                "type": "float",
                "low": 0.0,
                "high": 0.5,
                "when": {"num_layers": {"over": 1}},
            },
        },
    )
    with pytest.raises(StudyFileError) as e:
        parse_study(study)
    assert f"valid: {', '.join(COMPARISONS)}" in str(e.value)
    assert "eq, ne, gt, ge, lt, le, in" in str(e.value)
