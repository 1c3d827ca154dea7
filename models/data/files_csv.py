"""Windows of a CSV time series: `window` rows of features predict `target` `horizon` rows later.

Rows split in time order (train, then val, then test) and each window lies inside one part, so no
validation row ever reaches a training input. With `normalize`, features and the target are
standardised with the training rows' mean and std, so losses are in training standard deviations.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import torch

from models.data.base import DataInfo, Split, TaskData
from models.data.config import CsvData
from models.data.files import check_positive, read_text, split_sizes
from models.errors import DataError


def load_csv(cfg: CsvData) -> TaskData:
    check_positive(cfg.window, "window")
    check_positive(cfg.horizon, "horizon")
    header, rows = _rows(cfg.path)
    features = _feature_columns(cfg, header, rows)
    columns = [*features, cfg.target]
    values = _numbers(cfg.path, header, rows, columns)  # (R, F + 1)
    need = cfg.window + cfg.horizon
    if len(rows) < need:
        raise DataError(
            f"{cfg.path}: too few rows for one window: {len(rows)} data rows, but "
            f"task.window + task.horizon = {need}; lower them or provide more rows"
        )
    sizes = split_sizes(len(rows), cfg.val_fraction, cfg.test_fraction, cfg.path, "rows")
    for name, count, field in zip(
        ("training", "validation", "test"),
        sizes,
        ("", "val_fraction", "test_fraction"),
        strict=True,
    ):
        if count < need:
            fix = f"raise task.{field}, " if field else "lower val/test_fraction, "
            raise DataError(
                f"{cfg.path}: the {name} part has {count} rows, fewer than task.window + "
                f"task.horizon = {need} for one window; {fix}lower task.window or add rows"
            )
    if cfg.normalize:
        train_rows = values[: sizes[0]]
        mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)
        values = (values - mean) / np.where(std > 0, std, 1.0)  # a constant column stays put
    data = torch.from_numpy(values.astype(np.float32))
    bounds = np.cumsum((0, *sizes))
    train, val, test = (
        _windows(data[a:b], cfg.window, cfg.horizon)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )
    info = DataInfo("regression", len(features), None, 1, cfg.window, len(train.inputs))
    return TaskData(info, train, val, test)


def _rows(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header names and (line number, cells) of every non-empty data row."""
    reader = csv.reader(io.StringIO(read_text(path)))
    header = [name.strip() for name in next(reader)]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(
            f"{path}, line 1: the header needs distinct, non-empty column names; "
            f"got {', '.join(header)}"
        )
    rows = []
    for cells in reader:
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            raise DataError(
                f"{path}, line {reader.line_num}: {len(cells)} cells but the header "
                f"has {len(header)} columns"
            )
        rows.append((reader.line_num, cells))
    if not rows:
        raise DataError(f"{path}: a header but no data rows")
    return header, rows


def _feature_columns(
    cfg: CsvData, header: list[str], rows: list[tuple[int, list[str]]]
) -> list[str]:
    wanted = [cfg.target] + list(cfg.features or ())
    for name in wanted:
        if name not in header:
            field = "target" if name == cfg.target else "features"
            raise DataError(
                f"{cfg.path}: task.{field} names column {name!r}, which is not in "
                f"the header; the columns are: {', '.join(header)}"
            )
    if cfg.features is not None:
        if not cfg.features:
            raise DataError("task.features is empty; name some columns, or omit it for all")
        return list(cfg.features)
    # Every column whose first value is a number: the target too, and never e.g. a date column.
    first = rows[0][1]
    return [name for name, cell in zip(header, first, strict=True) if _is_number(cell)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _numbers(
    path: str, header: list[str], rows: list[tuple[int, list[str]]], columns: list[str]
) -> np.ndarray:
    where = [header.index(c) for c in columns]
    values = np.empty((len(rows), len(columns)), dtype=np.float64)
    for r, (line, cells) in enumerate(rows):
        for c, (name, i) in enumerate(zip(columns, where, strict=True)):
            cell = cells[i].strip()
            try:
                value = float(cell)
            except ValueError:
                shown = "an empty cell" if not cell else f"{cell!r}, not a number"
                raise DataError(f"{path}, line {line}, column {name!r}: {shown}") from None
            if not math.isfinite(value):
                raise DataError(
                    f"{path}, line {line}, column {name!r}: {cell!r} is not finite; "
                    "fill or drop missing values"
                )
            values[r, c] = value
    return values


def _windows(part: torch.Tensor, window: int, horizon: int) -> Split:
    """`part` (R, F + 1), target last -> inputs (N, window, F), targets (N, 1)."""
    n = len(part) - window - horizon + 1
    inputs = part[:, :-1].unfold(0, window, 1)[:n].transpose(1, 2)  # (N, window, F)
    targets = part[window - 1 + horizon :, -1:]  # (N, 1): the row `horizon` after each window
    return Split(inputs.contiguous(), targets.contiguous(), None)
