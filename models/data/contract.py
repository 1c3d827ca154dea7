"""The in-memory data contract, checked: what a `source: python` loader returns becomes `TaskData`.

A loader returns a mapping (docs/data.md, "python: your own loader"):

    {"task": "classification",                       # or regression, tagging, language_model
     "train": {"inputs": X, "targets": y, "lengths": L},   # lengths optional
     "val":   {...},
     "test":  {...},                                 # optional: no test split without it
     "labels": ["cat", "dog"],                       # optional names of classes or tags
     "vocab": ["<pad>", "the", ...],                 # optional token strings (token inputs)
     "level": "char",                                # optional, language models: bits per char
     "window": 64}                                   # language models: steps per batch window

Arrays may be numpy arrays, torch tensors or nested lists. The shapes are those of `Batch`
(models/data/base.py): inputs (N, T, F) floats, (N, T) floats read as one feature, or (N, T)
integer token ids; a language model's split is a 1-D token stream `{"inputs": ids}`. Every
problem is a `DataError` that starts with `where` (the loader), then the split and the array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from models.data.base import PAD_TARGET, UNSEEN, DataInfo, Split, TaskData
from models.errors import DataError

TASKS = ("classification", "regression", "tagging", "language_model")
SPLITS = ("train", "val", "test")
KEYS = {"task", *SPLITS, "labels", "vocab", "level", "window"}


def from_arrays(result: Any, where: str) -> TaskData:
    """`result` (the mapping above) checked and converted; `where` names it in every message."""
    if not isinstance(result, Mapping):
        raise DataError(
            f"{where}: returned {type(result).__name__}; expected a mapping with task, train, val (and test)"
        )
    unknown = sorted(set(result) - KEYS)
    missing = [k for k in ("task", "train", "val") if k not in result]
    if unknown or missing:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown key(s) {', '.join(unknown)}"] if unknown else []
        )
        raise DataError(f"{where}: {'; '.join(parts)}; the keys are {', '.join(sorted(KEYS))}")
    task = result["task"]
    if task not in TASKS:
        raise DataError(
            f"{where}: task {task!r} is not a task kind; choose one of {', '.join(TASKS)}"
        )
    names = [s for s in SPLITS if result.get(s) is not None]
    splits = {s: _split(result[s], task, f"{where}: {s}") for s in names}
    info = _info(task, splits, result, where)
    for name, split in splits.items():
        _check_targets(split, info, f"{where}: {name}", train=name == "train")
    return TaskData(info, splits["train"], splits["val"], splits.get("test"))


def _split(value: Any, task: str, where: str) -> Split:
    """One split's tensors: inputs, targets and lengths, each checked on its own."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"inputs", "targets", "lengths"})
        if unknown:
            raise DataError(
                f"{where}: unknown key(s) {', '.join(unknown)}; a split has inputs, targets, lengths"
            )
        inputs, targets, lengths = value.get("inputs"), value.get("targets"), value.get("lengths")
    elif isinstance(value, tuple | list) and len(value) in (2, 3):
        inputs, targets, lengths = (*value, None)[:3]
    else:
        raise DataError(f"{where}: expected a mapping with inputs, targets and lengths")
    x = _inputs(inputs, task, f"{where}.inputs")
    if task == "language_model":
        return Split(x, None, None)
    y = _array(targets, f"{where}.targets")
    if len(y) != len(x):
        raise DataError(
            f"{where}: targets has {len(y)} rows but inputs has {len(x)} sequences; they must be equal"
        )
    return Split(
        x, _targets(y, task, x, f"{where}.targets"), _lengths(lengths, x, f"{where}.lengths")
    )


def _array(value: Any, where: str) -> np.ndarray:
    if value is None:
        raise DataError(f"{where}: missing")
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{where}: dtype {array.dtype}; expected numbers (a numeric array)")
    if array.size == 0 or array.ndim == 0:
        raise DataError(f"{where}: empty (shape {array.shape}); every split needs data")
    return array


def _inputs(value: Any, task: str, where: str) -> torch.Tensor:
    x = _array(value, where)
    if task == "language_model":
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
            raise DataError(
                f"{where}: shape {x.shape}, dtype {x.dtype}; a language model's split is a 1-D stream of integer token ids"
            )
        return torch.from_numpy(x.astype(np.int64))
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 2:  # (N, T) token ids
        return torch.from_numpy(x.astype(np.int64))
    if x.ndim == 2:  # (N, T) values: one feature per step
        x = x[:, :, None]
    if x.ndim != 3:
        raise DataError(f"{where}: shape {x.shape}; expected (N, T, F) values or (N, T) token ids")
    bad = ~np.isfinite(x.astype(np.float64)).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}[{int(np.argmax(bad))}]: NaN or infinite values ({int(bad.sum())} sequences have some); fill or drop them"
        )
    return torch.from_numpy(x.astype(np.float32))


