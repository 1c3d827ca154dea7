"""`search: default` (or no `search:` block): a recommended search space for the task kind and the
data's size, in study-file form. docs/study-files.md ("The default space") gives the reason for
every range; `rnn-tuner validate` prints the space chosen.

Sizes are training sequences (with `cv_folds`, a fold's training part); a language model's are
training tokens. Settings named in `fixed:` are left out, so fixing one narrows the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Training sequences (tokens for a language model) below which a data set is small, and from
# which it is large: small data overfits wide networks, large data pays for them.
SMALL = {"sequences": 1_000, "tokens": 1_000_000}
LARGE = {"sequences": 20_000, "tokens": 10_000_000}
# Hidden units (log scale) by size: small, medium, large.
HIDDEN = {
    "sequences": ((16, 128), (32, 256), (64, 512)),
    "tokens": ((64, 256), (128, 512), (200, 1024)),
}
LONG_SEQUENCES = 100  # steps from which truncated BPTT is searched as a speed-up


@dataclass(frozen=True)
class DataSize:
    """What the default space depends on."""

    task: str  # classification, regression, tagging, language_model
    n_train: float  # training sequences (language model: tokens); inf when unknown
    max_len: int  # the longest sequence (language model: the window)
    tokens: bool  # token inputs (an embedding is searched too)
    max_epochs: int
    characters: bool = False  # tagged words, whose spelling char_features can read


def default_space(size: DataSize, fixed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The recommended space: setting -> distribution, in sampling order (conditions look up)."""
    unit = "tokens" if size.task == "language_model" else "sequences"
    scale = 0 if size.n_train < SMALL[unit] else 1 if size.n_train < LARGE[unit] else 2
    low, high = HIDDEN[unit][scale]
    space: dict[str, dict[str, Any]] = {
        "cell": {"type": "categorical", "choices": ["lstm", "gru"]},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "hidden_size": {"type": "int", "low": low, "high": high, "log": True},
        "num_layers": {"type": "int", "low": 1, "high": 2},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "when": {"num_layers": {"gt": 1}}},
        "output_dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "batch_size": {"type": "categorical", "choices": _batch_sizes(size, scale)},
    }
    if size.tokens:
        space["embedding_dim"] = {"type": "int", "low": 16, "high": 2 * high, "log": True}
    bidirectional = fixed.get("bidirectional", False)  # truncation needs one direction
    if size.task != "language_model" and size.max_len >= LONG_SEQUENCES and not bidirectional:
        space["truncation"] = {"type": "categorical", "choices": [None, size.max_len // 4]}
    if size.characters:
        space["char_features"] = {"type": "categorical", "choices": [False, True]}
    if size.max_epochs >= 4:
        space["scheduler"] = {
            "type": "categorical",
            "choices": ["none", "cosine", "constant-then-decay"],
        }
        space["decay_start"] = {
            "type": "int",
            "low": 1,
            "high": size.max_epochs // 2,
            "when": {"scheduler": "constant-then-decay"},
        }
    kept = {k: _given_fixed(v, fixed) for k, v in space.items() if k not in fixed}
    return {k: v for k, v in kept.items() if v is not None}


def _batch_sizes(size: DataSize, scale: int) -> list[int]:
    """Three powers of two, smaller for small data (more updates per epoch), none larger than
    the training set; a language model's batch is its parallel streams (Zaremba et al.: 20)."""
    if size.task == "language_model":
        return [16, 32, 64]
    choices = ([8, 16, 32], [16, 32, 64], [32, 64, 128])[scale]
    fitting = [b for b in choices if b <= size.n_train]
    return fitting or [max(1, int(size.n_train))]


def _given_fixed(dist: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any] | None:
    """A condition on a fixed setting is decided now: `dropout` is searched without condition
    under a fixed `num_layers: 2`, and not at all under `num_layers: 1`."""
    when = dist.get("when") or {}
    if not set(when) & set(fixed):
        return dist
    from tuner.config import condition_holds  # tuner.config imports this module

    if not condition_holds(when, fixed):
        return None
    return {k: v for k, v in dist.items() if k != "when"}
