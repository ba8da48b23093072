"""Lesion mask geometry: the RECIST ellipse, a mask's RECIST-style axes, overlap scores.

Masks are bool arrays indexed ``[row, col]`` (2-D) or ``[slice, row, col]`` (3-D).
Spacing tuples follow the array axes here: ``(row_mm, col_mm)`` = (spacing y, spacing x)
and ``(slice_mm, row_mm, col_mm)``. scipy and scikit-image (the ``[seg]`` extra) are
imported inside the functions that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deeplesion.data.annotations import Lesion, px1_to_index


def recist_mask(recist_xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Weak mask from RECIST axes: four quarter-ellipses joining the 4 end points.

    ``recist_xy`` is (4, 2): long1, long2, short1, short2 in 0-based image coordinates
    (x = column). Centred where the two axes cross; when they bisect each other this is
    exactly the ellipse with the two diameters as its axes. Returns a bool ``(rows, cols)``
    mask of the pixels whose centres lie inside.
    """
    p = np.asarray(recist_xy, dtype=np.float64).reshape(4, 2)
    d1, d2 = p[1] - p[0], p[3] - p[2]
    a = np.array([d1, -d2]).T
    try:
        t = np.linalg.solve(a, p[2] - p[0])
        centre = p[0] + t[0] * d1
    except np.linalg.LinAlgError:
        centre = p.mean(0)
    rows, cols = size
    mask = np.zeros((rows, cols), dtype=bool)
    # a rotated ellipse reaches beyond its axes' end points: bound it by its circumcircle
    radius = float(np.linalg.norm(p - centre, axis=1).max())
    lo = np.floor(centre - radius).astype(int)
    hi = np.ceil(centre + radius).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], cols - 1), min(hi[1], rows - 1)
    if x1 < x0 or y1 < y0:
        return mask
    v, u = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    rel = np.stack([u - centre[0], v - centre[1]], -1)
    inside = np.zeros(u.shape, dtype=bool)
    for end_a in (p[0], p[1]):
        for end_b in (p[2], p[3]):
            basis = np.array([end_a - centre, end_b - centre]).T
            if abs(np.linalg.det(basis)) < 1e-9:
                continue
            coef = rel @ np.linalg.inv(basis).T
            inside |= ((coef >= -1e-9).all(-1)) & ((coef**2).sum(-1) <= 1 + 1e-9)
    mask[y0 : y1 + 1, x0 : x1 + 1] = inside
    return mask


def lesion_ellipse_mask(lesion: Lesion, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The RECIST ellipse (:func:`recist_mask`) of a DL_info row on its key slice."""
    xy_px0 = px1_to_index(np.asarray(lesion.recist_px1, dtype=np.float64).reshape(4, 2))
    return recist_mask(xy_px0, shape or lesion.image_size)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected (26 in 3-D) component of a mask (empty stays empty)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


# --------------------------------------------------------------------------- axes


@dataclass(frozen=True, slots=True)
class MaskAxes:
    """A mask's RECIST-style diameters (largest component, boundary at the pixel edges).

    End points are 0-based (x = column, y = row) image coordinates.
    """

    long_mm: float
    short_mm: float
    long_end_points_px0: tuple[float, float, float, float]
    short_end_points_px0: tuple[float, float, float, float]
    area_mm2: float


def _boundary_mm(mask: np.ndarray, spacing_rc_mm: tuple[float, float]) -> np.ndarray:
    """Closed outer contour of a 2-D mask, (n, 2) points (x_mm, y_mm) on the 0.5 level."""
    from skimage import measure

    padded = np.pad(mask.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    contour = max(contours, key=len) - 1.0  # (row, col), undo the padding
    return np.stack([contour[:, 1] * spacing_rc_mm[1], contour[:, 0] * spacing_rc_mm[0]], 1)


def _longest_chord(points: np.ndarray) -> tuple[int, int, float]:
    from scipy.spatial import ConvexHull, QhullError

    try:
        idx = ConvexHull(points).vertices
    except (QhullError, ValueError):
        idx = np.arange(len(points))
    hull = points[idx]
    d = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(idx[i]), int(idx[j]), float(d[i, j])


def _perpendicular_chord(
    polygon: np.ndarray, a: np.ndarray, b: np.ndarray, step_mm: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Longest segment inside the polygon that is perpendicular to a-b."""
    u_dir = (b - a) / np.linalg.norm(b - a)
    v_dir = np.array([-u_dir[1], u_dir[0]])
    rel = polygon - a
    u, v = rel @ u_dir, rel @ v_dir
    u1, v1, u2, v2 = u, v, np.roll(u, -1), np.roll(v, -1)
    best = (0.0, 0.0, 0.0, 0.0)  # length, u, v_low, v_high
    for c in np.arange(u.min() + step_mm / 2, u.max(), step_mm):
        crossing = ((u1 <= c) & (c < u2)) | ((u2 <= c) & (c < u1))
        if not crossing.any():
            continue
        t = (c - u1[crossing]) / (u2[crossing] - u1[crossing])
        vs = np.sort(v1[crossing] + t * (v2[crossing] - v1[crossing]))
        lengths = vs[1::2] - vs[0::2][: len(vs) // 2]  # inside runs between crossings
        if lengths.size and lengths.max() > best[0]:
            k = int(np.argmax(lengths))
            best = (float(lengths[k]), float(c), float(vs[2 * k]), float(vs[2 * k + 1]))
    length, c, lo, hi = best
    return a + c * u_dir + lo * v_dir, a + c * u_dir + hi * v_dir, length


def mask_axes(
    mask: np.ndarray, spacing_rc_mm: tuple[float, float], *, step_mm: float | None = None
) -> MaskAxes | None:
    """Long and short axes of a 2-D mask measured as RECIST does; None for an empty mask.

    The largest component's outer boundary (the 0.5 level between inside and outside pixel
    centres, so a disk of D pixels measures about D pixels): long axis = its longest chord,
    short axis = the longest chord inside it perpendicular to the long axis, found on lines
    ``step_mm`` apart (default a quarter pixel).
    """
    mask = largest_component(np.asarray(mask, dtype=bool))
    if not mask.any():
        return None
    sy, sx = (float(v) for v in spacing_rc_mm)
    step = step_mm if step_mm is not None else min(sx, sy) / 4
    polygon = _boundary_mm(mask, (sy, sx))
    i, j, long_mm = _longest_chord(polygon)
    a, b = polygon[i], polygon[j]
    p, q, short_mm = _perpendicular_chord(polygon, a, b, step)
    to_px = np.array([sx, sy])
    ends_long = np.concatenate([a / to_px, b / to_px])
    ends_short = np.concatenate([p / to_px, q / to_px])
    return MaskAxes(
        long_mm,
        short_mm,
        tuple(float(v) for v in ends_long),  # type: ignore[arg-type]
        tuple(float(v) for v in ends_short),  # type: ignore[arg-type]
        float(mask.sum()) * sx * sy,
    )


# --------------------------------------------------------------------------- overlap


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|); 1 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """|A∩B| / |A∪B|; 1 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95_mm(a: np.ndarray, b: np.ndarray, spacing_mm: tuple[float, ...]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the masks' surfaces.

    Surface = mask pixels with a face neighbour outside. The 95th percentile of the
    distances from A's surface to B's surface and from B's to A's, the larger of the two
    (MONAI's ``compute_hausdorff_distance(percentile=95)``). NaN when a mask is empty.
    """
    from scipy import ndimage

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        return math.nan
    sa, sb = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing_mm)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing_mm)
    return float(max(np.percentile(to_b[sa], 95), np.percentile(to_a[sb], 95)))
