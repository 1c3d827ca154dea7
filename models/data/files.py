"""What the file loaders share: resolving and reading a file, checking settings, sizing splits.

Every problem becomes a `DataError` that names the file and the line or field, so a study fails
before training with a message that says what to change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from models.errors import DataError


def resolve(path: str) -> Path:
    """The data file `path` (relative to the working directory), which must exist and be a file."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path.cwd() / resolved
    if not resolved.exists():
        raise DataError(
            f"{path}: no such file (resolved against the working directory {Path.cwd()} "
            f"to {resolved}); check task.path"
        )
    if not resolved.is_file():
        raise DataError(f"{path}: not a file (resolved to {resolved}); task.path must name a file")
    if resolved.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return resolved


def read_text(path: str) -> str:
    """The whole file decoded as UTF-8 (a BOM is dropped); bad bytes are reported by line."""
    raw = resolve(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not valid UTF-8 (byte {e.start}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: the file holds only whitespace")
    return text


def check_positive(value: int, field: str, minimum: int = 1) -> None:
    if value < minimum:
        raise DataError(f"task.{field} must be at least {minimum}, got {value}")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise DataError(f"task.{field} must be between 0 and 1 (exclusive), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"task.val_fraction + task.test_fraction must be below 1 to leave training data, "
            f"got {val_fraction} + {test_fraction}"
        )


def split_sizes(
    n: int, val_fraction: float, test_fraction: float, path: str, unit: str
) -> tuple[int, int, int]:
    """(train, val, test) counts of `n` items; an empty split is an error saying what to change."""
    check_fractions(val_fraction, test_fraction)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    for name, count, fix in (
        ("validation", n_val, "raise task.val_fraction"),
        ("test", n_test, "raise task.test_fraction"),
        ("training", n_train, "lower task.val_fraction or task.test_fraction"),
    ):
        if count < 1:
            raise DataError(
                f"{path}: the {name} split would be empty ({n} {unit} in the file, "
                f"val_fraction={val_fraction}, test_fraction={test_fraction}); {fix} "
                "or provide more data"
            )
    return n_train, n_val, n_test


def shuffled_split(
    n: int, sizes: tuple[int, int, int], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint index arrays (train, val, test) from a permutation seeded by `seed` alone."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val, _ = sizes
    # Sorted so each split keeps the file's order, which makes splits easy to inspect.
    return (
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_val]),
        np.sort(order[n_train + n_val :]),
    )


def build_vocab(tokens: Iterable[str], min_freq: int, specials: tuple[str, ...]) -> dict[str, int]:
    """Token -> id: `specials` first, then training tokens seen at least `min_freq` times, most
    frequent first (ties alphabetical, so the ids never depend on dict order)."""
    check_positive(min_freq, "min_freq")
    counts = Counter(tokens)
    kept = sorted(
        (t for t, c in counts.items() if c >= min_freq and t not in specials),
        key=lambda t: (-counts[t], t),
    )
    return {t: i for i, t in enumerate((*specials, *kept))}
