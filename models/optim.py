"""The optimiser and gradient clipping, built from `Settings` (the learning-rate schedule is
`models.schedules`).

optimizer = make_optimizer(settings, net)             # weight decay on matrices only
norm = clip_gradients(list(net.parameters()), settings)  # the norm before clipping
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from models.config import Settings

OPTIMIZERS: dict[str, Callable[[list[dict], Settings], torch.optim.Optimizer]] = {
    "sgd": lambda groups, s: torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum),
    "adam": lambda groups, s: torch.optim.Adam(groups, lr=s.lr),
    "adamw": lambda groups, s: torch.optim.AdamW(groups, lr=s.lr),
    "rmsprop": lambda groups, s: torch.optim.RMSprop(groups, lr=s.lr, momentum=s.momentum),
}


def penalized(net: nn.Module) -> list[nn.Parameter]:
    """The matrices (and embeddings): what L1 and weight decay act on; biases and norms are spared."""
    return [p for p in net.parameters() if p.ndim >= 2]


def make_optimizer(settings: Settings, net: nn.Module) -> torch.optim.Optimizer:
    """`settings.optimizer` over `net`, with weight decay on the `penalized` parameters only."""
    if settings.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {settings.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
        )
    weights = penalized(net)
    ids = {id(p) for p in weights}
    groups = [
        {"params": weights, "weight_decay": settings.weight_decay},
        {"params": [p for p in net.parameters() if id(p) not in ids], "weight_decay": 0.0},
    ]
    return OPTIMIZERS[settings.optimizer](groups, settings)


def clip_gradients(params: list[nn.Parameter], settings: Settings) -> Tensor:
    """Clip the gradients as configured; returns their global norm before clipping (a tensor:
    no host sync)."""
    clip_norm, clip_value = settings.clip_norm, settings.clip_value
    if clip_value is None and clip_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip_norm)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_norm is not None:  # after the value clip, so both bounds hold
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    return norm
