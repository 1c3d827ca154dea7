"""The figures of a study and of one trial, drawn with matplotlib (and plotly for the HTML page).

Pure drawing: an Optuna study and metric curves in, `Figure`s (or one HTML file) out; nothing
here talks to MLflow. `tuner.plots` fetches the curves and logs what is drawn here. Drawing uses
matplotlib's Agg backend inside `drawing()`: no display needed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import optuna
import optuna.visualization.matplotlib as ovm
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.config import primary_index

log = logging.getLogger(__name__)

STYLE = "ggplot"  # Optuna's matplotlib plots set it; ours match
DPI = 90
Curve = list[tuple[int, float]]  # (step, value)
Target = Callable[[FrozenTrial], float] | None  # one value of a multi-objective trial


@dataclass
class TrialRecord:
    """A finished trial as its MLflow run recorded it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL (the run's optuna.state tag)
    run_id: str
    curve: Curve  # the objective metric per epoch
    plotted: bool  # its curves.png is already logged


@dataclass(frozen=True)
class Objective:
    """The study value the figures show: its name, index among the objectives, direction."""

    name: str
    index: int
    direction: StudyDirection
    several: bool  # a multi-objective study: the figures need a `target`

    @property
    def target(self) -> Target:
        return (lambda t: t.values[self.index]) if self.several else None

    @property
    def low_is_good(self) -> Target:
        """PED-ANOVA, given a target, takes low values as the good ones (and warns that it does)."""
        if not self.several:
            return None
        sign = -1.0 if self.direction == StudyDirection.MAXIMIZE else 1.0
        return lambda t: sign * t.values[self.index]


def shown_objective(study: optuna.Study, objectives: Sequence[str]) -> Objective:
    """The primary objective (tuner.config.primary_index), the one the figures show."""
    index = primary_index(objectives)
    several = len(objectives) > 1
    return Objective(objectives[index], index, study.directions[index], several)


@contextlib.contextmanager
def drawing() -> Iterator[None]:
    """Agg (files only: no display, safe in workers and CI), our style, no Optuna
    ExperimentalWarning; the style is restored afterwards (Optuna's plots change it globally)."""
    if plt.get_backend().lower() != "agg":
        plt.switch_backend("Agg")
    with plt.style.context(STYLE), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings(
            "ignore", message=r".*computes the importances of params to achieve low"
        )  # see Objective.low_is_good
        warnings.filterwarnings("ignore", message=r"Some regimes")  # a note (see importances)
        # a parameter with one value so far (parallel coordinates, slice): matplotlib widens
        # the axis itself and says so on the user's terminal
        warnings.filterwarnings("ignore", message=r"Attempting to set identical low and high")
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
    shown = shown_objective(study, objectives)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers: dict[str, Callable[[], Figure]] = {}
    notes: list[str] = []
    if records:
        makers["curves"] = lambda: curves_figure(records, shown.name, shown.direction)
    else:
        notes.append("curves: no finished trial yet")
    if not complete:
        notes.append("history, parallel, slice: no complete trial yet")
        return _made(makers, notes), notes
    makers["history"] = lambda: _figure(
        ovm.plot_optimization_history(study, target=shown.target, target_name=shown.name)
    )
    ranked = importances(study, shown, len(complete), notes)
    if ranked:
        makers["importances"] = lambda: importance_figure(study, shown)
    makers |= _spread_figures(study, shown, list(ranked), complete, notes)
    makers |= _pareto_and_cells(study, objectives, shown, complete, notes)
    return _made(makers, notes), notes


def _spread_figures(
    study: optuna.Study,
    shown: Objective,
    ranked: list[str],
    complete: Sequence[FrozenTrial],
    notes: list[str],
) -> dict[str, Callable[[], Figure]]:
    """Parallel coordinates and the slices of the two most important parameters."""
    params = ranked or sorted({p for t in complete for p in t.params})
    if not params:
        return {}
    if len(complete) < 2:
        notes.append(f"parallel, slice: need 2 complete trials, the study has {len(complete)}")
        return {}
    named = {"target": shown.target, "target_name": shown.name}
    return {
        "parallel": lambda: _figure(ovm.plot_parallel_coordinate(study, **named)),
        "slice": lambda: _sized(
            _figure(ovm.plot_slice(study, params=params[:2], **named)),
            (9, 4),  # room for log-scale tick labels
        ),
    }


def _pareto_and_cells(
    study: optuna.Study,
    objectives: Sequence[str],
    shown: Objective,
    complete: Sequence[FrozenTrial],
    notes: list[str],
) -> dict[str, Callable[[], Figure]]:
    makers: dict[str, Callable[[], Figure]] = {}
    if 1 < len(objectives) <= 3:
        makers["pareto"] = lambda: _figure(
            ovm.plot_pareto_front(study, target_names=list(objectives))
        )
    elif len(objectives) > 3:
        notes.append(f"pareto: drawn for 2 or 3 objectives, the study has {len(objectives)}")
    if any("cell" in t.params for t in complete):
        makers["cells"] = lambda: cells_figure(study.get_trials(deepcopy=False), shown)
    return makers


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


def _figure(axes: Any) -> Figure:
    """Optuna returns one Axes or an array of them (slice: one per parameter)."""
    return np.ravel(axes)[0].figure


def importances(
    study: optuna.Study, shown: Objective, n_complete: int, notes: list[str]
) -> dict[str, float]:
    """Parameter importances, most important first; a note where they cannot be computed."""
    if n_complete < 2:
        notes.append(f"importances: need 2 complete trials, the study has {n_complete}")
        return {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            found = optuna.importance.get_param_importances(study, target=shown.low_is_good)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. no parameter varies
        notes.append(f"importances: {e}")
        return {}
    # e.g. "Some regimes for parameter `dropout` have less than 2 trials": the reader's to know
    notes += sorted({f"importances: {w.message}" for w in caught if "regimes" in str(w.message)})
    return found


def importance_figure(study: optuna.Study, shown: Objective) -> Figure:
    """Optuna's own bar chart (PED-ANOVA, Optuna's default evaluator; the bars sum to 1)."""
    ax = ovm.plot_param_importances(study, target=shown.low_is_good, target_name=shown.name)
    ax.set_xlabel(f"importance for {shown.name} (PED-ANOVA, sums to 1)")
    return _figure(ax)


def curves_figure(records: Sequence[TrialRecord], metric: str, direction: Any) -> Figure:
    """Every trial's objective metric per epoch; pruned trials grey, ending in a cross."""
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    best = _best_record([r for r in records if r.state == "COMPLETE" and r.curve], direction)
    for i, r in enumerate(records):
        if r.curve:
            colour = cmap(i / max(len(records) - 1, 1))
            _plot_curve(ax, r, colour, width=2.5 if r is best else 1.2)
    if best is not None:
        ax.annotate(
            f"best: trial {best.number}",
            best.curve[-1],
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )
    ax.legend(handles=_curve_legend(cmap(0.5)), fontsize=8)
    _log_scale_if_wide(ax, [v for r in records for _, v in r.curve])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"Learning curves of {len(records)} trial(s)")
    return fig


def _plot_curve(ax: Axes, r: TrialRecord, colour: Any, width: float) -> None:
    steps, values = zip(*r.curve, strict=True)
    if r.state == "PRUNED":
        ax.plot(steps, values, color="0.55", lw=1, ls="--")
        ax.plot(steps[-1], values[-1], "x", color="0.3", ms=7, mew=2)
    elif r.state == "FAIL":
        ax.plot(steps, values, color="#d62728", lw=1, ls=":")
    else:
        ax.plot(steps, values, color=colour, lw=width, marker=".")


def _curve_legend(complete_colour: Any) -> list[Line2D]:
    return [
        Line2D([], [], color=complete_colour, marker=".", label="complete (colour: trial number)"),
        Line2D([], [], color="0.55", ls="--", marker="x", mec="0.3", label="pruned (x: stopped)"),
        Line2D([], [], color="#d62728", ls=":", label="failed"),
    ]


def _best_record(records: Sequence[TrialRecord], direction: Any) -> TrialRecord | None:
    if not records:
        return None
    pick = max if direction == StudyDirection.MAXIMIZE else min
    return pick(records, key=lambda r: pick(v for _, v in r.curve))


def cells_figure(trials: Sequence[FrozenTrial], shown: Objective) -> Figure:
    """Best value so far of each cell over trial number, every complete trial's value as a dot;
    a cell whose trials were all pruned or failed is named in the legend."""
    value = shown.target or (lambda t: t.value)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(7, 4))
    last = max(t.number for t in trials)
    for cell in sorted({str(t.params["cell"]) for t in trials if "cell" in t.params}):
        own = [t for t in complete if str(t.params.get("cell")) == cell]
        if own:
            _plot_cell(ax, cell, own, value, shown.direction, last)
        else:
            tried = sum(str(t.params.get("cell")) == cell for t in trials)
            ax.plot([], [], lw=2, label=f"{cell}: none of {tried} trial(s) complete")
    _log_scale_if_wide(ax, [value(t) for t in complete])
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"best {shown.name} so far")
    ax.set_title("Cells compared: best value per cell over the study")
    ax.legend(fontsize=8)
    return fig


