"""Masks from RECIST on the key slice: the ellipse, GrabCut, and the best of several.

``grabcut`` follows the A3D/AlignShift recipe: OpenCV GrabCut (5 iterations) on the
windowed slice, the DL_info box (RECIST extent + 5 px) as probable foreground, the RECIST
quadrilateral (the four end points) as sure foreground, everything outside the box as
background; the component touching the quadrilateral is kept and its holes filled.

``best`` (after ULS23) runs GrabCut under several windows and keeps the mask whose axes,
measured as RECIST measures them, agree best with the annotated diameters (see
:func:`best_mask`); the ellipse is the fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deeplesion.data.annotations import Lesion, px1_to_index
from deeplesion.data.masks import lesion_ellipse_mask, mask_axes
from deeplesion.data.windowing import WINDOW_PRESETS
from deeplesion.errors import DeepLesionError

METHODS = ("ellipse", "grabcut", "best")
GRABCUT_ITERATIONS = 5
#: ``best`` keeps a GrabCut mask only when its axis agreement score is at most this.
BEST_MAX_SCORE = 0.2
#: GrabCut windows ``best`` tries, in tie-break order.
BEST_WINDOWS = ("dicom", "soft-tissue", "intensity")


class SegmentationError(DeepLesionError, ValueError):
    """A lesion or option that cannot be segmented (e.g. an unknown method)."""


@dataclass(frozen=True)
class KeySliceMask:
    """A key-slice mask and how it was chosen.

    ``method`` names what made it (``ellipse``, ``grabcut:dicom``, ...); ``scores`` maps
    each candidate ``best`` tried to its axis agreement score.
    """

    mask: np.ndarray
    method: str
    scores: tuple[tuple[str, float], ...] = ()


def check_method(method: str) -> str:
    if method not in METHODS:
        raise SegmentationError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    return method


def window_uint8(hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """HU -> uint8 over ``window_hu`` (clipped), the Key_slices mapping."""
    low, high = (float(v) for v in window_hu)
    scaled = (np.asarray(hu, dtype=np.float32) - low) / max(high - low, 1e-6) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def intensity_window(hu: np.ndarray, lesion: Lesion) -> tuple[float, float]:
    """HU range from the ellipse's own intensities: 5th-95th percentile, widened by half
    its width on each side (at least 20 HU wide)."""
    inside = np.asarray(hu)[lesion_ellipse_mask(lesion, hu.shape)]
    if inside.size == 0:
        return lesion.dicom_window_hu
    lo, hi = (float(v) for v in np.percentile(inside, (5, 95)))
    pad = max((hi - lo) / 2, (20 - (hi - lo)) / 2, 0.0)
    return lo - pad, hi + pad


def window_for(name: str, hu: np.ndarray, lesion: Lesion) -> tuple[float, float]:
    if name == "dicom":
        return lesion.dicom_window_hu
    if name == "intensity":
        return intensity_window(hu, lesion)
    w = WINDOW_PRESETS[name]
    return (w.low_hu, w.high_hu)


def _quadrilateral(lesion: Lesion) -> np.ndarray:
    """The RECIST end points as a convex polygon, 0-based (x, y), int32 for OpenCV."""
    p = px1_to_index(np.asarray(lesion.recist_px1, dtype=np.float64).reshape(4, 2))
    order = np.argsort(np.arctan2(*(p - p.mean(0)).T[::-1]))
    return np.rint(p[order]).astype(np.int32)


def _roi(lesion: Lesion, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Crop (x0, y0, x1, y1), end exclusive: the box with a margin of half its size."""
    x1, y1, x2, y2 = px1_to_index(lesion.box_px1).tolist()
    mx, my = max(10.0, (x2 - x1) / 2), max(10.0, (y2 - y1) / 2)
    rows, cols = shape
    return (
        max(0, math.floor(x1 - mx)),
        max(0, math.floor(y1 - my)),
        min(cols, math.ceil(x2 + mx) + 1),
        min(rows, math.ceil(y2 + my) + 1),
    )


