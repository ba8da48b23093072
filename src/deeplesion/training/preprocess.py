"""The published detectors' input preprocessing, in numpy (no torch needed).

A :class:`Preprocessing` record holds every parameter; :func:`preset` returns the named
ones (``native``, ``3dce``, ``mulan``, ``a3d``, ``lesanet``) with any field overridden.
:func:`prepare_key_slice` turns a key slice into a ``(channels, rows, cols)`` float32
image (context slices as channels) and an :class:`ImageTransform` that maps DL_info
pixels to the image's pixels and back.

Order of operations (as in the 3DCE / MULAN code): context slices blended from the raw
slices (``deeplesion.data.context``), intensity window to float 0..255, minus ``offset``; body
crop from the raw key slice (PNG > 32000, 7x7 opening, bounding box); bilinear resize by
``spacing / target_spacing_mm``, long side capped at ``max_size_px``.

Coordinates: ``_px0`` = 0-based pixel coordinates with pixel centres at integers (DL_info
x - 1, y - 1); image coordinates use the same convention in the returned image. The
bilinear resize samples output pixel ``u`` at input ``(u + 0.5) / scale - 0.5`` (OpenCV's
``INTER_LINEAR`` grid), so a point maps as ``u = (x - crop_x0 + 0.5) * scale - 0.5``.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import BOX_PADDING_PX, Lesion
from deeplesion.data.context import context_offsets_mm, plan_context
from deeplesion.data.masks import recist_mask  # noqa: F401  (re-exported: the weak RECIST mask)
from deeplesion.data.slices import HU_OFFSET
from deeplesion.data.sources import SliceSource, as_source
from deeplesion.errors import DeepLesionError


class PreprocessError(DeepLesionError, ValueError):
    """A preprocessing parameter or preset that cannot be used."""


# --------------------------------------------------------------------------- field types

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none", "null")


def _expected(kind: object) -> str:
    """The accepted form of a field type, for error messages."""
    if kind is bool:
        return "a boolean: true/false/yes/no/1/0"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        item = "integers" if args[0] is int else "numbers"
        return f"two {item} as MIN,MAX" if len(args) == 2 else f"{len(args)} {item}"
    return str(kind)


def _coerce(name: str, value: object, kind: object) -> object:
    """``value`` (a Python value or the text of a ``--set``) as field type ``kind``."""
    optional = False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional, kind = True, args[0]
    text = value.strip() if isinstance(value, str) else None
    expected = _expected(kind) + (" or none" if optional else "")

    def bad() -> PreprocessError:
        return PreprocessError(f"{name}={value!r}: expected {expected}")

    if value is None or (optional and text is not None and text.lower() in _NONE):
        if optional:
            return None
        raise bad()
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise bad()
    if kind is str:
        if text is None:
            raise bad()
        return text
    if kind in (int, float):
        return _number(value, kind, bad)
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        items: object = value
        if text is not None:
            items = [t for t in text.strip("()[] ").split(",")]
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence | np.ndarray):
            raise bad()
        if len(items) != len(args):
            raise bad()
        return tuple(_number(v, a, bad) for v, a in zip(items, args))
    raise bad()


def _number(value: object, kind: type, bad: Callable[[], PreprocessError]) -> int | float:
    if isinstance(value, (bool, np.bool_)):
        raise bad()
    if isinstance(value, str):
        try:
            number = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise bad() from None
    elif isinstance(value, (int, float, np.integer, np.floating)):
        number = value
    else:
        raise bad()
    if not math.isfinite(float(number)):
        raise bad()
    if kind is int:
        if float(number) != int(number):
            raise bad()
        return int(number)
    return float(number)


@functools.cache
def _hints(record_type: type) -> dict[str, object]:
    return typing.get_type_hints(record_type)


def _coerce_fields(record: object) -> None:
    """Replace each field of a frozen dataclass by its value coerced to the declared type."""
    hints = _hints(type(record))
    for f in fields(record):  # type: ignore[arg-type]
        kind = hints[f.name]
        if isinstance(kind, type) and kind.__module__ == __name__:
            continue  # nested records check themselves
        object.__setattr__(record, f.name, _coerce(f.name, getattr(record, f.name), kind))


@dataclass(frozen=True)
class Augmentation:
    """Training-time random changes (all off by default)."""

    rescale_range: tuple[float, float] | None = None  #: extra scale factor range (MULAN)
    crop_jitter_px: tuple[int, int] | None = None  #: per crop bound, inclusive (MULAN)
    centre_shift: bool = False  #: move the centre slice up to half the short diameter
    affine_prob: float = 0.0  #: probability of the random affine below (A3D)
    shift_frac: float = 0.0  #: max translation as a fraction of the image size
    scale_frac: float = 0.0  #: scale drawn from 1 +- scale_frac
    rotate_deg: float = 0.0  #: rotation drawn from +- rotate_deg
    hflip_prob: float = 0.0  #: probability of a horizontal flip

    def __post_init__(self) -> None:
        _coerce_fields(self)
        for name in ("affine_prob", "hflip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PreprocessError(
                    f"{name}={getattr(self, name)!r}: expected a probability between 0 and 1"
                )
        for name in ("shift_frac", "scale_frac", "rotate_deg"):
            if getattr(self, name) < 0:
                raise PreprocessError(f"{name}={getattr(self, name)!r}: expected a number >= 0")
        if self.scale_frac >= 1:
            raise PreprocessError(f"scale_frac={self.scale_frac!r}: expected a number < 1")
        if (
            self.rescale_range is not None
            and not 0 < self.rescale_range[0] <= self.rescale_range[1]
        ):
            raise PreprocessError(
                f"rescale_range={self.rescale_range!r}: expected 0 < MIN <= MAX, e.g. 0.8,1.2"
            )
        if self.crop_jitter_px is not None and self.crop_jitter_px[0] > self.crop_jitter_px[1]:
            raise PreprocessError(
                f"crop_jitter_px={self.crop_jitter_px!r}: expected MIN <= MAX, e.g. -8,7"
            )

    @property
    def active(self) -> bool:
        return any(
            (
                self.rescale_range,
                self.crop_jitter_px,
                self.centre_shift,
                self.affine_prob > 0,
                self.hflip_prob > 0,
            )
        )


@dataclass(frozen=True)
class Preprocessing:
    """Every preprocessing parameter; see the module docstring for the order."""

    name: str = "custom"
    n_slices: int = 3  #: context slices (channels), odd
    step_mm: float = 2.0  #: distance between context slices
    interpolation: str = "linear"  #: 'linear' or '3dce' (see deeplesion.data.context)
    window_hu: tuple[float, float] = (-1024.0, 3071.0)
    offset: float = 0.0  #: subtracted after windowing to 0..255
    body_crop: bool = False
    body_threshold_png: int = 32000  #: raw PNG value; 32000 = -768 HU
    opening_px: int = 7  #: side of the square opening element
    target_spacing_mm: float | None = None  #: None keeps the native pixel size
    max_size_px: int | None = None  #: cap on the longer side after scaling
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        _coerce_fields(self)
        if isinstance(self.augmentation, str) and self.augmentation.strip().lower() in (
            "none",
            "off",
        ):
            object.__setattr__(self, "augmentation", Augmentation())
        if not isinstance(self.augmentation, Augmentation):
            raise PreprocessError(
                f"augmentation={self.augmentation!r}: expected an Augmentation or 'none'; "
                f"set its fields by name instead, e.g. hflip_prob=0.5"
            )
        if self.n_slices < 1 or self.n_slices % 2 == 0:
            raise PreprocessError(f"n_slices must be odd and positive, got {self.n_slices}")
        if self.interpolation not in ("linear", "3dce"):
            raise PreprocessError(
                f"interpolation must be 'linear' or '3dce', got {self.interpolation!r}"
            )
        if not self.window_hu[1] > self.window_hu[0]:
            raise PreprocessError(f"window_hu max must exceed min, got {self.window_hu}")
        if not self.step_mm > 0:
            raise PreprocessError(f"step_mm must be > 0, got {self.step_mm}")
        if not 0 <= self.body_threshold_png <= 65535:
            raise PreprocessError(
                f"body_threshold_png must be a 16-bit PNG value "
                f"(0..65535), got {self.body_threshold_png}"
            )
        if self.opening_px < 1:
            raise PreprocessError(f"opening_px must be >= 1, got {self.opening_px}")
        if self.target_spacing_mm is not None and not self.target_spacing_mm > 0:
            raise PreprocessError(f"target_spacing_mm must be > 0, got {self.target_spacing_mm}")
        if self.max_size_px is not None and self.max_size_px < 8:
            raise PreprocessError(f"max_size_px must be >= 8, got {self.max_size_px}")

    def with_overrides(self, **overrides: object) -> Preprocessing:
        """A copy with fields replaced; augmentation fields may be given by name too."""
        names = {f.name for f in fields(Preprocessing)}
        aug_names = {f.name for f in fields(Augmentation)}
        top = {k: v for k, v in overrides.items() if k in names}
        aug = {k: v for k, v in overrides.items() if k in aug_names}
        unknown = set(overrides) - names - aug_names
        if unknown:
            raise PreprocessError(
                f"unknown preprocessing parameter(s) {sorted(unknown)}; "
                f"allowed: {sorted(names | aug_names)}"
            )
        if aug:
            base = top.get("augmentation", self.augmentation)
            if not isinstance(base, Augmentation):
                base = replace(self, augmentation=base).augmentation
            top["augmentation"] = replace(base, **aug)
        return replace(self, **top)


_MULAN_AUG = Augmentation(rescale_range=(0.8, 1.2), crop_jitter_px=(-8, 7), centre_shift=True)
_A3D_AUG = Augmentation(
    affine_prob=0.8, shift_frac=0.04, scale_frac=0.2, rotate_deg=15.0, hflip_prob=0.5
)

PRESETS: dict[str, Preprocessing] = {
    # Native pixels, no crop, full window to 0..255, 3 slices at 2 mm.
    "native": Preprocessing(name="native"),
    # 3DCE (MICCAI 2018): 3 x M slices; M = 3 here, set n_slices to 3, 9, 15, 21 or 27.
    "3dce": Preprocessing(
        name="3dce",
        n_slices=9,
        interpolation="3dce",
        offset=50.0,
        body_crop=True,
        target_spacing_mm=0.8,
        max_size_px=512,
    ),
    # MULAN (MICCAI 2019): 9 slices, 3DCE's inputs plus its training augmentation.
    "mulan": Preprocessing(
        name="mulan",
        n_slices=9,
        interpolation="3dce",
        offset=50.0,
        body_crop=True,
        target_spacing_mm=0.8,
        max_size_px=512,
        augmentation=_MULAN_AUG,
    ),
    # A3D / AlignShift: -1024..2050 HU, native 512 px, no crop; 3 or 7 slices.
    "a3d": Preprocessing(
        name="a3d", n_slices=3, window_hu=(-1024.0, 2050.0), augmentation=_A3D_AUG
    ),
    # LesaNet tagging patches: 1 mm per pixel, 3 slices at 2 mm.
    "lesanet": Preprocessing(name="lesanet", n_slices=3, offset=50.0, target_spacing_mm=1.0),
}

#: 3DCE's allowed number of 3-slice images.
THREEDCE_IMAGES = (1, 3, 5, 7, 9)


def preset(name: str, **overrides: object) -> Preprocessing:
    """A named preset with fields overridden, e.g. ``preset('3dce', n_slices=27)``.

    For ``3dce`` the number of slices must be 3 x M with M in 1, 3, 5, 7, 9; ``images=M``
    is accepted as a shorthand.
    """
    key = name.strip().lower()
    if key not in PRESETS:
        raise PreprocessError(f"unknown preset {name!r}; allowed: {sorted(PRESETS)}")
    if "images" in overrides:
        if key != "3dce":
            raise PreprocessError("'images' (M) only applies to the 3dce preset")
        images = _coerce("images", overrides.pop("images"), int)
        overrides["n_slices"] = 3 * images  # type: ignore[operator]
    params = PRESETS[key].with_overrides(**overrides)
    if key == "3dce" and params.n_slices not in tuple(3 * m for m in THREEDCE_IMAGES):
        raise PreprocessError(
            f"3dce uses 3 x M slices with M in {THREEDCE_IMAGES}, got n_slices={params.n_slices}"
        )
    return params


def field_type(key: str) -> object:
    """The declared type of a preprocessing or augmentation field (``images``: int)."""
    if key == "images":
        return int
    for record in (Preprocessing, Augmentation):
        hints = _hints(record)
        if key in hints and key in {f.name for f in fields(record)}:
            return hints[key]
    allowed = sorted(
        {f.name for f in fields(Preprocessing)}
        | {f.name for f in fields(Augmentation)}
        | {"images"}
    )
    raise PreprocessError(f"unknown preprocessing parameter {key!r}; allowed: {', '.join(allowed)}")


def parse_override(text: str) -> tuple[str, object]:
    """``'max_size_px=256'`` -> ``('max_size_px', 256)``, parsed by the field's type.

    Booleans accept true/false/yes/no/1/0, tuples ``MIN,MAX``, optional fields ``none``;
    an unknown key or a value of the wrong form raises :class:`PreprocessError` naming
    the key, the value and the expected form.
    """
    if "=" not in text:
        raise PreprocessError(f"override {text!r} is not KEY=VALUE")
    key, value = (s.strip() for s in text.split("=", 1))
    return key, coerce_override(key, value)


def coerce_override(key: str, value: object) -> object:
    """``value`` as the declared type of field ``key`` (text parsed as by
    :func:`parse_override`); :class:`PreprocessError` when it does not fit."""
    kind = field_type(key)
    if kind is Augmentation:
        if isinstance(value, Augmentation):
            return value
        if isinstance(value, str) and value.strip().lower() in ("none", "off"):
            return Augmentation()
        raise PreprocessError(
            f"augmentation={value!r}: expected 'none' (no augmentation); "
            "set its fields by name instead, e.g. hflip_prob=0.5"
        )
    value = _coerce(key, value, kind)
    if key in _hints(Augmentation):  # the record's own range checks
        Augmentation(**{key: value})
    elif key != "images":
        replace(Preprocessing(), **{key: value})
    return value


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImageTransform:
    """Maps 0-based DL_info pixel coordinates to the prepared image's and back.

    ``matrix`` is the 2x3 affine ``[u, v] = M @ [x, y, 1]``. For the evaluation-time
    pipeline it is ``u = (x - crop_x0 + 0.5) * scale - 0.5`` (same for y).
    """

    matrix: tuple[tuple[float, float, float], tuple[float, float, float]]
    crop_px0: tuple[int, int, int, int]  #: x0, y0, x1, y1 (inclusive) of the crop
    scale: float  #: resize factor applied after the crop
    size: tuple[int, int]  #: rows, cols of the prepared image
    source_size: tuple[int, int]  #: rows, cols of the DL_info slice
    key_slice_index: int  #: centre slice actually used (may be shifted in training)
    flipped: bool = False
    rotated: bool = False

    def _m(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)

    @property
    def axis_aligned(self) -> bool:
        return not self.rotated

    def points_to_image(self, xy_px0: np.ndarray) -> np.ndarray:
        """(n, 2) DL_info 0-based points -> image points."""
        xy = np.asarray(xy_px0, dtype=np.float64).reshape(-1, 2)
        m = self._m()
        return xy @ m[:, :2].T + m[:, 2]

    def points_from_image(self, uv: np.ndarray) -> np.ndarray:
        """(n, 2) image points -> DL_info 0-based points (exact inverse)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        m = self._m()
        return np.linalg.solve(m[:, :2], (uv - m[:, 2]).T).T

    def boxes_to_image(self, boxes_px0: np.ndarray) -> np.ndarray:
        """(n, 4) x1, y1, x2, y2 boxes -> the box enclosing their mapped corners."""
        return _map_boxes(np.asarray(boxes_px0, dtype=np.float64), self.points_to_image)

    def boxes_from_image(self, boxes: np.ndarray) -> np.ndarray:
        return _map_boxes(np.asarray(boxes, dtype=np.float64), self.points_from_image)

    def to_dict(self) -> dict:
        return {
            "matrix": [list(r) for r in self.matrix],
            "crop_px0": list(self.crop_px0),
            "scale": self.scale,
            "size": list(self.size),
            "source_size": list(self.source_size),
            "key_slice_index": self.key_slice_index,
            "flipped": self.flipped,
            "rotated": self.rotated,
        }


