"""The preprocessing parameters: :class:`Preprocessing` and its :class:`Augmentation`.

Every field is coerced to its declared type on construction (text from ``--set`` as
well as Python values), and range-checked; a value that does not fit raises
:class:`PreprocessError` naming the field, the value and the expected form.
:func:`describe` / :func:`from_description` round-trip a record through JSON (checkpoints).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from deeplesion.errors import DeepLesionError


class PreprocessError(DeepLesionError, ValueError):
    """A preprocessing parameter or preset that cannot be used."""


#: Field values by name as given (text, lists, numbers); the records coerce them on
#: construction, so their static type is open.
FieldValues = dict[str, Any]


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
        members = typing.get_args(kind)
        items: object = value
        if text is not None:
            items = [t for t in text.strip("()[] ").split(",")]
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence | np.ndarray):
            raise bad()
        if len(items) != len(members):
            raise bad()
        return tuple(_number(v, a, bad) for v, a in zip(items, members))
    raise bad()


def _number(value: object, kind: type, bad: Callable[[], PreprocessError]) -> int | float:
    if isinstance(value, (bool, np.bool_)):
        raise bad()
    if isinstance(value, str):
        try:
            number = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise bad() from None
    elif isinstance(value, (float, np.floating)):
        number = float(value)
    elif isinstance(value, (int, np.integer)):
        number = int(value)
    else:
        raise bad()
    if not math.isfinite(float(number)):
        raise bad()
    if kind is int:
        if float(number) != int(number):
            raise bad()
        return int(number)
    return float(number)


_HINTS: dict[type, dict[str, object]] = {}


def _hints(record_type: type) -> dict[str, object]:
    if record_type not in _HINTS:
        _HINTS[record_type] = typing.get_type_hints(record_type)
    return _HINTS[record_type]


def _coerce_fields(record: Augmentation | Preprocessing) -> None:
    """Replace each field of a frozen dataclass by its value coerced to the declared type."""
    hints = _hints(type(record))
    for f in fields(record):
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

    def with_overrides(self, **overrides: Any) -> Preprocessing:
        """A copy with fields replaced; augmentation fields may be given by name too."""
        names = {f.name for f in fields(Preprocessing)}
        aug_names = {f.name for f in fields(Augmentation)}
        top: FieldValues = {k: v for k, v in overrides.items() if k in names}
        aug: FieldValues = {k: v for k, v in overrides.items() if k in aug_names}
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
    checked: FieldValues = {key: value}
    if key in _hints(Augmentation):  # the record's own range checks
        Augmentation(**checked)
    elif key != "images":
        replace(Preprocessing(), **checked)
    return value


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
    d: FieldValues = dict(desc)
    aug: FieldValues = d.pop("augmentation", None) or {}
    if not isinstance(aug, Mapping):
        raise PreprocessError(f"augmentation={aug!r}: expected a mapping of its fields")
    # replace() runs __init__, so lists from JSON are coerced to the declared tuples
    return replace(Preprocessing(), augmentation=replace(Augmentation(), **aug), **d)
