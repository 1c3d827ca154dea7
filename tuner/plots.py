"""Figures of a study and of each trial, logged as PNG artifacts: what was learned, and why.

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

Each finished trial's run gets `curves.png`: its train and validation losses per epoch, and the
gradient norm reaching each time step in its last epoch (`grad_norm_by_step`); a line that falls
by decades toward step 0 is a vanishing gradient. A trial's plot is made once (the run is then
tagged `rnn_tuner.curves`), so a report costs about one query per trial after the first.

Data come from the Optuna study and the runs' metric histories (through `Tracker`, the one module
that talks to MLflow), so trials of every worker are included. Drawing uses matplotlib's Agg
backend: no display needed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import optuna
import optuna.visualization.matplotlib as ovm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from tuner.study import PARENT_ATTR
from tuner.tracking import Tracker

log = logging.getLogger(__name__)

STYLE = "ggplot"  # Optuna's matplotlib plots set it; ours match
CURVES_TAG = "rnn_tuner.curves"  # on a trial run whose curves.png is logged
DPI = 90
Curve = list[tuple[int, float]]  # (step, value)


class NoParentRun(LookupError):
    """The study has no MLflow parent run recorded (it was not started by `rnn-tuner run`)."""


@dataclass
class TrialRecord:
    """A finished trial as its MLflow run recorded it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL (the run's optuna.state tag)
    run_id: str
    curve: Curve  # the objective metric per epoch
    plotted: bool  # its curves.png is already logged


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


# ---------------------------------------------------------------- the report, end to end


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
    monitor = next((m for m in objectives if m != "n_params"), objectives[0])
    records = _trial_records(tracker, parent_id, monitor)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    report = Report(parent_id)

    with tempfile.TemporaryDirectory(prefix="rnn-tuner-report-") as tmp, _drawing():
        plots = Path(tmp) / "plots"
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
        tracker.log_artifacts(parent_id, str(plots), "plots")

        for record in records:
            if record.plotted:
                continue
            trial = trials.get(record.number)
            path = Path(tmp) / f"trial-{record.number}" / "curves.png"
            path.parent.mkdir()
            curves, profile = _trial_histories(tracker, record.run_id, monitor)
            params = trial.params if trial else {}
            save(
                trial_figure(record.number, record.state, params, curves, profile),
                path,
                tight=False,
            )
            tracker.log_artifact(record.run_id, str(path))
            tracker.set_tags(record.run_id, {CURVES_TAG: "curves.png"})
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
            tracker.metric_history(run.run_id, monitor),
            CURVES_TAG in run.tags,
        )
        for run in tracker.child_runs(parent_id)
        if run.tags.get("rnn_tuner.role") == "trial" and run.status != "RUNNING"
    ]
    return sorted(records, key=lambda r: r.number)


@contextlib.contextmanager
def _drawing() -> Iterator[None]:
    """Agg (files only: no display, safe in workers and CI), our style, no Optuna
    ExperimentalWarning; the style is restored afterwards (Optuna's plots change it globally)."""
    if plt.get_backend().lower() != "agg":
        plt.switch_backend("Agg")
    with plt.style.context(STYLE), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings(
            "ignore", message=r".*computes the importances of params to achieve low"
        )  # see _low_is_good
        warnings.filterwarnings("ignore", message=r"Some regimes")  # a note (see _importances)
        yield


