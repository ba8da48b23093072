"""A key slice with its context, prepared for a detector (:func:`prepare_key_slice`).

Order of operations (as in the 3DCE / MULAN code): context slices blended from the raw
slices (``deeplesion.data.context``), intensity window to float 0..255, minus ``offset``;
body crop from the raw key slice (PNG > 32000, 7x7 opening, bounding box); bilinear resize
by ``spacing / target_spacing_mm``, long side capped at ``max_size_px``; in training the
preset's augmentation. The returned :class:`ImageTransform` maps DL_info pixels to the
image's pixels and back (see ``deeplesion.training.transform``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import Lesion
from deeplesion.data.context import context_offsets_mm, plan_context
from deeplesion.data.slices import HU_OFFSET
from deeplesion.data.sources import SliceSource, as_source
from deeplesion.errors import ImageReadError
from deeplesion.training.imageops import (
    blend_window,
    body_bbox,
    resize_bilinear,
    resized_size,
    warp_affine,
    window_float,
)
from deeplesion.training.settings import Augmentation, Preprocessing
from deeplesion.training.transform import ImageTransform, lesion_boxes, lesion_recist


@dataclass
class PreparedSlice:
    """A prepared key slice: ``image`` is float32 ``(n_slices, rows, cols)``."""

    image: np.ndarray
    transform: ImageTransform
    blends: list  #: the context plan used: per channel ((slice, weight), ...)

    def lesion_boxes(self, lesions: Sequence[Lesion]) -> np.ndarray:
        """Boxes of ``lesions`` in image pixels, (n, 4) float32 0-based x1, y1, x2, y2.

        Axis-aligned transforms map the DL_info box corners exactly; under rotation the
        box is the extent of the mapped RECIST end points plus the release's padding.
        """
        return lesion_boxes(lesions, self.transform)

    def lesion_recist(self, lesions: Sequence[Lesion]) -> np.ndarray:
        """RECIST end points in image pixels, (n, 4, 2): long1, long2, short1, short2."""
        return lesion_recist(lesions, self.transform)


def prepare_key_slice(
    source: str | Path | SliceSource,
    folder: str,
    key_slice_index: int,
    interval_mm: float,
    pixel_spacing_mm: float,
    params: Preprocessing,
    *,
    rng: np.random.Generator | None = None,
    short_diameter_mm: float | None = None,
) -> PreparedSlice:
    """Prepare one key slice with its context; ``rng`` enables the training augmentation.

    ``source`` is a dataset root (its PNGs are read) or any :class:`SliceSource`.
    """
    aug = params.augmentation
    if rng is None:  # evaluation: no augmentation, so nothing is drawn from this one
        aug, rng = Augmentation(), np.random.default_rng(0)
    source = as_source(source)

    def exists(n: int) -> bool:
        return source.has_slice(folder, n)

    centre = key_slice_index
    if aug.centre_shift and short_diameter_mm and interval_mm > 0 and math.isfinite(interval_mm):
        reach = int(math.floor(short_diameter_mm / 2.0 / interval_mm))
        if reach > 0:
            delta = int(rng.integers(-reach, reach + 1))
            if delta and exists(centre + delta):
                centre += delta

    blends = plan_context(
        centre,
        interval_mm,
        context_offsets_mm(params.n_slices, params.step_mm),
        exists,
        weights=params.interpolation,
    )
    cache: dict[int, np.ndarray] = {}

    def raw(n: int) -> np.ndarray:
        if n not in cache:
            cache[n] = np.asarray(source.read_raw(folder, n))
        return cache[n]

    key_raw = raw(centre)
    rows, cols = key_raw.shape
    x0, y0, x1, y1 = 0, 0, cols - 1, rows - 1
    if params.body_crop:
        found = _body_box(source, folder, centre, key_raw, params)
        if found is not None:
            x0, y0, x1, y1 = found
    if aug.crop_jitter_px is not None:
        lo, hi = aug.crop_jitter_px
        jx0, jy0, jx1, jy1 = (int(v) for v in rng.integers(lo, hi + 1, size=4))
        x0, x1 = sorted((min(max(x0 + jx0, 0), cols - 1), min(max(x1 + jx1, 0), cols - 1)))
        y0, y1 = sorted((min(max(y0 + jy0, 0), rows - 1), min(max(y1 + jy1, 0), rows - 1)))
    crop_rows, crop_cols = y1 - y0 + 1, x1 - x0 + 1

    scale = 1.0
    if params.target_spacing_mm is not None and pixel_spacing_mm > 0:
        scale = float(pixel_spacing_mm) / params.target_spacing_mm
    longest = max(crop_rows, crop_cols) * scale
    if params.max_size_px is not None and longest > params.max_size_px:
        scale *= params.max_size_px / longest
    if aug.rescale_range is not None:
        scale *= float(rng.uniform(*aug.rescale_range))

    # blend, window and resize one channel at a time, on the crop only
    out_rows, out_cols = resized_size((crop_rows, crop_cols), scale)
    if scale == 1.0:
        out_rows, out_cols = crop_rows, crop_cols
    image = np.empty((len(blends), out_rows, out_cols), dtype=np.float32)
    windowed = np.empty((crop_rows, crop_cols), dtype=np.float32)
    for channel, blend in zip(image, blends):
        planes = [(_crop(raw(n), folder, n, (rows, cols), (x0, y0, x1, y1)), w) for n, w in blend]
        if scale == 1.0:
            blend_window(planes, HU_OFFSET, params.window_hu, params.offset, out=channel)
        else:
            blend_window(planes, HU_OFFSET, params.window_hu, params.offset, out=windowed)
            channel[...] = resize_bilinear(windowed, scale)
    # u = (x - x0 + 0.5) * scale - 0.5
    m = np.array([[scale, 0.0, (0.5 - x0) * scale - 0.5], [0.0, scale, (0.5 - y0) * scale - 0.5]])

    flipped = rotated = False
    if aug.affine_prob > 0 and float(rng.uniform()) < aug.affine_prob:
        angle = math.radians(float(rng.uniform(-aug.rotate_deg, aug.rotate_deg)))
        zoom = 1.0 + float(rng.uniform(-aug.scale_frac, aug.scale_frac))
        tx, ty = rng.uniform(-aug.shift_frac, aug.shift_frac, size=2) * (out_cols, out_rows)
        cx, cy = (out_cols - 1) / 2.0, (out_rows - 1) / 2.0
        c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
        a = np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty]])
        fill = float(window_float(np.array([-HU_OFFSET]), params.window_hu, params.offset)[0])
        image = warp_affine(image, a, (out_rows, out_cols), fill)
        m = a @ np.vstack([m, [0, 0, 1]])
        rotated = angle != 0.0
    if aug.hflip_prob > 0 and float(rng.uniform()) < aug.hflip_prob:
        image = np.ascontiguousarray(image[:, :, ::-1])
        m = np.array([[-1.0, 0.0, out_cols - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
        flipped = True
    transform = ImageTransform(
        matrix=_matrix_tuple(m),
        crop_px0=(x0, y0, x1, y1),
        scale=float(scale),
        size=(out_rows, out_cols),
        source_size=(rows, cols),
        key_slice_index=centre,
        flipped=flipped,
        rotated=rotated,
    )
    return PreparedSlice(image, transform, blends)


def _body_box(
    source: SliceSource, folder: str, slice_number: int, key_raw: np.ndarray, params: Preprocessing
) -> tuple[int, int, int, int] | None:
    """The body crop box of a slice: the source's precomputed one when it offers it."""
    precomputed = getattr(source, "body_box_px0", None)
    if precomputed is not None:
        box = precomputed(folder, slice_number, params.body_threshold_png, params.opening_px)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            return x0, y0, x1, y1
    return body_bbox(key_raw, params.body_threshold_png, params.opening_px)


def _crop(
    raw: np.ndarray,
    folder: str,
    slice_number: int,
    size: tuple[int, int],
    box: tuple[int, int, int, int],
) -> np.ndarray:
    if raw.shape != size:
        raise ImageReadError(
            f"{folder} slice {slice_number}: {raw.shape[0]}x{raw.shape[1]} pixels, "
            f"but the key slice has {size[0]}x{size[1]}"
        )
    x0, y0, x1, y1 = box
    return raw[y0 : y1 + 1, x0 : x1 + 1]


def _matrix_tuple(m: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    (a, b, c), (d, e, f) = (float(v) for v in m[0]), (float(v) for v in m[1])
    return (a, b, c), (d, e, f)


def prepare_lesion_image(
    source: str | Path | SliceSource,
    lesion: Lesion,
    params: Preprocessing,
    *,
    rng: np.random.Generator | None = None,
) -> PreparedSlice:
    """:func:`prepare_key_slice` for a lesion's key slice, from its DL_info row."""
    return prepare_key_slice(
        source,
        lesion.series_folder,
        lesion.key_slice_index,
        lesion.slice_interval_mm,
        lesion.spacing_mm[0],
        params,
        rng=rng,
        short_diameter_mm=lesion.short_diameter_mm,
    )