def _targets(y: np.ndarray, task: str, x: torch.Tensor, where: str) -> torch.Tensor:
    if task == "regression":
        y = y.reshape(len(y), -1) if y.ndim == 1 else y
        bad = ~np.isfinite(y.astype(np.float64)).reshape(len(y), -1).all(axis=1)
        if y.ndim != 2 or bad.any():
            raise DataError(
                f"{where}: expected finite numbers of shape (N,) or (N, D); got shape {y.shape}"
                + (f", row {int(np.argmax(bad))} not finite" if bad.any() else "")
            )
        return torch.from_numpy(y.astype(np.float32))
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: dtype {y.dtype}; {task} targets are integer class ids")
    want = (len(x),) if task == "classification" else tuple(x.shape[:2])
    if y.shape != want:
        raise DataError(
            f"{where}: shape {y.shape}; expected {want} for {task} with inputs of shape {tuple(x.shape)}"
        )
    return torch.from_numpy(y.astype(np.int64))


def _lengths(value: Any, x: torch.Tensor, where: str) -> torch.Tensor | None:
    if value is None:
        return None
    lengths = _array(value, where)
    steps = x.shape[1]
    if lengths.shape != (len(x),) or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(
            f"{where}: shape {lengths.shape}, dtype {lengths.dtype}; expected ({len(x)},) integers"
        )
    bad = (lengths < 1) | (lengths > steps)
    if bad.any():
        raise DataError(
            f"{where}[{int(np.argmax(bad))}]: {int(lengths[bad][0])} is outside 1..{steps} (the inputs' T)"
        )
    return None if (lengths == steps).all() else torch.from_numpy(lengths.astype(np.int64))


def _info(task: str, splits: dict[str, Split], result: Mapping, where: str) -> DataInfo:
    """Sizes from the training split (features, classes, vocabulary), the same for the rest."""
    train = splits["train"]
    tokens = train.inputs.dtype == torch.long
    for name, split in splits.items():
        if (split.inputs.dtype == torch.long) != tokens or (
            not tokens and split.inputs.shape[2] != train.inputs.shape[2]
        ):
            raise DataError(
                f"{where}: {name}.inputs has shape {tuple(split.inputs.shape)}, dtype {split.inputs.dtype}; the training inputs have {tuple(train.inputs.shape)}, {train.inputs.dtype}: every split needs the same kind and features"
            )
    labels = _names(result.get("labels"), f"{where}: labels")
    vocab = _names(result.get("vocab"), f"{where}: vocab")
    vocab_size = (len(vocab) if vocab else int(train.inputs.max()) + 1) if tokens else None
    if task == "regression":
        output_size = train.targets.shape[1]  # type: ignore[union-attr]
    elif task == "language_model":
        output_size = vocab_size  # type: ignore[assignment]
    else:
        known = train.targets[train.targets != PAD_TARGET]  # type: ignore[index]
        output_size = len(labels) if labels else int(known.max()) + 1
    if tokens:
        _check_ids(splits, vocab_size, where)  # type: ignore[arg-type]
    max_len = _max_len(task, splits, result.get("window"), where)
    level = result.get("level")
    if level not in (None, "char", "word"):
        raise DataError(f"{where}: level {level!r}; expected char or word")
    n_train = len(train.inputs)
    return DataInfo(
        task,
        None if tokens else train.inputs.shape[2],
        vocab_size,
        output_size,
        max_len,
        n_train,
        level=level,
        vocab=vocab,
        labels=labels,
    )  # type: ignore[arg-type]


def _max_len(task: str, splits: dict[str, Split], window: Any, where: str) -> int:
    """The longest training or validation sequence; a language model's batch window."""
    if task != "language_model":
        return max(splits[s].inputs.shape[1] for s in ("train", "val"))
    if not isinstance(window, int) or window < 1:
        raise DataError(f"{where}: a language model needs window, a positive int (got {window!r})")
    for name, split in splits.items():
        if len(split.inputs) < window + 1:
            raise DataError(
                f"{where}: {name}.inputs has {len(split.inputs)} tokens, fewer than window + 1"
            )
    return window


def _names(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(str(v) for v in value)
    if len(set(names)) != len(names) or not names:
        raise DataError(
            f"{where}: expected distinct names, got {len(names)} with {len(names) - len(set(names))} repeated"
        )
    return names


def _check_ids(splits: dict[str, Split], vocab_size: int, where: str) -> None:
    for name, split in splits.items():
        bad = (split.inputs < 0) | (split.inputs >= vocab_size)
        if bad.any():
            raise DataError(
                f"{where}: {name}.inputs holds token id {int(split.inputs[bad][0])}, outside 0..{vocab_size - 1} (the vocabulary)"
            )


def _check_targets(split: Split, info: DataInfo, where: str, train: bool) -> None:
    """Class ids in 0..C-1; padding (-100) for tagging; UNSEEN (-1) outside training only."""
    if info.task in ("regression", "language_model"):
        return
    y = split.targets
    allowed = (y >= 0) & (y < info.output_size)  # type: ignore[operator]
    if info.task == "tagging":
        allowed |= y == PAD_TARGET
    if not train:
        allowed |= y == UNSEEN
    if not allowed.all():  # type: ignore[union-attr]
        value = int(y[~allowed][0])  # type: ignore[index]
        extra = "" if train else f", or {UNSEEN} for a label training never saw"
        raise DataError(
            f"{where}.targets: class id {value} is outside 0..{info.output_size - 1} (the training classes{', from labels' if info.labels else ''}){extra}"
        )
