"""What a failure is, for its exit code (the README's "Exit codes" table): the user's input
(2: the message says what to change), or the environment (1: a server away, a disk full).
Ctrl-C is 130."""

from __future__ import annotations

BAD_INPUT, ENVIRONMENT, INTERRUPTED = 2, 1, 130


class BadInput(Exception):
    """Input that can never work as given: a study file, data file, URL, flag or name."""


def exit_code(e: BaseException) -> int:
    """The exit code of a command that `e` ended."""
    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED
    return BAD_INPUT if isinstance(e, BadInput) else ENVIRONMENT
