"""What the file loaders share: resolving and reading a file, checking settings, sizing splits.

Every problem becomes a `DataError` that names the file and the line or field, so a study fails
before training with a message that says what to change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from models.data.base import UnseenLabel
from models.errors import DataError

SPLIT_KEYS = ("train", "val", "test")
PART_NAMES = {"train": "training", "val": "validation", "test": "test"}


def named_files(cfg: Any) -> dict[str, str]:
    """The files a file source's `task:` block names: {"path": ...}, or {"train": ..., "val": ...,
    "test": ...} with the keys given. A mix of the two, or neither, is an error."""
    given = {k: getattr(cfg, k) for k in ("path", *SPLIT_KEYS) if getattr(cfg, k) is not None}
    if "path" in given and len(given) > 1:
        others = ", ".join(f"task.{k}" for k in given if k != "path")
        raise DataError(
            f"task.path and {others} are both given; use task.path for one file split by "
            "val_fraction/test_fraction, or task.train (with optional val and test) for "
            "pre-split files, not both"
        )
    if "path" not in given and "train" not in given:
        if given:
            raise DataError(
                f"task.{next(iter(given))} needs task.train: pre-split files start with the "
                "training file"
            )
        raise DataError(
            "task.path (one file, split by fractions) or task.train (pre-split files) is required"
        )
    return given


def part_label(files: dict[str, str], split: str) -> str:
    """How messages name a split's data: its own file, or the part of the one file it came from."""
    if split in files:
        return files[split]
    source = files.get("path") or files["train"]
    return f"{source} ({PART_NAMES[split]} part)"


def resolve(path: str) -> Path:
    """The data file `path` (relative to the working directory), which must exist and be a file."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path.cwd() / resolved
    if not resolved.exists():
        raise DataError(
            f"{path}: no such file (resolved against the working directory {Path.cwd()} "
            f"to {resolved}); check the file name in the task block"
        )
    if not resolved.is_file():
        raise DataError(
            f"{path}: not a file (resolved to {resolved}); the task block must name a file"
        )
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


def check_distinct(n_distinct: int, path: str, unit: str) -> None:
    """A vocabulary of one token (or none above task.min_freq) leaves nothing to predict."""
    if n_distinct < 2:
        raise DataError(
            f"{path}: the training part holds {n_distinct} distinct {unit}"
            f"{'' if n_distinct == 1 else 's'} (of those seen task.min_freq times); a model "
            "learns nothing from one distinct token: give it varied text or lower task.min_freq"
        )


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


def carve_sizes(n: int, val_fraction: float, path: str, unit: str) -> tuple[int, int]:
    """(train, val) counts when validation is carved from a training file of `n` items."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(
            f"task.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}"
        )
    n_val = round(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        part, fix = ("validation", "raise") if n_val < 1 else ("training", "lower")
        raise DataError(
            f"{path}: carving task.val_fraction={val_fraction} of {n} {unit} leaves the {part} "
            f"split empty; {fix} task.val_fraction, give a task.val file, or provide more data"
        )
    return n - n_val, n_val


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


def unseen_labels(values: Iterable[Any], known: Iterable[str], where: str) -> list[UnseenLabel]:
    """Labels among `values` (compared as strings) that are not `known`, with their counts."""
    known = set(known)
    counts = Counter(str(v) for v in values if str(v) not in known)
    return [UnseenLabel(label, where, n) for label, n in sorted(counts.items())]


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
