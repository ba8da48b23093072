"""Array operations of the preprocessing: body crop, bilinear resize, affine warp, window.

All work on float32 ``(..., rows, cols)`` arrays in 0-based pixel coordinates (pixel
centres at integers); :func:`recist_mask` draws the weak lesion mask from RECIST axes.
"""

from __future__ import annotations

import numpy as np

from deeplesion.data.masks import recist_mask  # noqa: F401  (re-exported: the weak RECIST mask)


def _run_any(mask: np.ndarray, size: int, axis: int) -> np.ndarray:
    """True where any element of the centred window of ``size`` is True (outside = False)."""
    half = size // 2
    m = np.moveaxis(mask, axis, 0).astype(np.int32)
    padded = np.concatenate(
        [
            np.zeros((half + 1,) + m.shape[1:], np.int32),
            m,
            np.zeros((size - 1 - half,) + m.shape[1:], np.int32),
        ]
    )
    csum = np.cumsum(padded, axis=0)
    counts = csum[size:] - csum[:-size]
    return np.moveaxis(counts > 0, 0, axis)


def binary_opening(mask: np.ndarray, size: int = 7) -> np.ndarray:
    """Opening with a ``size`` x ``size`` square; pixels outside the image count as False
    (the default of ``scipy.ndimage.binary_opening``)."""
    mask = np.asarray(mask, dtype=bool)
    if size <= 1:
        return mask.copy()
    eroded = _erode(mask, size)
    return _run_any(_run_any(eroded, size, 0), size, 1)


def _erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Erosion with a square: all elements of the centred window True (outside = False)."""
    out = mask
    for axis in (0, 1):
        half = size // 2
        m = np.moveaxis(out, axis, 0).astype(np.int32)
        padded = np.concatenate(
            [
                np.zeros((half + 1,) + m.shape[1:], np.int32),
                m,
                np.zeros((size - 1 - half,) + m.shape[1:], np.int32),
            ]
        )
        csum = np.cumsum(padded, axis=0)
        out = np.moveaxis((csum[size:] - csum[:-size]) == size, 0, axis)
    return out


def body_bbox(
    raw_png: np.ndarray, threshold: int = 32000, opening_px: int = 7
) -> tuple[int, int, int, int] | None:
    """Inclusive (x0, y0, x1, y1) of the opened body mask; None when the mask is empty."""
    mask = binary_opening(np.asarray(raw_png) > threshold, opening_px)
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def resize_bilinear(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``(..., rows, cols)`` by ``scale``; output ``round(n * scale)``, input sampled
    at ``(u + 0.5) / scale - 0.5`` clamped to the edge (OpenCV INTER_LINEAR with fx=fy)."""
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape[-2:]
    out_r, out_c = max(1, int(np.rint(rows * scale))), max(1, int(np.rint(cols * scale)))

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) / scale - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    r0, r1, wr = axis(rows, out_r)
    c0, c1, wc = axis(cols, out_c)
    top = image[..., r0, :] * (1 - wr)[:, None] + image[..., r1, :] * wr[:, None]
    return top[..., c0] * (1 - wc) + top[..., c1] * wc


def warp_affine(
    image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], fill: float
) -> np.ndarray:
    """Bilinear warp of ``(..., rows, cols)``: output (u, v) samples the input at
    ``inverse(matrix) @ (u, v)``; outside the input = ``fill``."""
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    inv = np.linalg.inv(m)
    rows, cols = size
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float64)
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    in_r, in_c = image.shape[-2:]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    wx, wy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    out = np.zeros(image.shape[:-2] + (rows, cols), dtype=np.float32)
    for dy, fy in ((0, 1 - wy), (1, wy)):
        for dx, fx in ((0, 1 - wx), (1, wx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < in_r) & (xx >= 0) & (xx < in_c)
            vals = image[..., np.clip(yy, 0, in_r - 1), np.clip(xx, 0, in_c - 1)]
            out += np.where(ok, vals, np.float32(fill)) * (fx * fy)
    return out


def window_float(hu: np.ndarray, window_hu: tuple[float, float], offset: float = 0.0) -> np.ndarray:
    """HU -> float32 ``clip((hu - low) / (high - low), 0, 1) * 255 - offset``."""
    low, high = window_hu
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    np.clip(out, 0, 1, out=out)
    out *= np.float32(255.0)
    if offset:
        out -= np.float32(offset)
    return out