def save(fig: Figure, path: Path, *, tight: bool = True) -> None:
    """`tight` trims the margins to the labels: a second full draw, worth it for Optuna's
    figures, whose labels may stick out."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)


# ---------------------------------------------------------------- the study's figures


def study_figures(
    study: optuna.Study, objectives: Sequence[str], records: Sequence[TrialRecord]
) -> tuple[dict[str, Figure], list[str]]:
    """Figures by file stem, and a note for each figure that cannot be made (yet)."""
    monitor_index = next((i for i, m in enumerate(objectives) if m != "n_params"), 0)
    name = objectives[monitor_index]
    direction = study.directions[monitor_index]
    target: Callable[[FrozenTrial], float] | None = None
    if len(objectives) > 1:
        target = lambda t: t.values[monitor_index]  # noqa: E731
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers: dict[str, Callable[[], Figure]] = {}
    notes: list[str] = []

    if records:
        makers["curves"] = lambda: curves_figure(records, name, direction)
    else:
        notes.append("curves: no finished trial yet")
    if not complete:
        notes.append("history, parallel, slice: no complete trial yet")
        return _made(makers, notes), notes
    makers["history"] = lambda: _figure(
        ovm.plot_optimization_history(study, target=target, target_name=name)
    )
    importances = _importances(study, target, direction, len(complete), notes)
    if importances:
        makers["importances"] = lambda: importance_figure(importances, name)
    params = list(importances) or sorted({p for t in complete for p in t.params})
    if len(complete) >= 2 and params:
        makers["parallel"] = lambda: _figure(
            ovm.plot_parallel_coordinate(study, target=target, target_name=name)
        )
        makers["slice"] = lambda: _sized(
            _figure(ovm.plot_slice(study, params=params[:2], target=target, target_name=name)),
            (9, 4),  # room for log-scale tick labels
        )
    elif params:
        notes.append(f"parallel, slice: need 2 complete trials, the study has {len(complete)}")
    if 1 < len(objectives) <= 3:
        makers["pareto"] = lambda: _figure(
            ovm.plot_pareto_front(study, target_names=list(objectives))
        )
    elif len(objectives) > 3:
        notes.append(f"pareto: drawn for 2 or 3 objectives, the study has {len(objectives)}")
    if any("cell" in t.params for t in complete):
        makers["cells"] = lambda: cells_figure(
            study.get_trials(deepcopy=False), target, name, direction
        )
    return _made(makers, notes), notes


def _made(makers: Mapping[str, Callable[[], Figure]], notes: list[str]) -> dict[str, Figure]:
    """Each figure that can be drawn; one that cannot (an odd study) is a note, not a failure."""
    figures = {}
    for stem, make in makers.items():
        try:
            figures[stem] = make()
        except (ValueError, RuntimeError, KeyError, IndexError) as e:
            notes.append(f"{stem}: {type(e).__name__}: {e}")
    return figures


def _sized(fig: Figure, inches: tuple[float, float]) -> Figure:
    fig.set_size_inches(*inches)
    return fig


def _importances(
    study: optuna.Study,
    target: Callable[[FrozenTrial], float] | None,
    direction: Any,
    n_complete: int,
    notes: list[str],
) -> dict[str, float]:
    if n_complete < 2:
        notes.append(f"importances: need 2 complete trials, the study has {n_complete}")
        return {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            found = optuna.importance.get_param_importances(
                study, target=_low_is_good(target, direction)
            )
        # e.g. "Some regimes for parameter `dropout` have less than 2 trials": the reader's to know
        notes += sorted(
            {f"importances: {w.message}" for w in caught if "regimes" in str(w.message)}
        )
        return found
    except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. no parameter varies
        notes.append(f"importances: {e}")
        return {}


def _low_is_good(
    target: Callable[[FrozenTrial], float] | None, direction: Any
) -> Callable[[FrozenTrial], float] | None:
    """PED-ANOVA, given a target, takes low values as the good ones (and warns that it does)."""
    if target is None:
        return None
    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return lambda t: sign * target(t)


def _figure(axes: Any) -> Figure:
    """Optuna returns one Axes or an array of them (slice: one per parameter)."""
    return np.ravel(axes)[0].figure


def importance_figure(importances: Mapping[str, float], target_name: str) -> Figure:
    names = list(importances)[::-1]  # most important at the top
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="#1f77b4")
    for y, n in enumerate(names):
        ax.text(importances[n], y, f" {importances[n]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for {target_name} (PED-ANOVA, sums to 1)")
    ax.set_title("Parameter importances")
    return fig


def curves_figure(records: Sequence[TrialRecord], metric: str, direction: Any) -> Figure:
    """Every trial's objective metric per epoch; pruned trials grey, ending in a cross."""
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = [r for r in records if r.state == "COMPLETE" and r.curve]
    best = _best_record(complete, direction)
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(records):
        if not r.curve:
            continue
        steps, values = zip(*r.curve, strict=True)
        if r.state == "PRUNED":
            ax.plot(steps, values, color="0.55", lw=1, ls="--")
            ax.plot(steps[-1], values[-1], "x", color="0.3", ms=7, mew=2)
        elif r.state == "FAIL":
            ax.plot(steps, values, color="#d62728", lw=1, ls=":")
        else:
            width = 2.5 if r is best else 1.2
            ax.plot(steps, values, color=cmap(i / max(len(records) - 1, 1)), lw=width, marker=".")
    if best is not None:
        ax.annotate(
            f"best: trial {best.number}",
            best.curve[-1],
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )
    ax.legend(
        handles=[
            Line2D([], [], color=cmap(0.5), marker=".", label="complete (colour: trial number)"),
            Line2D(
                [], [], color="0.55", ls="--", marker="x", mec="0.3", label="pruned (x: stopped)"
            ),
            Line2D([], [], color="#d62728", ls=":", label="failed"),
        ],
        fontsize=8,
    )
    _log_scale_if_wide(ax, [v for r in records for _, v in r.curve])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"Learning curves of {len(records)} trial(s)")
    return fig


def _best_record(records: Sequence[TrialRecord], direction: Any) -> TrialRecord | None:
    if not records:
        return None
    pick = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(records, key=lambda r: pick(v for _, v in r.curve))


