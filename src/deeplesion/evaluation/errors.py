"""Typed errors of the evaluation package, and the rows of a prediction file that raise
them (naming the file, line, column and value)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from deeplesion.data.table import CsvTable, WidthProblem
from deeplesion.errors import CellError, DeepLesionError


class PredictionError(CellError):
    """A prediction (or label / measurement) file row that cannot be used."""


class EvaluationError(DeepLesionError, ValueError):
    """Inputs that cannot be evaluated together (e.g. an empty split, mismatched arrays)."""


@dataclass(frozen=True)
class PredictionRow:
    """One data row of a prediction file: its cells, and errors that name its place."""

    file: str
    line: int
    cells: dict[str, str | None]

    def error(self, message: str, column: str = "", value: object = None) -> PredictionError:
        return PredictionError(message, file=self.file, line=self.line, column=column, value=value)

    def integer(self, column: str) -> int:
        try:
            return int(str(self.cells[column]))
        except ValueError:
            raise self.error("not an integer", column, self.cells[column]) from None

    def finite(self, columns: Sequence[str], what: str = "value") -> list[float]:
        """The cells as finite numbers; raises at the first missing, non-numeric or
        non-finite one (``"non-finite {what}"``)."""
        values = []
        for column in columns:
            text = self.cells[column]
            if text is None:
                raise self.error("missing cell", column)
            try:
                value = float(text)
            except ValueError:
                raise self.error("not a number", column, text) from None
            if not math.isfinite(value):
                raise self.error(f"non-finite {what}", column, text)
            values.append(value)
        return values


def prediction_rows(table: CsvTable) -> Iterator[PredictionRow]:
    """Each row of ``table`` in file order; :class:`PredictionError` at a row with more
    cells than the header."""
    for line, cells in table.rows():
        if isinstance(cells, WidthProblem):
            raise PredictionError(cells.message, file=table.source, line=line, value=cells.text)
        yield PredictionRow(table.source, line, cells)
