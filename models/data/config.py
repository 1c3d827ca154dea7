"""Data settings of a study file's `task:` block, one dataclass per data source.

The `source` field picks the dataclass; the tuner validates a study file's `task:` block against
the union `DataConfig`. Paths are relative to the working directory unless absolute. The
docstring under each field is its description in docs/data.md and the study file's JSON Schema.

File sources read either one file, `path`, split by `val_fraction` / `test_fraction`, or
pre-split files: `train` and optionally `val` (else carved from `train` by `val_fraction`) and
`test` (else the study has no test split). `models.data.files.named_files` checks the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Lt

# Bounds pydantic checks (and the docs print) when the tuner validates a `task:` block.
Count = Annotated[int, Ge(1)]  # sequences in a split, symbols, steps
Steps = Annotated[int, Ge(2)]  # a sequence: one step has no order to learn
Fraction = Annotated[float, Gt(0), Lt(1)]  # a split's share: each split needs data

# Read by pydantic when the tuner validates a study file: an unknown key is an error, and the
# docstring under each field is its description.
_STRICT: dict[str, Any] = {"extra": "forbid", "use_attribute_docstrings": True}


@dataclass(frozen=True)
class AddingData:
    """The adding problem (Hochreiter & Schmidhuber 1997): regression, target = sum of two marked
    numbers; predicting the mean scores MSE 0.167."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["adding"] = "adding"
    """Built in: no file."""
    seq_len: Steps = 50
    """Time steps per sequence."""
    n_train: Count = 4000
    """Training sequences."""
    n_val: Count = 1000
    """Validation sequences."""
    n_test: Count = 1000
    """Test sequences."""
    seed: int = 0
    """Generates the data; fixed across trials so every trial sees the same split."""


@dataclass(frozen=True)
class CopyData:
    """The copy task: remember `copy_len` symbols over `delay` blank steps; tagging at every step."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["copy"] = "copy"
    """Built in: no file."""
    n_symbols: Annotated[int, Ge(2)] = 8
    """Distinct symbols to copy (chance accuracy is 1 / n_symbols)."""
    copy_len: Count = 10
    """Symbols to remember."""
    delay: Annotated[int, Ge(0)] = 20
    """Blank steps between the symbols and the delimiter that asks for them."""
    n_train: Count = 4000
    """Training sequences."""
    n_val: Count = 1000
    """Validation sequences."""
    n_test: Count = 1000
    """Test sequences."""
    seed: int = 0
    """Generates the data; fixed across trials so every trial sees the same split."""


@dataclass(frozen=True)
class SineData:
    """Noisy sine-wave forecasting: from `seq_len` past values predict the next `horizon` values."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["sine"] = "sine"
    """Built in: no file."""
    seq_len: Steps = 50
    """Past values the model sees."""
    horizon: Count = 1
    """Values predicted at once: the `horizon` steps after the window."""
    noise: Annotated[float, Ge(0)] = 0.1
    """Standard deviation of the Gaussian noise on the inputs."""
    n_train: Count = 4000
    """Training sequences."""
    n_val: Count = 1000
    """Validation sequences."""
    n_test: Count = 1000
    """Test sequences."""
    seed: int = 0
    """Generates the data; fixed across trials so every trial sees the same split."""


@dataclass(frozen=True)
class NpzData:
    """Arrays in an .npz file: `X` (N, T, F) float or a ragged object array of (T_i, F) sequences,
    `y` (N,) int class labels or (N,) / (N, D) float targets."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    target: Literal["classification", "regression"]
    """What `y` holds: class labels or real-valued targets."""
    path: str | None = None
    """The .npz archive with arrays `X` and `y`, split by the fractions; or give `train` (and `val`, `test`) instead."""
    train: str | None = None
    """Pre-split data: the training file, in the same format."""
    val: str | None = None
    """Pre-split data: the validation file; omitted: `val_fraction` of the training file, shuffled with `seed`."""
    test: str | None = None
    """Pre-split data: the test file, read only by `retrain`; omitted: no test split."""
    source: Literal["npz"] = "npz"
    """Arrays in a NumPy .npz file."""
    val_fraction: Fraction = 0.15
    """Share of the sequences for validation."""
    test_fraction: Fraction = 0.15
    """Share of the sequences for test."""
    seed: int = 0
    """Shuffles the sequences into the splits."""
    cv_folds: int | None = None
    """Cross-validation: K folds of every sequence outside the test split (the validation split
    joins them), stratified by class; a trial trains K times and scores the mean of the folds.
    null: one validation split."""


@dataclass(frozen=True)
class CsvData:
    """A table of time series (CSV, or Parquet by the `.parquet` suffix), one row per time step:
    one series, or many in long format with `series` naming each row's series. Windows of `window`
    rows of `features` predict the next `horizon` values of `target`. Each series splits in time:
    its first rows train, its next validate, its last test; no window crosses a series or a part.

    One source for one series and for many: a single series is a long table without a `series`
    column, so both share every key, the split rule and the errors."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    target: str
    """The column to predict."""
    features: tuple[str, ...] | None = None
    """Input columns; null takes every numeric column but `series` and `time`."""
    series: str | None = None
    """The column naming each row's series; null: one series."""
    time: str | None = None
    """The column ordering rows within a series; null: file order."""
    path: str | None = None
    """The table: a CSV file with a header row, or a `.parquet` file, split by the fractions; or give `train` (and `val`, `test`) instead."""
    train: str | None = None
    """Pre-split data: the training file, in the same format."""
    val: str | None = None
    """Pre-split data: the validation file; omitted: the last `val_fraction` of every training series."""
    test: str | None = None
    """Pre-split data: the test file, read only by `retrain`; omitted: no test split."""
    source: Literal["csv"] = "csv"
    """Time series in a table."""
    window: Count = 24
    """Rows per input window."""
    horizon: Count = 1
    """Values predicted at once: the `horizon` rows after the window."""
    season: Annotated[int, Ge(2)] | None = None
    """Steps per season: adds the seasonal naive baseline."""
    normalize: bool | Literal["series"] = True
    """Standardise with the training rows' mean and std: true of all series together, `series`
    of each series on its own, false not at all."""
    val_fraction: Fraction = 0.15
    """Share of every series' rows for validation (after its training rows)."""
    test_fraction: Fraction = 0.15
    """Share of every series' rows for test (its last ones)."""


