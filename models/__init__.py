"""Recurrent networks for sequence tasks and their training: the public names of `models`.

    from models import AddingData, Settings, load_task, train
    result = train(Settings(cell="lstm"), load_task(AddingData()))

Settings, the data configs and the errors import at once; names that need torch or Lightning
import on first use, so reading a study file stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from models.config import Settings
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
from models.errors import DataError, DivergenceError
from models.metrics import METRIC_MODES, METRICS, default_monitor

if TYPE_CHECKING:
    from models.data import Batch, DataInfo, SequenceDataModule, Split, TaskData, load_task
    from models.module import SequenceModule
    from models.network import SequenceNet
    from models.training import EpochCallback, TrainResult, evaluate, train

_LAZY = {
    "SequenceNet": "models.network",
    "SequenceModule": "models.module",
    "train": "models.training",
    "evaluate": "models.training",
    "TrainResult": "models.training",
    "EpochCallback": "models.training",
    "Batch": "models.data",
    "DataInfo": "models.data",
    "Split": "models.data",
    "TaskData": "models.data",
    "load_task": "models.data",
    "SequenceDataModule": "models.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS", "METRIC_MODES", "SOURCES", "AddingData", "Batch", "CopyData", "CsvData",
    "DataConfig", "DataError", "DataInfo", "DivergenceError", "EpochCallback", "NpzData",
    "SequenceDataModule", "SequenceModule", "SequenceNet", "Settings", "SineData", "Split",
    "TaggedData", "TaskData", "TextData", "TrainResult", "default_monitor", "evaluate",
    "load_task", "train",
]  # fmt: skip
