"""The last worker out of a study: the study's report (plots) in its parent run, which it closes.

Every worker asks when it stops; the one that finds no trial running is the last for now (a
later `rnn-tuner run` reopens the parent run and does it again at its end).
"""

from __future__ import annotations

import optuna

from tuner.study import has_running_trials, retrying
from tuner.tracking import Tracker


def finish_if_last(
    study: optuna.Study,
    tracker: Tracker,
    parent_id: str,
    interrupted_by: str | None,
    report: bool = True,
) -> None:
    """`report=False` (`run --no-report`) closes the parent run without the figures."""
    if retrying(lambda: has_running_trials(study)):
        return
    if report and interrupted_by is None:  # after Ctrl-C: exit now; `rnn-tuner report` later
        from tuner.plots import report_quietly  # matplotlib: for the last worker out only

        report_quietly(study, tracker, parent_id)
    tracker.close_parent(parent_id)
