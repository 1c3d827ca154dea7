"""Your own network (`fixed: network`): built by the user's function, trained through the same
core as `SequenceNet` (truncated BPTT and carried state when it returns one, full BPTT when it
does not), its `user.` settings searched and recorded, and every bad network stopped by
`validate`."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from models import Settings, TextData, load_task, train
from tests.conftest import ROOT, STUDIES, default_study, tiny_study, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

CONV_GRU = "studies.networks.conv_gru:build"

# A network without a state: a causal convolution and a linear head, nothing carried.
STATELESS = """
    import torch.nn.functional as F
    from torch import nn


    class Flat(nn.Module):
        def __init__(self, inputs, outputs):
            super().__init__()
            self.conv = nn.Conv1d(inputs, 8, 3)
            self.head = nn.Linear(8, outputs)

        def forward(self, inputs, lengths, state):
            x = self.conv(F.pad(inputs.float().transpose(1, 2), (2, 0))).relu()
            return self.head(x.transpose(1, 2)), None


    def build(settings, info):
        return Flat(info.input_size, info.output_size)
"""


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def network_module(directory: Path, name: str, body: str) -> str:
    """A module `name` in `directory` (the working directory here) defining `build`."""
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return f"{name}:build"


@pytest.fixture
def repo_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped example network imports as it does from the repo root."""
    monkeypatch.syspath_prepend(str(ROOT))


def shrunk_example() -> dict:
    """studies/user-network.yaml on a short adding problem, two trials of one epoch; the first
    trial truncates (the network carries a state), the second backpropagates in full."""
    study = yaml.safe_load((STUDIES / "user-network.yaml").read_text())
    study["task"] = {"source": "adding", "seq_len": 10, "n_train": 128, "n_val": 64, "n_test": 64}
    study["fixed"]["batch_size"] = 32
    study["search"]["truncation"]["choices"] = [None, 5]
    study["search"]["hidden_size"] = {"type": "int", "low": 4, "high": 8}
    study["enqueue"] = [{"truncation": 5}, {"truncation": None}]
    study["budget"] = {"n_trials": 2, "max_epochs": 1}
    return study


@pytest.mark.slow
def test_the_example_network_is_tuned_with_its_user_settings_recorded(
    workdir: Path, repo_importable: None
) -> None:
    study_file = write_study(workdir / "user-network.yaml", shrunk_example())
    assert run_cli("validate", str(study_file)).exit_code == 0
    result = run_cli("run", str(study_file))
    assert result.exit_code == 0, result.output
    assert "2 complete" in result.output

    trials = default_study("user-network", workdir).trials
    assert [t.params["truncation"] for t in trials] == [5, None]
    assert all(t.params["user.kernel_size"] in (2, 4, 8) for t in trials)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("user-network").experiment_id
    runs = client.search_runs([experiment], "tags.`rnn_tuner.role` = 'trial'")
    by_number = {int(r.data.tags["rnn_tuner.trial"]): r for r in runs}
    for t in trials:
        params = by_number[t.number].data.params
        assert params["user.kernel_size"] == str(t.params["user.kernel_size"])  # searched
        assert params["user.channels"] == "16"  # fixed
        assert params["network"] == CONV_GRU
        flow = client.get_metric_history(by_number[t.number].info.run_id, "grad_flow")
        assert flow and math.isfinite(flow[-1].value)  # measured from the raw inputs


@pytest.mark.slow
def test_the_example_network_carries_its_state_through_a_truncated_language_model(
    repo_importable: None,
) -> None:
    """Token inputs, chunks of 5 steps, state carried from batch to batch."""
    data = load_task(TextData(path=str(STUDIES / "data" / "stories.txt"), seq_len=20))
    settings = Settings(
        network=CONV_GRU, user={"kernel_size": 2}, hidden_size=8, embedding_dim=8,
        truncation=5, batch_size=16, lr=1e-2, max_epochs=1, patience=None,
    )  # fmt: skip
    result = train(settings, data, trainer_kwargs={"limit_train_batches": 10})
    row = result.history[-1]
    assert row["val_loss"] < math.log(data.info.output_size)  # it learned: below a uniform guess
    assert math.isnan(row["grad_flow"])  # token ids: no differentiable input to follow
    assert result.module.train_state is not None  # carried past the last batch


