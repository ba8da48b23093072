"""Validation of DL_info.csv: every problem, with file, line, column and value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import read_dl_info
from deeplesion.data.checks import Problem, check_lesion
from deeplesion.data.paths import key_slice_path

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

    ``progress`` is called with the number of rows checked so far: every 1000 rows while
    images are looked for, and once at the end.
    """
    path = Path(path)
    rows, lesions, problems = read_dl_info(path)
    report = ValidationReport(str(path), rows, problems)
    if images_root is not None:
        seen: dict[str, bool] = {}
        for done, lesion in enumerate(lesions, start=1):
            if progress and done % 1000 == 0:
                progress(done)
            if lesion.file_name not in seen:
                seen[lesion.file_name] = key_slice_path(images_root, lesion.file_name).is_file()
            if not seen[lesion.file_name]:
                png = Path(images_root) / lesion.png_relpath
                problems.append(
                    Problem(
                        str(path),
                        lesion.row_index + 2,
                        "File_name",
                        lesion.file_name,
                        f"image missing: {png}",
                    )
                )
        problems.sort(key=lambda p: p.line or 0)
    if progress:
        progress(report.rows)
    return report
