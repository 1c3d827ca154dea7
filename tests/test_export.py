"""`rnn-tuner export`: a study's kept model as ONNX and TorchScript, for each kind of task.

Each study runs one tiny trial, which keeps its model; the exported file is then loaded by its
own runtime (onnxruntime, torch.jit) and compared with the kept PyTorch model, also on a batch
of another size and length than the one it was traced on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

import tuner
from models.data import task_data
from tests.conftest import ROOT, write_study
from tuner.cli import main
from tuner.config import parse_study
from tuner.export import validation_batch

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

DATA = ROOT / "studies" / "data"
SMALL = {"hidden_size": 8, "batch_size": 32, "patience": None}
TASKS = {
    # regression, fixed-length real-valued inputs
    "adding": ({"source": "adding", "seq_len": 12, "n_train": 96, "n_val": 32, "n_test": 32}, {}),
    # classification, variable-length real-valued inputs (a ragged .npz)
    "waves": ({"source": "npz", "path": str(DATA / "waves.npz"), "target": "classification"}, {}),
    # tagging, variable-length token inputs
    "tagged": ({"source": "tagged", "path": str(DATA / "tagged.tsv")}, {"embedding_dim": 8}),
    # language model, token windows
    "text": (
        {"source": "text", "path": str(DATA / "stories.txt"), "level": "char", "seq_len": 16},
        {"embedding_dim": 8},
    ),
}


def one_trial_study(name: str, task: dict, fixed: dict, cell: str = "lstm") -> dict:
    return {
        "study": {"name": name},
        "task": task,
        "fixed": {**SMALL, **fixed, "cell": cell},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 1, "max_epochs": 1},
    }


def export(*args: str):
    return CliRunner().invoke(main, ["export", *args])


def outputs(path: Path, fmt: str, inputs: torch.Tensor, lengths: torch.Tensor | None):
    """The file's outputs by its own runtime: what a user of the file runs."""
    args = [inputs] if lengths is None else [inputs, lengths]
    if fmt == "torchscript":
        return torch.jit.load(str(path))(*args).detach().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["inputs", "lengths"][: len(args)]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]


def other_batch(cfg, inputs: torch.Tensor, lengths: torch.Tensor | None):
    """Three validation sequences after the traced ones, cut to another length."""
    data = task_data(cfg.task)
    if lengths is None:
        if data.info.task == "language_model":
            return data.val.inputs[: 3 * 11].reshape(3, 11), None
        return data.val.inputs[8:11, :-2], None
    others = data.val.lengths[8:11].long()
    return data.val.inputs[8:11, : int(others.max())], others


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TASKS))
def test_the_kept_model_exports_to_onnx_and_torchscript_with_the_same_outputs(
    kind: str, workdir: Path
):
    task, fixed = TASKS[kind]
    study = one_trial_study(kind, task, fixed)
    tuner.run(study, progress=False)
    net = tuner.best_model(kind)
    cfg = parse_study(study)
    inputs, lengths = validation_batch(task_data(cfg.task))
    assert (lengths is not None) == (kind in ("waves", "tagged"))  # variable-length data
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        path = workdir / f"{kind}.{suffix}"
        result = export(kind, "--format", fmt, "--output", str(path))
        assert result.exit_code == 0, result.output
        assert "exported trial 0 (" in result.output and "differ" in result.output
        for batch in ((inputs, lengths), other_batch(cfg, inputs, lengths)):
            with torch.no_grad():
                expected = net(*[t for t in batch if t is not None]).numpy()
            np.testing.assert_allclose(outputs(path, fmt, *batch), expected, atol=1e-5)


@pytest.mark.slow
def test_a_network_that_cannot_be_exported_is_a_clear_error(workdir: Path):
    task, fixed = TASKS["tagged"]
    study = one_trial_study("bi", task, {**fixed, "bidirectional": True}, cell="gru")
    tuner.run(study, progress=False)
    result = export("bi", "--format", "onnx", "--output", str(workdir / "bi.onnx"))
    assert result.exit_code == 2, result.output
    assert "bidirectional network on variable-length sequences" in result.output
    assert "Traceback" not in result.output and not (workdir / "bi.onnx").exists()

    missing = export("bi", "--trial", "5", "--format", "onnx", "--output", "x.onnx")
    assert missing.exit_code == 2 and "trial 5 of study 'bi' kept no model" in missing.output
    assert "trials with a model: 0" in missing.output


def test_export_names_the_valid_formats(workdir: Path):
    write_study(workdir / "s.yaml", one_trial_study("s", *TASKS["adding"]))
    result = export("s", "--format", "pickle", "--output", "x")
    assert result.exit_code == 2 and "'onnx', 'torchscript'" in result.output
