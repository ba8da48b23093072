"""3-D masks: the key-slice mask propagated slice by slice (after Cai et al., MICCAI 2018).

Going up and then down from the key slice, each slice is segmented with GrabCut seeded by
the previous slice's mask: that mask is probable foreground, a ring around it (width
max(3 px, 30 % of its equivalent radius)) probable background, the rest background; the
slice is windowed to the key mask's own intensities (:func:`intensity_window` of the
key-slice mask). The component overlapping the previous mask is kept, holes filled.

Stopping rule, per direction (the slice that triggers it is not kept):

- ``range``: the next slice is outside the sub-volume, or farther from the key slice than
  :data:`MAX_EXTENT_OF_LONG` x the long diameter (mm);
- ``vanished``: the mask is empty or smaller than :data:`MIN_AREA_FRACTION` of the key
  slice's mask (or than 4 pixels);
- ``intensity``: its mean HU differs from the key mask's by more than
  max(2 standard deviations of the key mask, 20 HU);
- ``leak``: it is more than :data:`MAX_GROWTH` times the previous slice's area;
- ``moved``: less than half of it overlaps the previous slice's mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deeplesion.data.annotations import Lesion
from deeplesion.segmentation.keyslice import keep_touching, run_grabcut, window_uint8

MAX_EXTENT_OF_LONG = 0.75
MIN_AREA_FRACTION = 0.05
MAX_GROWTH = 1.5


@dataclass(frozen=True)
class Propagation:
    """``masks``: slice number -> bool mask (key slice included); ``stopped``: the rule
    that ended each direction (``up`` = decreasing slice numbers, ``down`` = increasing)."""

    masks: dict[int, np.ndarray]
    stopped: dict[str, str]

    @property
    def first_slice(self) -> int:
        return min(self.masks)

    @property
    def last_slice(self) -> int:
        return max(self.masks)


def _ring_width(mask: np.ndarray) -> int:
    return max(3, round(0.3 * math.sqrt(mask.sum() / math.pi)))


def _segment_next(hu: np.ndarray, prev: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    import cv2
    from scipy import ndimage

    r = _ring_width(prev)
    rows = np.flatnonzero(prev.any(1))
    cols = np.flatnonzero(prev.any(0))
    pad = 2 * r + 5
    y0, y1 = max(0, rows[0] - pad), min(hu.shape[0], rows[-1] + pad + 1)
    x0, x1 = max(0, cols[0] - pad), min(hu.shape[1], cols[-1] + pad + 1)
    p = prev[y0:y1, x0:x1]
    ring = ndimage.binary_dilation(p, structure=np.ones((3, 3)), iterations=r)
    init = np.full(p.shape, cv2.GC_BGD, dtype=np.uint8)
    init[ring] = cv2.GC_PR_BGD
    init[p] = cv2.GC_PR_FGD
    fg = run_grabcut(window_uint8(hu[y0:y1, x0:x1], window_hu), init)
    fg = keep_touching(fg, p)
    out = np.zeros(hu.shape, dtype=bool)
    out[y0:y1, x0:x1] = fg
    return out


def _stop_reason(
    mask: np.ndarray, prev: np.ndarray, hu: np.ndarray, key_area: int, mu: float, limit: float
) -> str | None:
    area = int(mask.sum())
    if area < max(4, MIN_AREA_FRACTION * key_area):
        return "vanished"
    if abs(float(hu[mask].mean()) - mu) > limit:
        return "intensity"
    if area > MAX_GROWTH * int(prev.sum()):
        return "leak"
    if int((mask & prev).sum()) < 0.5 * area:
        return "moved"
    return None


def propagate(
    read_slice: Callable[[int], np.ndarray],
    key_hu: np.ndarray,
    key_mask: np.ndarray,
    lesion: Lesion,
    first_slice: int,
    last_slice: int,
) -> Propagation:
    """Grow ``key_mask`` into the slices ``first_slice..last_slice`` (the sub-volume).

    ``read_slice(n)`` returns slice ``n`` as HU ``[row, col]``. Slices are read only
    while the propagation goes on.
    """
    key = lesion.key_slice_index
    masks = {key: key_mask}
    stopped: dict[str, str] = {}
    if not key_mask.any():
        return Propagation(masks, {"up": "vanished", "down": "vanished"})
    values = np.asarray(key_hu)[key_mask].astype(np.float64)
    mu, sd = float(values.mean()), float(values.std())
    lo, hi = (float(v) for v in np.percentile(values, (5, 95)))
    pad = max((hi - lo) / 2, (20 - (hi - lo)) / 2, 0.0)
    window = (lo - pad, hi + pad)
    limit = max(2 * sd, 20.0)
    max_steps = math.floor(MAX_EXTENT_OF_LONG * lesion.long_diameter_mm / lesion.slice_interval_mm)
    key_area = int(key_mask.sum())
    for name, step in (("up", -1), ("down", 1)):
        prev = key_mask
        n = key
        while True:
            n += step
            if not first_slice <= n <= last_slice or abs(n - key) > max_steps:
                stopped[name] = "range"
                break
            hu = read_slice(n)
            mask = _segment_next(hu, prev, window)
            reason = _stop_reason(mask, prev, hu, key_area, mu, limit)
            if reason:
                stopped[name] = reason
                break
            masks[n] = mask
            prev = mask
    return Propagation(dict(sorted(masks.items())), stopped)
