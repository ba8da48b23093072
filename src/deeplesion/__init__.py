"""deeplesion: a toolkit for the NIH DeepLesion CT dataset.

The top-level names are loaded on first use, so ``import deeplesion`` (and the CLI's
start-up) does not pull in pandas, NumPy or the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: top-level name -> module that defines it (``PRESETS`` is the window presets' old name)
_LAZY = {
    "Lesion": "deeplesion.data.lesion",
    "LesionTable": "deeplesion.data.annotations",
    "load_lesions": "deeplesion.data.annotations",
    "read_hu": "deeplesion.data.slices",
    "PRESETS": "deeplesion.data.windowing",
    "WINDOW_PRESETS": "deeplesion.data.windowing",
    "Window": "deeplesion.data.windowing",
    "apply_window": "deeplesion.data.windowing",
    "AnnotationError": "deeplesion.errors",
    "DeepLesionError": "deeplesion.errors",
    "FingerprintError": "deeplesion.errors",
    "ImageReadError": "deeplesion.errors",
}

_RENAMED = {"PRESETS": "WINDOW_PRESETS"}

__all__ = [
    "PRESETS",
    "WINDOW_PRESETS",
    "AnnotationError",
    "DeepLesionError",
    "FingerprintError",
    "ImageReadError",
    "Lesion",
    "LesionTable",
    "Window",
    "apply_window",
    "load_lesions",
    "read_hu",
]

if TYPE_CHECKING:
    from deeplesion.data.annotations import LesionTable, load_lesions
    from deeplesion.data.lesion import Lesion
    from deeplesion.data.slices import read_hu
    from deeplesion.data.windowing import WINDOW_PRESETS, Window, apply_window
    from deeplesion.data.windowing import WINDOW_PRESETS as PRESETS
    from deeplesion.errors import (
        AnnotationError,
        DeepLesionError,
        FingerprintError,
        ImageReadError,
    )


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deeplesion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
