"""Key slices with their annotations drawn on them (the release's Key_slices, reproducible).

Drawing is exact to the pixel. A DL_info point (x, y) (1-based, x = column) lands on array
element ``[floor(y - 1 + 0.5), floor(x - 1 + 0.5)]``: converted with
:func:`deeplesion.data.annotations.px1_to_index`, then rounded half up. Straight segments are
drawn with a DDA that always includes both end points, and every RECIST end point is
painted last, so it keeps its axis colour even where other marks cross it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deeplesion.data.annotations import Lesion, px1_to_index
from deeplesion.data.io import atomic_path
from deeplesion.data.paths import key_slice_path
from deeplesion.data.slices import read_hu
from deeplesion.data.windowing import Window, apply_window, parse_window
from deeplesion.errors import DeepLesionError, InvalidArgumentError, InvalidTypeError

#: Colours (RGB) of the marks. Not grey, so they never occur in a windowed CT image.
LONG_AXIS_RGB = (255, 48, 48)
SHORT_AXIS_RGB = (48, 200, 255)
BOX_RGB = (255, 214, 0)
LABEL_RGB = (255, 255, 255)
LABEL_BACKGROUND_RGB = (0, 0, 0)


class RenderError(DeepLesionError, ValueError):
    """Lesions that cannot be drawn together (e.g. not on one key slice)."""


@dataclass(frozen=True, slots=True)
class DrawStyle:
    """How annotations are drawn. Widths are in pixels of the image being drawn on."""

    line_width_px: int = 1
    box: bool = True
    label: bool = True
    font_size_px: int = 11


# --------------------------------------------------------------------------- geometry


def px1_to_pixel(xy_px1: Iterable[float]) -> tuple[int, ...]:
    """DL_info 1-based (x, y, x, y, ...) -> nearest 0-based array (col, row, col, row, ...)."""
    return tuple(int(v) for v in np.floor(px1_to_index(xy_px1) + 0.5))


def _segment(c0: int, r0: int, c1: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (cols, rows) of a straight segment, both end points included."""
    n = max(abs(c1 - c0), abs(r1 - r0)) + 1
    cols = np.floor(np.linspace(c0, c1, n) + 0.5).astype(np.intp)
    rows = np.floor(np.linspace(r0, r1, n) + 0.5).astype(np.intp)
    return cols, rows


