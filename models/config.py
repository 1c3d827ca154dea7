"""Settings of one training run: the model and how it is trained.

`Settings` is the single flat namespace that study files use: every field name here is a key that
`fixed:` and `search:` may name. The tuner validates it (pydantic reads these dataclasses); this
module stays free of any tuning library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

Cell = Literal["rnn", "lstm", "gru"]
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop"]
Pooling = Literal["last", "mean", "max"]
Init = Literal["default", "uniform", "orthogonal"]


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
    char_features: bool = False
    """Tagging from token files: build each token's vector from its characters too (a character
    CNN, concatenated with the word embedding), so unknown words are not all alike."""
    char_dim: int = 16
    """`char_features`: embedding size of each character."""
    char_hidden: int = 32
    """`char_features`: filters of the character CNN, the size of each word's character vector."""
    pooling: Pooling = "last"
    """Many-to-one tasks: the `last` hidden state, or the `mean` / `max` over the real steps."""
    nonnegative: bool = False
    """Regression: softplus on the output, for targets that cannot be negative."""
    network: str | None = None
    """Your own network in place of the built-in one: `"package.module:build"`, a function
    `(settings, data_info) -> torch.nn.Module` importable from the working directory; the module
    follows the protocol of docs/networks.md. null: the built-in recurrent network."""
    user: dict[str, Any] = field(default_factory=dict)
    """Free settings for your `network`, written `user.NAME` in `fixed:` and `search:` (e.g.
    `user.kernel_size`) and read by `build` as `settings.user["kernel_size"]`."""

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
    scheduler: str = "none"
    """Learning-rate schedule, stepped once per epoch: `none`; `step` (times `lr_gamma` every
    `lr_step` epochs); `plateau` (times `lr_gamma` after `lr_step` epochs without a lower
    `val_loss`); `constant-then-decay` (`lr` for `decay_start` epochs, then times `lr_gamma` every
    epoch); `cosine` (from `lr` down to `lr_floor` x `lr` at the last epoch); or the name of any
    `torch.optim.lr_scheduler` class (e.g. `OneCycleLR`), given `scheduler_options`. A study file
    may write a class as `{name: OneCycleLR, options: {...}}`."""
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a torch scheduler class (checked against its signature by
    `validate`); its steps are epochs. Empty for the named schedules."""
    lr_step: int = 10
    """`step`: epochs between decays; `plateau`: epochs without improvement before a decay."""
    lr_gamma: float = 0.5
    """Multiplicative learning-rate decay of `step`, `plateau` and `constant-then-decay`."""
    decay_start: int = 4
    """`constant-then-decay`: epochs at the full `lr` before the first decay (Zaremba et al.
    2014: 4 for the small model, then halved every epoch)."""
    lr_floor: float = 0.0
    """`cosine`: the last epoch's learning rate, as a fraction of `lr`."""
    warmup_epochs: int = 0
    """Linear warm-up in front of any schedule: epoch e < `warmup_epochs` trains at
    `lr` x (e + 1) / (`warmup_epochs` + 1); the schedule's own epochs count from its end."""

    # --- initialisation ---
    init: Init = "default"
    """How parameters start: `default` (PyTorch's, with the LSTM forget-gate bias at 1),
    `uniform` (every parameter, biases included, from U[-`init_scale`, `init_scale`], as
    Zaremba et al. 2014), or `orthogonal` (as `default`, then each gate's recurrent matrix
    orthogonal). A study file may write `init: {uniform: 0.1}`."""
    init_scale: float = 0.1
    """`uniform`: the bound a of U[-a, a]."""

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

    def params(self) -> dict[str, Any]:
        """The settings by the names a study file gives them: `user` as `user.NAME` keys (how
        MLflow records them and `when:` conditions name them)."""
        flat = {k: v for k, v in asdict(self).items() if k != "user"}
        return {**flat, **{USER_PREFIX + k: v for k, v in self.user.items()}}

    def with_values(self, values: dict[str, Any]) -> Settings:
        """A copy with `values` set, by study-file name: `user.NAME` keys go into `user`."""
        plain = {k: v for k, v in values.items() if not k.startswith(USER_PREFIX)}
        user = {k.removeprefix(USER_PREFIX): v for k, v in values.items() if k not in plain}
        return replace(self, **plain, user={**self.user, **user})


USER_PREFIX = "user."  # the namespace of a user network's own settings


def is_user_setting(name: str) -> bool:
    return name.startswith(USER_PREFIX) and len(name) > len(USER_PREFIX)


# Settings a study file may also write as a mapping; `expand_setting` makes them flat fields.
MAPPING_FORMS = {
    "scheduler": "{name: CLASS, options: {...}}",
    "init": "{uniform: a}",
    "user": "{NAME: value, ...}",
}


def expand_setting(name: str, value: Any) -> dict[str, Any]:
    """One setting as a study file writes it -> flat `Settings` fields:
    `scheduler: {name: OneCycleLR, options: {max_lr: 0.1}}` -> `scheduler`, `scheduler_options`;
    `init: {uniform: 0.1}` -> `init: uniform`, `init_scale: 0.1`. Other values pass unchanged;
    a mapping of another shape is a ValueError saying the right one."""
    if name not in MAPPING_FORMS or not isinstance(value, dict):
        return {name: value}
    if name == "scheduler" and "name" in value and set(value) <= {"name", "options"}:
        return {"scheduler": value["name"], "scheduler_options": value.get("options") or {}}
    if name == "init" and list(value) == ["uniform"]:
        return {"init": "uniform", "init_scale": value["uniform"]}
    if name == "user" and all(isinstance(k, str) and k for k in value):
        return {USER_PREFIX + k: v for k, v in value.items()}
    raise ValueError(f"write it as a name or as `{MAPPING_FORMS[name]}` (got {value!r})")


# (field, rule as said in errors, check); a None value (where allowed) is never checked.
_RULES: tuple[tuple[str, str, Any], ...] = (
    ("hidden_size", ">= 1", lambda v: v >= 1),
    ("num_layers", ">= 1", lambda v: v >= 1),
    ("dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("input_dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("output_dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("embedding_dim", ">= 1", lambda v: v >= 1),
    ("char_dim", ">= 1", lambda v: v >= 1),
    ("char_hidden", ">= 1", lambda v: v >= 1),
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
    ("decay_start", ">= 1", lambda v: v >= 1),
    ("lr_floor", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("warmup_epochs", ">= 0", lambda v: v >= 0),
    ("init_scale", "> 0", lambda v: v > 0),
    ("max_epochs", ">= 1", lambda v: v >= 1),
    ("patience", ">= 1 or null (no early stopping)", lambda v: v >= 1),
    ("min_delta", ">= 0", lambda v: v >= 0),
)
