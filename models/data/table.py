"""A data table read from CSV or Parquet: columns of cells by name, and where each row came from.

CSV is read with the standard library so errors can name the file's line; Parquet (by the
`.parquet` or `.pq` suffix) through pandas and pyarrow, and its errors name the row (1 = first).
Columns stay as read (CSV: stripped strings; Parquet: typed arrays) until a caller asks for
numbers, series ids or time keys, each of which reports a bad cell by its place and column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from models.data.files import read_text, resolve
from models.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
_NUMERIC = "biuf"  # numpy dtype kinds read as numbers: bool, int, unsigned, float


@dataclass(frozen=True)
class Table:
    path: str
    columns: dict[str, np.ndarray]  # name -> (R,) cells, rows in file order
    lines: np.ndarray | None  # (R,) CSV line of each row; None for Parquet (rows are counted)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def header(self) -> list[str]:
        return list(self.columns)

    def where(self, row: int, column: str) -> str:
        """`path, line 7, column 'sales'` (or `row 6` for Parquet)."""
        place = f"row {row + 1}" if self.lines is None else f"line {self.lines[row]}"
        return f"{self.path}, {place}, column {column!r}"

    def require(self, column: str, key: str) -> None:
        """An error naming `key` (e.g. task.series) unless `column` is in the table."""
        if column not in self.columns:
            raise DataError(
                f"{self.path}: {key} names column {column!r}, which is not in the table; "
                f"the columns are: {', '.join(self.header)}"
            )

    def is_numeric(self, column: str) -> bool:
        """Whether the column's first cell is a number (a date or a name is not)."""
        cells = self.columns[column]
        if cells.dtype.kind in _NUMERIC:
            return True
        return (
            cells.dtype.kind == "O" and isinstance(cells[0], str) and _number(cells[0]) is not None
        )

    def numbers(self, column: str, key: str) -> np.ndarray:
        """(R,) float64 values of `column`; a missing, non-numeric or infinite cell is an error
        naming its place and `key`, the setting that asked for the column."""
        cells = self.columns[column]
        try:
            values = cells.astype(np.float64)  # numpy parses numeric strings in one pass
        except (TypeError, ValueError):  # some cell is not a number: find which, cell by cell
            values = np.array([_number(c) for c in cells], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            cell = cells[bad[0]]
            if _missing(cell):
                shown = "an empty cell; fill or drop missing values"
            elif _number(cell) is None:
                shown = f"{cell!r} is not a number"
            else:
                shown = f"{cell!r} is not finite; fill or drop missing values"
            raise DataError(f"{self.where(int(bad[0]), column)} ({key}): {shown}")
        return values

    def ids(self, column: str, key: str) -> tuple[np.ndarray, list[str]]:
        """(R,) series codes 0..S-1 and the S series names, in order of first appearance."""
        import pandas as pd

        cells = self.columns[column]
        empty = next((i for i, cell in enumerate(cells) if _missing(cell)), None)
        if empty is not None:
            raise DataError(
                f"{self.where(empty, column)} ({key}): an empty cell; every row needs one"
            )
        codes, names = pd.factorize(cells)
        return codes, [str(name) for name in names]

    def times(self, column: str, key: str) -> np.ndarray:
        """(R,) sortable keys of `column`: numbers, or dates and times (ISO 8601 in a CSV)."""
        import pandas as pd

        cells = self.columns[column]
        if cells.dtype.kind in _NUMERIC:
            keys = cells.astype(np.float64)
        elif cells.dtype.kind == "M":
            keys = cells.astype("datetime64[ns]").astype(np.float64)
            keys[np.isnat(cells)] = np.nan
        elif all(_number(c) is not None for c in cells):
            keys = np.array([_number(c) for c in cells], dtype=np.float64)
        else:
            parsed = pd.to_datetime(pd.Series(cells), format="ISO8601", utc=True, errors="coerce")
            keys = parsed.to_numpy(dtype="datetime64[ns]").astype(np.float64)
            keys[parsed.isna().to_numpy()] = np.nan
        bad = np.flatnonzero(np.isnan(keys))
        if bad.size:
            cell = cells[bad[0]]
            shown = "an empty cell" if _missing(cell) else f"{cell!r} is not a number or a date"
            raise DataError(
                f"{self.where(int(bad[0]), column)} ({key}): {shown}; times are numbers or "
                "ISO 8601 dates and times such as 2024-01-31 or 2024-01-31T08:00"
            )
        return keys


def _missing(cell: object) -> bool:
    return cell is None or cell == "" or (isinstance(cell, float) and math.isnan(cell))


def _number(cell: object) -> float | None:
    """The cell as a float (NaN if it says so), or None if it is not a number."""
    try:
        return float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def read_table(path: str) -> Table:
    if path.lower().endswith(PARQUET_SUFFIXES):
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: str) -> Table:
    reader = csv.reader(io.StringIO(read_text(path)))
    header = [name.strip() for name in next(reader)]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(
            f"{path}, line 1: the header needs distinct, non-empty column names; "
            f"got {', '.join(header)}"
        )
    rows, lines = [], []
    for cells in reader:
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            raise DataError(
                f"{path}, line {reader.line_num}: {len(cells)} cells but the header "
                f"has {len(header)} columns"
            )
        rows.append([c.strip() for c in cells])
        lines.append(reader.line_num)
    if not rows:
        raise DataError(f"{path}: a header but no data rows")
    cells = np.empty((len(rows), len(header)), dtype=object)
    cells[:] = rows
    columns = {name: cells[:, j] for j, name in enumerate(header)}
    return Table(path, columns, np.array(lines))


def _read_parquet(path: str) -> Table:
    import pandas as pd
    import pyarrow as pa

    try:
        frame = pd.read_parquet(resolve(path))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if frame.empty:
        raise DataError(f"{path}: a Parquet file with no rows")
    if len({str(name) for name in frame.columns}) != len(frame.columns):
        raise DataError(f"{path}: column names must be distinct; got {list(frame.columns)}")
    columns = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind not in "fM" and column.isna().any():
            column = column.astype(object).where(column.notna(), None)  # one kind of missing
        columns[str(name)] = column.to_numpy()
    return Table(path, columns, None)
