"""Gradient flow: how far a gradient from the end of a sequence travels back through time.

    ratio, profile = gradient_flow(net, first_sequences(batch))
    # profile[t]: mean |dL/dx_t| at step t; ratio: log10(profile[0] / profile[-1])

A vanilla RNN's ratio on a 100-step sequence is about -20 (the gradient vanishes); an LSTM's with
its forget gates open about -7. The module measures it once per epoch, on `FLOW_SEQUENCES`
sequences of the first validation batch: they estimate the profile well, at a fraction of a
training step's cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from models.data.base import Batch
from models.losses import known_targets, many_to_one_loss
from models.network import MANY_TO_ONE, SequenceNet, step_mask

# 8: on the adding task (T=50, 4 epochs trained), the ratio of 8 disjoint groups of validation
# sequences varied by 0.008 log10 units (standard deviation) around -3.83 for an LSTM-64 and by
# 0.027 around -12.46 for a vanilla RNN-64, against 0.004 and 0.019 with 16 and 0.010 and 0.025
# with 4: far below what the diagnostic tells apart. It costs 18 M CPU instructions against 33 M
# with 16 (callgrind), a third of what a trial adds to an epoch of the benchmark's LSTM cases.
FLOW_SEQUENCES = 8
_EPS = torch.finfo(torch.float32).tiny  # keeps log10 finite if a gradient underflows


def first_sequences(batch: Batch, n: int = FLOW_SEQUENCES) -> Batch:
    return Batch(*(None if t is None else t[:n] for t in batch))


def gradient_flow(net: SequenceNet, batch: Batch) -> tuple[float, list[float]]:
    """log10 of |dL/dx_t| at the first step over that at the last step, x_t being the input of
    the recurrent layer, averaged over the batch's real steps; and that norm at every step.

    Parameter gradients are untouched. L is the task loss for classification and regression,
    and the loss at each sequence's last real step for tagging and language modelling, so that
    the profile always measures how far a gradient from the end travels back. Steps are
    padded-time positions from a fresh zero state. A user network (`models.user_network`) is
    followed from its raw inputs; one that takes token ids has none to follow: NaN."""
    with torch.inference_mode(False), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):  # fmt: skip
        # cuDNN cannot back-propagate an RNN in eval mode; inference tensors cannot join a graph
        inputs, targets = batch.inputs.clone(), known_targets(batch.targets.clone())
        batch_size, steps = inputs.shape[:2]
        lengths = torch.full((batch_size,), steps, device=inputs.device)
        if batch.lengths is not None:
            lengths = batch.lengths.clone().to(inputs.device)
        x = net.embed(inputs).detach()  # (B, T, E)
        if not x.is_floating_point():  # a user network that embeds token ids itself
            return math.nan, []
        x.requires_grad_(True)
        features, _ = net.recur(x, None if batch.lengths is None else lengths)
        mask, last = step_mask(lengths, steps), lengths - 1
        (grad,) = torch.autograd.grad(_end_loss(net, features, targets, mask, last), x)
    norms = grad.norm(dim=-1) * mask  # (B, T)
    profile = (norms.sum(0) / mask.sum(0).clamp(min=1))[: int(lengths.max())].tolist()
    return math.log10(max(profile[0], _EPS) / max(profile[-1], _EPS)), profile


def _end_loss(
    net: SequenceNet, features: Tensor, targets: Tensor, mask: Tensor, last: Tensor
) -> Tensor:
    """The loss whose gradient the profile follows back: the task loss of a many-to-one task,
    else the loss at each sequence's last real step."""
    if net.task in MANY_TO_ONE:
        return many_to_one_loss(net.task, net.head(net.pool(features, mask, last)), targets)
    rows = torch.arange(features.shape[0], device=features.device)
    return F.cross_entropy(net.head(features[rows, last]), targets[rows, last])
