"""Typed errors. Each also subclasses the built-in it refines."""

from __future__ import annotations


class DeepLesionError(Exception):
    """Base class of every error this package raises."""


class CellError(DeepLesionError, ValueError):
    """A cell or row of a table file that cannot be used.

    Carries the file, 1-based line number, column name, offending value and the bare
    ``reason``; the message names all of them.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str = "",
        line: int | None = None,
        column: str = "",
        value: object = None,
    ) -> None:
        self.file, self.line, self.column, self.value = file, line, column, value
        self.reason = message
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"line {line}" if line is not None else "",
                f"column {column}" if column else "",
                f"value {value!r}" if value is not None else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class InvalidArgumentError(DeepLesionError, ValueError):
    """An argument outside the values a function accepts; the message names the allowed ones."""


class InvalidTypeError(DeepLesionError, TypeError):
    """An argument of a type a function cannot use (e.g. a float image where uint8 is needed)."""


class AnnotationError(CellError):
    """A DL_info.csv cell or row that cannot be used."""


class NotFoundError(DeepLesionError, LookupError):
    """Something asked for by name (a lesion, a key slice) that is not there."""


class MissingDataError(DeepLesionError, FileNotFoundError):
    """A dataset file or folder that is not where it must be."""


class ImageReadError(DeepLesionError, OSError):
    """A slice PNG that is missing, unreadable or not 16-bit."""


class FingerprintError(DeepLesionError, ValueError):
    """A file that is not the one an operation requires (e.g. not the official DL_info.csv)."""