def run_grabcut(image_u8: np.ndarray, init: np.ndarray) -> np.ndarray:
    """cv2.grabCut in mask mode on a grey image; True where (probably) foreground.

    OpenCV's random generator is reseeded first, so the same input gives the same mask.
    """
    import cv2

    cv2.setRNGSeed(0)
    labels = np.array(init, dtype=np.uint8)
    rgb = np.empty(image_u8.shape + (3,), dtype=np.uint8)
    rgb[...] = image_u8[..., None]
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    no_rect = (0, 0, 0, 0)  # unused with GC_INIT_WITH_MASK
    cv2.grabCut(rgb, labels, no_rect, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def keep_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The components of ``mask`` that overlap ``seed``, holes filled."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    keep = np.unique(labels[seed & mask])
    out = np.isin(labels, keep[keep > 0])
    return ndimage.binary_fill_holes(out)


def grabcut_mask(
    hu: np.ndarray, lesion: Lesion, window_hu: tuple[float, float] | None = None
) -> np.ndarray:
    """GrabCut mask of one lesion on its key slice (bool, the slice's shape)."""
    import cv2

    hu = np.asarray(hu)
    window_hu = window_hu or lesion.dicom_window_hu
    x0, y0, x1, y1 = _roi(lesion, hu.shape)
    init = np.full((y1 - y0, x1 - x0), cv2.GC_BGD, dtype=np.uint8)
    bx1, by1, bx2, by2 = px1_to_index(lesion.box_px1).tolist()
    r0, r1 = max(0, round(by1) - y0), min(y1 - y0, round(by2) - y0 + 1)
    c0, c1 = max(0, round(bx1) - x0), min(x1 - x0, round(bx2) - x0 + 1)
    init[r0:r1, c0:c1] = cv2.GC_PR_FGD
    sure = np.zeros_like(init)
    cv2.fillPoly(sure, [_quadrilateral(lesion) - np.array([x0, y0], dtype=np.int32)], 1)
    init[sure > 0] = cv2.GC_FGD
    fg = run_grabcut(window_uint8(hu[y0:y1, x0:x1], window_hu), init)
    fg = keep_touching(fg, sure > 0)
    out = np.zeros(hu.shape, dtype=bool)
    out[y0:y1, x0:x1] = fg
    return out


def axis_score(mask: np.ndarray, lesion: Lesion) -> float:
    """Mean relative error of the mask's long and short axes against the RECIST ones
    (inf for an empty mask)."""
    sx, sy = lesion.spacing_mm[0], lesion.spacing_mm[1]
    axes = mask_axes(mask, (sy, sx))
    if axes is None:
        return math.inf
    long_ref, short_ref = lesion.long_diameter_mm, lesion.short_diameter_mm
    return (
        abs(axes.long_mm - long_ref) / max(long_ref, 1e-6)
        + abs(axes.short_mm - short_ref) / max(short_ref, 1e-6)
    ) / 2


def choose_best(
    candidates: list[tuple[str, np.ndarray]], lesion: Lesion, shape: tuple[int, int]
) -> KeySliceMask:
    """The candidate with the lowest :func:`axis_score` if it is at most
    :data:`BEST_MAX_SCORE`, else the RECIST ellipse. Ties (scores within 1e-9) go to the
    candidate listed first."""
    scores = []
    best: tuple[float, str, np.ndarray] | None = None
    for name, mask in candidates:
        score = axis_score(mask, lesion)
        scores.append((name, score))
        if best is None or score < best[0] - 1e-9:
            best = (score, name, mask)
    if best is not None and best[0] <= BEST_MAX_SCORE:
        return KeySliceMask(best[2], best[1], tuple(scores))
    return KeySliceMask(lesion_ellipse_mask(lesion, shape), "ellipse", tuple(scores))


def best_mask(hu: np.ndarray, lesion: Lesion) -> KeySliceMask:
    """GrabCut under each of :data:`BEST_WINDOWS`, then :func:`choose_best`."""
    candidates = [
        (f"grabcut:{name}", grabcut_mask(hu, lesion, window_for(name, hu, lesion)))
        for name in BEST_WINDOWS
    ]
    return choose_best(candidates, lesion, hu.shape)


def key_slice_mask(hu: np.ndarray, lesion: Lesion, method: str) -> KeySliceMask:
    """One lesion's key-slice mask by ``method`` (one of :data:`METHODS`)."""
    check_method(method)
    if method == "ellipse":
        return KeySliceMask(lesion_ellipse_mask(lesion, hu.shape), "ellipse")
    if method == "grabcut":
        return KeySliceMask(grabcut_mask(hu, lesion), "grabcut:dicom")
    return best_mask(hu, lesion)
