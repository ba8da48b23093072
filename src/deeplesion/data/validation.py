"""Validation of DL_info.csv: every problem, with file, line, column and value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import read_dl_info
from deeplesion.data.checks import Problem, check_lesion
from deeplesion.data.paths import key_slice_path
from deeplesion.data.slices import check_png_header, read_png_header
from deeplesion.errors import ImageReadError

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
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Check every row of a DL_info.csv; with ``images_root``, also each key slice
    (release layout, or a flat folder of key slices named by ``File_name``): a PNG that is
    there must be a 16-bit grayscale slice of the row's ``Image_size`` (read from its
    header, without decoding). Absent PNGs (a partial root) are counted in
    ``key_slices_absent``, not reported one by one.

    ``progress(done, total)`` is called with the rows checked so far and the row count:
    every 1000 rows while images are looked for, and once at the end.
    """
    path = Path(path)
    rows, lesions, problems = read_dl_info(path)
    report = ValidationReport(str(path), rows, problems)
    if images_root is not None:
        seen: set[str] = set()
        for done, lesion in enumerate(lesions, start=1):
            if progress and done % 1000 == 0:
                progress(done, len(lesions))
            if lesion.file_name in seen:
                continue
            seen.add(lesion.file_name)
            png = key_slice_path(images_root, lesion.file_name)
            report.key_slices += 1
            if not png.is_file():
                report.key_slices_absent += 1
                continue
            try:
                check_png_header(read_png_header(png), png, lesion.image_size)
            except ImageReadError as exc:
                problems.append(
                    Problem(
                        str(path), lesion.row_index + 2, "File_name", lesion.file_name, str(exc)
                    )
                )
        problems.sort(key=lambda p: p.line or 0)
    if progress:
        progress(report.rows, report.rows)
    return report
