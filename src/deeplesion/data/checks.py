"""Consistency checks of one parsed DL_info row, and the :class:`Problem` they report."""

from __future__ import annotations

import math
from dataclasses import dataclass

from deeplesion.data.lesion import BOX_PADDING_PX, Lesion
from deeplesion.errors import AnnotationError

#: Tolerance (pixels) for the box vs. the padded RECIST extent, and for the diameters
#: vs. the end-point distances. DL_info stores about 6 significant digits.
BOX_TOLERANCE_PX = 0.05
DIAMETER_TOLERANCE_PX = 0.05


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``fatal`` problems make a row unusable (strict loading raises on them)."""

    file: str
    line: int | None
    column: str
    value: object
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        kind = "error" if self.fatal else "warning"
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        value = "" if self.value is None else f" value {self.value!r}:"
        return f"{where}: {kind}: column {self.column}:{value} {self.message}"

    @classmethod
    def from_error(cls, exc: AnnotationError) -> Problem:
        return cls(exc.file, exc.line, exc.column, exc.value, exc.reason, True)

    def to_error(self) -> AnnotationError:
        return AnnotationError(
            self.message, file=self.file, line=self.line, column=self.column, value=self.value
        )


def _fmt(values: tuple) -> str:
    return ", ".join(f"{v:g}" for v in values)


def check_lesion(lesion: Lesion, *, file: str = "") -> list[Problem]:
    """Consistency checks of one parsed row (no file system access)."""
    line = lesion.row_index + 2
    out: list[Problem] = []

    def add(column: str, value: object, message: str, fatal: bool = True) -> None:
        out.append(Problem(file, line, column, value, message, fatal))

    first, last = lesion.slice_range
    if not first <= lesion.key_slice_index <= last:
        add(
            "Slice_range",
            _fmt(lesion.slice_range),
            f"does not contain the key slice {lesion.key_slice_index}",
        )
    if any(s <= 0 for s in lesion.spacing_mm[:2]):
        add("Spacing_mm_px_", _fmt(lesion.spacing_mm), "in-plane spacing must be positive")
    if lesion.spacing_mm[2] <= 0:
        add("Spacing_mm_px_", _fmt(lesion.spacing_mm), "slice interval must be positive")
    if any(s <= 0 for s in lesion.image_size):
        add("Image_size", _fmt(lesion.image_size), "image size must be positive")
    x1, y1, x2, y2 = lesion.box_px1
    if x2 < x1 or y2 < y1:
        add("Bounding_boxes", _fmt(lesion.box_px1), "x2 < x1 or y2 < y1")
    xs, ys = lesion.recist_px1[0::2], lesion.recist_px1[1::2]
    tol = BOX_TOLERANCE_PX
    if min(xs) < x1 - tol or max(xs) > x2 + tol or min(ys) < y1 - tol or max(ys) > y2 + tol:
        add(
            "Bounding_boxes",
            _fmt(lesion.box_px1),
            "does not enclose the RECIST end points " + _fmt(lesion.recist_px1),
        )
    else:
        expected = (
            min(xs) - BOX_PADDING_PX,
            min(ys) - BOX_PADDING_PX,
            max(xs) + BOX_PADDING_PX,
            max(ys) + BOX_PADDING_PX,
        )
        if any(abs(a - b) > tol for a, b in zip(lesion.box_px1, expected)):
            add(
                "Bounding_boxes",
                _fmt(lesion.box_px1),
                f"is not the RECIST extent padded by {BOX_PADDING_PX:g} px "
                f"(expected {_fmt(expected)})",
                fatal=False,
            )
    rows, cols = lesion.image_size
    if min(xs) < 1 - tol or max(xs) > cols + tol or min(ys) < 1 - tol or max(ys) > rows + tol:
        add(
            "Measurement_coordinates",
            _fmt(lesion.recist_px1),
            f"end points outside the {rows}x{cols} image",
            fatal=False,
        )
    r = lesion.recist_px1
    measured = (math.dist(r[0:2], r[2:4]), math.dist(r[4:6], r[6:8]))
    for name, stated, got in zip(("long", "short"), lesion.diameters_px, measured):
        if abs(stated - got) > DIAMETER_TOLERANCE_PX + 1e-4 * got:
            add(
                "Lesion_diameters_Pixel_",
                _fmt(lesion.diameters_px),
                f"{name} diameter {stated:g} px disagrees with its end points ({got:.4g} px)",
            )
    if lesion.diameters_px[1] > lesion.diameters_px[0] + DIAMETER_TOLERANCE_PX:
        add(
            "Lesion_diameters_Pixel_",
            _fmt(lesion.diameters_px),
            "short diameter longer than the long one",
            fatal=False,
        )
    lo, hi = lesion.dicom_window_hu
    if hi <= lo:
        add("DICOM_windows", _fmt(lesion.dicom_window_hu), "max must exceed min")
    if any(not 0 <= v <= 1 for v in lesion.location_norm):
        add("Normalized_lesion_location", _fmt(lesion.location_norm), "outside [0, 1]", fatal=False)
    if lesion.split_code == 1 and lesion.coarse_type != -1:
        add(
            "Coarse_lesion_type",
            lesion.coarse_type,
            "train rows are unlabelled (-1) in the release",
            fatal=False,
        )
    return out
