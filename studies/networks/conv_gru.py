"""An example of your own network (`fixed: {network: "studies.networks.conv_gru:build"}`): a
causal 1-D convolution in front of a GRU, for studies/user-network.yaml. The protocol it follows
is in docs/networks.md: `forward(inputs, lengths, state) -> (outputs, state)`.

Its own settings come from the study file's `user.` namespace: `user.kernel_size` and
`user.channels`; the built-in `hidden_size` sizes the GRU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class ConvGRU(nn.Module):
    def __init__(self, inputs: int, vocab: int | None, outputs: int, kernel_size: int, channels: int, hidden: int) -> None:  # fmt: skip
        super().__init__()
        self.embedding = None if vocab is None else nn.Embedding(vocab, inputs)
        self.kernel_size, self.hidden = kernel_size, hidden
        self.conv = nn.Conv1d(inputs, channels, kernel_size)
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(
        self, inputs: Tensor, lengths: Tensor | None, state: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        x = inputs.float() if self.embedding is None else self.embedding(inputs)  # (B, T, E)
        # causal: pad on the left only, so step t sees steps t - k + 1 .. t (from this chunk)
        x = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))  # (B, E, k - 1 + T)
        x = self.conv(x).relu().transpose(1, 2)  # (B, T, channels)
        if state is None:
            state = x.new_zeros(1, x.shape[0], self.hidden)  # (layers, B, hidden)
        if lengths is None:
            out, state = self.gru(x, state)
        else:  # each row's state stops at its last real step; a row with none keeps its state
            packed = pack_padded_sequence(
                x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
            )
            out, new = self.gru(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            state = torch.where((lengths > 0).to(x.device)[None, :, None], new, state)
        return self.head(out), state  # (B, T, outputs), (1, B, hidden)


def build(settings, info) -> nn.Module:  # noqa: ANN001 - models.Settings, models.DataInfo
    """The network for this task: token ids are embedded (`embedding_dim`), real values read."""
    user = settings.user
    return ConvGRU(
        inputs=info.input_size or settings.embedding_dim,
        vocab=info.vocab_size,
        outputs=info.output_size,
        kernel_size=user.get("kernel_size", 3),
        channels=user.get("channels", 16),
        hidden=settings.hidden_size,
    )