def stateless_study(workdir: Path, truncation: dict | None) -> Path:
    spec = network_module(workdir, "flat_net", STATELESS)
    study = tiny_study("flat", fixed={"network": spec, "batch_size": 32, "patience": None})
    study["search"] = {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
    if truncation is not None:
        study["search"]["truncation"] = truncation
    study["budget"] = {"n_trials": 2, "max_epochs": 1}
    return write_study(workdir / "flat.yaml", study)


def test_a_stateless_network_trains_with_full_backpropagation(workdir: Path) -> None:
    result = run_cli("run", str(stateless_study(workdir, None)))
    assert result.exit_code == 0, result.output
    assert "2 complete" in result.output


def test_a_stateless_network_with_truncation_is_refused_at_validate(workdir: Path) -> None:
    study_file = stateless_study(workdir, {"type": "categorical", "choices": [None, 5]})
    result = run_cli("validate", str(study_file))
    assert result.exit_code == 2, result.output
    assert (
        "search.truncation.choices.1: network flat_net:build returns no state, so it trains "
        "with full backpropagation; truncation must be null"
    ) in result.output
    assert "choices.0" not in result.output
    assert "Traceback" not in result.output


BAD_NETWORKS = {  # module body (or None: no module), spec, a fragment of the message
    "does not import": (None, "nowhere.net:build", "module 'nowhere.net' does not import"),
    "no build": ("x = 1\n", "nobuild:build", "module 'nobuild' has no function 'build'"),
    "build raises": (
        "def build(settings, info):\n    return settings.user['width']\n",
        "raising:build",
        "fixed.network 'raising:build': build raised KeyError: 'width'",
    ),
    "not a module": (
        "def build(settings, info):\n    return 42\n",
        "number:build",
        "build returned a int, not a torch.nn.Module",
    ),
    "wrong output shape": (
        STATELESS.replace("info.output_size", "info.output_size + 2"),
        "wide:build",
        "outputs must be (batch, steps, output_size) = (4, 10, 1) on this regression task, "
        "got a tensor of shape (4, 10, 3)",
    ),
    "no state returned": (
        STATELESS.replace(", None\n", "\n"),
        "single:build",
        "forward must return (outputs, state), got a tensor of shape (4, 10, 1)",
    ),
}


@pytest.mark.parametrize("case", BAD_NETWORKS)
def test_validate_stops_a_network_that_cannot_run(case: str, workdir: Path) -> None:
    body, spec, fragment = BAD_NETWORKS[case]
    if body is not None:
        network_module(workdir, spec.split(":")[0], body)
    study = tiny_study("bad-net", fixed={"network": spec, "batch_size": 32, "patience": None})
    result = run_cli("validate", str(write_study(workdir / "bad.yaml", study)))
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_user_settings_are_checked_by_name_and_placement(workdir: Path) -> None:
    spec = network_module(workdir, "flat_names", STATELESS)
    study = tiny_study("names", fixed={"network": spec, "user": {"width": 3}, "user.": 1})
    study["search"] = {
        "network": {"type": "categorical", "choices": [spec]},
        "user.width": {"type": "int", "low": 2, "high": 4},
    }
    result = run_cli("validate", str(write_study(workdir / "names.yaml", study)))
    assert result.exit_code == 2, result.output
    assert "search.network: one network per study; set it in fixed" in result.output
    assert "fixed.user.: unknown setting" in result.output
    assert "search.user.width: also in fixed; keep it in one of the two" in result.output
