"""Sequences from an .npz archive: `X` (N, T, F) or ragged (T_i, F) sequences, `y` labels or targets.

Classification labels may be any ints or strings: the distinct training values, sorted, become
classes 0..C-1 and `DataInfo.labels` keeps the original values as strings; a validation or test
label that training never saw gets the target `UNSEEN`. One file is split by a seeded shuffle;
pre-split files keep their split.
"""

from __future__ import annotations

import zipfile

import numpy as np
import torch

from models.data.base import UNSEEN, DataInfo, Split, TaskData, UnseenLabel
from models.data.config import NpzData
from models.data.files import (
    carve_sizes,
    named_files,
    part_label,
    resolve,
    shuffled_split,
    split_sizes,
    unseen_labels,
)
from models.errors import DataError


def load_npz(cfg: NpzData, with_test: bool = True) -> TaskData:
    """One file split by a seeded shuffle, or pre-split files (val carved from train if absent)."""
    files = named_files(cfg)
    if "path" in files:
        whole = _arrays(cfg.path, cfg.target)
        n = len(whole[0])
        sizes = split_sizes(n, cfg.val_fraction, cfg.test_fraction, cfg.path, "sequences")
        parts: list[_Arrays | None] = [_take(whole, i) for i in shuffled_split(n, sizes, cfg.seed)]
    else:
        train = _arrays(files["train"], cfg.target)
        if "val" in files:
            parts = [train, _arrays(files["val"], cfg.target)]
        else:
            n = len(train[0])
            n_train, n_val = carve_sizes(n, cfg.val_fraction, files["train"], "sequences")
            parts = [_take(train, i) for i in shuffled_split(n, (n_train, n_val, 0), cfg.seed)[:2]]
        read_test = with_test and "test" in files
        parts.append(_arrays(files["test"], cfg.target) if read_test else None)
        _same_features([p for p in parts if p is not None], files)
    return _task(cfg, files, parts)


# (inputs (N, T, F) padded, lengths (N,) or None, y as read): one file's or one split's arrays
_Arrays = tuple[torch.Tensor, torch.Tensor | None, np.ndarray]


def _arrays(path: str, target: str) -> _Arrays:
    x, y = _read(path)
    inputs, lengths = _features(x, path)  # (N, T, F) padded, (N,) or None
    if len(y) != len(inputs):
        raise DataError(
            f"{path}: y has {len(y)} rows but X has {len(inputs)} sequences; they must be equal"
        )
    return inputs, lengths, _label_values(y, path) if target == "classification" else y


def _take(arrays: _Arrays, idx: np.ndarray) -> _Arrays:
    inputs, lengths, y = arrays
    index = torch.from_numpy(idx)
    return inputs[index], None if lengths is None else lengths[index], y[idx]


def _same_features(parts: list[_Arrays], files: dict[str, str]) -> None:
    features = parts[0][0].shape[2]
    for split, part in zip(("val", "test"), parts[1:], strict=False):
        if split in files and part[0].shape[2] != features:
            raise DataError(
                f"{files[split]}: X has {part[0].shape[2]} features per step but the training "
                f"file {files['train']} has {features}; every file needs the same F"
            )


def _task(cfg: NpzData, files: dict[str, str], parts: list[_Arrays | None]) -> TaskData:
    train = parts[0]
    assert train is not None
    labels: tuple[str, ...] | None = None
    if cfg.target == "classification":
        labels = _classes(train[2], part_label(files, "train"))
        unseen: list[UnseenLabel] = []
        targets = [None if p is None else _class_ids(p[2], labels) for p in parts]
        for split, part in zip(("val", "test"), parts[1:], strict=True):
            if part is not None:
                unseen += unseen_labels(part[2], labels, part_label(files, split))
        output_size = len(labels)
    else:
        targets = [None if p is None else _regression_targets(p[2], cfg.path or files["train"]) for p in parts]  # fmt: skip
        unseen, output_size = [], targets[0].shape[1]  # type: ignore[union-attr]
    splits = [None if p is None else Split(p[0], t, _lengths_or_none(p)) for p, t in zip(parts, targets, strict=True)]  # fmt: skip
    task = "classification" if cfg.target == "classification" else "regression"
    max_len = max(s.inputs.shape[1] for s in splits[:2])  # type: ignore[union-attr]
    info = DataInfo(
        task, train[0].shape[2], None, output_size, max_len, len(train[0]), labels=labels
    )
    return TaskData(info, splits[0], splits[1], splits[2], tuple(unseen))  # type: ignore[arg-type]


def _lengths_or_none(part: _Arrays) -> torch.Tensor | None:
    """A split whose sequences all have its padded length needs no lengths (the model skips packing)."""
    inputs, lengths, _ = part
    if lengths is None or bool((lengths == inputs.shape[1]).all()):
        return None
    return lengths


