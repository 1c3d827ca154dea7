"""A trained `SequenceNet` as one file that runs without this project: ONNX or TorchScript.

    from models.export import export, run_exported
    export(net, inputs, lengths, "model.onnx", "onnx")        # lengths: None for fixed-length data
    run_exported("model.onnx", "onnx", inputs, lengths)       # numpy outputs, by onnxruntime

The file takes `inputs` ((B, T, F) float32 values or (B, T) int64 token ids; a language model's
(B, L) window of token ids) and, when the data have variable lengths, `lengths` (B,) int64; batch
and time may differ from the example's. It gives the outputs of `net(inputs, lengths)`: (B, out)
for classification and regression, (B, T, out) for tagging and language models, from a zero state.

Training runs variable-length batches as packed sequences, which neither format can hold; the file
runs the recurrent layer over the padded batch instead and masks what lies past each row's end.
For a forward-only network that gives the same outputs, as every step sees only the steps before
it; a bidirectional network's backward direction would start in the padding, so a bidirectional
network on variable-length data is refused (`NotExportable`).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.network import MANY_TO_ONE, SequenceNet, step_mask

FORMATS = ("onnx", "torchscript")


class NotExportable(ValueError):
    """This network cannot be written in that format; the message says why and what to use."""


class PaddedNet(nn.Module):
    """`SequenceNet.forward` without packed sequences (see the module docstring)."""

    def __init__(self, net: SequenceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        net = self.net
        x = net.embed(inputs)  # (B, T, E)
        out, _ = net.rnn(x, net.init_state(x.shape[0], x))  # (B, T, H * directions)
        if lengths is None:  # every row runs the whole window
            lengths = torch.full_like(x[:, 0, 0], x.shape[1], dtype=torch.long)  # (B,)
        mask = step_mask(lengths, x.shape[1])  # (B, T)
        # padded steps: zero features before the norm, as the packed run leaves them
        features = net.output_dropout(net.norm(out * mask[..., None]))
        if net.task not in MANY_TO_ONE:
            return net.head(features)
        return net.head(net.pool(features, mask, lengths - 1))


def exportable(net: SequenceNet, variable_length: bool) -> PaddedNet:
    """The network in a form both formats can trace; NotExportable where none gives its outputs."""
    if variable_length and net.directions == 2:
        raise NotExportable(
            "a bidirectional network on variable-length sequences needs packed sequences, which "
            "neither ONNX nor TorchScript can hold; use the MLflow model instead "
            "(tuner.best_model, or mlflow.pytorch.load_model with the run's model URI)"
        )
    return PaddedNet(net).cpu().eval()


def export(
    net: SequenceNet, inputs: Tensor, lengths: Tensor | None, path: str | Path, fmt: str
) -> None:
    """Write `net` to `path` as `fmt` (onnx or torchscript), traced on the example batch."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    model = exportable(net, lengths is not None)
    args = (inputs,) if lengths is None else (inputs, lengths)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it reads as numbers
        if fmt == "torchscript":
            torch.jit.trace(model, args).save(str(path))
        else:
            _onnx(model, args, str(path))


def _onnx(model: PaddedNet, args: tuple[Tensor, ...], path: str) -> None:
    # torch 2.13's default exporter (dynamo=True, via torch.export) fixes the time axis to the
    # example's length for nn.RNN and for token inputs, so other lengths are refused by
    # onnxruntime; the TorchScript-based exporter keeps batch and time free for every cell.
    if importlib.util.find_spec("onnx") is None:  # else torch fails late, with its own error
        raise ImportError("ONNX export needs the onnx package")
    names = ["inputs", "lengths"][: len(args)]
    axes = {"inputs": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "outputs": {0: "batch"}}
    if model.net.task not in MANY_TO_ONE:
        axes["outputs"] = {0: "batch", 1: "time"}
    torch.onnx.export(
        model,
        args,
        path,
        dynamo=False,
        input_names=names,
        output_names=["outputs"],
        dynamic_axes={k: v for k, v in axes.items() if k in (*names, "outputs")},
    )


def run_exported(
    path: str | Path, fmt: str, inputs: Tensor, lengths: Tensor | None = None
) -> np.ndarray:
    """The outputs of an exported file on a batch: onnxruntime for ONNX, torch.jit for
    TorchScript (the runtimes a user of the file has, not this project's code)."""
    args = [inputs] if lengths is None else [inputs, lengths]
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(*args).numpy()
    import onnxruntime  # the `export` extra

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
