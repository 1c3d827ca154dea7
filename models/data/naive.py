"""The naive forecasts every forecasting model is judged against, and their MSE per split.

- naive: the window's last target value, for every step of the horizon;
- snaive (seasonal naive, with a season of m steps): for step h, the value a whole number of
  seasons back from it that the window holds, `y[T + h - m * ceil(h / m)]`, T the window's last
  step (Hyndman & Athanasopoulos, Forecasting: Principles and Practice, 5.2).

They are computed once, on the same windows and in the same (normalised) units as the model's
targets, and travel in `DataInfo.baselines` as `<split>_mse_naive` and `<split>_mse_snaive`.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def naive_forecasts(
    target: np.ndarray, window: int, horizon: int, season: int | None
) -> dict[str, np.ndarray]:
    """Forecasts (N, horizon) of every window of `window` steps in one series part `target` (R,);
    window i covers steps i .. i + window - 1 and forecasts the `horizon` steps after it."""
    n = len(target) - window - horizon + 1
    ends = np.arange(n) + window - 1  # (N,) each window's last step
    forecasts = {"naive": np.repeat(target[ends, None], horizon, axis=1)}
    if season is not None:
        steps = np.arange(1, horizon + 1)  # (H,)
        back = season * ((steps - 1) // season + 1)  # whole seasons back, at least one
        forecasts["snaive"] = target[ends[:, None] + steps - back]  # (N, H)
    return forecasts


class BaselineSums:
    """Squared errors of the naive forecasts summed over windows, per split and baseline."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, split: str, targets: np.ndarray, forecasts: dict[str, np.ndarray]) -> None:
        for name, forecast in forecasts.items():
            key = f"{split}_mse_{name}"
            self.sums[key] = self.sums.get(key, 0.0) + float(np.square(targets - forecast).sum())
            self.counts[key] = self.counts.get(key, 0) + targets.size

    def mse(self) -> dict[str, float]:
        return {key: total / self.counts[key] for key, total in self.sums.items()}
