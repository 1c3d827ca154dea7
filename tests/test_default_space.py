"""`search: default` (and no `search:` block): a recommended space for the task kind and the data's
size, printed by `validate`, valid for every shipped study, and a study that runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import STUDIES, default_study, tiny_study, write_study
from tuner.cli import main
from tuner.config import parse_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def adding(n_train: int, seq_len: int = 10, **blocks) -> dict:
    task = {"source": "adding", "seq_len": seq_len, "n_train": n_train, "n_val": 32, "n_test": 32}
    return tiny_study(task=task, search=None, fixed={"patience": None}, **blocks)


def test_validate_prints_the_space_it_chose_and_the_print_reads_back_as_the_same_space(workdir):
    study = adding(200, budget={"n_trials": 2, "max_epochs": 6})
    result = run_cli("validate", str(write_study(workdir / "s.yaml", study)))
    assert result.exit_code == 0, result.output
    head, _, block = result.output.partition("\nsearch: ")
    assert "9 searched parameter(s)" in head
    assert block.startswith("the default space for a regression task of 200 training sequences")
    printed = yaml.safe_load("\n".join(block.splitlines()[1:]))
    assert list(printed) == [
        "cell", "lr", "hidden_size", "num_layers", "dropout", "output_dropout", "batch_size",
        "scheduler", "decay_start",
    ]  # fmt: skip
    assert printed["lr"] == {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    assert printed["dropout"]["when"] == {"num_layers": {"gt": 1}}
    chosen = parse_study(study)
    assert chosen.default_search is not None
    written = parse_study(study | {"search": printed})
    assert written.default_search is None and written.search == chosen.search


def test_the_space_follows_the_data_size():
    def space(n_train: int, seq_len: int = 10) -> dict:
        return parse_study(adding(n_train, seq_len)).search

    small, large = space(200), space(50_000)
    assert (small["hidden_size"].low, small["hidden_size"].high) == (16, 128)
    assert (large["hidden_size"].low, large["hidden_size"].high) == (64, 512)
    assert small["batch_size"].choices == [8, 16, 32] and large["batch_size"].choices == [
        32,
        64,
        128,
    ]
    assert space(12)["batch_size"].choices == [8]  # none larger than the training set
    assert "truncation" not in small and space(200, seq_len=200)["truncation"].choices == [None, 50]
    assert "scheduler" not in small  # tiny_study's 2 epochs leave no room for a schedule


def test_fixed_settings_leave_the_space_and_decide_conditions_on_them():
    one = parse_study(adding(200) | {"fixed": {"num_layers": 1, "lr": 0.01}}).search
    assert not {"num_layers", "lr", "dropout"} & set(one)
    two = parse_study(adding(200) | {"fixed": {"num_layers": 2}}).search
    assert two["dropout"].when is None  # searched, with no condition left to test
    bidirectional = parse_study(adding(200, seq_len=200) | {"fixed": {"bidirectional": True}})
    assert "truncation" not in bidirectional.search
    assert parse_study(adding(200) | {"search": {}}).search == {}  # an empty search stays empty


def test_every_shipped_study_gets_a_valid_default_space():
    for path in sorted(STUDIES.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        raw.pop("search", None)
        if raw.get("sampler", {}).get("name") == "grid":
            with pytest.raises(ValueError, match="the grid sampler needs categorical choices"):
                parse_study(raw, path)
            continue
        cfg = parse_study(raw, path)
        fixed = set(cfg.fixed)
        assert not set(cfg.search) & fixed, path.name  # what a study fixes is not searched
        assert {"cell", "lr", "hidden_size", "batch_size"} - fixed <= set(cfg.search), path.name
        if "embedding_dim" not in fixed:
            token_task = cfg.task.source in ("text", "tagged", "copy")
            assert ("embedding_dim" in cfg.search) == token_task, path.name


def test_a_study_without_a_search_block_runs_on_the_default_space(workdir: Path):
    study = adding(64, budget={"n_trials": 2, "max_epochs": 2})
    assert run_cli("run", str(write_study(workdir / "s.yaml", study))).exit_code == 0
    trials = default_study("tiny", workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    space = parse_study(study).search
    for trial in trials:
        assert {"cell", "lr", "hidden_size", "num_layers", "batch_size"} <= set(trial.params)
        assert set(trial.params) <= set(space)
        assert 16 <= trial.params["hidden_size"] <= 128 and trial.params["batch_size"] in (
            8,
            16,
            32,
        )


def test_the_documented_default_space_is_what_validate_prints(monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    text = (ROOT / "docs" / "study-files.md").read_text()
    shown = text.split("### The default space")[1].split("```\n")[1]
    assert run_cli("validate", "studies/classify-waves-cv.yaml").output == shown
