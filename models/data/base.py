"""What every task's data looks like once loaded: splits of in-memory tensors plus a `DataInfo`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:  # torch-free at run time, so reading a study file does not import torch
    from torch import Tensor

Task = Literal["classification", "regression", "tagging", "language_model"]

# Target id of a validation or test label (class or tag) that the training data never holds: the
# model has no output for it, so it always counts as a wrong prediction (and is left out of the
# loss, which has no value for a class the model cannot name). -100 marks padding, ignored by both.
UNSEEN = -1
PAD_TARGET = -100


class Batch(NamedTuple):
    """One batch. `lengths` is None when every sequence has the full length.

    classification: inputs (B, T, F) float or (B, T) long; targets (B,) long
    regression:     inputs as above;                        targets (B, D) float
    tagging:        inputs as above;                        targets (B, T) long, -100 on padding
                    from token files (`DataInfo.chars` set): inputs (B, T, 1 + W) long, each
                    token's word id then its W character ids (`models.data.chars`)
    language_model: inputs (B, L) long, a window of B parallel streams; targets (B, L) long
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None


@dataclass(frozen=True)
class DataInfo:
    task: Task
    input_size: int | None  # real-valued features per step; None for token inputs
    vocab_size: int | None  # token inputs; None for real-valued inputs
    output_size: int  # classes (classification, tagging, language model) or regression targets
    max_len: int  # the longest sequence (language model: the batch window)
    n_train: int  # training sequences (language model: training tokens)
    level: Literal["char", "word"] | None = None  # language model only: bits per char at "char"
    vocab: tuple[str, ...] | None = None  # token strings by id, for token inputs
    labels: tuple[str, ...] | None = None  # class or tag names by id, where known
    # Tagging from token files: character strings by id (0 = padding); inputs then carry each
    # token's character ids after its word id, for `Settings.char_features`
    chars: tuple[str, ...] | None = None
    # Forecasts: the naive forecasts' MSE on each split's own windows, in the targets' units, by
    # metric name: "val_mse_naive" (last value), "val_mse_snaive" (one season back), train_, test_
    baselines: dict[str, float] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Split:
    """Padded tensors of one split. Language model: `inputs` is the 1-D token stream, the rest None."""

    inputs: Tensor
    targets: Tensor | None
    lengths: Tensor | None


class UnseenLabel(NamedTuple):
    """A label that occurs `count` times in `where` (a file, or a part of one) but never in training."""

    label: str
    where: str
    count: int


@dataclass(frozen=True)
class TaskData:
    """`test` is None when there is no test split (pre-split files without `test:`) or when the
    caller did not ask for it (trials never read a test file; only `retrain` does)."""

    info: DataInfo
    train: Split
    val: Split
    test: Split | None
    unseen: tuple[UnseenLabel, ...] = ()  # val/test labels that training never saw


def unseen_warning(unseen: tuple[UnseenLabel, ...]) -> str | None:
    """One line listing every unseen label with its count and file, or None when there is none."""
    if not unseen:
        return None
    listed = "; ".join(f"{u.label!r} x{u.count} in {u.where}" for u in unseen)
    return (
        f"{len(unseen)} label(s) in validation/test data never occur in the training data and "
        f"count as wrong predictions: {listed}"
    )
