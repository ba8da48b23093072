"""DL_info.csv: typed lesion records.

Coordinates in a :class:`Lesion` stay in the DL_info convention: 1-based pixel
coordinates (suffix ``_px1``); x is the column, y the row. Convert to 0-based array
indices only through :func:`px1_to_index`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from deeplesion.data.paths import parse_file_name, series_folder, slice_file
from deeplesion.errors import AnnotationError

#: SHA-1 git blob id (``git hash-object``) of the official DL_info.csv.
OFFICIAL_BLOB_ID = "f954fe34176b3443f0d89b21e21367754637aa43"
OFFICIAL_ROWS = 32735

COLUMNS = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)

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


@dataclass(frozen=True, slots=True)
class Lesion:
    """One DL_info.csv row. Pixel coordinates are 1-based (DL_info convention)."""

    row_index: int  #: 0-based data row in the source file (LesaNet's lesion index)
    file_name: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    recist_px1: tuple[float, float, float, float, float, float, float, float]
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
        return self.recist_px1[:4]  # type: ignore[return-value]

    @property
    def short_axis_px1(self) -> tuple[float, float, float, float]:
        return self.recist_px1[4:]  # type: ignore[return-value]

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

    The result is still (x, y) ordered: x indexes columns, y rows.

    Example:

        >>> px1_to_index((1, 1)).tolist()  # DL_info's first pixel is array element [0, 0]
        [0.0, 0.0]
        >>> px1_to_index((320.5, 210)).tolist()  # (column, row) of image[209, 319.5]
        [319.5, 209.0]
    """
    return np.asarray(list(xy_px1), dtype=np.float64) - 1.0


def index_to_px1(xy_index: Iterable[float]) -> np.ndarray:
    """0-based array coordinates -> DL_info 1-based pixel coordinates (add 1).

    Example:

        >>> index_to_px1((0, 511)).tolist()  # column 0, row 511 of a 512 x 512 image
        [1.0, 512.0]
    """
    return np.asarray(list(xy_index), dtype=np.float64) + 1.0


# --------------------------------------------------------------------------- parsing


class _BadCell(Exception):
    """Internal: a cell problem, turned into AnnotationError with file and line."""

    def __init__(self, column: str, value: object, message: str) -> None:
        super().__init__(message)
        self.column, self.value, self.message = column, value, message


