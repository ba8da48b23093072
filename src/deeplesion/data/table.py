"""The one CSV reader: header check, 1-based line numbers, fast column access.

Every table file of the package (DL_info.csv, predictions, 3-D boxes, measurements, tag
scores) is read here, under one set of rules:

- the file is UTF-8 (a leading BOM is dropped); the first line is the header, whose names
  are compared with surrounding spaces removed; the columns asked for are found by name,
  so extra columns are allowed; a missing one is an error naming the file and line 1;
- empty and blank (whitespace-only) lines are skipped;
- a row that lacks a requested cell has ``None`` there in :meth:`CsvTable.cells` (its
  reader reports the missing cell, or the cell count, see :meth:`CsvTable.short_row`); a
  row with more cells than the header is recorded in :attr:`CsvTable.width_problems`;
- a cell too long for the standard library's csv module (over 131,072 characters) is an
  error naming the file and line.

Columns come back as NumPy arrays (pandas' C parser does the reading; text cells as
written, number cells as float64). A reader checks them vectorised and asks
:meth:`CsvTable.cells` for the exact cells (surrounding spaces removed) of the few rows
that fail, so the rows it accepts and the messages it gives are those of its per-row code.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplesion.data.io import decode_utf8
from deeplesion.errors import CellError

_BOM = "\ufeff".encode()
_BLANK_LINE = re.compile(rb"\n[ \t\f\v\r]*\n")  # an empty or whitespace-only line


@dataclass(frozen=True)
class WidthProblem:
    """A row with more cells than the header."""

    line: int
    cells: int
    text: str
    expected: int  #: the header's cell count

    @property
    def message(self) -> str:
        return f"expected {self.expected} cells, found {self.cells}"


@dataclass
class CsvTable:
    """The requested columns of a CSV file, one entry per data row."""

    source: str
    header: tuple[str, ...]  #: all header names, stripped
    columns: dict[str, np.ndarray]  #: requested columns (object arrays of str, or float64)
    lines: np.ndarray  #: 1-based line number of each row
    width_problems: list[WidthProblem] = field(default_factory=list)
    _data: bytes = b""  #: the file's bytes (BOM dropped), for the rows read again
    _rows: list[list[str]] | None = None  #: every row's cells when read by the exact path
    _line_starts: np.ndarray | None = None
    _error: type[CellError] = CellError

    def short_row(self, row: int) -> WidthProblem | None:
        """The cell count of a row with fewer cells than the header ("expected 18 cells,
        found 17"), else None."""
        raw = self._raw_row(row)
        if len(raw) >= len(self.header):
            return None
        return WidthProblem(int(self.lines[row]), len(raw), ",".join(raw), len(self.header))

    def __len__(self) -> int:
        return len(self.lines)

    def text(self, column: str) -> np.ndarray:
        """The column's cells as written (``""`` where a row lacks the cell)."""
        values = self.columns[column]
        if values.dtype == object:
            return values
        return np.array([_number_text(v) for v in values.tolist()], dtype=object)

    def numbers(self, column: str) -> np.ndarray:
        """The column as float64; NaN where a cell is not a number (or is ``nan``)."""
        values = self.columns[column]
        if values.dtype != object:
            return values.astype(np.float64, copy=False)
        import pandas as pd

        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)

    def cells(self, row: int) -> dict[str, str | None]:
        """The requested cells of one row exactly as written (stripped; None if absent)."""
        raw = self._raw_row(row)
        return {
            name: (raw[i].strip() if i < len(raw) else None)
            for name, i in self._positions().items()
        }

    def rows(self) -> Iterator[tuple[int, dict[str, str | None] | WidthProblem]]:
        """(line, cells) of each row in file order; a row longer than the header gives its
        :class:`WidthProblem` instead of cells."""
        too_long = {w.line: w for w in self.width_problems}
        for i, line in enumerate(self.lines.tolist()):
            yield line, too_long.get(line) or self.cells(i)

    def _positions(self) -> dict[str, int]:
        return {name: self.header.index(name) for name in self.columns}

    def _raw_row(self, row: int) -> list[str]:
        if self._rows is not None:
            return self._rows[row]
        if self._line_starts is None:
            ends = [m.end() for m in re.finditer(b"\n", self._data)]
            self._line_starts = np.array([0, *ends], dtype=np.int64)
        line = int(self.lines[row])
        start = int(self._line_starts[line - 1])
        end = int(self._line_starts[line]) if line < len(self._line_starts) else len(self._data)
        text = self._data[start:end].decode("utf-8").rstrip("\r\n")
        try:
            return next(csv.reader([text]), [])
        except csv.Error as exc:
            raise self._error(f"unreadable row ({exc})", file=self.source, line=line) from None


