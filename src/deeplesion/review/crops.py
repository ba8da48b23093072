"""Lesion patches from key slices: HU patches, windowed crops, strips of crops, and
annotated crops (marks drawn, context slices side by side) for render --crops, the gallery
and the body-map thumbnails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from deeplesion.data.annotations import Lesion, index_to_px1, px1_to_index
from deeplesion.data.context import load_context
from deeplesion.data.io import save_figure
from deeplesion.data.measurement import fitted_ellipse
from deeplesion.data.paths import key_slice_path, slice_path
from deeplesion.data.slices import read_hu
from deeplesion.data.windowing import Window, apply_window
from deeplesion.errors import ImageReadError
from deeplesion.review.render import DrawStyle, draw_lesions, window_for


def hu_patch(
    hu: np.ndarray,
    lesion: Lesion,
    *,
    scale: float = 2.0,
    min_side_px: int = 24,
    side_mm: float | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Square HU patch centred on the lesion, side ``scale`` x long diameter (pixels), or
    ``side_mm`` millimetres (x spacing) when given.

    Returns the patch (padded with -1024 HU outside the image) and the 0-based
    (row, col) index of its top-left corner in the slice.
    """
    e = fitted_ellipse(lesion)
    cx_index, cy_index = px1_to_index(e.center_px1).tolist()
    side_px = side_mm / lesion.spacing_mm[0] if side_mm else 2 * e.semi_long_px * scale
    side = int(max(min_side_px, round(side_px)))
    r0 = int(round(cy_index - side / 2))
    c0 = int(round(cx_index - side / 2))
    out = np.full((side, side), -1024, dtype=np.int16)
    rows, cols = hu.shape
    rs, cs = max(0, r0), max(0, c0)
    re, ce = min(rows, r0 + side), min(cols, c0 + side)
    if re > rs and ce > cs:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = hu[rs:re, cs:ce]
    return out, (r0, c0)


def ellipse_mask(
    shape: tuple[int, int],
    lesion: Lesion,
    origin_index: tuple[int, int] = (0, 0),
    grow: float = 1.0,
) -> np.ndarray:
    """Boolean mask of the fitted ellipse (semi-axes x ``grow``) on an array whose
    top-left pixel is the slice's 0-based (row, col) ``origin_index``."""
    e = fitted_ellipse(lesion)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    x_px1, y_px1 = index_to_px1([cols + origin_index[1], rows + origin_index[0]])
    t = np.radians(e.angle_deg)
    dx, dy = x_px1 - e.center_px1[0], y_px1 - e.center_px1[1]
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    a = max(e.semi_long_px * grow, 0.5)
    b = max(e.semi_short_px * grow, 0.5)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def lesion_crop(
    root: str | Path,
    lesion: Lesion,
    *,
    out_px: int = 128,
    scale: float = 2.5,
    side_mm: float | None = None,
    window: Window | None = None,
) -> np.ndarray:
    """Windowed uint8 crop (``out_px`` square) of the lesion's key slice; side ``scale`` x
    long diameter, or ``side_mm`` (a fixed field of view, so sizes compare across crops).

    ``window`` defaults to the row's DICOM window. Raises :class:`ImageReadError`.
    """
    from PIL import Image

    hu = read_hu(key_slice_path(root, lesion.file_name))
    patch, _ = hu_patch(hu, lesion, scale=scale, side_mm=side_mm)
    win = window or Window(*lesion.dicom_window_hu)
    img = Image.fromarray(apply_window(patch, win)).resize(
        (out_px, out_px), Image.Resampling.BILINEAR
    )
    return np.asarray(img)


def write_strip(
    crops: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: str | Path,
    *,
    suptitle: str = "",
) -> Path:
    """Save crops side by side with a title under each (None = image not readable)."""
    from matplotlib.figure import Figure

    n = max(1, len(crops))
    fig = Figure(figsize=(2.1 * n, 2.6))
    axes = fig.subplots(1, n, squeeze=False)
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


# --------------------------------------------------------------------------- annotated

#: A crop's side is this many times the box's larger side (at least ``MIN_CROP_PX``).
CROP_SCALE = 2.5
MIN_CROP_PX = 40


