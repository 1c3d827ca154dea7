"""Data settings of a study file's `task:` block, one dataclass per data source.

The `source` field picks the dataclass; the tuner validates a study file's `task:` block against
the union `DataConfig`. Paths are relative to the working directory unless absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

# Read by pydantic when the tuner validates a study file: an unknown key is an error.
_STRICT: dict[str, Any] = {"extra": "forbid"}


@dataclass(frozen=True)
class AddingData:
    """The adding problem (Hochreiter & Schmidhuber 1997): regression, target = sum of two marked
    numbers; predicting the mean scores MSE 0.167."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["adding"] = "adding"
    seq_len: int = 50
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    seed: int = 0  # generates the data; fixed across trials so every trial sees the same split


@dataclass(frozen=True)
class CopyData:
    """The copy task: remember `copy_len` symbols over `delay` blank steps; tagging at every step."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["copy"] = "copy"
    n_symbols: int = 8
    copy_len: int = 10
    delay: int = 20
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class SineData:
    """Noisy sine-wave forecasting: from `seq_len` past values predict the next `horizon` values."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["sine"] = "sine"
    seq_len: int = 50
    horizon: int = 1
    noise: float = 0.1
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class NpzData:
    """Arrays in an .npz file: `X` (N, T, F) float or a ragged object array of (T_i, F) sequences,
    `y` (N,) int class labels or (N,) / (N, D) float targets."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: str
    target: Literal["classification", "regression"]
    source: Literal["npz"] = "npz"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0  # shuffles the split


@dataclass(frozen=True)
class CsvData:
    """A table of time series (CSV, or Parquet by the `.parquet` suffix), one row per time step:
    one series, or many in long format with `series` naming each row's series. Windows of `window`
    rows of `features` predict the next `horizon` values of `target`. Each series splits in time:
    its first rows train, its next validate, its last test; no window crosses a series or a part.

    One source for one series and for many: a single series is a long table without a `series`
    column, so both share every key, the split rule and the errors."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: str
    target: str
    features: tuple[str, ...] | None = None  # None = every numeric column but series and time
    series: str | None = None  # the column naming each row's series; None = one series
    time: str | None = None  # the column ordering rows within a series; None = file order
    source: Literal["csv"] = "csv"
    window: int = 24
    horizon: int = 1  # values predicted at once: the `horizon` rows after the window
    season: int | None = None  # steps per season: adds the seasonal naive baseline
    # standardise with the training rows' mean and std: true = of all series together,
    # series = of each series on its own, false = not at all
    normalize: bool | Literal["series"] = True
    val_fraction: float = 0.15  # of every series
    test_fraction: float = 0.15


@dataclass(frozen=True)
class TextData:
    """A plain UTF-8 text file for language modelling, split in order (train, val, test)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: str
    source: Literal["text"] = "text"
    level: Literal["char", "word"] = "char"
    seq_len: int = 64  # steps per batch window; state carries across consecutive windows
    min_freq: int = 1  # rarer training tokens become <unk>
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class TaggedData:
    """A tagged text file: `token<TAB>tag` lines, a blank line between sentences."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: str
    source: Literal["tagged"] = "tagged"
    min_freq: int = 1
    lowercase: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0  # shuffles sentences into the split


DataConfig = AddingData | CopyData | SineData | NpzData | CsvData | TextData | TaggedData
SOURCES: dict[str, type] = {
    c.__dataclass_fields__["source"].default: c  # type: ignore[attr-defined]
    for c in (AddingData, CopyData, SineData, NpzData, CsvData, TextData, TaggedData)
}
