"""Learning-rate schedules, stepped once per epoch: named shapes, any torch scheduler by name, and
a linear warm-up in front of either.

    schedule = EpochSchedule(optimizer, settings)   # sets the first epoch's rate
    schedule.step({"val_loss": 0.3})                # after each epoch: the next epoch's rate
    scheduler_problems(settings)                    # [(key, message)], what `validate` reports

The rate of epoch e is `lr` x factor. Warm-up: epoch e < W = `warmup_epochs` has factor
(e + 1) / (W + 1). After it, with n = e - W the schedule's own epoch (T epochs are left):

    none                 1
    step                 lr_gamma ** (n // lr_step)
    constant-then-decay  1 while n < decay_start, then lr_gamma ** (n - decay_start + 1)
    cosine               lr_floor + (1 - lr_floor) * (1 + cos(pi * n / (T - 1))) / 2
    plateau              torch's ReduceLROnPlateau on val_loss (patience lr_step, factor lr_gamma)
    a torch class name   that class with `scheduler_options`, built when the warm-up ends

torch is imported only to build or check a torch class, so validating a study file that names a
shape stays fast.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from models.config import Settings

if TYPE_CHECKING:
    import torch

Factor = Callable[[Settings, int], float]


def _constant_then_decay(s: Settings, n: int) -> float:
    return 1.0 if n < s.decay_start else s.lr_gamma ** (n - s.decay_start + 1)


def _cosine(s: Settings, n: int) -> float:
    span = s.max_epochs - s.warmup_epochs - 1  # the schedule's last epoch reaches the floor
    if span <= 0:
        return 1.0
    return s.lr_floor + (1 - s.lr_floor) * (1 + math.cos(math.pi * min(n, span) / span)) / 2


# Shapes given as a factor of `lr` per epoch of the schedule; `plateau` watches a metric instead.
FACTORS: dict[str, Factor] = {
    "none": lambda s, n: 1.0,
    "step": lambda s, n: s.lr_gamma ** (n // s.lr_step),
    "constant-then-decay": _constant_then_decay,
    "cosine": _cosine,
}
SHAPES = (*FACTORS, "plateau")
# torch classes a YAML file cannot configure, and what they would need
_NEEDS_CODE = {
    "LambdaLR": "a function",
    "MultiplicativeLR": "a function",
    "SequentialLR": "other schedulers",
    "ChainedScheduler": "other schedulers",
}
_GIVEN = ("self", "optimizer", "last_epoch")  # arguments rnn-tuner passes, not options


def torch_schedulers() -> dict[str, type]:
    """The `torch.optim.lr_scheduler` classes a study file can name."""
    from torch.optim import lr_scheduler

    kinds = (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
    return {
        name: cls
        for name, cls in vars(lr_scheduler).items()
        if isinstance(cls, type) and issubclass(cls, kinds) and name[0] != "_"
        if name != "LRScheduler" and name not in _NEEDS_CODE
    }


def scheduler_problems(settings: Settings) -> list[tuple[str, str]]:
    """What is wrong with the schedule settings, as (settings key, message) pairs."""
    name, options = settings.scheduler, settings.scheduler_options
    if name in SHAPES:
        shaped_by = "lr_step, lr_gamma, decay_start, lr_floor and warmup_epochs"
        why = f"options are for a torch.optim.lr_scheduler class; `{name}` takes {shaped_by}"
        return [("scheduler_options", why)] if options else []
    if name in _NEEDS_CODE:
        why = f"{name} takes {_NEEDS_CODE[name]}, which a study file cannot hold"
        return [("scheduler", f"{why}; use a named schedule or another class")]
    classes = torch_schedulers()
    if name not in classes:
        valid = ", ".join((*SHAPES, *sorted(classes)))
        return [("scheduler", f"unknown scheduler {name!r}; valid: {valid}")]
    return _option_problems(name, classes[name], settings)


def _option_problems(name: str, cls: type, settings: Settings) -> list[tuple[str, str]]:
    """Options against the class's signature, then a dry run over the epochs on a dummy optimizer
    (which catches the values torch refuses, and a schedule too short for `max_epochs`)."""
    params = {k: p for k, p in inspect.signature(cls).parameters.items() if k not in _GIVEN}
    options = settings.scheduler_options
    problems = [
        (f"scheduler_options.{key}", f"{name} takes no option {key!r}; valid: {', '.join(params)}")
        for key in options
        if key not in params
    ]
    problems += [
        ("scheduler", f"{name} needs option {key} (in scheduler_options)")
        for key, p in params.items()
        if p.default is inspect.Parameter.empty and key not in options
    ]
    if problems:
        return problems
    try:
        with warnings.catch_warnings():  # torch warns that the dummy optimizer never stepped
            warnings.simplefilter("ignore", UserWarning)
            optimizer = _dummy_optimizer(settings)
            schedule = EpochSchedule(optimizer, settings, check=False)
            for epoch in range(settings.max_epochs):
                lr = optimizer.param_groups[0]["lr"]
                if not isinstance(lr, float | int) or not lr >= 0 or math.isinf(lr):
                    why = f"{name} gives the learning rate {lr!r} in epoch {epoch}"
                    return [("scheduler_options", why)]
                schedule.step({"val_loss": 1.0})
    except Exception as e:  # noqa: BLE001 - torch says what it refused, in its own words
        return [("scheduler_options", f"{name} refused them: {type(e).__name__}: {e}")]
    return []


def _dummy_optimizer(settings: Settings) -> torch.optim.Optimizer:
    import torch

    from models.optim import make_optimizer

    return make_optimizer(settings, torch.nn.Linear(1, 1))


class EpochSchedule:
    """Sets the optimizer's learning rate for each epoch (see the module docstring). Lightning
    keeps it as the module's scheduler: it has `optimizer`, `state_dict` and `load_state_dict`."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, settings: Settings, check: bool = True
    ) -> None:
        problems = scheduler_problems(settings) if check else []
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
        self.optimizer, self.settings = optimizer, settings
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0
        self.inner: Any = None  # plateau or a torch class, built when the warm-up ends
        self._set_rate()

    def step(self, val: Mapping[str, float]) -> None:
        """Close an epoch with its validation metrics; the optimizer gets the next epoch's rate."""
        self.epoch += 1
        if self.inner is None:
            self._set_rate()
        elif _watches_a_metric(self.inner):
            if "val_loss" in val:  # an epoch without validation leaves the plateau count alone
                self.inner.step(val["val_loss"])
        else:
            self.inner.step()

    def _set_rate(self) -> None:
        warmup, shape = self.settings.warmup_epochs, self.settings.scheduler
        if self.epoch < warmup:
            factor = (self.epoch + 1) / (warmup + 1)
        elif shape in FACTORS:
            factor = FACTORS[shape](self.settings, self.epoch - warmup)
        else:
            factor = 1.0
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        if self.epoch >= warmup and shape not in FACTORS:
            self.inner = _build(self.optimizer, self.settings)  # starts from the full rate

    def state_dict(self) -> dict[str, Any]:
        inner = None if self.inner is None else self.inner.state_dict()
        return {"epoch": self.epoch, "base_lrs": self.base_lrs, "inner": inner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.base_lrs, self.inner = state["epoch"], state["base_lrs"], None
        self._set_rate()
        if self.inner is not None and state["inner"] is not None:
            self.inner.load_state_dict(state["inner"])


def _build(optimizer: torch.optim.Optimizer, settings: Settings) -> Any:
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    if settings.scheduler == "plateau":
        return ReduceLROnPlateau(
            optimizer, mode="min", patience=settings.lr_step, factor=settings.lr_gamma
        )
    return torch_schedulers()[settings.scheduler](optimizer, **settings.scheduler_options)


def _watches_a_metric(scheduler: Any) -> bool:
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    return isinstance(scheduler, ReduceLROnPlateau)
