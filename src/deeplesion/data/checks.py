"""Consistency checks of parsed DL_info rows, and the :class:`Problem` they report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

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


def check_lesions(
    lesions: Sequence[Lesion], *, file: str = "", arrays: Mapping[str, np.ndarray] | None = None
) -> list[Problem]:
    """:func:`check_lesion` of every lesion, in order. The checks run vectorised first;
    only the rows they flag (a superset of those with a problem) are checked one by one,
    so the problems are exactly :func:`check_lesion`'s. ``arrays`` (field name -> one
    row per lesion), when the caller has them, saves gathering them from the records."""
    if not lesions:
        return []
    flagged = np.flatnonzero(flag_rows(arrays or lesion_arrays(lesions)))
    return [p for i in flagged.tolist() for p in check_lesion(lesions[i], file=file)]


#: Fields the vectorised checks read.
CHECKED_FIELDS = (
    "key_slice_index",
    "slice_range",
    "spacing_mm",
    "image_size",
    "box_px1",
    "recist_px1",
    "diameters_px",
    "dicom_window_hu",
    "location_norm",
    "split_code",
    "coarse_type",
)


def lesion_arrays(lesions: Sequence[Lesion]) -> dict[str, np.ndarray]:
    """The :data:`CHECKED_FIELDS` of the lesions as float64 arrays, one row per lesion."""
    return {
        name: np.array(list(map(attrgetter(name), lesions)), dtype=np.float64)
        for name in CHECKED_FIELDS
    }


def flag_rows(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows that may fail a check of :func:`check_lesion` (tolerances slightly tightened,
    so rounding never hides a problem)."""
    eps = 1e-9
    key = arrays["key_slice_index"]
    first, last = arrays["slice_range"].T
    spacing, size = arrays["spacing_mm"], arrays["image_size"]
    box, recist, diameters = arrays["box_px1"], arrays["recist_px1"], arrays["diameters_px"]
    window, location = arrays["dicom_window_hu"], arrays["location_norm"]
    xs, ys = recist[:, 0::2], recist[:, 1::2]
    tol = BOX_TOLERANCE_PX - eps
    expected = np.column_stack(
        [xs.min(1) - BOX_PADDING_PX, ys.min(1) - BOX_PADDING_PX]
        + [xs.max(1) + BOX_PADDING_PX, ys.max(1) + BOX_PADDING_PX]
    )
    rows, cols = size.T
    measured = np.column_stack(
        [
            np.hypot(recist[:, 0] - recist[:, 2], recist[:, 1] - recist[:, 3]),
            np.hypot(recist[:, 4] - recist[:, 6], recist[:, 5] - recist[:, 7]),
        ]
    )
    flags = (
        ~((first <= key) & (key <= last))
        | (spacing <= 0).any(1)
        | (size <= 0).any(1)
        | (np.abs(box - expected) > tol).any(1)  # also every box not enclosing its points
        | (xs.min(1) < 1 - BOX_TOLERANCE_PX - eps)
        | (xs.max(1) > cols + tol)
        | (ys.min(1) < 1 - BOX_TOLERANCE_PX - eps)
        | (ys.max(1) > rows + tol)
        | (np.abs(diameters - measured) > DIAMETER_TOLERANCE_PX - eps + 1e-4 * measured).any(1)
        | (diameters[:, 1] > diameters[:, 0] + DIAMETER_TOLERANCE_PX - eps)
        | (window[:, 1] <= window[:, 0])
        | ((location < 0) | (location > 1)).any(1)
        | ((arrays["split_code"] == 1) & (arrays["coarse_type"] != -1))
    )
    return flags | ~np.isfinite(measured).all(1)