def _paint(
    rgb: np.ndarray, cols: np.ndarray, rows: np.ndarray, colour: Sequence[int], width_px: int = 1
) -> None:
    """Set pixels (thickened to a ``width_px`` square), ignoring those off the image."""
    height, width = rgb.shape[:2]
    lo = -((width_px - 1) // 2)
    for dr in range(lo, lo + width_px):
        for dc in range(lo, lo + width_px):
            r, c = rows + dr, cols + dc
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            rgb[r[ok], c[ok]] = colour


def _rectangle(c0: int, r0: int, c1: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [
        _segment(c0, r0, c1, r0),
        _segment(c1, r0, c1, r1),
        _segment(c1, r1, c0, r1),
        _segment(c0, r1, c0, r0),
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@lru_cache(maxsize=8)
def _font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def lesion_label(lesion: Lesion) -> str:
    """``'liver 16.9×11.6 mm'``: coarse type, long × short diameter."""
    return f"{lesion.type_name} {lesion.long_diameter_mm:.1f}x{lesion.short_diameter_mm:.1f} mm"


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_label(
    rgb: np.ndarray,
    text: str,
    box_index: tuple[int, ...],
    size_px: int,
    taken: list[tuple[int, int, int, int]],
) -> None:
    """Text on a dark plate above the box, else below it, else stacked higher; avoids
    the plates already in ``taken`` (which it extends)."""
    font = _font(size_px)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = (int(v) for v in probe.textbbox((0, 0), text, font=font))
    w, h = right - left + 4, bottom - top + 4
    height, width = rgb.shape[:2]
    c0, r0, _, r1 = box_index
    x = min(max(c0, 0), max(width - w, 0))
    candidates = [r0 - h - 2, r1 + 3] + [r0 - h - 2 - k * (h + 1) for k in range(1, 6)]
    fitting = [y for y in candidates if 0 <= y <= height - h] or [max(0, min(r0, height - h))]
    y = next(
        (y for y in fitting if not any(_overlaps((x, y, x + w, y + h), t) for t in taken)),
        fitting[0],
    )
    taken.append((x, y, x + w, y + h))
    plate = Image.new("RGB", (w, h), LABEL_BACKGROUND_RGB)
    ImageDraw.Draw(plate).text((2 - left, 2 - top), text, font=font, fill=LABEL_RGB)
    patch = np.asarray(plate)
    ph, pw = min(h, height - y), min(w, width - x)
    if ph > 0 and pw > 0:
        rgb[y : y + ph, x : x + pw] = patch[:ph, :pw]


# --------------------------------------------------------------------------- drawing


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 grey ``[row, col]`` or RGB ``[row, col, 3]`` -> a new RGB uint8 array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InvalidTypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise InvalidArgumentError(f"expected [row, col] or [row, col, 3], got shape {image.shape}")


def draw_lesions(
    image: np.ndarray, lesions: Iterable[Lesion], style: DrawStyle = DrawStyle()
) -> np.ndarray:
    """Draw lesions on a uint8 image (grey or RGB, at the key slice's own size).

    Returns a new RGB uint8 array: labels, then boxes, then short and long axes, then
    the RECIST end points themselves (so they are never covered).
    """
    rgb = to_rgb(image)
    lesions = list(lesions)
    boxes = [px1_to_pixel(l.box_px1) for l in lesions]
    axes = [px1_to_pixel(l.recist_px1) for l in lesions]
    if style.label:
        taken: list[tuple[int, int, int, int]] = []
        for lesion, box in zip(lesions, boxes):
            _draw_label(rgb, lesion_label(lesion), box, style.font_size_px, taken)
    if style.box:
        for box in boxes:
            _paint(rgb, *_rectangle(*box), BOX_RGB, style.line_width_px)
    for p in axes:
        _paint(rgb, *_segment(*p[4:]), SHORT_AXIS_RGB, style.line_width_px)
        _paint(rgb, *_segment(*p[:4]), LONG_AXIS_RGB, style.line_width_px)
    for p in axes:
        _paint(rgb, np.array(p[4::2]), np.array(p[5::2]), SHORT_AXIS_RGB)
        _paint(rgb, np.array(p[0:4:2]), np.array(p[1:4:2]), LONG_AXIS_RGB)
    return rgb


# --------------------------------------------------------------------------- key slices


def _one_slice(lesions: Sequence[Lesion]) -> Lesion:
    if not lesions:
        raise RenderError("no lesions to draw")
    names = {l.file_name for l in lesions}
    if len(names) > 1:
        raise RenderError(f"lesions lie on different key slices: {sorted(names)}")
    return lesions[0]


def window_for(lesion: Lesion, window: str | Window = "dicom") -> Window:
    """A window spec (``'dicom'``, a preset, ``'MIN,MAX'``) resolved for one row."""
    if isinstance(window, Window):
        return window
    return parse_window(window, lesion.dicom_window_hu)


def render_key_slice(
    root: str | Path,
    lesions: Sequence[Lesion],
    *,
    window: str | Window = "dicom",
    style: DrawStyle = DrawStyle(),
    hu: np.ndarray | None = None,
) -> np.ndarray:
    """One key slice with every given lesion drawn, as RGB uint8 ``[row, col, 3]``.

    All ``lesions`` must share one ``File_name``. ``window='dicom'`` uses the first row's
    ``DICOM_windows`` with the official Key_slices formula. Pass ``hu`` to skip reading.
    """
    lesions = list(lesions)
    first = _one_slice(lesions)
    if hu is None:
        hu = read_hu(key_slice_path(root, first.file_name))
    return draw_lesions(apply_window(hu, window_for(first, window)), lesions, style)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or grey) uint8 array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")
    return Path(path)