def cells_figure(
    trials: Sequence[FrozenTrial],
    target: Callable[[FrozenTrial], float] | None,
    name: str,
    direction: Any,
) -> Figure:
    """Best value so far of each cell over trial number, every complete trial's value as a dot;
    a cell whose trials were all pruned or failed is named in the legend."""
    value = target or (lambda t: t.value)
    better = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(7, 4))
    last = max(t.number for t in trials)
    for cell in sorted({str(t.params["cell"]) for t in trials if "cell" in t.params}):
        own = [t for t in complete if str(t.params.get("cell")) == cell]
        if not own:
            tried = sum(str(t.params.get("cell")) == cell for t in trials)
            ax.plot([], [], lw=2, label=f"{cell}: none of {tried} trial(s) complete")
            continue
        numbers = [t.number for t in own]
        values = [value(t) for t in own]
        so_far = list(
            np.minimum.accumulate(values) if better is min else np.maximum.accumulate(values)
        )
        (line,) = ax.step(  # held to the last trial: where each cell stands now
            [*numbers, last],
            [*so_far, so_far[-1]],
            where="post",
            lw=2,
            label=f"{cell}: best {better(values):.4g} ({len(own)} trials)",
        )
        ax.plot(numbers, values, "o", color=line.get_color(), alpha=0.4, ms=4)
    _log_scale_if_wide(ax, [value(t) for t in complete])
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"best {name} so far")
    ax.set_title("Cells compared: best value per cell over the study")
    ax.legend(fontsize=8)
    return fig


def _log_scale_if_wide(ax: Any, values: Sequence[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")


# ---------------------------------------------------------------- one trial's figure


def _trial_histories(tracker: Tracker, run_id: str, monitor: str) -> tuple[dict[str, Curve], Curve]:
    keys = ["train_loss", "val_loss"] + ([monitor] if monitor not in ("val_loss", "value") else [])
    curves = {k: tracker.metric_history(run_id, k) for k in keys}
    if curves.get(monitor) == curves["val_loss"]:  # regression: val_mse is the loss itself
        del curves[monitor]
    return curves, tracker.metric_history(run_id, "grad_norm_by_step")


def trial_figure(
    number: int,
    state: str,
    params: Mapping[str, Any],
    curves: Mapping[str, Curve],
    profile: Curve,
) -> Figure:
    """Train/validation curves per epoch; the gradient norm per time step in the last epoch.

    Drawn for every trial, so kept cheap: fixed margins (no tight layout: a second full draw)
    and log10 on a linear axis (log-axis labels go through the slow mathtext parser)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.8, wspace=0.22)
    for key, curve in curves.items():
        if curve:
            steps, values = zip(*curve, strict=True)
            left.plot(steps, values, marker="o", ms=3, label=key)
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title("losses and objective per epoch", fontsize=10)
    if any(curves.values()):
        left.legend(fontsize=8)
    positive = [(t, v) for t, v in profile if v > 0]
    if positive:
        steps, norms = zip(*positive, strict=True)
        logs = [math.log10(v) for v in norms]
        right.plot(steps, logs, color="#9467bd")
        right.set_title(
            f"gradient norm per time step, last epoch ({max(logs) - min(logs):.1f} decades)",
            fontsize=10,
        )
    else:
        right.text(0.5, 0.5, "no gradient profile recorded", ha="center", transform=right.transAxes)
        right.set_title("gradient norm per time step", fontsize=10)
    right.set_xlabel("time step")
    right.set_ylabel("log10 |dL/dx_t|")
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    fig.suptitle(f"trial {number} ({state})  {shown}", fontsize=10)
    return fig


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- interactive HTML


def write_html(study: optuna.Study, objectives: Sequence[str], path: Path) -> str | None:
    """The study's figures as plotly, in one offline HTML file; returns a note if skipped."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return "interactive.html: needs 2 complete trials"
    try:
        import optuna.visualization as ov
        import plotly  # noqa: F401 - optuna.visualization imports it only when plotting
    except ImportError as e:  # an install without plotly still gets every PNG
        return f"interactive.html: plotly is not installed ({e})"
    index = next((i for i, m in enumerate(objectives) if m != "n_params"), 0)
    kwargs: dict[str, Any] = {"target_name": objectives[index]}
    if len(objectives) > 1:
        kwargs["target"] = lambda t: t.values[index]
    ranked = {**kwargs, "target": _low_is_good(kwargs.get("target"), study.directions[index])}
    makers: list[Callable[[], Any]] = [
        lambda: ov.plot_optimization_history(study, **kwargs),
        lambda: ov.plot_param_importances(study, **ranked),
        lambda: ov.plot_parallel_coordinate(study, **kwargs),
        lambda: ov.plot_slice(study, **kwargs),
    ]
    if 1 < len(objectives) <= 3:
        makers.append(lambda: ov.plot_pareto_front(study, target_names=list(objectives)))
    parts = []
    for make in makers:
        try:
            fig = make()
        except (ValueError, RuntimeError) as e:
            log.info("interactive figure skipped: %s", e)
            continue
        # plotly.js once (about 4.8 MB), in the first figure: the file needs no network
        parts.append(fig.to_html(full_html=False, include_plotlyjs=not parts))
    title = f"Study {study.study_name}"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{''.join(parts)}</body></html>",
        encoding="utf-8",
    )
    return None
