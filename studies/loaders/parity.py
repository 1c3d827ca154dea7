"""An example `source: python` loader (studies/loader-parity.yaml): data made by your own code.

Parity of a variable-length bit string: is the number of ones even or odd? The function gets the
study file's task keys (here seq_len, n_train, n_val, n_test, seed) as keyword arguments and
returns the splits in rnn-tuner's in-memory contract (docs/data.md, "python: your own loader").
Replace the body with whatever reads your data: a database query, an in-house format, an API.
"""

from __future__ import annotations

import numpy as np


def load(
    seq_len: int = 16, n_train: int = 2000, n_val: int = 500, n_test: int = 500, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)

    def split(n: int) -> dict:
        lengths = rng.integers(seq_len // 2, seq_len + 1, n)  # (N,) steps of each sequence
        bits = rng.integers(0, 2, (n, seq_len)) * (np.arange(seq_len) < lengths[:, None])
        return {
            "inputs": bits.astype(np.float32),  # (N, T): one feature per step
            "targets": bits.sum(axis=1) % 2,  # (N,) class ids: 0 even, 1 odd
            "lengths": lengths,
        }

    return {
        "task": "classification",
        "train": split(n_train),
        "val": split(n_val),
        "test": split(n_test),
        "labels": ["even", "odd"],
    }
