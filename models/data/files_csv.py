"""Windows of time series from a CSV or Parquet table, one row per (series, time step).

Rows group into series by the `series` column (none: the whole table is one series) and are
ordered within each by the `time` column (none: file order). Each series splits in time: its
first rows train, its next `val_fraction` validate, its last `test_fraction` test. A window of
`window` rows of features and its `horizon` targets (the target values of the rows after it) lie
inside one part of one series, so no window crosses a series and no validation row reaches a
training input. With `normalize`, features and the target are standardised with training rows'
statistics (of all series, or of each series on its own), so losses are in training standard
deviations. Each split's naive-forecast MSE (models.data.naive) rides along in `DataInfo`.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from models.data.base import DataInfo, Split, TaskData
from models.data.config import CsvData
from models.data.files import check_fractions, check_positive
from models.data.naive import SPLITS, BaselineSums, naive_forecasts
from models.data.table import Table, read_table
from models.errors import DataError

# one series' (train, val, test) rows, each in time order
Parts = tuple[np.ndarray, np.ndarray, np.ndarray]


def load_csv(cfg: CsvData) -> TaskData:
    _check_settings(cfg)
    table = read_table(cfg.path)
    features = _feature_columns(cfg, table)
    target = table.numbers(cfg.target, "task.target")
    columns = [target if c == cfg.target else table.numbers(c, "task.features") for c in features]
    values = np.column_stack([*columns, target])  # (R, F + 1), the target last
    parts = [_parts(cfg, name, rows) for name, rows in _series(cfg, table)]
    values = _normalized(values, parts, cfg.normalize)
    baselines = BaselineSums()
    train, val, test = (
        _windows(values, [p[k] for p in parts], cfg, baselines, split)
        for k, split in enumerate(SPLITS)
    )
    info = DataInfo(
        "regression", len(features), None, cfg.horizon, cfg.window, len(train.inputs),
        baselines=baselines.mse(),
    )  # fmt: skip
    return TaskData(info, train, val, test)


def _check_settings(cfg: CsvData) -> None:
    check_positive(cfg.window, "window")
    check_positive(cfg.horizon, "horizon")
    check_fractions(cfg.val_fraction, cfg.test_fraction)
    if cfg.season is not None:
        check_positive(cfg.season, "season")
        if cfg.season > cfg.window:
            raise DataError(
                f"task.season ({cfg.season}) is longer than task.window ({cfg.window}): the "
                "seasonal naive forecast takes its values from the window; raise task.window "
                "to at least one season or drop task.season"
            )


def _feature_columns(cfg: CsvData, table: Table) -> list[str]:
    table.require(cfg.target, "task.target")
    for key in ("series", "time"):
        column = getattr(cfg, key)
        if column is not None:
            table.require(column, f"task.{key}")
            if column == cfg.target:
                raise DataError(f"task.{key} and task.target both name column {column!r}")
    if cfg.features is not None:
        if not cfg.features:
            raise DataError("task.features is empty; name some columns, or omit it for all")
        for name in cfg.features:
            table.require(name, "task.features")
        return list(cfg.features)
    # Every numeric column, the target too (its past is usually the best feature); never the
    # series or time column, even when they hold numbers.
    keys = (cfg.series, cfg.time)
    return [c for c in table.header if c not in keys and table.is_numeric(c)]


def _series(cfg: CsvData, table: Table) -> list[tuple[str | None, np.ndarray]]:
    """(name, rows in time order) of every series, in order of first appearance."""
    if cfg.series is None:
        groups: list[tuple[str | None, np.ndarray]] = [(None, np.arange(len(table)))]
    else:
        codes, names = table.ids(cfg.series, "task.series")
        order = np.argsort(codes, kind="stable")  # file order within each series
        bounds = np.cumsum(np.bincount(codes))[:-1]
        groups = list(zip(names, np.split(order, bounds), strict=True))
    if cfg.time is None:
        return groups
    keys = table.times(cfg.time, "task.time")
    ordered = []
    for name, members in groups:
        members = members[np.argsort(keys[members], kind="stable")]
        same = np.flatnonzero(np.diff(keys[members]) == 0)
        if same.size:
            first, second = members[same[0]], members[same[0] + 1]
            who = "" if name is None else f" of series {name!r}"
            raise DataError(
                f"{table.where(int(second), cfg.time)} (task.time): the same time as "
                f"{table.where(int(first), cfg.time)}{who}; each series needs one row per time"
            )
        ordered.append((name, members))
    return ordered


def _parts(cfg: CsvData, name: str | None, rows: np.ndarray) -> Parts:
    """The series' rows cut in time into (train, val, test), each long enough for a window."""
    n, need = len(rows), cfg.window + cfg.horizon
    who = "" if name is None else f"series {name!r} ({n} rows): "
    drop = "" if name is None else ", or drop this series"
    if n < need:
        raise DataError(
            f"{cfg.path}: {who}too few rows for one window: {n} data rows, but "
            f"task.window + task.horizon = {need}; lower them or provide more rows{drop}"
        )
    n_val, n_test = round(n * cfg.val_fraction), round(n * cfg.test_fraction)
    sizes = (n - n_val - n_test, n_val, n_test)
    for part, count, key in zip(
        ("training", "validation", "test"),
        sizes,
        ("", "val_fraction", "test_fraction"),
        strict=True,
    ):
        if count < need:
            fix = f"raise task.{key}, " if key else "lower val/test_fraction, "
            raise DataError(
                f"{cfg.path}: {who}the {part} part has {count} rows, fewer than task.window + "
                f"task.horizon = {need} for one window; {fix}lower task.window or add rows{drop}"
            )
    bounds = np.cumsum(sizes)[:-1]
    train, val, test = np.split(rows, bounds)
    return train, val, test


def _normalized(values: np.ndarray, parts: list[Parts], how: bool | str) -> np.ndarray:
    """Every column standardised with the training rows' mean and std: of all series together
    (`how` true) or of each series on its own ("series"); a constant column is only centred."""
    if how == "series":
        groups = [(p[0], np.concatenate(p)) for p in parts]
    elif how:
        train = np.concatenate([p[0] for p in parts])
        groups = [(train, np.concatenate([np.concatenate(p) for p in parts]))]
    else:
        return values
    values = values.copy()
    for train, members in groups:
        mean, std = values[train].mean(axis=0), values[train].std(axis=0)
        values[members] = (values[members] - mean) / np.where(std > 0, std, 1.0)
    return values


def _windows(
    values: np.ndarray, pieces: list[np.ndarray], cfg: CsvData, baselines: BaselineSums, split: str
) -> Split:
    """One split's windows from every series' part `pieces`: inputs (N, window, F), targets
    (N, horizon); the naive forecasts of the same windows are added to `baselines`."""
    inputs, targets = [], []
    for rows in pieces:
        part = values[rows]  # (n, F + 1), in time order, the target last
        n = len(part) - cfg.window - cfg.horizon + 1
        x = sliding_window_view(part[:, :-1], cfg.window, axis=0)[:n]  # (n, F, window)
        inputs.append(x.transpose(0, 2, 1))  # (n, window, F)
        y = sliding_window_view(part[:, -1], cfg.horizon)[cfg.window :]  # (n, horizon)
        targets.append(y)
        baselines.add(split, y, naive_forecasts(part[:, -1], cfg.window, cfg.horizon, cfg.season))
    return Split(
        torch.from_numpy(np.concatenate(inputs).astype(np.float32)),
        torch.from_numpy(np.concatenate(targets).astype(np.float32)),
        None,
    )
