"""`source: python`: the user's own loader, through `load_task` and the `rnn-tuner` command.

The loader gets the task block's other keys, returns the splits in the in-memory contract, and
is held to the same checks as the built-in sources, with the loader named in every message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from models.data import NpzData, PythonData, load_task
from models.errors import DataError
from tests.conftest import ROOT, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

WAVES = str(ROOT / "studies" / "data" / "waves.npz")


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def loader_module(directory: Path, name: str, body: str) -> str:
    """A module `name` in `directory` (the working directory in these tests) with `load`."""
    (directory / f"{name}.py").write_text("import numpy as np\n\n" + textwrap.dedent(body))
    return f"{name}:load"


# A loader returning exactly the arrays the npz source makes of waves.npz.
AS_BUILT_IN = """
    from models.data import NpzData, load_task

    def load(path, seed=0):
        data = load_task(NpzData(path=path, target="classification", seed=seed))
        split = lambda s: {"inputs": s.inputs.numpy(), "targets": s.targets.numpy(),
                           "lengths": None if s.lengths is None else s.lengths.numpy()}
        return {"task": data.info.task, "labels": data.info.labels,
                **{k: split(getattr(data, k)) for k in ("train", "val", "test")}}
"""


def test_a_loader_returning_a_built_in_sources_arrays_gives_the_same_task_data(workdir):
    spec = loader_module(workdir, "same_as_npz", AS_BUILT_IN)
    ours = load_task(PythonData(loader=spec, options={"path": WAVES, "seed": 2}))
    built_in = load_task(NpzData(path=WAVES, target="classification", seed=2))
    assert ours.info == built_in.info
    for split in ("train", "val", "test"):
        a, b = getattr(ours, split), getattr(built_in, split)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        assert (a.lengths is None and b.lengths is None) or torch.equal(a.lengths, b.lengths)


GOOD = """
    calls = []

    def load(n=20, steps=5, features=2, **rest):
        calls.append({"n": n, "steps": steps, "features": features, **rest})
        rng = np.random.default_rng(0)
        split = lambda k: {"inputs": rng.normal(size=(k, steps, features)),
                           "targets": np.arange(k) % 3}
        return {"task": "classification", "train": split(n), "val": split(8)}
