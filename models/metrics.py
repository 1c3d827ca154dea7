"""The metric table: every metric training records, its direction and the tasks that produce it.

    from models.metrics import METRIC_MODES, default_monitor, val_metric_names
    default_monitor("regression")                      # ("val_mse", "min")
    val_metric_names("language_model", level="char")   # ("val_loss", "val_ppl", "val_bpc")

This is the one place a metric is named: the module computes exactly these (`summarize`), train()
validates `monitor` against them and the tuner derives its objective checks and directions from
them. Free of torch, so reading a study file stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["min", "max"]
TASKS = ("classification", "regression", "tagging", "language_model")


@dataclass(frozen=True)
class Metric:
    name: str
    mode: Mode  # "max": higher is better
    tasks: tuple[str, ...]  # tasks whose training records it
    level: str | None = None  # a language model records it only at this `DataInfo.level`
    meaning: str = ""
    # a forecast records it only when its data score this naive baseline (`DataInfo.baselines`)
    baseline: str | None = None


METRICS: tuple[Metric, ...] = (
    Metric("train_loss", "min", TASKS, meaning="mean training loss of the epoch"),
    Metric("val_loss", "min", TASKS, meaning="mean validation loss"),
    Metric("val_acc", "max", ("classification", "tagging"), meaning="accuracy (per step: tagging)"),
    Metric("val_mse", "min", ("regression",), meaning="mean squared error per target value"),
    Metric("val_mae", "min", ("regression",), meaning="mean absolute error per target value"),
    Metric(
        "val_mse_naive",
        "min",
        ("regression",),
        baseline="naive",
        meaning="MSE of the naive forecast (the window's last value) on the same windows",
    ),
    Metric(
        "val_mse_snaive",
        "min",
        ("regression",),
        baseline="snaive",
        meaning="MSE of the seasonal naive forecast (one season back; task.season)",
    ),
    Metric(
        "val_mse_rel",
        "min",
        ("regression",),
        baseline="naive",
        meaning="val_mse / the best naive MSE: below 1 beats every naive forecast",
    ),
    Metric("val_ppl", "min", ("language_model",), meaning="perplexity: exp(val_loss)"),
    Metric("val_bpc", "min", ("language_model",), "char", "bits per character: val_loss / ln 2"),
)
METRIC_MODES: dict[str, Mode] = {m.name: m.mode for m in METRICS}
# What a study of each task optimises unless it says otherwise.
_DEFAULT_MONITOR = {
    "classification": "val_acc",
    "tagging": "val_acc",
    "regression": "val_mse",
    "language_model": "val_ppl",
}


def metric(name: str) -> Metric:
    """The table's row for `name`; a KeyError names the valid metrics."""
    for row in METRICS:
        if row.name == name:
            return row
    raise KeyError(f"unknown metric {name!r}; valid: {', '.join(METRIC_MODES)}")


def default_monitor(task: str) -> tuple[str, Mode]:
    """The metric a study of `task` optimises by default, and its direction."""
    name = _DEFAULT_MONITOR[task]
    return name, METRIC_MODES[name]


def val_metric_names(
    task: str, level: str | None = "char", baselines: Collection[str] = ()
) -> tuple[str, ...]:
    """The validation metrics recorded for `task` (at `level`, for a language model; for a
    forecast whose data score the naive `baselines`, e.g. ("naive", "snaive")), in table order.
    The default level lists everything a task can record; the default baselines none."""
    return tuple(
        m.name
        for m in METRICS
        if m.name.startswith("val_")
        and task in m.tasks
        and m.level in (None, level)
        and m.baseline in (None, *baselines)
    )


def baseline_names(baselines: Mapping[str, float] | None) -> tuple[str, ...]:
    """The naive forecasts `DataInfo.baselines` scores, e.g. ("naive", "snaive")."""
    return tuple(k.removeprefix("val_mse_") for k in baselines or () if k.startswith("val_mse_"))


def summarize(
    sums: Mapping[str, Any],
    task: str,
    level: str | None,
    prefix: str,
    baselines: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """A task's metrics from summed per-batch counts (the module's `evaluate_batch`), named
    `prefix + metric`, e.g. `val_mse` or `test_mse`; the names are `val_metric_names`.
    `baselines` (`DataInfo.baselines`) adds a forecast's naive MSEs of this split and the
    model's MSE relative to the best of them."""
    # a label training never saw counts in accuracy but not in the loss (models.data.UNSEEN)
    loss = ratio(sums, "loss_sum", "loss_count" if "loss_count" in sums else "count")
    out = {"loss": loss}
    if task in ("classification", "tagging"):
        out["acc"] = ratio(sums, "correct", "count")
    elif task == "regression":
        out["mse"] = ratio(sums, "sq_sum", "count")
        out["mae"] = ratio(sums, "abs_sum", "count")
        out |= _relative_to_naive(out["mse"], baselines or {}, prefix)
    else:
        out["ppl"] = math.exp(min(loss, 700.0))  # exp overflows a float past ~709
        if level == "char":
            out["bpc"] = loss / math.log(2)
    return {prefix + k: v for k, v in out.items()}


def _relative_to_naive(mse: float, baselines: Mapping[str, float], prefix: str) -> dict[str, float]:
    """{"mse_naive": ..., "mse_snaive": ..., "mse_rel": ...} for the split `prefix` names."""
    naive = {
        k.removeprefix(prefix): v for k, v in baselines.items() if k.startswith(prefix + "mse_")
    }
    if not naive:
        return {}
    best = min(naive.values())
    # a perfect naive forecast (a constant series) leaves nothing to beat: no ratio
    return {**naive, "mse_rel": mse / best if best > 0 else math.nan}


def ratio(sums: Mapping[str, Any], num: str, den: str) -> float:
    """sums[num] / sums[den] as a float (one host sync each); NaN when nothing was counted."""
    if den not in sums or float(sums[den]) == 0:
        return math.nan
    return float(sums[num]) / float(sums[den])


def accumulate(sums: dict[str, Any], **values: Any) -> None:
    """Add `values` into the running `sums` (tensors stay on their device: no host sync)."""
    for key, value in values.items():
        sums[key] = sums[key] + value if key in sums else value
