"""`rnn-tuner export STUDY --format onnx|torchscript --output FILE`: a kept model as one file.

    rnn-tuner export quickstart --format onnx --output quickstart.onnx        # the best trial's
    rnn-tuner export quickstart --trial 7 --format torchscript --output t7.pt
    rnn-tuner export quickstart --model-uri models:/rnn-tuner-quickstart/1 --format onnx --output r.onnx

The model: the study's best trial's kept model (tuner.keep), trial N's, or any MLflow model URI
of the study's network (e.g. the version `retrain` registered). The file is written by
models.export, then run on a batch of the study's validation data by its own runtime
(onnxruntime, torch.jit) and compared with the PyTorch model: the command reports the largest
difference, and refuses the file if it is larger than float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from torch import Tensor

from models import TaskData
from models.data import task_data
from models.export import NotExportable, export, run_exported
from tuner.config import StudyConfig
from tuner.keep import kept_model_uri
from tuner.tracking import Tracker

TOLERANCE = 1e-4  # float32 through another runtime: differences of ~1e-6 are rounding


@dataclass
class Exported:
    source: str  # "trial 3" or the model URI given
    model_uri: str
    path: Path
    fmt: str
    inputs: str  # what the file takes, e.g. "inputs (B, T, 2) float32, lengths (B,) int64"
    n_sequences: int
    max_difference: float

    def text(self) -> str:
        return (
            f"exported {self.source} ({self.model_uri}) to {self.path} as {self.fmt}: takes "
            f"{self.inputs}\n  on {self.n_sequences} validation sequence(s) its outputs differ "
            f"from the PyTorch model's by at most {self.max_difference:.2g}"
        )


def export_model(
    study: optuna.Study,
    cfg: StudyConfig,
    tracker: Tracker,
    parent_id: str,
    fmt: str,
    output: Path,
    trial: int | None = None,
    model_uri: str | None = None,
) -> Exported:
    """Write the model to `output` as `fmt` and check it on the study's validation data."""
    if model_uri is None:
        number, model_uri = kept_model_uri(study, tracker, parent_id, trial)
        source = f"trial {number}"
    else:
        source = "the model"
    net = tracker.load_model(model_uri).eval()
    inputs, lengths = validation_batch(task_data(cfg.task))
    export(net, inputs, lengths, output, fmt)
    with torch.no_grad():
        expected = net(inputs, lengths).numpy()
    difference = float(abs(run_exported(output, fmt, inputs, lengths) - expected).max())
    if not difference <= TOLERANCE:
        output.unlink(missing_ok=True)
        raise NotExportable(
            f"the {fmt} file's outputs differ from the PyTorch model's by {difference:.3g} on "
            "validation data, so it was not kept; use the MLflow model instead"
        )
    return Exported(
        source, model_uri, output, fmt, _signature(inputs, lengths), len(inputs), difference
    )


def validation_batch(data: TaskData, n: int = 8) -> tuple[Tensor, Tensor | None]:
    """Up to `n` validation sequences as the network takes them (with their lengths where the
    data have variable lengths); a language model's windows of the validation stream."""
    val = data.val
    if data.info.task == "language_model":
        window = data.info.max_len
        rows = max(1, min(n, len(val.inputs) // window))
        return val.inputs[: rows * window].reshape(rows, -1), None  # (rows, <= window)
    lengths = None if val.lengths is None else val.lengths[:n].long()
    return val.inputs[:n], lengths


def _signature(inputs: Tensor, lengths: Tensor | None) -> str:
    axes = "(B, T)" if inputs.dim() == 2 else f"(B, T, {inputs.shape[-1]})"
    text = f"inputs {axes} {str(inputs.dtype).removeprefix('torch.')}"
    return text if lengths is None else text + ", lengths (B,) int64"