def _plot_cell(
    ax: Axes,
    cell: str,
    own: Sequence[FrozenTrial],
    value: Callable[[FrozenTrial], float],
    direction: StudyDirection,
    last: int,
) -> None:
    numbers = [t.number for t in own]
    values = [value(t) for t in own]
    maximize = direction == StudyDirection.MAXIMIZE
    so_far = list(np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values))
    best = max(values) if maximize else min(values)
    (line,) = ax.step(  # held to the last trial: where each cell stands now
        [*numbers, last],
        [*so_far, so_far[-1]],
        where="post",
        lw=2,
        label=f"{cell}: best {best:.4g} ({len(own)} trials)",
    )
    ax.plot(numbers, values, "o", color=line.get_color(), alpha=0.4, ms=4)


def _log_scale_if_wide(ax: Axes, values: Sequence[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")


# ---------------------------------------------------------------- one trial's figure


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
    _gradient_profile(right, profile)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    fig.suptitle(f"trial {number} ({state})  {shown}", fontsize=10)
    return fig


def _gradient_profile(ax: Axes, profile: Curve) -> None:
    positive = [(t, v) for t, v in profile if v > 0]
    if positive:
        steps, norms = zip(*positive, strict=True)
        logs = [math.log10(v) for v in norms]
        ax.plot(steps, logs, color="#9467bd")
        ax.set_title(
            f"gradient norm per time step, last epoch ({max(logs) - min(logs):.1f} decades)",
            fontsize=10,
        )
    else:
        ax.text(0.5, 0.5, "no gradient profile recorded", ha="center", transform=ax.transAxes)
        ax.set_title("gradient norm per time step", fontsize=10)
    ax.set_xlabel("time step")
    ax.set_ylabel("log10 |dL/dx_t|")


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
    shown = shown_objective(study, objectives)
    named = {"target": shown.target, "target_name": shown.name}
    makers: list[Callable[[], Any]] = [
        lambda: ov.plot_optimization_history(study, **named),
        lambda: ov.plot_param_importances(study, target=shown.low_is_good, target_name=shown.name),
        lambda: ov.plot_parallel_coordinate(study, **named),
        lambda: ov.plot_slice(study, **named),
    ]
    if 1 < len(objectives) <= 3:
        makers.append(lambda: ov.plot_pareto_front(study, target_names=list(objectives)))
    title = f"Study {study.study_name}"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{''.join(_html_parts(makers))}</body></html>",
        encoding="utf-8",
    )
    return None


def _html_parts(makers: Sequence[Callable[[], Any]]) -> list[str]:
    parts: list[str] = []
    for make in makers:
        try:
            fig = make()
        except (ValueError, RuntimeError) as e:
            log.info("interactive figure skipped: %s", e)
            continue
        # plotly.js once (about 4.8 MB), in the first figure: the file needs no network
        parts.append(fig.to_html(full_html=False, include_plotlyjs=not parts))
    return parts
