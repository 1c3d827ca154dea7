"""Each task's loss, and the summed counts its metrics are computed from (`models.metrics`).

    loss = sequence_loss(net, batch)                 # mean loss of whole sequences
    sums, state = batch_sums(net, batch, state)      # summed loss and counts of one batch
    summarize(sums, task, level, "val_")             # -> {"val_loss": ..., "val_acc": ...}

classification: cross-entropy of the pooled prediction; regression: mean squared error;
tagging and language modelling: cross-entropy at every real step (targets -100 are padding).
A validation or test label that training never saw (`UNSEEN`) counts as a wrong prediction and
stays out of the loss, which has no value for a class the model has no output for.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from models.data.base import PAD_TARGET, UNSEEN, Batch
from models.network import MANY_TO_ONE, SequenceNet, State


def many_to_one_loss(task: str, pred: Tensor, targets: Tensor) -> Tensor:
    """Classification (B, C) logits or regression (B, D) values against their targets."""
    if task == "classification":
        return F.cross_entropy(pred, targets)
    return F.mse_loss(pred, targets if targets.dtype == pred.dtype else targets.to(pred.dtype))


def sequence_loss(net: SequenceNet, batch: Batch) -> Tensor:
    """The task's mean loss on whole sequences from a zero state (no truncation, no penalty)."""
    pred = net(batch.inputs, batch.lengths)
    if net.task in MANY_TO_ONE:
        return many_to_one_loss(net.task, pred, batch.targets)
    return F.cross_entropy(pred.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)


def batch_sums(
    net: SequenceNet, batch: Batch, state: State | None = None
) -> tuple[dict[str, Tensor | int], State | None]:
    """Summed loss and metric counts of one batch (whole sequences), as tensors: no host sync.
    A language model starts from `state` and returns its new state."""
    inputs, targets, lengths = batch
    if net.task == "language_model":
        features, state = net.encode(inputs, None, state)
        pred = net.head(features)  # (B, L, V)
    else:
        pred = net(inputs, lengths)
    if net.task == "regression":
        err = pred - (targets if targets.dtype == pred.dtype else targets.to(pred.dtype))
        sq = err.square().sum()
        return {"loss_sum": sq, "sq_sum": sq, "abs_sum": err.abs().sum(), "count": targets.numel()}, state  # fmt: skip
    known = known_targets(targets)  # `loss_count`: what the loss averages over
    if net.task == "classification":
        loss_sum = F.cross_entropy(pred, known, ignore_index=PAD_TARGET, reduction="sum")
        return {"loss_sum": loss_sum, "loss_count": (known != PAD_TARGET).sum(), "correct": (pred.argmax(-1) == targets).sum(), "count": targets.numel()}, state  # fmt: skip
    real = targets != PAD_TARGET
    loss_sum = F.cross_entropy(pred.flatten(0, 1), known.flatten(), ignore_index=PAD_TARGET, reduction="sum")  # fmt: skip
    correct = ((pred.argmax(-1) == targets) & real).sum()
    return {"loss_sum": loss_sum, "loss_count": (known != PAD_TARGET).sum(), "correct": correct, "count": real.sum()}, state  # fmt: skip


def known_targets(targets: Tensor) -> Tensor:
    """Class targets with UNSEEN labels marked ignored, like padding; float targets as they are."""
    if targets.is_floating_point():
        return targets
    return targets.masked_fill(targets == UNSEEN, PAD_TARGET)
