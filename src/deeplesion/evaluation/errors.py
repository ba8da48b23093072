"""Typed errors of the evaluation package."""

from __future__ import annotations

from ..errors import DeepLesionError


class PredictionError(DeepLesionError, ValueError):
    """A prediction (or label / measurement) file row that cannot be used.

    Carries the file, 1-based line number, column name and offending value.
    """

    def __init__(self, message: str, *, file: str = "", line: int | None = None,
                 column: str = "", value: object = None) -> None:
        self.file, self.line, self.column, self.value = file, line, column, value
        self.reason = message
        where = ", ".join(
            part for part in (
                f"file {file}" if file else "",
                f"line {line}" if line is not None else "",
                f"column {column}" if column else "",
                f"value {value!r}" if value is not None else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class EvaluationError(DeepLesionError, ValueError):
    """Inputs that cannot be evaluated together (e.g. an empty split, mismatched arrays)."""
