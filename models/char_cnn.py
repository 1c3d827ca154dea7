"""A word's vector from its characters: embed them, convolve, take the maximum over the word.

    encoder = CharCNN(n_chars=60, char_dim=16, char_hidden=32)
    vectors = encoder(chars)  # (B, T, W) character ids, 0 = padding -> (B, T, 32)

The character CNN of Ma & Hovy 2016 (kernel width 3, max-pooling over the characters): a filter
that fires on "ing</w>" gives every word ending in -ing a common feature, so a word never seen in
training still looks like the words it shares a suffix (or prefix, or capital letter) with. The
character ids and the word-start/end markers come from `models.data.chars`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

KERNEL = 3  # characters each filter sees: enough for most English suffixes with the end marker


class CharCNN(nn.Module):
    def __init__(self, n_chars: int, char_dim: int, char_hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, char_hidden, KERNEL, padding=KERNEL // 2)

    def forward(self, chars: Tensor) -> Tensor:
        """(B, T, W) character ids -> (B, T, char_hidden); a padding word gives -1s, which the
        losses never see since its step is padding too."""
        batch, steps, width = chars.shape
        flat = chars.reshape(batch * steps, width)
        x = self.embedding(flat).transpose(1, 2)  # (B * T, char_dim, W)
        h = torch.tanh(self.conv(x))  # (B * T, char_hidden, W), in (-1, 1)
        h = h.masked_fill((flat == 0)[:, None, :], -1.0)  # padding never wins the maximum
        return h.amax(-1).reshape(batch, steps, -1)
