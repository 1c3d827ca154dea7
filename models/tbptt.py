"""Truncated back-propagation through time with chunk length k (`Settings.truncation`).

- tagging and language modelling (a loss at every step): `chunk_losses` cuts the batch along time
  into chunks of k steps; each chunk's loss is back-propagated and the optimizer steps once per
  chunk; the state is carried to the next chunk detached. A chunk's loss is its summed per-step
  loss divided by the batch's real steps, so the chunks' losses add up to the full-BPTT loss.
- classification and regression (one loss per sequence): `truncated_loss`, one optimizer step per
  batch. Each sequence's own last k real steps carry a graph; its earlier steps run under
  `torch.no_grad` and hand over their state, and under mean/max pooling their features enter the
  pool as constants. With equal lengths this is exactly "the final k steps of the batch".
- language modelling: the train loader yields consecutive windows of B parallel streams; the
  state is carried (detached) from batch to batch, reset at each train epoch and when the batch
  size changes (Zaremba et al. 2014): `carried`. Validation carries its own state the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from models.data.base import Batch
from models.network import SequenceNet, State, detach_state, state_batch_size, step_mask

LossFn = Callable[[Tensor, Tensor], Tensor]  # (predictions, targets) -> mean loss


def carried(state: State | None, batch_size: int) -> State | None:
    """The state to start a batch of `batch_size` streams from: None (a zero state) where the
    size changed, since a short last batch's streams do not continue the others."""
    if state is not None and state_batch_size(state) != batch_size:
        return None
    return state


def chunk_losses(
    net: SequenceNet,
    batch: Batch,
    k: int | None,
    state: State | None = None,
    total: Tensor | None = None,
) -> Iterator[tuple[Tensor, Tensor | float, State]]:
    """Tagging and language modelling: for each chunk of k steps (None: one chunk), its loss,
    its share of the batch's real steps (`total`, counted here if not given), and the state
    after it.

    Consume each loss (backward) before asking for the next chunk, which starts from the state
    detached; the state after the last chunk is the caller's to detach."""
    inputs, targets, lengths = batch
    steps = targets.shape[1]
    if lengths is not None:
        steps = int(lengths.max())  # chunks of padding alone would be empty steps
    if total is None:
        total = (targets != -100).sum()  # the real steps of the batch
    if lengths is None and (k is None or k >= steps):  # one chunk: the batch as it is
        logits, state = _chunk_logits(net, inputs, None, state)
        yield _summed_loss(logits, targets) / total, 1.0, state
        return
    k = k or steps
    for t0 in range(0, steps, k):
        if t0:
            state = detach_state(state)
        chunk_lengths = None if lengths is None else (lengths - t0).clamp(0, k)
        logits, state = _chunk_logits(net, inputs[:, t0 : t0 + k], chunk_lengths, state)
        chunk_targets = targets[:, t0 : t0 + k]
        yield (
            _summed_loss(logits, chunk_targets) / total,
            (chunk_targets != -100).sum() / total,
            state,
        )


def _chunk_logits(
    net: SequenceNet, inputs: Tensor, lengths: Tensor | None, state: State | None
) -> tuple[Tensor, State]:
    features, state = net.encode(inputs, lengths, state)
    return net.head(features), state  # (B, k, C)


def _summed_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )


def truncated_loss(net: SequenceNet, batch: Batch, k: int | None, loss_fn: LossFn) -> Tensor:
    """Classification/regression loss whose graph spans only each sequence's last k real steps
    (None: all of them); the value equals the whole-sequence loss (up to dropout)."""
    inputs, targets, lengths = batch
    batch_size, steps = inputs.shape[:2]
    if lengths is None and net.pooling == "last":
        # equal lengths, last-step pooling: the plain (TBPTT) split, no window, mask or index
        # to build; they cost 2-5% of a small network's training step
        prefix, state = 0 if k is None else max(steps - k, 0), None
        if prefix:
            with torch.no_grad():
                _, state = net.encode(inputs[:, :prefix])
        features, _ = net.encode(inputs[:, prefix:], None, state)  # (B, T - prefix, H)
        return loss_fn(net.head(net.pool(features, None, None)), targets)
    full = torch.full((batch_size,), steps, device=inputs.device)
    real = full if lengths is None else lengths.to(inputs.device)
    prefix = 0 if k is None else _graphless_steps(real, steps, k, lengths is None)
    if prefix == 0:
        features, _ = net.encode(inputs, lengths)  # (B, T, H)
        mask, last = step_mask(real, steps), real - 1
    else:
        features, mask, last = _last_k_of_each_row(net, inputs, real, k, prefix)  # type: ignore[arg-type]
    return loss_fn(net.head(net.pool(features, mask, last)), targets)


def _graphless_steps(real: Tensor, steps: int, k: int, equal_lengths: bool) -> int:
    """How many leading steps of the batch run without a graph: up to the longest row's start of
    its last k steps (equal lengths need no device sync to know it)."""
    return max(steps - k, 0) if equal_lengths else int((real - k).clamp(min=0).max())


def _last_k_of_each_row(
    net: SequenceNet, inputs: Tensor, real: Tensor, k: int, prefix: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Features (B, prefix + k, H), the real-step mask and each row's last step, where only
    each row's last k real steps carry a graph."""
    steps = inputs.shape[1]
    start = (real - k).clamp(min=0)  # (B,) each row's steps before its last k
    with torch.no_grad():
        early, state = net.encode(inputs[:, :prefix], start)  # (B, P, H), constants
    # each row's last k real steps, gathered to the front of a (B, k, ...) window
    window = (start[:, None] + torch.arange(k, device=inputs.device)).clamp(max=steps - 1)
    if inputs.dim() == 3:
        window = window[..., None].expand(-1, -1, inputs.shape[2])
    recent, _ = net.encode(inputs.gather(1, window), real - start, state)  # (B, k, H)
    features = torch.cat([early, recent], 1)  # (B, P + k, H)
    mask = torch.cat([step_mask(start, prefix), step_mask(real - start, k)], 1)
    return features, mask, prefix + real - start - 1
