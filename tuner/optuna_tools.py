"""A study's storage in Optuna's own tools: its command line, optuna-dashboard and
`optuna.copy_study`, for every storage URL rnn-tuner takes, journals included.

The stock `optuna` command and `optuna-dashboard` read an RDB URL and a journal file as they
are (`optuna trials --storage rnn_tuner.log`); a journal in PostgreSQL is rnn-tuner's own
backend, which they reach through `rnn-tuner optuna ...` and `rnn-tuner dashboard`, which also
open the default storage when given none.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.errors import BadInput
from tuner.study import make_storage
from tuner.urls import absolute_sqlite, is_journal, redact


def optuna_cli(args: list[str], default_storage: Callable[[], str]) -> int:
    """Optuna's command line with `args`; a `--storage` journal URL opens rnn-tuner's journal.
    A command given neither --storage nor $OPTUNA_STORAGE (Optuna's own) opens
    `default_storage()`, asked only then."""
    import optuna.cli

    opens = optuna.cli._get_storage  # the one function through which its commands open storage

    def storage(url: str | None, storage_class: str | None) -> Any:
        if url is None and not os.environ.get("OPTUNA_STORAGE"):
            url = default_storage()
        if url and is_journal(url) and not storage_class:
            return make_storage(absolute_sqlite(url))
        return opens(url, storage_class)

    optuna.cli._get_storage = storage
    argv, sys.argv = sys.argv, ["optuna", *args]  # its main() reads sys.argv
    try:
        return optuna.cli.main()
    finally:
        optuna.cli._get_storage, sys.argv = opens, argv


def dashboard(url: str, host: str, port: int) -> None:
    """optuna-dashboard on the study storage at `url`, until Ctrl-C."""
    try:
        from optuna_dashboard import run_server
    except ImportError as e:
        raise BadInput(f"{e}; install it: pip install optuna-dashboard") from e
    run_server(make_storage(url), host=host, port=port)


class StudyExists(BadInput):
    """The destination of a migration already holds a study of that name."""


def migrate(name: str, source: str, destination: str, new_name: str | None = None) -> int:
    """Copy study `name` from one storage to another (e.g. SQLite or RDB PostgreSQL to a
    journal) with `optuna.copy_study`: trials, parameters, values, attributes (its MLflow
    parent run too); returns the trials copied. The source is left as it was. Refused while
    trials run: a copied RUNNING trial would have no worker and no heartbeat."""
    from tuner.report import load_study

    study = load_study(source, name)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        numbers = ", ".join(str(t.number) for t in running)
        raise BadInput(
            f"study {name!r} has running trials ({numbers}); stop its workers (Ctrl-C records "
            "their trials as failed) or let them finish, then migrate"
        )
    target = make_storage(destination)
    to_name = new_name or name
    if to_name in [s.study_name for s in optuna.get_all_study_summaries(target)]:
        raise StudyExists(
            f"{redact(destination)} already holds a study {to_name!r}; pick another "
            "--to-study-name or another destination"
        )
    optuna.copy_study(
        from_study_name=name,
        from_storage=study._storage,
        to_storage=target,
        to_study_name=to_name,
    )
    return len(study.get_trials(deepcopy=False))