def _map_boxes(boxes: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    boxes = boxes.reshape(-1, 4)
    if not len(boxes):
        return boxes.copy()
    x1, y1, x2, y2 = boxes.T
    corners = np.stack(
        [
            np.stack([x1, y1], 1),
            np.stack([x2, y1], 1),
            np.stack([x1, y2], 1),
            np.stack([x2, y2], 1),
        ],
        1,
    )
    mapped = fn(corners.reshape(-1, 2)).reshape(-1, 4, 2)
    return np.concatenate([mapped.min(1), mapped.max(1)], axis=1)


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


def lesion_recist(lesions: Sequence[Lesion], transform: ImageTransform) -> np.ndarray:
    if not lesions:
        return np.zeros((0, 4, 2), dtype=np.float32)
    pts = np.array([l.recist_px1 for l in lesions], dtype=np.float64).reshape(-1, 2) - 1.0
    return transform.points_to_image(pts).reshape(-1, 4, 2).astype(np.float32)


def lesion_boxes(lesions: Sequence[Lesion], transform: ImageTransform) -> np.ndarray:
    if not lesions:
        return np.zeros((0, 4), dtype=np.float32)
    if transform.axis_aligned:
        boxes = np.array([l.box_px1 for l in lesions], dtype=np.float64) - 1.0
        return transform.boxes_to_image(boxes).astype(np.float32)
    pts = lesion_recist(lesions, transform).astype(np.float64)
    pad = BOX_PADDING_PX * transform.scale
    return np.concatenate([pts.min(1) - pad, pts.max(1) + pad], 1).astype(np.float32)


# --------------------------------------------------------------------------- numpy ops


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


# --------------------------------------------------------------------------- pipeline


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
    aug = params.augmentation if rng is not None else Augmentation()
    source = as_source(source)

    def exists(n: int) -> bool:
        return source.has_slice(folder, n)

    centre = key_slice_index
    if aug.centre_shift and short_diameter_mm and interval_mm > 0 and math.isfinite(interval_mm):
        reach = int(math.floor(short_diameter_mm / 2.0 / interval_mm))
        if reach > 0:
            delta = int(rng.integers(-reach, reach + 1))  # type: ignore[union-attr]
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
    hu = np.empty((len(blends), rows, cols), dtype=np.float32)
    for i, blend in enumerate(blends):
        acc = np.zeros((rows, cols), dtype=np.float32)
        for number, weight in blend:
            acc += raw(number).astype(np.float32) * np.float32(weight)
        hu[i] = acc - np.float32(HU_OFFSET)
    image = window_float(hu, params.window_hu, params.offset)

    x0, y0, x1, y1 = 0, 0, cols - 1, rows - 1
    if params.body_crop:
        found = body_bbox(key_raw, params.body_threshold_png, params.opening_px)
        if found is not None:
            x0, y0, x1, y1 = found
    if aug.crop_jitter_px is not None:
        lo, hi = aug.crop_jitter_px
        jx0, jy0, jx1, jy1 = (int(v) for v in rng.integers(lo, hi + 1, size=4))  # type: ignore[union-attr]
        x0, x1 = sorted((min(max(x0 + jx0, 0), cols - 1), min(max(x1 + jx1, 0), cols - 1)))
        y0, y1 = sorted((min(max(y0 + jy0, 0), rows - 1), min(max(y1 + jy1, 0), rows - 1)))
    image = image[:, y0 : y1 + 1, x0 : x1 + 1]

    scale = 1.0
    if params.target_spacing_mm is not None and pixel_spacing_mm > 0:
        scale = float(pixel_spacing_mm) / params.target_spacing_mm
    longest = max(image.shape[1:]) * scale
    if params.max_size_px is not None and longest > params.max_size_px:
        scale *= params.max_size_px / longest
    if aug.rescale_range is not None:
        scale *= float(rng.uniform(*aug.rescale_range))  # type: ignore[union-attr]
    if scale != 1.0:
        image = resize_bilinear(image, scale)
    out_rows, out_cols = image.shape[1:]
    # u = (x - x0 + 0.5) * scale - 0.5
    m = np.array([[scale, 0.0, (0.5 - x0) * scale - 0.5], [0.0, scale, (0.5 - y0) * scale - 0.5]])

    flipped = rotated = False
    fill = float(window_float(np.array([-32768.0]), params.window_hu, params.offset)[0])
    if aug.affine_prob > 0 and float(rng.uniform()) < aug.affine_prob:  # type: ignore[union-attr]
        angle = math.radians(float(rng.uniform(-aug.rotate_deg, aug.rotate_deg)))  # type: ignore[union-attr]
        zoom = 1.0 + float(rng.uniform(-aug.scale_frac, aug.scale_frac))  # type: ignore[union-attr]
        tx, ty = rng.uniform(-aug.shift_frac, aug.shift_frac, size=2) * (out_cols, out_rows)  # type: ignore[union-attr]
        cx, cy = (out_cols - 1) / 2.0, (out_rows - 1) / 2.0
        c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
        a = np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty]])
        image = warp_affine(image, a, (out_rows, out_cols), fill)
        m = a @ np.vstack([m, [0, 0, 1]])
        rotated = angle != 0.0
    if aug.hflip_prob > 0 and float(rng.uniform()) < aug.hflip_prob:  # type: ignore[union-attr]
        image = image[:, :, ::-1]
        m = np.array([[-1.0, 0.0, out_cols - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
        flipped = True
    transform = ImageTransform(
        matrix=tuple(tuple(float(v) for v in r) for r in m),  # type: ignore[arg-type]
        crop_px0=(x0, y0, x1, y1),
        scale=float(scale),
        size=(out_rows, out_cols),
        source_size=(rows, cols),
        key_slice_index=centre,
        flipped=flipped,
        rotated=rotated,
    )
    return PreparedSlice(np.ascontiguousarray(image, dtype=np.float32), transform, blends)


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


def describe(params: Preprocessing) -> Mapping[str, object]:
    """A JSON-able dict of the parameters (stored in checkpoints and exports)."""
    out = {
        f.name: getattr(params, f.name) for f in fields(Preprocessing) if f.name != "augmentation"
    }
    out["augmentation"] = {
        f.name: getattr(params.augmentation, f.name) for f in fields(Augmentation)
    }
    return out


def from_description(desc: Mapping[str, object]) -> Preprocessing:
    """Inverse of :func:`describe`."""
    d = dict(desc)
    aug = dict(d.pop("augmentation", {}) or {})  # type: ignore[arg-type]
    for key in ("rescale_range", "crop_jitter_px"):
        if aug.get(key) is not None:
            aug[key] = tuple(aug[key])
    d["window_hu"] = tuple(d["window_hu"])  # type: ignore[arg-type]
    return Preprocessing(augmentation=Augmentation(**aug), **d)  # type: ignore[arg-type]
