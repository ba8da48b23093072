"""The lesion record: one DL_info.csv row, typed.

Coordinates in a :class:`Lesion` stay in the DL_info convention: 1-based pixel
coordinates (suffix ``_px1``); x is the column, y the row. Convert to 0-based array
indices only through :func:`px1_to_index` (and back through :func:`index_to_px1`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from deeplesion.data.paths import series_folder, slice_file
from deeplesion.errors import InvalidArgumentError

#: Coarse_lesion_type codes; -1 = not labelled (every train row).
LESION_TYPES = {
    -1: "unlabelled",
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}
SPLITS = {1: "train", 2: "val", 3: "test"}
SPLIT_CODES = {name: code for code, name in SPLITS.items()}
TYPE_CODES = {name: code for code, name in LESION_TYPES.items()}

#: The official box is the extent of the RECIST end points padded by this many pixels.
BOX_PADDING_PX = 5.0


#: RECIST end points x11, y11, x12, y12 (long axis), x21, y21, x22, y22 (short axis).
RecistPx1 = tuple[float, float, float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Lesion:
    """One DL_info.csv row. Pixel coordinates are 1-based (DL_info convention)."""

    row_index: int  #: 0-based data row in the source file (LesaNet's lesion index)
    file_name: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    recist_px1: RecistPx1
    box_px1: tuple[float, float, float, float]  #: x1, y1, x2, y2
    diameters_px: tuple[float, float]  #: long, short (pixels)
    location_norm: tuple[float, float, float]  #: x, y, z in [0, 1]
    coarse_type: int
    possibly_noisy: bool
    slice_range: tuple[int, int]  #: first, last slice number provided
    spacing_mm: tuple[float, float, float]  #: x, y, z (z = slice interval)
    image_size: tuple[int, int]  #: rows, cols
    dicom_window_hu: tuple[float, float]  #: min, max
    sex: str
    age_years: float | None
    split_code: int

    @property
    def series_folder(self) -> str:
        return series_folder(self.patient_index, self.study_index, self.series_id)

    @property
    def png_relpath(self) -> str:
        return f"Images_png/{self.series_folder}/{slice_file(self.key_slice_index)}"

    @property
    def split(self) -> str:
        return SPLITS[self.split_code]

    @property
    def type_name(self) -> str:
        return LESION_TYPES[self.coarse_type]

    @property
    def long_axis_px1(self) -> tuple[float, float, float, float]:
        x11, y11, x12, y12 = self.recist_px1[:4]
        return x11, y11, x12, y12

    @property
    def short_axis_px1(self) -> tuple[float, float, float, float]:
        x21, y21, x22, y22 = self.recist_px1[4:]
        return x21, y21, x22, y22

    @property
    def long_diameter_mm(self) -> float:
        return self.diameters_px[0] * self.spacing_mm[0]

    @property
    def short_diameter_mm(self) -> float:
        return self.diameters_px[1] * self.spacing_mm[0]

    @property
    def slice_interval_mm(self) -> float:
        return self.spacing_mm[2]

    @property
    def key_slice_position(self) -> int:
        """0-based position of the key slice inside ``slice_range``."""
        return self.key_slice_index - self.slice_range[0]

    @property
    def center_px1(self) -> tuple[float, float]:
        """Centre of the box, 1-based pixels."""
        x1, y1, x2, y2 = self.box_px1
        return (x1 + x2) / 2, (y1 + y2) / 2


def px1_to_index(xy_px1: Iterable[float]) -> np.ndarray:
    """DL_info 1-based pixel coordinates -> 0-based array coordinates (subtract 1).

    The result is still (x, y) ordered: x indexes columns, y rows. An array keeps its shape
    ((n, 2) points, (n, 4) boxes x1, y1, x2, y2, also with n = 0).

    Example:

        >>> px1_to_index((1, 1)).tolist()  # DL_info's first pixel is array element [0, 0]
        [0.0, 0.0]
        >>> px1_to_index((320.5, 210)).tolist()  # (column, row) of image[209, 319.5]
        [319.5, 209.0]
    """
    return _coordinates(xy_px1) - 1.0


def index_to_px1(xy_index: Iterable[float]) -> np.ndarray:
    """0-based array coordinates -> DL_info 1-based pixel coordinates (add 1); an array
    keeps its shape.

    Example:

        >>> index_to_px1((0, 511)).tolist()  # column 0, row 511 of a 512 x 512 image
        [1.0, 512.0]
    """
    return _coordinates(xy_index) + 1.0


def _coordinates(values: Iterable[float]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return np.asarray(values, dtype=np.float64)  # (n, 2) or (n, 4) as they are
    return np.asarray(list(values), dtype=np.float64)


def box_px1_to_coco(box_px1: Iterable[float]) -> list[float]:
    """DL_info (x1, y1, x2, y2) 1-based -> COCO [x, y, w, h]: the 0-based index of the
    top-left pixel, and inclusive extents (pixel counts, ``x2 - x1 + 1``)."""
    x1, y1, x2, y2 = (float(v) for v in box_px1)
    x, y = px1_to_index((x1, y1)).tolist()
    return [x, y, x2 - x1 + 1.0, y2 - y1 + 1.0]


def coco_to_box_px1(bbox: Iterable[float]) -> tuple[float, float, float, float]:
    """Inverse of :func:`box_px1_to_coco`. The last pixel's 1-based coordinate is the
    first one's 0-based index plus the extent (``x + w``)."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = index_to_px1((x, y)).tolist()
    return x1, y1, x + w, y + h


def split_code(split: str | int) -> int:
    """'train'/'val'/'test' or 1/2/3 -> 1/2/3; ValueError naming allowed values.

    Example:

        >>> split_code("val"), split_code(3)
        (2, 3)
    """
    if isinstance(split, int) and split in SPLITS:
        return split
    if isinstance(split, str) and split in SPLIT_CODES:
        return SPLIT_CODES[split]
    raise InvalidArgumentError(f"unknown split {split!r}; allowed: {sorted(SPLIT_CODES)}")


def type_code(text: str | int) -> int:
    """A Coarse_lesion_type code from its name (``'liver'``, ``'soft tissue'``,
    ``'soft-tissue'``) or its number; InvalidArgumentError naming the allowed ones."""
    key = str(text).strip().lower().replace("-", " ").replace("_", " ")
    if key in TYPE_CODES:
        return TYPE_CODES[key]
    if key.lstrip("-").isdigit() and int(key) in LESION_TYPES:
        return int(key)
    raise InvalidArgumentError(
        f"unknown lesion type {text!r}; allowed: {', '.join(TYPE_CODES)} or {sorted(LESION_TYPES)}"
    )