def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
    resolved = resolve(path)
    if not zipfile.is_zipfile(resolved):
        raise DataError(
            f"{path}: not an .npz archive; write one with numpy.savez(path, X=..., y=...)"
        )
    # Pickle is needed for ragged object arrays; it runs code from the file, so only load your own.
    with np.load(resolved, allow_pickle=True) as archive:
        missing = [k for k in ("X", "y") if k not in archive.files]
        if missing:
            raise DataError(
                f"{path}: missing key(s) {', '.join(missing)}; the archive has "
                f"{', '.join(archive.files) or 'no arrays'} but needs X (sequences) and y (targets)"
            )
        return archive["X"], archive["y"]


def _features(x: np.ndarray, path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Padded float inputs (N, T, F) and lengths (N,), or None when every sequence is full."""
    if x.dtype == object:
        return _ragged(x, path)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{path}: X has dtype {x.dtype}; expected numbers")
    if x.ndim == 2:  # (N, T): one feature per step
        x = x[:, :, None]
    if x.ndim != 3 or 0 in x.shape:
        raise DataError(
            f"{path}: X has shape {x.shape}; expected (N, T, F) with N, T, F >= 1, "
            "or a 1-D object array of (T_i, F) sequences"
        )
    x = x.astype(np.float32)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: X[{int(np.argmax(bad))}] contains NaN or infinite values "
            f"({int(bad.sum())} sequences do); fill or drop missing values"
        )
    return torch.from_numpy(x), None


def _ragged(x: np.ndarray, path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if x.ndim != 1 or len(x) == 0:
        raise DataError(
            f"{path}: X is an object array of shape {x.shape}; expected a 1-D array "
            "of (T_i, F) sequences"
        )
    sequences = []
    for i, item in enumerate(x):
        try:
            seq = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{path}: X[{i}] is not a numeric array") from None
        if seq.ndim == 1:  # (T_i,): one feature per step
            seq = seq[:, None]
        if seq.ndim != 2 or 0 in seq.shape:
            raise DataError(f"{path}: X[{i}] has shape {seq.shape}; expected (T_i, F), T_i, F >= 1")
        if sequences and seq.shape[1] != sequences[0].shape[1]:
            raise DataError(
                f"{path}: X[{i}] has {seq.shape[1]} features but X[0] has "
                f"{sequences[0].shape[1]}; every sequence needs the same F"
            )
        if not np.isfinite(seq).all():
            raise DataError(f"{path}: X[{i}] contains NaN or infinite values; fill or drop them")
        sequences.append(seq)
    lengths = np.array([len(s) for s in sequences])
    padded = np.zeros((len(sequences), lengths.max(), sequences[0].shape[1]), dtype=np.float32)
    for i, seq in enumerate(sequences):
        padded[i, : len(seq)] = seq  # zeros after the end; `lengths` tells the model where
    full = (lengths == lengths.max()).all()
    return torch.from_numpy(padded), None if full else torch.from_numpy(lengths)


def _label_values(y: np.ndarray, path: str) -> np.ndarray:
    """Class labels as (N,) ints or strings; whole-number floats become ints."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: y has shape {y.shape}; classification needs (N,) labels")
    if y.dtype == object and all(isinstance(v, str) for v in y):
        y = y.astype(str)
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(
                f"{path}: y holds non-integer floats; classification needs int or "
                "string labels (or set task.target: regression)"
            )
        y = y.astype(np.int64)
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool or y.dtype.kind == "U"):
        raise DataError(f"{path}: y has dtype {y.dtype}; classification needs int or string labels")
    return y


def _classes(y: np.ndarray, where: str) -> tuple[str, ...]:
    """The training labels' distinct values, sorted, as strings: class i is labels[i]."""
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{where}: y has a single class ({classes[0]}); classification needs two")
    return tuple(str(c) for c in classes)


def _class_ids(y: np.ndarray, labels: tuple[str, ...]) -> torch.Tensor:
    ids = {label: i for i, label in enumerate(labels)}
    return torch.tensor([ids.get(str(v), UNSEEN) for v in y], dtype=torch.long)  # (N,)


def _regression_targets(y: np.ndarray, path: str) -> torch.Tensor:
    if not np.issubdtype(y.dtype, np.number) or y.ndim not in (1, 2):
        raise DataError(
            f"{path}: y has dtype {y.dtype} and shape {y.shape}; regression needs "
            "numbers of shape (N,) or (N, D)"
        )
    y = y.astype(np.float32).reshape(len(y), -1)  # (N, D)
    bad = ~np.isfinite(y).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: y[{int(np.argmax(bad))}] is NaN or infinite; regression "
            "targets must be finite"
        )
    return torch.from_numpy(y)
