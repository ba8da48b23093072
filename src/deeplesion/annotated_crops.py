"""Annotated lesion crops: a zoomed patch around one lesion (marks drawn), with its context
slices side by side. Used by render --crops, the gallery and the body map thumbnails.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .annotations import Lesion, index_to_px1, px1_to_index
from .context import load_context
from .paths import slice_path
from .render import DrawStyle, draw_lesions, key_slice_path, window_for
from .slices import read_hu
from .windowing import Window, apply_window

#: A crop's side is this many times the box's larger side (at least ``MIN_CROP_PX``).
CROP_SCALE = 2.5
MIN_CROP_PX = 40


def crop_square_index(lesion: Lesion) -> tuple[float, float, float]:
    """(left col, top row, side) of the square crop around a lesion, 0-based array units."""
    x1, y1, x2, y2 = px1_to_index(lesion.box_px1)
    side = max(MIN_CROP_PX, CROP_SCALE * max(x2 - x1, y2 - y1))
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def _crop_resize(image: np.ndarray, left: float, top: float, side: float,
                 tile_px: int) -> np.ndarray:
    """The square [left, left + side) x [top, top + side) resampled to tile_px (black pad)."""
    img = Image.fromarray(image)
    scale = side / tile_px
    # Pillow's affine works on pixel edges (pixel i spans [i, i + 1)); left/top are
    # pixel-centre (index) coordinates, hence the half pixel.
    out = img.transform((tile_px, tile_px), Image.Transform.AFFINE,
                        (scale, 0, left + 0.5, 0, scale, top + 0.5),
                        resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(out)


def shift_lesion(lesion: Lesion, left: float, top: float, scale: float) -> Lesion:
    """The lesion's coordinates in a crop made by :func:`lesion_crop`.

    An array index ``i`` maps to ``(i - origin) * scale - 0.5`` (``scale`` = output pixels
    per input pixel, origin in index units), matching the crop's resampling.
    """
    def move(values_px1):
        idx = px1_to_index(values_px1).reshape(-1, 2)
        idx = (idx - np.array([left, top])) * scale - 0.5
        return tuple(float(v) for v in index_to_px1(idx.ravel()))
    return replace(lesion, recist_px1=move(lesion.recist_px1), box_px1=move(lesion.box_px1))


def lesion_crop(root: str | Path, lesion: Lesion, *, window: str | Window = "dicom",
                context_slices: int = 3, step_mm: float = 2.0, tile_px: int = 128,
                annotate: bool = True) -> np.ndarray:
    """RGB uint8 ``[tile_px, tile_px * n, 3]``: context slices (head side first), key slice
    in the middle with the lesion drawn.

    Context slices need the release layout (``Images_png/<folder>/<NNN>.png``); with a
    flat copy of key slices only, or ``context_slices=1``, the key slice alone is returned.
    """
    win = window_for(lesion, window)
    release = slice_path(root, lesion.series_folder, lesion.key_slice_index)
    if context_slices > 1 and release.is_file():
        stack = load_context(root, lesion.series_folder, lesion.key_slice_index,
                             lesion.slice_interval_mm, n_slices=context_slices,
                             step_mm=step_mm)
    else:
        stack = read_hu(key_slice_path(root, lesion))[None].astype(np.float32)
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
