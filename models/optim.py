"""The optimiser, its learning-rate schedule and gradient clipping, built from `Settings`.

optimizer = make_optimizer(settings, net)             # weight decay on matrices only
scheduler = make_scheduler(settings, optimizer)       # None, StepLR or ReduceLROnPlateau
norm = clip_gradients(list(net.parameters()), settings)  # the norm before clipping
step_scheduler(scheduler, {"val_loss": 0.3})          # once per epoch
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from models.config import Settings

LRScheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
OPTIMIZERS: dict[str, Callable[[list[dict], Settings], torch.optim.Optimizer]] = {
    "sgd": lambda groups, s: torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum),
    "adam": lambda groups, s: torch.optim.Adam(groups, lr=s.lr),
    "adamw": lambda groups, s: torch.optim.AdamW(groups, lr=s.lr),
    "rmsprop": lambda groups, s: torch.optim.RMSprop(groups, lr=s.lr, momentum=s.momentum),
}
SCHEDULERS = ("none", "step", "plateau")


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


def check_scheduler(settings: Settings) -> None:
    if settings.scheduler not in SCHEDULERS:
        raise ValueError(
            f"unknown scheduler {settings.scheduler!r}; valid: {', '.join(SCHEDULERS)}"
        )


def make_scheduler(settings: Settings, optimizer: torch.optim.Optimizer) -> LRScheduler | None:
    """Step: decay by `lr_gamma` every `lr_step` epochs. Plateau: decay when the validation loss
    has not improved for `lr_step` epochs."""
    check_scheduler(settings)
    if settings.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_step, settings.lr_gamma)
    if settings.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", patience=settings.lr_step, factor=settings.lr_gamma
        )
    return None


def step_scheduler(scheduler: Any, val: dict[str, float]) -> None:
    """One epoch's step; a plateau schedule watches `val_loss` and waits for an epoch that has it."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if "val_loss" in val:
            scheduler.step(val["val_loss"])
    elif scheduler is not None:
        scheduler.step()


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
