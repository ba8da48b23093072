"""Validation of DL_info.csv: every problem, with file, line, column and value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import iter_rows, parse_row
from deeplesion.data.checks import Problem, check_lesion, duplicate_problem
from deeplesion.data.paths import key_slice_path
from deeplesion.data.slices import check_png_header, read_png_header
from deeplesion.errors import AnnotationError, ImageReadError

__all__ = ["Problem", "ValidationReport", "check_lesion", "validate"]


@dataclass
class ValidationReport:
    file: str
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: with ``images_root``: key slices checked, and those whose PNG is not there at all
    key_slices: int = 0
    key_slices_absent: int = 0

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.fatal]

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Check every row of a DL_info.csv; with ``images_root``, also each key slice
    (release layout, or a flat folder of key slices named by ``File_name``): a PNG that is
    there must be a 16-bit grayscale slice of the row's ``Image_size`` (read from its
    header, without decoding). Absent PNGs (a partial root) are counted in
    ``key_slices_absent``, not reported one by one.

    ``progress`` is called with the number of rows checked so far, every 1000 rows.
    """
    path = Path(path)
    report = ValidationReport(str(path))
    seen: dict[str, str] = {}
    rows_seen: dict[tuple, int] = {}
    for row_index, cells in iter_rows(path):
        report.rows += 1
        duplicate = duplicate_problem(cells, row_index + 2, rows_seen, file=str(path))
        if duplicate is not None:
            report.problems.append(duplicate)
        if progress and report.rows % 1000 == 0:
            progress(report.rows)
        try:
            lesion = parse_row(cells, row_index, file=str(path))
        except AnnotationError as exc:
            report.problems.append(Problem.from_error(exc))
            continue
        report.problems.extend(check_lesion(lesion, file=str(path)))
        if images_root is not None and lesion.file_name not in seen:
            png = key_slice_path(images_root, lesion.file_name)
            report.key_slices += 1
            seen[lesion.file_name] = ""
            if not png.is_file():
                report.key_slices_absent += 1
                continue
            try:
                check_png_header(read_png_header(png), png, lesion.image_size)
            except ImageReadError as exc:
                report.problems.append(
                    Problem(str(path), row_index + 2, "File_name", lesion.file_name, str(exc))
                )
    if progress:
        progress(report.rows)
    return report
