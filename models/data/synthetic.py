"""Synthetic tasks generated in memory: the adding problem, the copy task and sine forecasting.

Each split has its own generator seeded by (cfg.seed, split), so the validation and test sets stay
the same when only `n_train` changes, and no global random state is touched.
"""

from __future__ import annotations

import numpy as np
import torch

from models.data.base import DataInfo, Split, TaskData
from models.data.config import AddingData, CopyData, SineData
from models.data.files import check_positive
from models.data.naive import SPLITS, BaselineSums
from models.errors import DataError


def _rngs(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, k]) for k in range(len(SPLITS))]


def _check_counts(cfg: AddingData | CopyData | SineData) -> None:
    for name in ("n_train", "n_val", "n_test"):
        check_positive(getattr(cfg, name), name)


def load_adding(cfg: AddingData) -> TaskData:
    """Inputs (N, T, 2): a uniform [0, 1] value channel and a marker channel with one 1 in each
    half; target (N, 1): the sum of the two marked values."""
    check_positive(cfg.seq_len, "seq_len", minimum=2)
    _check_counts(cfg)
    t, half = cfg.seq_len, cfg.seq_len // 2

    def make(n: int, rng: np.random.Generator) -> Split:
        values = rng.random((n, t), dtype=np.float32)  # (N, T)
        first = rng.integers(0, half, n)
        second = rng.integers(half, t, n)
        rows = np.arange(n)
        markers = np.zeros((n, t), dtype=np.float32)
        markers[rows, first] = markers[rows, second] = 1.0
        inputs = np.stack([values, markers], axis=-1)  # (N, T, 2)
        target = values[rows, first] + values[rows, second]  # (N,)
        return Split(torch.from_numpy(inputs), torch.from_numpy(target[:, None]), None)

    counts = (cfg.n_train, cfg.n_val, cfg.n_test)
    train, val, test = (make(n, rng) for n, rng in zip(counts, _rngs(cfg.seed), strict=True))
    info = DataInfo("regression", 2, None, 1, t, cfg.n_train)
    return TaskData(info, train, val, test)


def load_copy(cfg: CopyData) -> TaskData:
    """Tokens (N, T) with T = 2 * copy_len + delay + 1: the symbols, `delay` blanks, a delimiter,
    then blanks while the model recalls. Targets (N, T): -100 (ignored) until the recall phase,
    then the symbols as classes 0..n_symbols-1, so loss and accuracy measure only the recall."""
    for name in ("n_symbols", "copy_len"):
        check_positive(getattr(cfg, name), name)
    check_positive(cfg.delay, "delay", minimum=0)
    _check_counts(cfg)
    blank, delimiter, first_symbol = 0, 1, 2
    k = cfg.copy_len
    t = 2 * k + cfg.delay + 1

    def make(n: int, rng: np.random.Generator) -> Split:
        symbols = rng.integers(0, cfg.n_symbols, (n, k))  # (N, K) classes
        inputs = np.full((n, t), blank, dtype=np.int64)
        inputs[:, :k] = symbols + first_symbol
        inputs[:, k + cfg.delay] = delimiter
        targets = np.full((n, t), -100, dtype=np.int64)
        targets[:, t - k :] = symbols
        return Split(torch.from_numpy(inputs), torch.from_numpy(targets), None)

    counts = (cfg.n_train, cfg.n_val, cfg.n_test)
    train, val, test = (make(n, rng) for n, rng in zip(counts, _rngs(cfg.seed), strict=True))
    labels = tuple(f"s{i}" for i in range(cfg.n_symbols))
    vocab = ("<blank>", "<delim>", *labels)
    info = DataInfo("tagging", None, len(vocab), cfg.n_symbols, t, cfg.n_train, None, vocab, labels)
    return TaskData(info, train, val, test)


def load_sine(cfg: SineData) -> TaskData:
    """Inputs (N, T, 1): a noisy sine window (amplitude 0.5-1.5, period 8-40 steps, any phase);
    targets (N, horizon): the noise-free values of the `horizon` steps after the window, so a
    perfect model reaches MSE 0 (repeating the last observed value, the naive baseline, does not)."""
    check_positive(cfg.seq_len, "seq_len")
    check_positive(cfg.horizon, "horizon")
    if cfg.noise < 0:
        raise DataError(f"task.noise must be at least 0, got {cfg.noise}")
    _check_counts(cfg)
    t, h = cfg.seq_len, cfg.horizon
    baselines = BaselineSums()

    def make(split: str, n: int, rng: np.random.Generator) -> Split:
        amplitude = rng.uniform(0.5, 1.5, (n, 1))
        frequency = 1.0 / rng.uniform(8.0, 40.0, (n, 1))  # cycles per step
        phase = rng.uniform(0.0, 2 * np.pi, (n, 1))
        steps = np.arange(t + h)[None, :]  # (1, T + horizon)
        clean = amplitude * np.sin(2 * np.pi * frequency * steps + phase)  # (N, T + horizon)
        noisy = clean[:, :t] + cfg.noise * rng.standard_normal((n, t))
        inputs = noisy.astype(np.float32)[:, :, None]  # (N, T, 1)
        targets = clean[:, t:].astype(np.float32)  # (N, horizon)
        baselines.add(split, targets, {"naive": inputs[:, -1, :].repeat(h, axis=1)})
        return Split(torch.from_numpy(inputs), torch.from_numpy(targets), None)

    counts = (cfg.n_train, cfg.n_val, cfg.n_test)
    train, val, test = (
        make(split, n, rng) for split, n, rng in zip(SPLITS, counts, _rngs(cfg.seed), strict=True)
    )
    info = DataInfo("regression", 1, None, h, t, cfg.n_train, baselines=baselines.mse())
    return TaskData(info, train, val, test)