def crop_square_index(lesion: Lesion) -> tuple[float, float, float]:
    """(left col, top row, side) of the square crop around a lesion, 0-based array units."""
    x1, y1, x2, y2 = px1_to_index(lesion.box_px1)
    side = max(MIN_CROP_PX, CROP_SCALE * max(x2 - x1, y2 - y1))
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def _crop_resize(
    image: np.ndarray, left: float, top: float, side: float, tile_px: int
) -> np.ndarray:
    """The square [left, left + side) x [top, top + side) resampled to tile_px (black pad)."""
    img = Image.fromarray(image)
    scale = side / tile_px
    # Pillow's affine works on pixel edges (pixel i spans [i, i + 1)); left/top are
    # pixel-centre (index) coordinates, hence the half pixel.
    out = img.transform(
        (tile_px, tile_px),
        Image.Transform.AFFINE,
        (scale, 0, left + 0.5, 0, scale, top + 0.5),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0,
    )
    return np.asarray(out)


def shift_lesion(lesion: Lesion, left: float, top: float, scale: float) -> Lesion:
    """The lesion's coordinates in a crop made by :func:`annotated_crop`.

    An array index ``i`` maps to ``(i - origin) * scale - 0.5`` (``scale`` = output pixels
    per input pixel, origin in index units), matching the crop's resampling.
    """

    def move(values_px1):
        idx = px1_to_index(values_px1).reshape(-1, 2)
        idx = (idx - np.array([left, top])) * scale - 0.5
        return tuple(float(v) for v in index_to_px1(idx.ravel()))

    return replace(lesion, recist_px1=move(lesion.recist_px1), box_px1=move(lesion.box_px1))


def annotated_crop(
    root: str | Path,
    lesion: Lesion,
    *,
    window: str | Window = "dicom",
    context_slices: int = 3,
    step_mm: float = 2.0,
    tile_px: int = 128,
    annotate: bool = True,
) -> np.ndarray:
    """RGB uint8 ``[tile_px, tile_px * n, 3]``: context slices (head side first), key slice
    in the middle with the lesion drawn.

    Context slices need the release layout (``Images_png/<folder>/<NNN>.png``); with a
    flat copy of key slices only, or ``context_slices=1``, the key slice alone is returned.
    """
    win = window_for(lesion, window)
    release = slice_path(root, lesion.series_folder, lesion.key_slice_index)
    if context_slices > 1 and release.is_file():
        stack = load_context(
            root,
            lesion.series_folder,
            lesion.key_slice_index,
            lesion.slice_interval_mm,
            n_slices=context_slices,
            step_mm=step_mm,
        )
    else:
        stack = read_hu(key_slice_path(root, lesion.file_name))[None].astype(np.float32)
    left, top, side = crop_square_index(lesion)
    scale = tile_px / side
    key = len(stack) // 2
    tiles = []
    for i, hu in enumerate(stack):
        grey = _crop_resize(apply_window(hu, win), left, top, side, tile_px)
        if i == key and annotate:
            moved = shift_lesion(lesion, left, top, scale)
            tiles.append(draw_lesions(grey, [moved], DrawStyle(label=False)))
        else:
            tiles.append(np.repeat(grey[:, :, None], 3, axis=2))
    return np.concatenate(tiles, axis=1)


def key_slice_tile(
    hu: np.ndarray,
    lesion: Lesion,
    *,
    window: str | Window = "dicom",
    tile_px: int = 128,
    annotate: bool = True,
) -> np.ndarray:
    """RGB uint8 ``[tile_px, tile_px, 3]``: the key-slice tile of :func:`annotated_crop`
    made from an HU array already read (``hu``, the lesion's key slice)."""
    left, top, side = crop_square_index(lesion)
    grey = _crop_resize(apply_window(hu, window_for(lesion, window)), left, top, side, tile_px)
    if not annotate:
        return np.repeat(grey[:, :, None], 3, axis=2)
    moved = shift_lesion(lesion, left, top, tile_px / side)
    return draw_lesions(grey, [moved], DrawStyle(label=False))
