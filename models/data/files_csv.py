"""Windows of time series from a CSV or Parquet table, one row per (series, time step).

Rows group into series by the `series` column (none: the whole table is one series) and are
ordered within each by the `time` column (none: file order). Each series splits in time: its
first rows train, its next `val_fraction` validate, its last `test_fraction` test. A window of
`window` rows of features and its `horizon` targets (the target values of the rows after it) lie
inside one part of one series, so no window crosses a series and no validation row reaches a
training input. With `normalize`, features and the target are standardised with training rows'
statistics (of all series, or of each series on its own), so losses are in training standard
deviations. Each split's naive-forecast MSE (models.data.naive) rides along in `DataInfo`.

Pre-split files (`train`, `val`, `test`) are tables of the same shape: each holds its split of
every series it names; without a `val` file, the last `val_fraction` of every training series
validates. Features and normalisation statistics come from the training file.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from models.data.base import DataInfo, Split, TaskData
from models.data.config import CsvData
from models.data.files import check_fractions, check_positive, named_files, part_label
from models.data.naive import SPLITS, BaselineSums, naive_forecasts
from models.data.table import Table, read_table
from models.errors import DataError

# one series' (train, val, test) rows, each in time order
Parts = tuple[np.ndarray, np.ndarray, np.ndarray]


def load_csv(cfg: CsvData, with_test: bool = True) -> TaskData:
    _check_settings(cfg)
    files = named_files(cfg)
    if "path" in files:
        table = read_table(cfg.path)
        features = _feature_columns(cfg, table)
        values = _values(cfg, table, features)
        parts = [_parts(cfg, cfg.path, name, rows) for name, rows in _series(cfg, table)]
    else:
        values, features, parts = _pre_split(cfg, files, with_test)
    values = _normalized(values, parts, cfg.normalize)
    baselines = BaselineSums()
    train, val, test = (
        _windows(values, [p[k] for p in parts if len(p[k])], cfg, baselines, split)
        if any(len(p[k]) for p in parts) else None
        for k, split in enumerate(SPLITS)
    )  # fmt: skip
    info = DataInfo(
        "regression", len(features), None, cfg.horizon, cfg.window, len(train.inputs),  # type: ignore[union-attr]
        baselines=baselines.mse(),
    )  # fmt: skip
    return TaskData(info, train, val, test)  # type: ignore[arg-type]


def _values(cfg: CsvData, table: Table, features: list[str]) -> np.ndarray:
    """(R, F + 1) numbers of the feature columns, the target last."""
    target = table.numbers(cfg.target, "task.target")
    columns = [target if c == cfg.target else table.numbers(c, "task.features") for c in features]
    return np.column_stack([*columns, target])


def _pre_split(
    cfg: CsvData, files: dict[str, str], with_test: bool
) -> tuple[np.ndarray, list[str], list[Parts]]:
    """The files' rows stacked (train file first) and every series' (train, val, test) rows in
    them; a series may be absent from a file (an empty part). Features come from training."""
    table = read_table(files["train"])
    features = _feature_columns(cfg, table)
    blocks = [_values(cfg, table, features)]
    empty = np.zeros(0, dtype=np.int64)
    carve = "val" not in files
    series: dict[str | None, list[np.ndarray]] = {}
    for name, rows in _series(cfg, table):
        series[name] = list(_parts(cfg, files["train"], name, rows, carve, test=False))
    offset = len(table)
    for k, key in ((1, "val"), (2, "test")):
        if key not in files or (key == "test" and not with_test):
            continue
        table = read_table(files[key])
        for column in (*features, cfg.target):
            table.require(column, "the training file's columns (task.features, task.target)")
        blocks.append(_values(cfg, table, features))
        for name, rows in _series(cfg, table):
            _check_length(cfg, files[key], name, len(rows))
            series.setdefault(name, [empty, empty, empty])[k] = rows + offset
        offset += len(table)
    if cfg.normalize == "series":
        _every_series_trains(series, files)
    return np.concatenate(blocks), features, [tuple(p) for p in series.values()]  # type: ignore[misc]


def _every_series_trains(series: dict[str | None, list[np.ndarray]], files: dict[str, str]) -> None:
    for name, parts in series.items():
        if not len(parts[0]):
            where = part_label(files, "val" if len(parts[1]) else "test")
            raise DataError(
                f"{where}: series {name!r} has no rows in the training file {files['train']}, so "
                "normalize: series has no statistics for it; add it there or use normalize: true"
            )


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


def _parts(
    cfg: CsvData, path: str, name: str | None, rows: np.ndarray, val: bool = True, test: bool = True
) -> Parts:
    """The series' rows cut in time into (train, val, test), each long enough for a window;
    a part not carved from this file (`val` / `test` false) is empty."""
    n = len(rows)
    _check_length(cfg, path, name, n)
    n_val = round(n * cfg.val_fraction) if val else 0
    n_test = round(n * cfg.test_fraction) if test else 0
    sizes = (n - n_val - n_test, n_val, n_test)
    for part, count, key, cut in zip(
        ("training", "validation", "test"),
        sizes,
        ("", "val_fraction", "test_fraction"),
        (True, val, test),
        strict=True,
    ):
        if cut and count < cfg.window + cfg.horizon:
            fix = f"raise task.{key}, " if key else "lower val/test_fraction, "
            who = "" if name is None else f"series {name!r} ({n} rows): "
            drop = "" if name is None else ", or drop this series"
            raise DataError(
                f"{path}: {who}the {part} part has {count} rows, fewer than task.window + "
                f"task.horizon = {cfg.window + cfg.horizon} for one window; {fix}lower "
                f"task.window or add rows{drop}"
            )
    bounds = np.cumsum(sizes)[:-1]
    train, val_rows, test_rows = np.split(rows, bounds)
    return train, val_rows, test_rows


def _check_length(cfg: CsvData, path: str, name: str | None, n: int) -> None:
    """A series (part) needs `window + horizon` rows for one window."""
    need = cfg.window + cfg.horizon
    if n >= need:
        return
    who = "" if name is None else f"series {name!r} ({n} rows): "
    drop = "" if name is None else ", or drop this series"
    raise DataError(
        f"{path}: {who}too few rows for one window: {n} data rows, but task.window + "
        f"task.horizon = {need}; lower them or provide more rows{drop}"
    )


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
