"""The study's report in MLflow: the figures of `tuner.figures`, logged as PNG artifacts.

    rnn-tuner report STUDY        # any time, also while workers are still adding trials;
                                  # `rnn-tuner run` makes the same report when its study ends

The study's parent run gets, under `plots/`:

    history.png      optimisation history: each trial's value and the best so far
    importances.png  parameter importances (PED-ANOVA, Optuna's default; >= 2 complete trials)
    parallel.png     parallel coordinates: every complete trial's parameters and value
    slice.png        the value against each of the two most important parameters
    curves.png       learning curves: the objective metric per epoch, pruned trials marked
    pareto.png       the Pareto front (multi-objective studies)
    cells.png        best value so far per cell (studies that searched `cell`)
    interactive.html the same as zoomable plotly figures (one file, works offline)
    notes.txt        the figures skipped, and why

Each finished trial's run gets `curves.png`: its train and validation losses per epoch (with
cross-validation, its first fold's), and the
gradient norm reaching each time step in its last epoch (`grad_norm_by_step`); a line that falls
by decades toward step 0 is a vanishing gradient. A trial's plot is made once (the run is then
tagged `rnn_tuner.curves`), so a report costs about one query per trial after the first.

Data come from the Optuna study and the runs' metric histories (through `Tracker`, the one module
that talks to MLflow), so trials of every worker are included.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tuner.config import primary_index
from tuner.errors import BadInput
from tuner.figures import (
    Curve,
    TrialRecord,
    drawing,
    save,
    study_figures,
    trial_figure,
    write_html,
)
from tuner.study import PARENT_ATTR
from tuner.tracking import Tracker

log = logging.getLogger(__name__)

CURVES_TAG = "rnn_tuner.curves"  # on a trial run whose curves.png is logged


class NoParentRun(BadInput, LookupError):
    """The study has no MLflow parent run recorded (it was not started by `rnn-tuner run`)."""


@dataclass
class Report:
    parent_run_id: str
    files: list[str] = field(default_factory=list)  # artifact paths in the parent run
    notes: list[str] = field(default_factory=list)  # figures skipped, and why
    trial_plots: int = 0  # trial runs given their curves.png by this report
    seconds: float = 0.0

    def text(self) -> str:
        lines = [
            f"{len(self.files)} file(s) in the parent run {self.parent_run_id}: "
            + ", ".join(self.files),
            f"{self.trial_plots} trial plot(s) added (curves.png in each trial's run); "
            f"{self.seconds:.1f} s",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def write_report(study: optuna.Study, tracker: Tracker, parent_id: str | None = None) -> Report:
    """Make the study's figures and each new trial's figure, and log them to MLflow."""
    started = time.perf_counter()
    parent_id = parent_id or study.user_attrs.get(PARENT_ATTR)
    if parent_id is None:
        raise NoParentRun(
            f"study {study.study_name!r} has no MLflow parent run (user attribute "
            f"{PARENT_ATTR}); it was not run by `rnn-tuner run`"
        )
    objectives = _objective_names(study, tracker.run_tags(parent_id).get("objective"))
    monitor = objectives[primary_index(objectives)]
    records = _trial_records(tracker, parent_id, monitor)
    params = {t.number: t.params for t in study.get_trials(deepcopy=False)}
    report = Report(parent_id)
    with tempfile.TemporaryDirectory(prefix="rnn-tuner-report-") as tmp, drawing():
        _log_study_figures(study, objectives, records, tracker, report, Path(tmp) / "plots")
        for record in records:
            if not record.plotted:
                trial_params = params.get(record.number, {})
                _log_trial_figure(record, trial_params, monitor, tracker, Path(tmp))
                report.trial_plots += 1
    report.seconds = time.perf_counter() - started
    return report


def report_quietly(study: optuna.Study, tracker: Tracker, parent_id: str) -> None:
    """`write_report` at the end of `rnn-tuner run`: a failure is a warning, never a failed run."""
    try:
        done = write_report(study, tracker, parent_id)
        log.info("report: %s", done.text())
    except Exception as e:  # noqa: BLE001 - the study is recorded; plots can be made again
        log.warning("could not make the study's plots (%s); try `rnn-tuner report`", e)


def _log_study_figures(
    study: optuna.Study,
    objectives: list[str],
    records: list[TrialRecord],
    tracker: Tracker,
    report: Report,
    plots: Path,
) -> None:
    """The study's figures, the HTML page and the notes, under `plots/` in the parent run."""
    plots.mkdir()
    figures, report.notes = study_figures(study, objectives, records)
    for name, fig in figures.items():
        save(fig, plots / f"{name}.png")
    html_note = write_html(study, objectives, plots / "interactive.html")
    if html_note:
        report.notes.append(html_note)
    if report.notes:
        (plots / "notes.txt").write_text("\n".join(report.notes) + "\n", encoding="utf-8")
    report.files = sorted(f"plots/{p.name}" for p in plots.iterdir())
    tracker.log_artifacts(report.parent_run_id, str(plots), "plots")


def _log_trial_figure(
    record: TrialRecord, params: dict[str, Any], monitor: str, tracker: Tracker, tmp: Path
) -> None:
    """One trial's curves.png in its own run, tagged so that the next report skips it."""
    path = tmp / f"trial-{record.number}" / "curves.png"
    path.parent.mkdir()
    curves, profile = _trial_histories(tracker, record.run_id, monitor)
    save(trial_figure(record.number, record.state, params, curves, profile), path, tight=False)
    tracker.log_artifact(record.run_id, str(path))
    tracker.set_tags(record.run_id, {CURVES_TAG: "curves.png"})


def _objective_names(study: optuna.Study, tag: str | None) -> list[str]:
    """Objective metric names from the parent run's `objective` tag, else generic ones."""
    names = tag.split(",") if tag else []
    if len(names) != len(study.directions):
        names = (
            ["value"]
            if len(study.directions) == 1
            else [f"value_{i}" for i in range(len(study.directions))]
        )
    return names


def _trial_records(tracker: Tracker, parent_id: str, monitor: str) -> list[TrialRecord]:
    """The parent's finished trial runs (running ones have no metrics yet), by trial number."""
    records = [
        TrialRecord(
            int(run.tags["rnn_tuner.trial"]),
            run.tags.get("optuna.state", run.status),
            run.run_id,
            _history(tracker, run.run_id, monitor),
            CURVES_TAG in run.tags,
        )
        for run in tracker.child_runs(parent_id)
        if run.tags.get("rnn_tuner.role") == "trial" and run.status != "RUNNING"
    ]
    return sorted(records, key=lambda r: r.number)


def _history(tracker: Tracker, run_id: str, key: str) -> Curve:
    """A trial's curve of `key`; a cross-validated trial (task.cv_folds) has one per fold, and
    its first fold's stands for it."""
    return tracker.metric_history(run_id, key) or tracker.metric_history(run_id, f"fold0/{key}")


def _trial_histories(tracker: Tracker, run_id: str, monitor: str) -> tuple[dict[str, Curve], Curve]:
    keys = ["train_loss", "val_loss"] + ([monitor] if monitor not in ("val_loss", "value") else [])
    curves = {k: _history(tracker, run_id, k) for k in keys}
    if curves.get(monitor) == curves["val_loss"]:  # regression: val_mse is the loss itself
        del curves[monitor]
    return curves, tracker.metric_history(run_id, "grad_norm_by_step")