@dataclass(frozen=True)
class TextData:
    """A plain UTF-8 text file for language modelling, split in order (train, val, test)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: str | None = None
    """The UTF-8 text file, split by the fractions; or give `train` (and `val`, `test`) instead."""
    train: str | None = None
    """Pre-split data: the training file, in the same format."""
    val: str | None = None
    """Pre-split data: the validation file; omitted: the last `val_fraction` of the training file's tokens."""
    test: str | None = None
    """Pre-split data: the test file, read only by `retrain`; omitted: no test split."""
    source: Literal["text"] = "text"
    """Plain text for language modelling."""
    level: Literal["char", "word"] = "char"
    """Tokens are characters, or whitespace-separated words plus `<eos>` at each line's end."""
    seq_len: Steps = 64
    """Steps per batch window; the state carries across consecutive windows."""
    min_freq: Count = 1
    """Training tokens seen fewer times become `<unk>`."""
    val_fraction: Fraction = 0.1
    """Share of the tokens for validation (after the training tokens)."""
    test_fraction: Fraction = 0.1
    """Share of the tokens for test (the last ones)."""


@dataclass(frozen=True)
class TaggedData:
    """A tagged text file: `token<TAB>tag` lines, a blank line between sentences."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: str | None = None
    """The file of `token<TAB>tag` lines, split by the fractions; or give `train` (and `val`, `test`) instead."""
    train: str | None = None
    """Pre-split data: the training file, in the same format."""
    val: str | None = None
    """Pre-split data: the validation file; omitted: `val_fraction` of the training sentences, shuffled with `seed`."""
    test: str | None = None
    """Pre-split data: the test file, read only by `retrain`; omitted: no test split."""
    source: Literal["tagged"] = "tagged"
    """A tag for every token (sequence tagging)."""
    min_freq: Count = 1
    """Training tokens seen fewer times become `<unk>`."""
    lowercase: bool = False
    """Lowercase the tokens (never the tags)."""
    val_fraction: Fraction = 0.15
    """Share of the sentences for validation."""
    test_fraction: Fraction = 0.15
    """Share of the sentences for test."""
    seed: int = 0
    """Shuffles the sentences into the splits."""


@dataclass(frozen=True)
class PythonData:
    """Your own loader: `loader: "package.module:function"`, called with the task block's other
    keys (gathered in `options`) and returning the splits as models.data.contract describes."""

    # Every other key of the task block is the loader's: the schema allows them (the tuner
    # gathers them into `options` before checking the block).
    __pydantic_config__: ClassVar[dict[str, Any]] = {
        **_STRICT,
        "json_schema_extra": {"additionalProperties": True},
    }

    loader: str
    """`package.module:function`, importable from the working directory or an installed package."""
    options: dict[str, Any] = field(default_factory=dict, hash=False)  # values may be lists
    """The task block's other keys, passed to the loader as keyword arguments; write them
    directly in the task block."""
    source: Literal["python"] = "python"
    """Your own loader (a Python function)."""
    cv_folds: int | None = None
    """Cross-validation of a classification or regression loader's independent sequences, as
    for npz (folds seeded with 0); not passed to the loader. null: its validation split."""


DataConfig = (
    AddingData | CopyData | SineData | NpzData | CsvData | TextData | TaggedData | PythonData
)
SOURCES: dict[str, type] = {
    c.__dataclass_fields__["source"].default: c  # type: ignore[attr-defined]
    for c in (AddingData, CopyData, SineData, NpzData, CsvData, TextData, TaggedData, PythonData)
}


def naive_baselines(cfg: DataConfig) -> tuple[str, ...]:
    """The naive forecasts (models.data.naive) that the data of `cfg` score, known from the
    settings alone so a study file's objective can be checked without reading data."""
    if isinstance(cfg, SineData):
        return ("naive",)
    if isinstance(cfg, CsvData):
        return ("naive",) if cfg.season is None else ("naive", "snaive")
    return ()
