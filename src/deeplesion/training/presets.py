"""The published detectors' preprocessing as named presets (:data:`PREPROCESSING_PRESETS`).

:func:`preset` returns one with any field overridden, e.g. ``preset('3dce', n_slices=27)``.
"""

from __future__ import annotations

import typing
from dataclasses import replace

from deeplesion.training.settings import (
    Augmentation,
    PreprocessError,
    Preprocessing,
    coerce_override,
)

_MULAN_AUG = Augmentation(rescale_range=(0.8, 1.2), crop_jitter_px=(-8, 7), centre_shift=True)
_A3D_AUG = Augmentation(
    affine_prob=0.8, shift_frac=0.04, scale_frac=0.2, rotate_deg=15.0, hflip_prob=0.5
)

_3DCE = Preprocessing(
    name="3dce",
    n_slices=9,
    interpolation="3dce",
    offset=50.0,
    body_crop=True,
    target_spacing_mm=0.8,
    max_size_px=512,
)

PREPROCESSING_PRESETS: dict[str, Preprocessing] = {
    # Native pixels, no crop, full window to 0..255, 3 slices at 2 mm.
    "native": Preprocessing(name="native"),
    # 3DCE (MICCAI 2018): 3 x M slices; M = 3 here, set n_slices to 3, 9, 15, 21 or 27.
    "3dce": _3DCE,
    # MULAN (MICCAI 2019): 9 slices, 3DCE's inputs plus its training augmentation.
    "mulan": replace(_3DCE, name="mulan", augmentation=_MULAN_AUG),
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
    if key not in PREPROCESSING_PRESETS:
        raise PreprocessError(f"unknown preset {name!r}; allowed: {sorted(PREPROCESSING_PRESETS)}")
    if "images" in overrides:
        if key != "3dce":
            raise PreprocessError("'images' (M) only applies to the 3dce preset")
        images = coerce_override("images", overrides.pop("images"))
        overrides["n_slices"] = 3 * typing.cast(int, images)
    params = PREPROCESSING_PRESETS[key].with_overrides(**overrides)
    if key == "3dce" and params.n_slices not in tuple(3 * m for m in THREEDCE_IMAGES):
        raise PreprocessError(
            f"3dce uses 3 x M slices with M in {THREEDCE_IMAGES}, got n_slices={params.n_slices}"
        )
    return params