def _number_text(value: float) -> str:
    return "" if value != value else repr(value)  # NaN: an empty cell


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a table becomes records: tens of thousands
    of new tuples and records (none in a cycle) would set off full collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_table(
    path: str | Path,
    columns: Sequence[str],
    *,
    numbers: Sequence[str] = (),
    error: type[CellError] = CellError,
    hint: str = "",
    optional: Sequence[str] = (),
) -> CsvTable:
    """Read ``columns`` of a CSV file (``numbers`` among them parsed as float64), and those
    of ``optional`` that the header has.

    Raises ``error`` (a :class:`CellError`) for an empty file, a missing column (``hint``
    appended to the message) or text that is not UTF-8, naming the file and line.
    """
    source = str(path)
    data = Path(path).read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.isascii():
        decode_utf8(data, path)  # raises, naming the line, unless the bytes are UTF-8
    first_newline = data.find(b"\n")
    end = first_newline if first_newline >= 0 else len(data)
    header_line = data[:end].decode("utf-8").rstrip("\r")
    header = next(csv.reader([header_line]), None)
    if header is None or not any(h.strip() for h in header):
        raise error("empty file", file=source, line=1)
    names = tuple(h.strip() for h in header)
    missing = [c for c in columns if c not in names]
    if missing:
        shown = f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
        raise error(f"missing columns {shown}{'; ' + hint if hint else ''}", file=source, line=1)
    columns = [*columns, *(c for c in optional if c in names and c not in columns)]
    positions = [names.index(c) for c in columns]
    fast = _read_fast(source, data, names, header, columns, positions, set(numbers))
    if fast is not None:
        fast._error = error
        return fast
    text = data.decode("utf-8")
    exact = _read_exact(source, text, names, columns, positions, set(numbers), error)
    exact._error = error
    return exact


def _read_fast(source, data, names, header, columns, positions, numbers) -> CsvTable | None:
    """pandas' C parser; None when the file needs the exact reader (rows longer than the
    header, cells spanning lines, line ends pandas counts differently, repeated names)."""
    import pandas as pd

    if len(set(header)) != len(header):
        return None
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return None
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            header=0,
            dtype={header[p]: object for p, c in zip(positions, columns) if c not in numbers},
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
    except (pd.errors.ParserError, ValueError):
        return None
    if frame.shape[1] != len(header):
        return None
    if b'"' in data:  # without quotes every line is one row, and the count can only agree
        n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        if len(frame) != n_lines - 1:
            return None
    lines = np.arange(2, len(frame) + 2, dtype=np.int64)
    keep = None
    # A blank line gives empty cells in every column, so one column read as numbers shows
    # there is none; otherwise look.
    numeric = any(frame.iloc[:, p].dtype.kind in "iuf" for p in positions)
    last_line = data[data.rfind(b"\n") + 1 :]
    if not numeric and (_BLANK_LINE.search(data) or (last_line and not last_line.strip())):
        keep = np.array([bool(t.strip()) for t in data.split(b"\n")[1 : len(frame) + 1]])
        lines = lines[keep]
    table = {}
    for column, position in zip(columns, positions):
        values = frame.iloc[:, position].to_numpy()
        if keep is not None:
            values = values[keep]
        if column in numbers and values.dtype.kind in "iuf":
            values = values.astype(np.float64, copy=False)
        elif values.dtype != object:
            values = values.astype(object)
        table[column] = values
    return CsvTable(source, names, table, lines, _data=data)


def _read_exact(source, text, names, columns, positions, numbers, error=CellError) -> CsvTable:
    """The standard library's csv reader, line by line: any file it can read."""
    rows: list[list[str]] = []
    lines: list[int] = []
    width: list[WidthProblem] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader, None)
    line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise error(f"unreadable row ({exc})", file=source, line=line + 1) from None
        line, end = line + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            line = end
            continue
        if len(row) > len(names):
            width.append(WidthProblem(line, len(row), ",".join(row), len(names)))
        rows.append(row)
        lines.append(line)
        line = end
    data = {}
    for column, position in zip(columns, positions):
        cells = [row[position] if position < len(row) else "" for row in rows]
        data[column] = np.array(cells, dtype=object)
        if column in numbers:
            import pandas as pd

            parsed = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce")
            data[column] = parsed.to_numpy(np.float64)
    lines_ = np.array(lines, dtype=np.int64)
    return CsvTable(source, names, data, lines_, width, _rows=rows)
