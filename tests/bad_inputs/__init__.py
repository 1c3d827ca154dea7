"""A corpus of bad input: study files, data files, URLs, flags and environments a careless or a
hostile user would give `rnn-tuner`. tests/test_bad_inputs.py runs every case and checks the
contract of the README's "exit codes" table: the exit code, a message that names the problem, no
traceback, bounded output, and an existing study in the same databases left untouched.

A case is a command line run in a fresh working directory that holds the case's files (by
default `study.yaml`, a valid tiny study with one thing broken). `{store}` in arguments, files and
environment values is replaced by the directory of the databases that hold the existing study.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.conftest import tiny_study

KEPT = "kept"  # the existing study's name, and the name of every case's study
DELETE = object()  # `edit` value: remove the key


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # a regular expression (case-insensitive) the output must match
    args: tuple[str, ...] = ("validate", "study.yaml")
    files: Mapping[str, str | bytes | Callable[[], str | bytes]] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)
    code: int = 2
    # study-file cases: `run` must refuse the file the same way as `validate`
    also_run: bool = False


def base_study(name: str = KEPT) -> dict[str, Any]:
    """A valid study that trains in seconds (the existing study is this one): conftest's tiny
    study with two one-epoch trials."""
    return tiny_study(name, budget={"n_trials": 2, "max_epochs": 1})


def edited(changes: Mapping[str, Any], study: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base study with `{"search.lr.step": 0, "pruner": DELETE, ...}` applied."""
    study = copy.deepcopy(study if study is not None else base_study())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = study
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return study


def dump(study: dict[str, Any]) -> str:
    return yaml.safe_dump(study, sort_keys=False, allow_unicode=True)


def study_case(
    id: str,
    expect: str,
    changes: Mapping[str, Any] | None = None,
    *,
    text: str | bytes | Callable[[], str | bytes] | None = None,
    files: Mapping[str, Any] | None = None,
    code: int = 2,
) -> Case:
    """A study file with one mistake: `validate` and `run` both refuse it."""
    content = text if text is not None else dump(edited(changes or {}))
    return Case(
        id, expect, files={"study.yaml": content, **(files or {})}, code=code, also_run=True
    )


def data_case(
    id: str, expect: str, task: dict[str, Any], data: Mapping[str, Any], **changes
) -> Case:
    """A study on a data file with one mistake."""
    study = edited({"task": task, **changes})
    return Case(id, expect, files={"study.yaml": dump(study), **data}, also_run=True)


def run_case(
    id: str,
    expect: str,
    *flags: str,
    code: int = 2,
    env: Mapping[str, str | None] | None = None,
    study: dict[str, Any] | None = None,
) -> Case:
    """`rnn-tuner run study.yaml FLAGS` on a valid study."""
    return Case(
        id,
        expect,
        args=("run", "study.yaml", *flags),
        files={"study.yaml": dump(study or base_study())},
        env=env or {},
        code=code,
    )
