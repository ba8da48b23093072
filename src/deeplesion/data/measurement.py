"""RECIST measurements in millimetres, the fitted ellipse, and distances between lesions.

End points are DL_info 1-based pixels (``_px1``); x is the column (spacing x), y the row
(spacing y). Lengths are computed from the end points with x and y spacing applied
separately, so they stay right for non-square pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deeplesion.data.annotations import Lesion
from deeplesion.errors import DeepLesionError

#: Head-to-feet length (mm) assumed when a normalised z difference is turned into mm.
BODY_LENGTH_MM = 1700.0


class MeasurementError(DeepLesionError, ValueError):
    """Two lesions that cannot be compared (e.g. of different patients)."""


def axis_length_mm(
    x1_px1: float,
    y1_px1: float,
    x2_px1: float,
    y2_px1: float,
    spacing_x_mm: float,
    spacing_y_mm: float,
) -> float:
    """Length in mm of the segment between two pixel points (x, y spacing separately).

    Example:

        >>> axis_length_mm(10, 10, 13, 14, 0.5, 0.5)  # a 3-4-5 triangle at 0.5 mm per pixel
        2.5
        >>> axis_length_mm(10, 10, 13, 14, 1.0, 0.5)  # hypot(3 * 1.0, 4 * 0.5)
        3.605551275463989
    """
    return math.hypot((x2_px1 - x1_px1) * spacing_x_mm, (y2_px1 - y1_px1) * spacing_y_mm)


def axis_length_px(x1_px1: float, y1_px1: float, x2_px1: float, y2_px1: float) -> float:
    return math.hypot(x2_px1 - x1_px1, y2_px1 - y1_px1)


@dataclass(frozen=True, slots=True)
class Ellipse:
    """The ellipse fitted to the RECIST axes: centre = mean of the four end points,
    semi-axes = half the diameters, major axis along the long diameter."""

    center_px1: tuple[float, float]
    semi_long_px: float
    semi_short_px: float
    angle_deg: float  #: angle of the long axis from the +x (column) direction, y downward
    area_mm2: float


@dataclass(frozen=True, slots=True)
class Measurement:
    """One lesion's RECIST measurement."""

    row_index: int
    long_mm: float
    short_mm: float
    long_px: float  #: from the end points
    short_px: float
    long_px_reported: float  #: Lesion_diameters_Pixel_
    short_px_reported: float
    axes_angle_deg: float  #: angle between the long and short axes (90 = perpendicular)
    ellipse: Ellipse

    @property
    def discrepancy_px(self) -> float:
        """Largest difference between end-point lengths and the reported pixel diameters."""
        return max(
            abs(self.long_px - self.long_px_reported), abs(self.short_px - self.short_px_reported)
        )

    @property
    def area_mm2(self) -> float:
        return self.ellipse.area_mm2


def fitted_ellipse(lesion: Lesion) -> Ellipse:
    """The ellipse spanned by the RECIST axes; its area is pi/4 x long_mm x short_mm."""
    x11, y11, x12, y12, x21, y21, x22, y22 = lesion.recist_px1
    sx, sy = lesion.spacing_mm[0], lesion.spacing_mm[1]
    cx = (x11 + x12 + x21 + x22) / 4
    cy = (y11 + y12 + y21 + y22) / 4
    long_mm = axis_length_mm(x11, y11, x12, y12, sx, sy)
    short_mm = axis_length_mm(x21, y21, x22, y22, sx, sy)
    return Ellipse(
        center_px1=(cx, cy),
        semi_long_px=axis_length_px(x11, y11, x12, y12) / 2,
        semi_short_px=axis_length_px(x21, y21, x22, y22) / 2,
        angle_deg=math.degrees(math.atan2(y12 - y11, x12 - x11)),
        area_mm2=math.pi / 4 * long_mm * short_mm,
    )


def measure(lesion: Lesion) -> Measurement:
    """Diameters in mm and pixels from the end points, the reported diameters, the ellipse."""
    x11, y11, x12, y12, x21, y21, x22, y22 = lesion.recist_px1
    sx, sy = lesion.spacing_mm[0], lesion.spacing_mm[1]
    a = (x12 - x11, y12 - y11)
    b = (x22 - x21, y22 - y21)
    na, nb = math.hypot(*a), math.hypot(*b)
    if na > 0 and nb > 0:
        cos = max(-1.0, min(1.0, (a[0] * b[0] + a[1] * b[1]) / (na * nb)))
        angle = math.degrees(math.acos(abs(cos)))
    else:
        angle = float("nan")
    return Measurement(
        row_index=lesion.row_index,
        long_mm=axis_length_mm(x11, y11, x12, y12, sx, sy),
        short_mm=axis_length_mm(x21, y21, x22, y22, sx, sy),
        long_px=na,
        short_px=nb,
        long_px_reported=lesion.diameters_px[0],
        short_px_reported=lesion.diameters_px[1],
        axes_angle_deg=angle,
        ellipse=fitted_ellipse(lesion),
    )


@dataclass(frozen=True, slots=True)
class LesionDistance:
    """Distance between two lesions of one patient.

    ``method`` is ``"series"`` (same series: in-plane mm from the centres plus z from the
    slice numbers x slice interval, exact up to the annotation) or ``"normalised"``
    (different series: from the normalised locations, approximate; see
    :func:`lesion_distance`).
    """

    mm: float
    method: str
    dx_mm: float
    dy_mm: float
    dz_mm: float


def lesion_distance(
    a: Lesion, b: Lesion, *, body_length_mm: float = BODY_LENGTH_MM
) -> LesionDistance:
    """Physical distance (mm) between the centres of two lesions of the same patient.

    Same series: centres (mean of the RECIST end points) in pixels x spacing, and
    (key slice a - key slice b) x slice interval for z. Other series (another study or
    reconstruction, where the patient has moved): the normalised locations are used,
    assuming x and y are fractions of the image (scaled by each image's field of view,
    cols x spacing x and rows x spacing y, averaged over the two) and z is a fraction of a
    ``body_length_mm`` body (the release's z comes from a body-part regressor and is only
    approximate). Raises :class:`MeasurementError` for different patients.
    """
    if a.patient_index != b.patient_index:
        raise MeasurementError(
            f"lesions {a.file_name} (row {a.row_index}) and {b.file_name} "
            f"(row {b.row_index}) belong to different patients"
        )
    same_series = (a.study_index, a.series_id) == (b.study_index, b.series_id)
    if same_series:
        (ax, ay), (bx, by) = fitted_ellipse(a).center_px1, fitted_ellipse(b).center_px1
        dx = (ax - bx) * a.spacing_mm[0]
        dy = (ay - by) * a.spacing_mm[1]
        dz = (a.key_slice_index - b.key_slice_index) * a.slice_interval_mm
        method = "series"
    else:
        fov_x = (a.image_size[1] * a.spacing_mm[0] + b.image_size[1] * b.spacing_mm[0]) / 2
        fov_y = (a.image_size[0] * a.spacing_mm[1] + b.image_size[0] * b.spacing_mm[1]) / 2
        dx = (a.location_norm[0] - b.location_norm[0]) * fov_x
        dy = (a.location_norm[1] - b.location_norm[1]) * fov_y
        dz = (a.location_norm[2] - b.location_norm[2]) * body_length_mm
        method = "normalised"
    return LesionDistance(math.sqrt(dx * dx + dy * dy + dz * dz), method, dx, dy, dz)
