"""Your own network in place of `SequenceNet`: `Settings.network = "package.module:build"`.

    def build(settings: Settings, info: DataInfo) -> torch.nn.Module: ...
    outputs, state = module(inputs, lengths, state)  # the protocol (docs/networks.md)

`inputs` are a batch's inputs as `models.data.base.Batch` describes them, `lengths` (B,) the real
steps of each row (None: all of them), `state` None at the start of a sequence or what the module
returned for the chunk before (detached). `outputs` (B, T, output_size) are the predictions at
every step (logits, or regression values); `state` is a tensor or a tuple of tensors with the
batch on dim 1, as torch's recurrent layers have it, taken at each row's last real step; or None
for a network without a state, which trains with full backpropagation only.

`UserNet` adapts such a module to the pieces the training core calls on `SequenceNet` (`encode`,
`pool`, `head`, `embed`, `recur`), so truncated BPTT, state carrying, the losses and the
gradient-flow diagnostic take one path for both. `network_problems` is what `validate` runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.config import Settings
from models.data.base import DataInfo, TaskData
from models.data.loader import import_loader
from models.errors import DataError
from models.network import State, pool_steps, whole_sequences

PROBE_ROWS = 4  # sequences of the one batch `validate` runs the network on


class UserNet(nn.Module):
    """The module `settings.network` builds, behind `SequenceNet`'s interface. Its outputs are
    already predictions, so `head` passes them on, and a many-to-one task pools them over time
    by `settings.pooling` (default: the last real step)."""

    def __init__(self, settings: Settings, info: DataInfo) -> None:
        super().__init__()
        self.spec = settings.network
        self.task, self.pooling, self.truncation = info.task, settings.pooling, settings.truncation
        build = import_loader(settings.network, "fixed.network", "networks.conv_gru:build")  # type: ignore[arg-type]
        try:
            module = build(settings, info)
        except Exception as e:  # the user's code: any failure is a setup problem to report
            raise DataError(
                f"fixed.network {self.spec!r}: build raised {type(e).__name__}: {e}"
            ) from None
        if not isinstance(module, nn.Module):
            raise DataError(
                f"fixed.network {self.spec!r}: build returned a {type(module).__name__}, "
                "not a torch.nn.Module"
            )
        self.module = module

    def encode(
        self, inputs: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State | None]:
        """One chunk of inputs -> predictions (B, T, output_size) and the state after it."""
        outputs, state = self.module(inputs, lengths, state)
        if state is None and self.truncation is not None:
            raise ValueError(
                f"network {self.spec} returns no state, so truncation must be null "
                f"(got {self.truncation})"
            )
        return outputs, state

    def recur(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State | None]:
        return self.encode(x, lengths, state)

    def embed(self, inputs: Tensor) -> Tensor:
        """The inputs as they are: the module embeds token ids itself, out of the
        gradient-flow diagnostic's reach (it records NaN for them)."""
        return inputs

    def pool(self, features: Tensor, mask: Tensor | None, last: Tensor | None) -> Tensor:
        return pool_steps(features, mask, last, self.pooling)

    def head(self, features: Tensor) -> Tensor:
        return features

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        return whole_sequences(self, inputs, lengths)


def network_problems(settings: Settings, data: TaskData) -> tuple[list[str], bool | None]:
    """Import and build `settings.network`, run it on one training batch and check what it
    returns. Returns the problems and whether it carries a state (None: it did not run)."""
    from models.data.datamodule import SequenceDataModule

    try:
        net = UserNet(settings, data.info)
        rows = min(settings.batch_size, PROBE_ROWS)
        batch = next(iter(SequenceDataModule(data, rows, settings.seed).train_dataloader()))
    except DataError as e:
        return [str(e)], None
    where = f"fixed.network {settings.network!r}"
    try:
        with torch.no_grad():
            returned = net.module(batch.inputs, batch.lengths, None)
    except Exception as e:  # noqa: BLE001 - the user's code: report, never a traceback
        return [f"{where}: running it on one training batch raised {type(e).__name__}: {e}"], None
    if not (isinstance(returned, tuple) and len(returned) == 2):
        return [f"{where}: forward must return (outputs, state), got {_kind(returned)}"], None
    outputs, state = returned
    expected = (*batch.inputs.shape[:2], data.info.output_size)
    problems = []
    if not isinstance(outputs, Tensor) or tuple(outputs.shape) != expected:
        problems.append(
            f"{where}: outputs must be (batch, steps, output_size) = {expected} on this "
            f"{data.info.task} task, got {_kind(outputs)}"
        )
    if state is not None and not _batch_state(state, expected[0]):
        problems.append(
            f"{where}: state must be None, a tensor or a tuple of tensors with the batch "
            f"({expected[0]}) on dim 1, got {_kind(state)}"
        )
    return problems, state is not None


def _batch_state(state: Any, batch: int) -> bool:
    parts = state if isinstance(state, tuple) else (state,)
    return all(isinstance(s, Tensor) and s.dim() >= 2 and s.shape[1] == batch for s in parts)


def _kind(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}: ({', '.join(_kind(v) for v in value)})"
    return f"a {type(value).__name__}"
