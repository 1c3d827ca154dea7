"""Every task's data as in-memory tensors: `load_task(cfg)` and the `SequenceDataModule`.

    data = load_task(NpzData(path="studies/data/waves.npz", target="classification"))
    dm = SequenceDataModule(data, batch_size=64, seed=0)

`load_task` is deterministic (same cfg, same tensors) and the config dataclasses are frozen, so
`task_data(cfg)` caches it per process: a study's validation and every trial of a worker share one
load. `data_shape(cfg)` gives the sizes a study file is checked against without reading a file.
`SequenceDataModule`, the loaders and the tensor types are imported lazily, so reading a study
file (which only needs the config classes) does not pay for importing torch or Lightning.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from models.data.config import (
    SOURCES,
    AddingData,
    CopyData,
    CsvData,
    DataConfig,
    NpzData,
    PythonData,
    SineData,
    TaggedData,
    TextData,
)
from models.errors import DataError

FILE_SOURCES = ("npz", "csv", "text", "tagged")  # read path, or train/val/test

if TYPE_CHECKING:
    from models.data.base import Batch, DataInfo, Split, TaskData
    from models.data.datamodule import SequenceDataModule


def _loaders() -> dict[str, Callable[[Any], TaskData]]:
    """Loaders by source; imported on first use, since they import torch."""
    from models.data.files_csv import load_csv
    from models.data.files_npz import load_npz
    from models.data.files_text import load_tagged, load_text
    from models.data.loader import load_python
    from models.data.synthetic import load_adding, load_copy, load_sine

    return {
        "adding": load_adding,
        "copy": load_copy,
        "sine": load_sine,
        "npz": load_npz,
        "csv": load_csv,
        "text": load_text,
        "tagged": load_tagged,
        "python": load_python,
    }


def load_task(cfg: DataConfig, with_test: bool = True) -> TaskData:
    """The train/val/test tensors and `DataInfo` of the task `cfg` describes.

    `with_test=False` leaves a separate test file unread (`test` is None): trials never look at
    it. A test part carved from one file comes with the file, since splitting needs all of it."""
    source = getattr(cfg, "source", None)
    loaders = _loaders()
    if source not in loaders:
        raise DataError(
            f"task.source {source!r} is not a data source; choose one of {', '.join(loaders)}"
        )
    if source in FILE_SOURCES:
        return loaders[source](cfg, with_test)
    return loaders[source](cfg)


def task_data(cfg: DataConfig, with_test: bool = False) -> TaskData:
    """`load_task(cfg, with_test)`, loaded once per process (the last four are kept). Trials leave
    a separate test file unread (the default); `validate` and `retrain` read it."""
    # Only a separate test file makes `with_test` matter; one cache key otherwise.
    separate_test = cfg.source in FILE_SOURCES and getattr(cfg, "test", None) is not None
    return _cached_task_data(cfg, with_test and separate_test)


@functools.lru_cache(maxsize=4)
def _cached_task_data(cfg: DataConfig, with_test: bool) -> TaskData:
    return load_task(cfg, with_test)


def data_shape(cfg: DataConfig) -> tuple[int, int] | None:
    """(longest sequence, training sequences) where known without reading a file, else None.
    A text file's size is unknown until it is read: its training size is infinite, unchecked.
    Pre-split text files are read, so that validation checks every file named."""
    source = cfg.source
    if source in ("adding", "sine"):
        return cfg.seq_len, cfg.n_train  # type: ignore[union-attr]
    if source == "copy":
        return 2 * cfg.copy_len + cfg.delay + 1, cfg.n_train  # type: ignore[union-attr]
    if source == "text" and cfg.path is not None:  # type: ignore[union-attr]
        return cfg.seq_len, math.inf  # type: ignore[union-attr, return-value]
    return None


_LAZY = {
    "SequenceDataModule": "models.data.datamodule",
    "Batch": "models.data.base",
    "DataInfo": "models.data.base",
    "UNSEEN": "models.data.base",
    "UnseenLabel": "models.data.base",
    "unseen_warning": "models.data.base",
    "Split": "models.data.base",
    "TaskData": "models.data.base",
}


def __getattr__(name: str) -> Any:
    """Names that need torch (or Lightning) import on first use: reading a study file is fast."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FILE_SOURCES", "SOURCES", "UNSEEN", "AddingData", "Batch", "CopyData", "CsvData", "DataConfig", "DataInfo",
    "NpzData", "PythonData", "SequenceDataModule", "SineData", "Split", "TaggedData", "TaskData", "TextData",
    "UnseenLabel", "data_shape", "load_task", "task_data", "unseen_warning",
]  # fmt: skip
