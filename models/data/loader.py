"""`source: python`: the user's own loader, `loader: "package.module:function"`.

The function is imported from the working directory or an installed package, called once per
process with the `task:` block's other keys as keyword arguments, and what it returns is checked
against the in-memory contract (models.data.contract) with the loader named in every message.
An import that fails or a loader that raises becomes a `DataError`, so `rnn-tuner validate`
reports it like any bad data file: exit code 2, no traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.data.base import TaskData
from models.data.config import PythonData
from models.data.contract import from_arrays
from models.errors import DataError


def load_python(cfg: PythonData) -> TaskData:
    function = import_loader(cfg.loader)
    where = f"loader {cfg.loader}"
    try:
        result = function(**cfg.options)
    except Exception as e:  # the user's code: any failure is a data problem to report
        raise DataError(
            f"{where} raised {type(e).__name__}: {e} (called with {_shown(cfg.options)})"
        ) from None
    return from_arrays(result, where)


def import_loader(spec: str, key: str = "task.loader", example: str = "myloader:load") -> Callable[..., Any]:  # fmt: skip
    """The function `spec` ("package.module:function") names; the working directory first on
    the import path, as `python -m` would have it. Errors name the study-file `key`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise DataError(f'{key} {spec!r}: expected "package.module:function", e.g. "{example}"')
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error the module raises while importing
        raise DataError(
            f"{key} {spec!r}: module {module_name!r} does not import "
            f"({type(e).__name__}: {e}); it must be importable from the working directory "
            f"{cwd} or an installed package"
        ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise DataError(f"{key} {spec!r}: module {module_name!r} has no function {attribute!r}")
    return function


def _shown(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items()) or "no arguments"
