"""Settings of one training run: the model and how it is trained.

`Settings` is the single flat namespace that study files use: every field name here is a key that
`fixed:` and `search:` may name. The tuner validates it (pydantic reads these dataclasses); this
module stays free of any tuning library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

Cell = Literal["rnn", "lstm", "gru"]
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop"]
Pooling = Literal["last", "mean", "max"]
Scheduler = Literal["none", "step", "plateau"]


@dataclass(frozen=True)
class Settings:
    """Everything about one model and its training. Defaults train a sound small LSTM."""

    # Read by pydantic when the tuner validates a study file: an unknown key is an error.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    # --- the network ---
    cell: Cell = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0  # between stacked layers; ignored (never passed to torch) with one layer
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # vanilla RNN only
    bidirectional: bool = False  # not for language modelling, not with truncation
    input_dropout: float = 0.0  # on the (embedded) inputs
    output_dropout: float = 0.0  # on the recurrent outputs, before the head
    layer_norm: bool = False  # on the recurrent outputs
    embedding_dim: int = 32  # token inputs only
    pooling: Pooling = "last"  # many-to-one tasks: last hidden state, or mean/max over time
    nonnegative: bool = False  # regression: softplus on the output

    # --- optimisation ---
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop only
    weight_decay: float = 0.0  # L2, through the optimizer
    l1: float = 0.0  # L1 penalty coefficient, added to the loss
    batch_size: int = 64  # streams in parallel for language modelling
    truncation: int | None = None  # TBPTT chunk length k; None = full BPTT
    clip_norm: float | None = 1.0  # clip the global gradient norm; None = no clipping
    clip_value: float | None = None  # clip each gradient element; None = no clipping
    scheduler: Scheduler = "none"
    lr_step: int = 10  # step: epochs between decays; plateau: patience in epochs
    lr_gamma: float = 0.5  # multiplicative decay

    # --- budget and stopping ---
    max_epochs: int = 20
    patience: int | None = 5  # epochs without improvement by min_delta; None = never stop early
    min_delta: float = 0.0
    seed: int = 0  # initialisation and batch order; the data split has its own seed

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule} (got {getattr(self, name)!r})"
            for name, rule, ok in _RULES
            if getattr(self, name) is not None and not ok(getattr(self, name))
        ]
        if self.bidirectional and self.truncation is not None:
            problems.append("truncation needs a unidirectional network: set bidirectional: false")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# (field, rule as said in errors, check); a None value (where allowed) is never checked.
_RULES: tuple[tuple[str, str, Any], ...] = (
    ("hidden_size", ">= 1", lambda v: v >= 1),
    ("num_layers", ">= 1", lambda v: v >= 1),
    ("dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("input_dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("output_dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("embedding_dim", ">= 1", lambda v: v >= 1),
    ("lr", "> 0", lambda v: v > 0),
    ("momentum", "in [0, 1)", lambda v: 0 <= v < 1),
    ("weight_decay", ">= 0", lambda v: v >= 0),
    ("l1", ">= 0", lambda v: v >= 0),
    ("batch_size", ">= 1", lambda v: v >= 1),
    ("truncation", ">= 1 or null (full BPTT)", lambda v: v >= 1),
    ("clip_norm", "> 0 or null (no clipping)", lambda v: v > 0),
    ("clip_value", "> 0 or null (no clipping)", lambda v: v > 0),
    ("lr_step", ">= 1", lambda v: v >= 1),
    ("lr_gamma", "in (0, 1]", lambda v: 0 < v <= 1),
    ("max_epochs", ">= 1", lambda v: v >= 1),
    ("patience", ">= 1 or null (no early stopping)", lambda v: v >= 1),
    ("min_delta", ">= 0", lambda v: v >= 0),
)
