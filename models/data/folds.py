"""K-fold cross-validation of a task's training data.

    folds = cv_folds(data, k=5, seed=0)     # k TaskData: fold i validates on part i
    everything = pooled(data)               # train on all of it afterwards (no validation)

With cross-validation the validation split joins the training split: the k parts partition every
sequence outside the test split, so a small data set lends all of its sequences to validation in
turn instead of a few to one split. The test split is untouched. Classification is stratified:
each class's sequences, shuffled, are dealt round robin over the parts (one class after another),
so every part holds each class within one sequence of its share, and the parts' sizes differ by at
most one. The deal is seeded, so every trial of a study sees the same folds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from models.data.base import Split, TaskData
from models.errors import DataError


def cv_folds(data: TaskData, k: int, seed: int = 0) -> list[TaskData]:
    """`k` TaskData over the training and validation sequences: fold i trains on every part but
    part i and validates on part i; each keeps `data.test`."""
    whole = _joined(data.train, data.val)
    parts = fold_parts(len(whole.inputs), k, seed, _stratum(data, whole))
    folds = []
    for i, part in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != i])
        info = replace(data.info, n_train=len(rest))
        folds.append(TaskData(info, _take(whole, rest), _take(whole, part), data.test))
    return folds


def pooled(data: TaskData) -> TaskData:
    """Every sequence outside the test split as the training split, and no validation split:
    what a model is trained on once cross-validation has chosen its settings and epochs."""
    whole = _joined(data.train, data.val)
    empty = _take(whole, np.zeros(0, dtype=np.int64))
    info = replace(data.info, n_train=len(whole.inputs))
    return TaskData(info, whole, empty, data.test)


def fold_parts(n: int, k: int, seed: int, classes: np.ndarray | None = None) -> list[np.ndarray]:
    """Indices of `k` disjoint parts covering range(n), each sorted; stratified by `classes`
    (one per index) when given."""
    if k < 2 or k > n:
        raise DataError(f"cv_folds must be between 2 and the {n} sequences to fold, got {k}")
    rng = np.random.default_rng(seed)
    if classes is None:
        order = rng.permutation(n)
    else:  # each class shuffled, then the classes one after another
        order = np.concatenate(
            [rng.permutation(np.flatnonzero(classes == c)) for c in np.unique(classes)]
        )
    return [np.sort(order[i::k]) for i in range(k)]


def _stratum(data: TaskData, whole: Split) -> np.ndarray | None:
    """The class of each sequence for a classification task, else None (a plain shuffle)."""
    if data.info.task != "classification":
        return None
    assert whole.targets is not None
    return whole.targets.numpy()


def _joined(a: Split, b: Split) -> Split:
    """Two splits as one, padded to the longer; lengths kept where either split has them."""
    steps = max(a.inputs.shape[1], b.inputs.shape[1])
    assert a.targets is not None and b.targets is not None
    lengths = None
    if a.lengths is not None or b.lengths is not None:
        lengths = torch.cat([_lengths(a), _lengths(b)])
    inputs = torch.cat([_padded(a.inputs, steps), _padded(b.inputs, steps)])
    return Split(inputs, torch.cat([a.targets, b.targets]), lengths)


def _lengths(split: Split) -> torch.Tensor:
    if split.lengths is not None:
        return split.lengths
    return torch.full((len(split.inputs),), split.inputs.shape[1], dtype=torch.long)


def _padded(inputs: torch.Tensor, steps: int) -> torch.Tensor:
    """(N, T, ...) zero-padded to (N, steps, ...)."""
    if inputs.shape[1] == steps:
        return inputs
    pad = inputs.new_zeros((inputs.shape[0], steps - inputs.shape[1], *inputs.shape[2:]))
    return torch.cat([inputs, pad], dim=1)


def _take(split: Split, index: np.ndarray) -> Split:
    i = torch.from_numpy(index)
    assert split.targets is not None
    lengths = None if split.lengths is None else split.lengths[i]
    return Split(split.inputs[i], split.targets[i], lengths)