"""

# (what the loader returns instead, in GOOD's terms; a fragment of the message)
BAD_RETURNS = {
    "not a mapping": ("[1, 2]", "returned list; expected a mapping"),
    "missing val": ('{"task": "classification", "train": split(n)}', "missing val"),
    "unknown task": (
        '{"task": "sorting", "train": split(n), "val": split(8)}',
        "task 'sorting' is not a task kind",
    ),  # fmt: skip
    "nan inputs": (
        '{"task": "regression", "train": {"inputs": np.full((4, 3, 1), np.nan), "targets": np.zeros(4)}, "val": split(8)}',
        "train.inputs[0]: NaN or infinite values",
    ),
    "empty split": (
        '{"task": "classification", "train": split(n), "val": split(0)}',
        "val.inputs: empty",
    ),  # fmt: skip
    "rows differ": (
        '{"task": "classification", "train": {"inputs": np.zeros((4, 3, 2)), "targets": np.zeros(3, int)}, "val": split(8)}',
        "train: targets has 3 rows but inputs has 4 sequences",
    ),
    "class id out of range": (
        '{"task": "classification", "train": split(n), "val": split(8), "labels": ["a", "b"]}',
        "train.targets: class id 2 is outside 0..1",
    ),
    "feature count differs": (
        '{"task": "classification", "train": split(n), "val": {"inputs": np.zeros((2, 5, 7)), "targets": np.zeros(2, int)}}',
        "val.inputs has shape (2, 5, 7)",
    ),
    "lengths too long": (
        '{"task": "classification", "train": {**split(4), "lengths": np.array([5, 6, 1, 1])}, "val": split(8)}',
        "train.lengths[1]: 6 is outside 1..5",
    ),
}


@pytest.mark.parametrize("case", BAD_RETURNS)
def test_what_a_loader_returns_is_checked_and_the_loader_named(case: str, workdir: Path) -> None:
    returned, fragment = BAD_RETURNS[case]
    body = GOOD.replace(
        'return {"task": "classification", "train": split(n), "val": split(8)}',
        f"return {returned}",
    )
    spec = loader_module(workdir, f"bad_{case.replace(' ', '_')}", body)
    with pytest.raises(DataError) as raised:
        load_task(PythonData(loader=spec))
    assert str(raised.value).startswith(f"loader {spec}: ")
    assert fragment in str(raised.value)


def study(task: dict, name: str = "own-loader") -> dict:
    return {
        "study": {"name": name},
        "task": task,
        "fixed": {"batch_size": 8, "hidden_size": 4, "patience": None},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "objective": "val_acc",
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_epochs": 1},
    }


BAD_LOADERS = {
    "no such module": (
        "nowhere.at_all:load",
        "task.loader 'nowhere.at_all:load': module 'nowhere.at_all' does not import (ModuleNotFoundError",
    ),  # fmt: skip
    "no colon": ("justamodule", 'expected "package.module:function"'),
    "no such function": ("good:missing", "module 'good' has no function 'missing'"),
    "module fails to import": (
        "broken:load",
        "module 'broken' does not import (ZeroDivisionError",
    ),  # fmt: skip
    "loader raises": (
        "raises:load",
        "task: loader raises:load raised KeyError: 'cities' (called with n=3)",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", BAD_LOADERS)
def test_validate_reports_a_loader_that_cannot_load(case: str, workdir: Path) -> None:
    loader_module(workdir, "good", GOOD)
    (workdir / "broken.py").write_text("x = 1 / 0\n")
    loader_module(workdir, "raises", "def load(n):\n    return {}['cities']\n")
    spec, fragment = BAD_LOADERS[case]
    task = {"source": "python", "loader": spec, "n": 3}
    result = run_cli("validate", str(write_study(workdir / "s.yaml", study(task))))
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_study_on_a_loader_passes_its_keys_and_runs(workdir: Path) -> None:
    spec = loader_module(workdir, "good_run", GOOD)
    task = {"source": "python", "loader": spec, "n": 24, "steps": 4, "extra": [1, 2]}
    study_file = write_study(workdir / "s.yaml", study(task))
    assert run_cli("validate", str(study_file)).exit_code == 0
    result = run_cli("run", str(study_file))
    assert result.exit_code == 0, result.output
    import good_run  # imported by the loader from the working directory

    assert good_run.calls[0] == {"n": 24, "steps": 4, "features": 2, "extra": [1, 2]}
    assert len(good_run.calls) == 1  # once per process: validation and both trials share it
    assert "2 complete" in result.output


def test_an_objective_the_loaders_task_does_not_measure_is_an_error(workdir: Path) -> None:
    spec = loader_module(workdir, "good_objective", GOOD)
    bad = {**study({"source": "python", "loader": spec}), "objective": "val_mse"}
    result = run_cli("validate", str(write_study(workdir / "s.yaml", bad)))
    assert result.exit_code == 2
    assert "'val_mse' is not measured for a classification task" in result.output


@pytest.mark.slow
def test_the_shipped_loader_study_runs_two_trials(workdir: Path) -> None:
    """The shipped file shrunk (fewer sequences and epochs) but with its loader and search."""
    shipped = yaml.safe_load((ROOT / "studies" / "loader-parity.yaml").read_text())
    shipped["task"].update(n_train=256, n_val=128, n_test=128)
    shipped["budget"] = {"n_trials": 2, "max_epochs": 2}
    # `studies.loaders.parity` imports from the repository root, which is on the tests' path
    result = run_cli("run", str(write_study(workdir / "parity.yaml", shipped)))
    assert result.exit_code == 0, result.output
    assert "2 complete" in result.output
    data = load_task(PythonData(loader="studies.loaders.parity:load", options={"n_train": 50}))
    bits = data.train.inputs[..., 0].sum(1).long() % 2
    assert torch.equal(bits, data.train.targets) and data.info.labels == ("even", "odd")
    assert np.isin(data.train.lengths.numpy(), np.arange(8, 17)).all()