def _numbers(cells: dict[str, str], column: str, count: int, integer: bool = False) -> tuple:
    text = cells[column]
    parts = text.split(",")
    if len(parts) != count:
        raise _BadCell(column, text, f"expected {count} comma-separated values, found {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise _BadCell(column, text, "not a number") from None
    if not all(map(math.isfinite, values)):
        raise _BadCell(column, text, "non-finite number")
    if integer:
        whole = [int(v) for v in values]
        if whole != values:
            raise _BadCell(column, text, "expected whole numbers")
        return tuple(whole)
    return tuple(values)


def _integer(cells: dict[str, str], column: str, allowed=None, hint: str = "") -> int:
    value = _numbers(cells, column, 1, integer=True)[0]
    if allowed is not None and value not in allowed:
        raise _BadCell(column, cells[column], hint)
    return value


def parse_row(cells: dict[str, str], row_index: int, *, file: str = "") -> Lesion:
    """Parse one CSV row (column name -> text) into a :class:`Lesion`.

    Raises :class:`AnnotationError` naming file, line, column and value.
    """
    try:
        return _parse_row(cells, row_index)
    except _BadCell as bad:
        raise AnnotationError(
            bad.message, file=file, line=row_index + 2, column=bad.column, value=bad.value
        ) from None


def _parse_row(cells: dict[str, str], row_index: int) -> Lesion:
    for column in COLUMNS:
        if cells.get(column) is None:
            raise _BadCell(column, None, "missing cell")
    file_name = cells["File_name"].strip()
    try:
        name = parse_file_name(file_name)
    except ValueError as exc:
        raise _BadCell("File_name", cells["File_name"], str(exc)) from None
    sex = cells["Patient_gender"].strip()
    if sex not in ("M", "F"):
        raise _BadCell("Patient_gender", cells["Patient_gender"], "expected M or F")
    age_text = cells["Patient_age"].strip()
    age = None if age_text.lower() in ("nan", "") else _numbers(cells, "Patient_age", 1)[0]
    lesion = Lesion(
        row_index=row_index,
        file_name=file_name,
        patient_index=_integer(cells, "Patient_index"),
        study_index=_integer(cells, "Study_index"),
        series_id=_integer(cells, "Series_ID"),
        key_slice_index=_integer(cells, "Key_slice_index"),
        recist_px1=_numbers(cells, "Measurement_coordinates", 8),
        box_px1=_numbers(cells, "Bounding_boxes", 4),
        diameters_px=_numbers(cells, "Lesion_diameters_Pixel_", 2),
        location_norm=_numbers(cells, "Normalized_lesion_location", 3),
        coarse_type=_integer(
            cells,
            "Coarse_lesion_type",
            LESION_TYPES,
            f"unknown lesion type code (allowed: {sorted(LESION_TYPES)})",
        ),
        possibly_noisy=bool(_integer(cells, "Possibly_noisy", (0, 1), "expected 0 or 1")),
        slice_range=_numbers(cells, "Slice_range", 2, integer=True),
        spacing_mm=_numbers(cells, "Spacing_mm_px_", 3),
        image_size=_numbers(cells, "Image_size", 2, integer=True),
        dicom_window_hu=_numbers(cells, "DICOM_windows", 2),
        sex=sex,
        age_years=age,
        split_code=_integer(
            cells, "Train_Val_Test", SPLITS, "expected 1 (train), 2 (val) or 3 (test)"
        ),
    )
    parsed = (lesion.patient_index, lesion.study_index, lesion.series_id, lesion.key_slice_index)
    named = (name.patient, name.study, name.series, name.slice_number)
    for column, a, b in zip(
        ("Patient_index", "Study_index", "Series_ID", "Key_slice_index"), parsed, named
    ):
        if a != b:
            raise _BadCell(column, cells[column], f"disagrees with File_name {file_name!r} ({b})")
    return lesion


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (0-based row index, cells) for each data row; checks the header."""
    from deeplesion.data.io import read_text

    path = Path(path)
    with io.StringIO(read_text(path), newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise AnnotationError("empty file", file=str(path), line=1)
        # Columns are found by name, so extra columns (e.g. a leading index) are tolerated.
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise AnnotationError(f"missing columns {missing}", file=str(path), line=1)
        positions = {c: header.index(c) for c in COLUMNS}
        for row_index, row in enumerate(reader):
            if not row:
                continue
            yield row_index, {c: (row[i] if i < len(row) else None) for c, i in positions.items()}


# --------------------------------------------------------------------------- tables


@dataclass
class LesionTable:
    """Lesions loaded from one DL_info.csv, with the problems met while loading."""

    source: str
    lesions: list[Lesion]
    problems: list = field(default_factory=list)  # list[validation.Problem]

    def __len__(self) -> int:
        return len(self.lesions)

    def __iter__(self) -> Iterator[Lesion]:
        return iter(self.lesions)

    def select(self, predicate: Callable[[Lesion], bool]) -> LesionTable:
        return LesionTable(
            self.source, [l for l in self.lesions if predicate(l)], list(self.problems)
        )

    def by_split(self, split: str) -> LesionTable:
        code = split_code(split)
        return self.select(lambda l: l.split_code == code)

    def by_file_name(self) -> dict[str, list[Lesion]]:
        """Key slice -> its lesions, in file order."""
        out: dict[str, list[Lesion]] = {}
        for lesion in self.lesions:
            out.setdefault(lesion.file_name, []).append(lesion)
        return out

    def frame(self) -> pd.DataFrame:
        """A DataFrame view: one row per lesion, multi-value cells split into columns."""
        return lesions_frame(self.lesions)


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
    raise ValueError(f"unknown split {split!r}; allowed: {sorted(SPLIT_CODES)}")


def load_lesions(path: str | Path, *, strict: bool = False) -> LesionTable:
    """Load DL_info.csv (or a split or excerpt of it) into a :class:`LesionTable`.

    Non-strict: rows that cannot be parsed are left out and recorded as fatal problems in
    ``table.problems``, together with the consistency problems of :func:`validation.check_lesion`.
    Strict: the first fatal problem raises :class:`AnnotationError`.
    """
    from deeplesion.data.validation import Problem, check_lesion

    path = Path(path)
    lesions: list[Lesion] = []
    problems: list[Problem] = []
    for row_index, cells in iter_rows(path):
        try:
            lesion = parse_row(cells, row_index, file=str(path))
        except AnnotationError as exc:
            if strict:
                raise
            problems.append(Problem.from_error(exc))
            continue
        for problem in check_lesion(lesion, file=str(path)):
            if strict and problem.fatal:
                raise problem.to_error()
            problems.append(problem)
        lesions.append(lesion)
    return LesionTable(str(path), lesions, problems)


_FRAME_COLUMNS = {
    "recist_px1": ["x11", "y11", "x12", "y12", "x21", "y21", "x22", "y22"],
    "box_px1": ["box_x1", "box_y1", "box_x2", "box_y2"],
    "diameters_px": ["long_diameter_px", "short_diameter_px"],
    "location_norm": ["location_x", "location_y", "location_z"],
    "slice_range": ["slice_first", "slice_last"],
    "spacing_mm": ["spacing_x_mm", "spacing_y_mm", "slice_interval_mm"],
    "image_size": ["rows", "cols"],
    "dicom_window_hu": ["window_min_hu", "window_max_hu"],
}


def lesions_frame(lesions: Iterable[Lesion]) -> pd.DataFrame:
    """One row per lesion; vector fields split into named scalar columns, plus derived ones."""
    lesions = list(lesions)
    data: dict[str, list] = {}
    for f in fields(Lesion):
        values = [getattr(l, f.name) for l in lesions]
        if f.name in _FRAME_COLUMNS:
            arr = np.asarray(values, dtype=float).reshape(len(lesions), -1)
            for i, col in enumerate(_FRAME_COLUMNS[f.name]):
                data[col] = arr[:, i]
        else:
            data[f.name] = values
    for prop in (
        "series_folder",
        "png_relpath",
        "split",
        "type_name",
        "long_diameter_mm",
        "short_diameter_mm",
        "key_slice_position",
    ):
        data[prop] = [getattr(l, prop) for l in lesions]
    frame = pd.DataFrame(data)
    for col in ("slice_first", "slice_last", "rows", "cols"):
        frame[col] = frame[col].astype(int)
    frame["age_years"] = frame["age_years"].astype(float)
    return frame


def git_blob_id(path: str | Path) -> str:
    """The id ``git hash-object`` gives a file (SHA-1 of ``blob <size>\\0`` + content)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_official(path: str | Path) -> bool:
    """True when the file is byte-for-byte the official DL_info.csv."""
    return git_blob_id(path) == OFFICIAL_BLOB_ID


def write_dl_info(lesions: Iterable[Lesion], path: str | Path) -> None:
    """Write lesions as a DL_info.csv in the release's exact format (atomic)."""
    from deeplesion.data.io import atomic_path

    def fmt(x: float) -> str:
        return f"{x:.6g}"

    def vec(values: Iterable[float]) -> str:
        return ", ".join(fmt(v) for v in values)

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for l in lesions:
            writer.writerow(
                [
                    l.file_name,
                    l.patient_index,
                    l.study_index,
                    l.series_id,
                    l.key_slice_index,
                    vec(l.recist_px1),
                    vec(l.box_px1),
                    vec(l.diameters_px),
                    vec(l.location_norm),
                    l.coarse_type,
                    int(l.possibly_noisy),
                    vec(l.slice_range),
                    vec(l.spacing_mm),
                    vec(l.image_size),
                    vec(l.dicom_window_hu),
                    l.sex,
                    "NaN" if l.age_years is None else fmt(l.age_years),
                    l.split_code,
                ]
            )
