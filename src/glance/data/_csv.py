"""Strict CSV reading shared by the loaders: schema checks and cell errors that name file and row.

Row numbers in messages are the file's own 1-based line numbers (the header is line 1), so a user
can jump straight to them in an editor.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glance._io import atomic_write_text
from glance.exceptions import DataValidationError

#: Cells read as "missing" where missing values are allowed.
MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none"})
_MAX_LISTED = 20


@dataclass(frozen=True)
class CsvTable:
    """A parsed CSV: header, string cells and the file line number of each row."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``."""
        j = self.header.index(name)
        return [r[j] for r in self.rows]


def read_csv(path: str | os.PathLike[str], *, delimiter: str = ",") -> CsvTable:
    """Read ``path`` strictly: UTF-8 (a BOM is accepted), a header, no duplicate or blank names,
    every row with as many cells as the header.

    Raises
    ------
    DataValidationError
        Empty file, undecodable bytes, blank or duplicate column names, ragged rows.
    """
    path = Path(path)
    try:
        # utf-8-sig strips a BOM that Excel and PowerShell write, so the first column keeps its name
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the CSV as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataValidationError(f"{path}: empty CSV; expected a header line")
        header = [h.strip() for h in header]
        _check_header(path, header, delimiter)
        rows, lines = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise DataValidationError(
                    f"{path}: line {reader.line_num} has {len(row)} cells; the header has "
                    f"{len(header)} ({', '.join(header)})"
                )
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataValidationError(
            f"{path}: malformed CSV at line {reader.line_num}: {exc}"
        ) from None
    return CsvTable(str(path), header, rows, lines)


def _check_header(path: Path, header: list[str], delimiter: str) -> None:
    blank = [i + 1 for i, h in enumerate(header) if not h]
    if blank:
        raise DataValidationError(f"{path}: header has blank column names at positions {blank}")
    seen: set[str] = set()
    dups = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if dups:
        raise DataValidationError(f"{path}: duplicate column names in the header: {dups}")
    if len(header) == 1 and any(d in header[0] for d in ";\t|" if d != delimiter):
        raise DataValidationError(
            f"{path}: the header has a single column {header[0]!r}; the delimiter is "
            f"{delimiter!r} (is the file delimited by something else?)"
        )


def require_columns(table: CsvTable, columns: Sequence[str]) -> None:
    """Raise naming every column of ``columns`` the table lacks and the columns it has."""
    missing = [c for c in columns if c not in table.header]
    if missing:
        raise DataValidationError(
            f"{table.path}: missing column(s) {missing}; the header has {table.header}"
        )


def numeric_columns(table: CsvTable, columns: Sequence[str], *, allow_missing: bool) -> np.ndarray:
    """Parse ``columns`` as float64, reporting every bad cell of every column in one error.

    Parameters
    ----------
    table
        The parsed CSV.
    columns
        Column names to parse, in output order.
    allow_missing
        Read empty / NA / NaN cells as NaN; otherwise they are errors.

    Returns
    -------
    numpy.ndarray
        Float64 array of shape (n_rows, len(columns)).

    Raises
    ------
    DataValidationError
        Lists, per column, the 1-based line numbers (first 20) and the first offending value of
        non-numeric, infinite or (when not allowed) missing cells.
    """
    require_columns(table, columns)
    out = np.empty((len(table.rows), len(columns)), dtype=np.float64)
    problems = []
    for k, name in enumerate(columns):
        bad_lines, first_bad = [], None
        for r, cell in enumerate(table.column(name)):
            value = _parse_cell(cell, allow_missing)
            if value is None:
                bad_lines.append(table.lines[r])
                first_bad = cell if first_bad is None else first_bad
                continue
            out[r, k] = value
        if bad_lines:
            listed = ", ".join(map(str, bad_lines[:_MAX_LISTED]))
            more = (
                f" and {len(bad_lines) - _MAX_LISTED} more" if len(bad_lines) > _MAX_LISTED else ""
            )
            problems.append(f"column {name!r} at line(s) {listed}{more} (e.g. {first_bad!r})")
    if problems:
        what = "finite numbers or empty cells" if allow_missing else "finite numbers"
        raise DataValidationError(
            f"{table.path}: expected {what}; bad values in " + "; ".join(problems)
        )
    return out


def _parse_cell(cell: str, allow_missing: bool) -> float | None:
    """The cell's value, NaN for an allowed missing cell, None for a bad cell."""
    if cell.lower() in MISSING_TOKENS:
        return math.nan if allow_missing else None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def write_csv(
    path: str | os.PathLike[str],
    header: Sequence[str],
    columns: Sequence[Sequence[object] | np.ndarray],
) -> None:
    """Write columns (equal length) under ``header`` atomically; floats with 8 significant digits,
    NaN as an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in zip(*columns, strict=True):
        writer.writerow([_fmt(v) for v in row])
    atomic_write_text(path, buf.getvalue())


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.8g}"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
