"""Lesion patches from key slices: HU patches, windowed crops and strips of crops."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .annotations import Lesion
from .errors import ImageReadError
from .io import save_figure
from .measurement import fitted_ellipse
from .paths import slice_path
from .slices import read_hu
from .windowing import Window, apply_window


def key_slice_path(root: str | Path, lesion: Lesion) -> Path:
    return slice_path(root, lesion.series_folder, lesion.key_slice_index)


def hu_patch(hu: np.ndarray, lesion: Lesion, *, scale: float = 2.0, min_side_px: int = 24,
             side_mm: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Square HU patch centred on the lesion, side ``scale`` x long diameter (pixels), or
    ``side_mm`` millimetres (x spacing) when given.

    Returns the patch (padded with -1024 HU outside the image) and the 0-based
    (row, col) index of its top-left corner in the slice.
    """
    e = fitted_ellipse(lesion)
    cx_index, cy_index = e.center_px1[0] - 1.0, e.center_px1[1] - 1.0  # px1 -> 0-based
    side_px = side_mm / lesion.spacing_mm[0] if side_mm else 2 * e.semi_long_px * scale
    side = int(max(min_side_px, round(side_px)))
    r0 = int(round(cy_index - side / 2))
    c0 = int(round(cx_index - side / 2))
    out = np.full((side, side), -1024, dtype=np.int16)
    rows, cols = hu.shape
    rs, cs = max(0, r0), max(0, c0)
    re, ce = min(rows, r0 + side), min(cols, c0 + side)
    if re > rs and ce > cs:
        out[rs - r0:re - r0, cs - c0:ce - c0] = hu[rs:re, cs:ce]
    return out, (r0, c0)


def ellipse_mask(shape: tuple[int, int], lesion: Lesion, origin_index: tuple[int, int] = (0, 0),
                 grow: float = 1.0) -> np.ndarray:
    """Boolean mask of the fitted ellipse (semi-axes x ``grow``) on an array whose
    top-left pixel is the slice's 0-based (row, col) ``origin_index``."""
    e = fitted_ellipse(lesion)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    x_px1 = cols + origin_index[1] + 1.0
    y_px1 = rows + origin_index[0] + 1.0
    t = np.radians(e.angle_deg)
    dx, dy = x_px1 - e.center_px1[0], y_px1 - e.center_px1[1]
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    a = max(e.semi_long_px * grow, 0.5)
    b = max(e.semi_short_px * grow, 0.5)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def lesion_crop(root: str | Path, lesion: Lesion, *, out_px: int = 128, scale: float = 2.5,
                side_mm: float | None = None, window: Window | None = None) -> np.ndarray:
    """Windowed uint8 crop (``out_px`` square) of the lesion's key slice; side ``scale`` x
    long diameter, or ``side_mm`` (a fixed field of view, so sizes compare across crops).

    ``window`` defaults to the row's DICOM window. Raises :class:`ImageReadError`.
    """
    from PIL import Image

    hu = read_hu(key_slice_path(root, lesion))
    patch, _ = hu_patch(hu, lesion, scale=scale, side_mm=side_mm)
    win = window or Window(*lesion.dicom_window_hu)
    img = Image.fromarray(apply_window(patch, win)).resize((out_px, out_px),
                                                             Image.Resampling.BILINEAR)
    return np.asarray(img)


def write_strip(crops: Sequence[np.ndarray | None], titles: Sequence[str], path: str | Path,
                *, suptitle: str = "") -> Path:
    """Save crops side by side with a title under each (None = image not readable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(crops))
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n, 2.6), squeeze=False)
    for ax, crop, title in zip(axes[0], crops, titles):
        if crop is None:
            ax.text(0.5, 0.5, "no image", ha="center", va="center")
        else:
            ax.imshow(crop, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def try_crop(root: str | Path, lesion: Lesion, **kwargs) -> np.ndarray | None:
    """:func:`lesion_crop`, or None when the slice is missing or unreadable."""
    try:
        return lesion_crop(root, lesion, **kwargs)
    except (ImageReadError, FileNotFoundError):
        return None
