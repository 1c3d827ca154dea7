"""Sequences from an .npz archive: `X` (N, T, F) or ragged (T_i, F) sequences, `y` labels or targets.

Classification labels may be any ints or strings: the distinct values, sorted, become classes
0..C-1 and `DataInfo.labels` keeps the original values as strings. The split is a seeded shuffle.
"""

from __future__ import annotations

import zipfile

import numpy as np
import torch

from models.data.base import DataInfo, Split, TaskData
from models.data.config import NpzData
from models.data.files import resolve, shuffled_split, split_sizes
from models.errors import DataError


def load_npz(cfg: NpzData) -> TaskData:
    x, y = _read(cfg.path)
    inputs, lengths = _features(x, cfg.path)  # (N, T, F) padded, (N,) or None
    n = inputs.shape[0]
    if len(y) != n:
        raise DataError(
            f"{cfg.path}: y has {len(y)} rows but X has {n} sequences; they must be equal"
        )
    if cfg.target == "classification":
        targets, labels = _classes(y, cfg.path)
        output_size = len(labels)
    else:
        targets, labels = _regression_targets(y, cfg.path), None
        output_size = targets.shape[1]
    sizes = split_sizes(n, cfg.val_fraction, cfg.test_fraction, cfg.path, "sequences")

    def split(idx: np.ndarray) -> Split:
        index = torch.from_numpy(idx)
        return Split(inputs[index], targets[index], None if lengths is None else lengths[index])

    train, val, test = (split(i) for i in shuffled_split(n, sizes, cfg.seed))
    task = "classification" if cfg.target == "classification" else "regression"
    info = DataInfo(
        task, inputs.shape[2], None, output_size, inputs.shape[1], sizes[0], labels=labels
    )
    return TaskData(info, train, val, test)


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


def _classes(y: np.ndarray, path: str) -> tuple[torch.Tensor, tuple[str, ...]]:
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
    classes, ids = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{path}: y has a single class ({classes[0]}); classification needs two")
    return torch.from_numpy(ids.astype(np.int64)), tuple(str(c) for c in classes)


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
