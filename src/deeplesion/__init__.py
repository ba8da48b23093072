"""deeplesion: a toolkit for the NIH DeepLesion CT dataset."""

from deeplesion.data.annotations import Lesion, LesionTable, load_lesions
from deeplesion.data.slices import read_hu
from deeplesion.data.windowing import PRESETS, Window, apply_window
from deeplesion.errors import AnnotationError, DeepLesionError, FingerprintError, ImageReadError

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
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
