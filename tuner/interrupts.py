"""SIGINT / SIGTERM in a worker: the trial in training fails and is recorded, then the worker stops."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class TrialInterrupted(BaseException):
    """SIGINT or SIGTERM arrived during training: the trial ends as FAIL and is recorded.

    A BaseException because the signal can land anywhere, also inside library code that turns
    any Exception into its own (inspect.signature raises "TypeError: unsupported callable")."""


class Interrupts:
    """SIGINT / SIGTERM fail the trial in training and stop the worker after recording it.

    The signal only raises while armed (during training): a signal that arrives while Optuna or
    MLflow is writing lets the write finish, then the loop stops.
    """

    def __init__(self, install: bool = True) -> None:
        """`install=False` (tuner.api, a notebook): no handler at all; Python's own SIGINT
        handler raises KeyboardInterrupt, which fails the running trial just the same. Only the
        main thread can install handlers, so other threads never do."""
        self.requested: str | None = None
        self._armed = False
        self._previous: dict[int, Any] = {}
        self.install = install and threading.current_thread() is threading.main_thread()

    def __enter__(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM) if self.install else ():
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signal.Signals(signum).name
        if self._armed:
            self._armed = False
            raise TrialInterrupted(f"interrupted by {self.requested}")

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = self.requested is None
        try:
            if self.requested:
                raise TrialInterrupted(f"interrupted by {self.requested}")
            yield
        finally:
            self._armed = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Inside training, a block a signal must not cut in two (an epoch's end: its MLflow
        point and Optuna's report are written together or not at all): the signal waits for the
        block's end, then raises as it would have."""
        was = self._armed
        self._armed = False
        try:
            yield
        finally:
            self._armed = was
        if was and self.requested:
            self._armed = False
            raise TrialInterrupted(f"interrupted by {self.requested}")
