"""Array operations of the preprocessing: body crop, bilinear resize, affine warp, window.

All work in 0-based pixel coordinates (pixel centres at integers) through OpenCV. Images
are float32 ``(..., rows, cols)``; every leading index is processed as one 2-D plane.
:func:`recist_mask` draws the weak lesion mask from RECIST axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from deeplesion.data.masks import recist_mask  # noqa: F401  (re-exported: the weak RECIST mask)


def _planes(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 ``(n, rows, cols)`` (a view when it already is one)."""
    image = np.asarray(image, dtype=np.float32)
    return image.reshape((-1,) + image.shape[-2:])


def binary_opening(mask: np.ndarray, size: int = 7) -> np.ndarray:
    """Opening with a ``size`` x ``size`` square; pixels outside the image count as False
    (the default of ``scipy.ndimage.binary_opening``)."""
    mask = np.asarray(mask, dtype=bool)
    if size <= 1:
        return mask.copy()
    square = np.ones((size, size), np.uint8)
    centre, reflected = size // 2, size - 1 - size // 2  # differ for even sizes
    eroded = cv2.erode(
        mask.view(np.uint8),
        square,
        anchor=(centre, centre),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    opened = cv2.dilate(
        eroded, square, anchor=(reflected, reflected), borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    return opened.view(bool)


def body_bbox(
    raw_png: np.ndarray, threshold: int = 32000, opening_px: int = 7
) -> tuple[int, int, int, int] | None:
    """Inclusive (x0, y0, x1, y1) of the opened body mask; None when the mask is empty."""
    mask = binary_opening(np.asarray(raw_png) > threshold, opening_px)
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0 or h == 0:
        return None
    return x, y, x + w - 1, y + h - 1


def resized_size(shape: Sequence[int], scale: float) -> tuple[int, int]:
    """Rows, cols after :func:`resize_bilinear`: ``round(n * scale)`` (half to even), >= 1."""
    rows, cols = shape[-2:]
    return max(1, int(np.rint(rows * scale))), max(1, int(np.rint(cols * scale)))


def resize_bilinear(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``(..., rows, cols)`` by ``scale``; output ``round(n * scale)``, input sampled
    at ``(u + 0.5) / scale - 0.5`` clamped to the edge (OpenCV INTER_LINEAR with fx=fy)."""
    planes = _planes(image)
    out_r, out_c = resized_size(planes.shape, scale)
    out = np.empty((len(planes), out_r, out_c), dtype=np.float32)
    if min(np.rint(np.multiply(planes.shape[-2:], scale))) >= 1:
        # dsize (0, 0): OpenCV samples at (u + 0.5) / scale - 0.5 and sizes round(n * scale)
        for src, dst in zip(planes, out):
            cv2.resize(src, (0, 0), dst=dst, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        return out.reshape(np.shape(image)[:-2] + (out_r, out_c))
    # a side would round to 0 pixels: an explicit dsize would change the grid, so warp
    shift = 0.5 * scale - 0.5
    matrix = np.array([[scale, 0.0, shift], [0.0, scale, shift]])
    for src, dst in zip(planes, out):
        cv2.warpAffine(
            src,
            matrix,
            (out_c, out_r),
            dst=dst,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return out.reshape(np.shape(image)[:-2] + (out_r, out_c))


def warp_affine(
    image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], fill: float
) -> np.ndarray:
    """Bilinear warp of ``(..., rows, cols)``: output (u, v) samples the input at
    ``inverse(matrix) @ (u, v)``; taps outside the input = ``fill``."""
    planes = _planes(image)
    rows, cols = size
    m = np.asarray(matrix, dtype=np.float64)
    out = np.empty((len(planes), rows, cols), dtype=np.float32)
    for src, dst in zip(planes, out):
        cv2.warpAffine(
            src,
            m,
            (cols, rows),
            dst=dst,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(fill),
        )
    return out.reshape(np.shape(image)[:-2] + (rows, cols))


def window_float(hu: np.ndarray, window_hu: tuple[float, float], offset: float = 0.0) -> np.ndarray:
    """HU -> float32 ``clip((hu - low) / (high - low), 0, 1) * 255 - offset``."""
    low, high = window_hu
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    np.clip(out, 0, 1, out=out)
    out *= np.float32(255.0)
    if offset:
        out -= np.float32(offset)
    return out


def blend_window(
    planes: Sequence[tuple[np.ndarray, float]],
    hu_offset: float,
    window_hu: tuple[float, float],
    offset: float,
    out: np.ndarray,
) -> np.ndarray:
    """``window_float(sum(w * raw) - hu_offset)`` of raw (e.g. uint16 PNG) planes, written
    into float32 ``out`` in one pass per pair of planes (scale and shift folded together)."""
    low, high = window_hu
    gain = 255.0 / (high - low)  # 0..255 per HU
    shift = -(hu_offset + low) * gain - offset
    first, w0 = planes[0]
    if len(planes) == 1:
        cv2.addWeighted(first, w0 * gain, first, 0.0, shift, dst=out, dtype=cv2.CV_32F)
    else:
        second, w1 = planes[1]
        cv2.addWeighted(first, w0 * gain, second, w1 * gain, shift, dst=out, dtype=cv2.CV_32F)
        for extra, w in planes[2:]:
            cv2.scaleAdd(np.asarray(extra, np.float32), w * gain, out, dst=out)
    return np.clip(out, -offset, 255.0 - offset, out=out)
