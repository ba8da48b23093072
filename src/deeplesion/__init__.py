"""deeplesion: a toolkit for the NIH DeepLesion CT dataset."""

from .annotations import Lesion, LesionTable, load_lesions
from .errors import AnnotationError, DeepLesionError, FingerprintError, ImageReadError
from .slices import read_hu
from .windowing import PRESETS, Window, apply_window

__version__ = "0.1.0"

__all__ = [
    "AnnotationError", "DeepLesionError", "FingerprintError", "ImageReadError", "Lesion",
    "LesionTable", "PRESETS", "Window", "apply_window", "load_lesions", "read_hu",
]
