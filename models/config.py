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

    # Read by pydantic when the tuner validates a study file: an unknown key is an error, and the
    # docstring under each field is its description (the study-file reference and JSON Schema).
    __pydantic_config__: ClassVar[dict[str, Any]] = {
        "extra": "forbid",
        "use_attribute_docstrings": True,
    }

    # --- the network ---
    cell: Cell = "lstm"
    """The recurrent cell; `rnn` is the vanilla (Elman) network."""
    hidden_size: int = 64
    """Hidden units per layer."""
    num_layers: int = 1
    """Stacked recurrent layers."""
    dropout: float = 0.0
    """Dropout between stacked layers; ignored (never passed to torch) with one layer."""
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    """Activation of the vanilla RNN (the other cells ignore it)."""
    bidirectional: bool = False
    """Read each sequence both ways; not for language modelling, not with `truncation`."""
    input_dropout: float = 0.0
    """Dropout on the (embedded) inputs."""
    output_dropout: float = 0.0
    """Dropout on the recurrent outputs, before the head."""
    layer_norm: bool = False
    """Layer norm on the recurrent outputs."""
    embedding_dim: int = 32
    """Embedding size of token inputs (text, tagged, copy)."""
    pooling: Pooling = "last"
    """Many-to-one tasks: the `last` hidden state, or the `mean` / `max` over the real steps."""
    nonnegative: bool = False
    """Regression: softplus on the output, for targets that cannot be negative."""

    # --- optimisation ---
    optimizer: Optimizer = "adam"
    """The optimiser."""
    lr: float = 1e-3
    """Learning rate."""
    momentum: float = 0.9
    """Momentum of `sgd` and `rmsprop` (ignored by the others)."""
    weight_decay: float = 0.0
    """L2 penalty, through the optimizer."""
    l1: float = 0.0
    """L1 penalty coefficient, added to the loss."""
    batch_size: int = 64
    """Sequences per batch; parallel streams for language modelling."""
    truncation: int | None = None
    """Truncated BPTT chunk length k; null is full backpropagation through time."""
    clip_norm: float | None = 1.0
    """Clip the global gradient norm to this; null for no clipping."""
    clip_value: float | None = None
    """Clip each gradient element to +-this; null for no clipping."""
    scheduler: Scheduler = "none"
    """Learning-rate schedule: `none`, `step` (decay every `lr_step` epochs) or `plateau` (decay
    after `lr_step` epochs without improvement)."""
    lr_step: int = 10
    """`step`: epochs between decays; `plateau`: epochs without improvement before a decay."""
    lr_gamma: float = 0.5
    """Multiplicative learning-rate decay of the scheduler."""

    # --- budget and stopping ---
    max_epochs: int = 20
    """Epochs at most; a study file sets it as `budget.max_epochs`."""
    patience: int | None = 5
    """Early stopping: epochs without an improvement of `min_delta` in the objective metric;
    null never stops early."""
    min_delta: float = 0.0
    """Smallest change of the objective metric that counts as an improvement."""
    seed: int = 0
    """Initialisation and batch order; the data split has its own seed in `task`."""

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
