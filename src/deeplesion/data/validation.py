"""Validation of DL_info.csv: every problem, with file, line, column and value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import iter_rows, parse_row
from deeplesion.data.checks import Problem, check_lesion
from deeplesion.data.paths import key_slice_path
from deeplesion.errors import AnnotationError

__all__ = ["Problem", "ValidationReport", "check_lesion", "validate"]


@dataclass
class ValidationReport:
    file: str
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

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
    """Check every row of a DL_info.csv; with ``images_root``, also that key slices exist
    (release layout, or a flat folder of key slices named by ``File_name``).

    ``progress`` is called with the number of rows checked so far, every 1000 rows.
    """
    path = Path(path)
    report = ValidationReport(str(path))
    seen: dict[str, int] = {}
    for row_index, cells in iter_rows(path):
        report.rows += 1
        if progress and report.rows % 1000 == 0:
            progress(report.rows)
        try:
            lesion = parse_row(cells, row_index, file=str(path))
        except AnnotationError as exc:
            report.problems.append(Problem.from_error(exc))
            continue
        report.problems.extend(check_lesion(lesion, file=str(path)))
        if images_root is not None:
            if lesion.file_name not in seen:
                seen[lesion.file_name] = key_slice_path(images_root, lesion.file_name).is_file()
            if not seen[lesion.file_name]:
                png = Path(images_root) / lesion.png_relpath
                report.problems.append(
                    Problem(
                        str(path),
                        row_index + 2,
                        "File_name",
                        lesion.file_name,
                        f"image missing: {png}",
                    )
                )
    if progress:
        progress(report.rows)
    return report
