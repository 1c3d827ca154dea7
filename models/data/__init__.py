"""Every task's data as in-memory tensors: `load_task(cfg)` and the `SequenceDataModule`.

    data = load_task(NpzData(path="studies/data/waves.npz", target="classification"))
    dm = SequenceDataModule(data, batch_size=64, seed=0)

`load_task` is deterministic (same cfg, same tensors) and the config dataclasses are frozen, so a
caller may cache it keyed by cfg. `SequenceDataModule` is imported lazily, so reading a study file
(which only needs the config classes) does not pay for importing Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from models.data.base import Batch, DataInfo, Split, TaskData
from models.data.config import (
    SOURCES,
    AddingData,
    CopyData,
    CsvData,
    DataConfig,
    NpzData,
    SineData,
    TaggedData,
    TextData,
)
from models.data.files_csv import load_csv
from models.data.files_npz import load_npz
from models.data.files_text import load_tagged, load_text
from models.data.synthetic import load_adding, load_copy, load_sine
from models.errors import DataError

if TYPE_CHECKING:
    from models.data.datamodule import SequenceDataModule

LOADERS: dict[str, Callable[[Any], TaskData]] = {
    "adding": load_adding,
    "copy": load_copy,
    "sine": load_sine,
    "npz": load_npz,
    "csv": load_csv,
    "text": load_text,
    "tagged": load_tagged,
}


def load_task(cfg: DataConfig) -> TaskData:
    """The train/val/test tensors and `DataInfo` of the task `cfg` describes."""
    source = getattr(cfg, "source", None)
    if source not in LOADERS:
        raise DataError(
            f"task.source {source!r} is not a data source; choose one of {', '.join(LOADERS)}"
        )
    return LOADERS[source](cfg)


def __getattr__(name: str) -> Any:
    if name == "SequenceDataModule":
        from models.data.datamodule import SequenceDataModule

        return SequenceDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SOURCES", "AddingData", "Batch", "CopyData", "CsvData", "DataConfig", "DataInfo",
    "NpzData", "SequenceDataModule", "SineData", "Split", "TaggedData", "TaskData", "TextData",
    "load_task",
]  # fmt: skip
