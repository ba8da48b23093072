"""DL_info.csv: reading it into typed lesion records (:mod:`.lesion`), and writing it.

The record, its constants and the 1-based pixel convention live in :mod:`.lesion`; they
are imported here too, since every reader of the file needs them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeplesion.data.checks import Problem, check_lesion
from deeplesion.data.lesion import (
    BOX_PADDING_PX,
    LESION_TYPES,
    SPLIT_CODES,
    SPLITS,
    TYPE_CODES,
    Lesion,
    RecistPx1,
    index_to_px1,
    px1_to_index,
    split_code,
)
from deeplesion.data.paths import parse_file_name
from deeplesion.errors import AnnotationError

__all__ = [
    "BOX_PADDING_PX",
    "COLUMNS",
    "LESION_TYPES",
    "OFFICIAL_BLOB_ID",
    "OFFICIAL_ROWS",
    "SPLITS",
    "SPLIT_CODES",
    "TYPE_CODES",
    "Lesion",
    "LesionTable",
    "RecistPx1",
    "git_blob_id",
    "index_to_px1",
    "is_official",
    "iter_rows",
    "lesions_frame",
    "load_lesions",
    "parse_row",
    "px1_to_index",
    "split_code",
    "write_dl_info",
]

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


def parse_row(cells: Mapping[str, str | None], row_index: int, *, file: str = "") -> Lesion:
    """Parse one CSV row (column name -> text) into a :class:`Lesion`.

    Raises :class:`AnnotationError` naming file, line, column and value.
    """
    try:
        return _parse_row(cells, row_index)
    except _BadCell as bad:
        raise AnnotationError(
            bad.message, file=file, line=row_index + 2, column=bad.column, value=bad.value
        ) from None


def _parse_row(given: Mapping[str, str | None], row_index: int) -> Lesion:
    cells = {column: text for column, text in given.items() if text is not None}
    for column in COLUMNS:
        if column not in cells:
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


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str | None]]]:
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


def load_lesions(path: str | Path, *, strict: bool = False) -> LesionTable:
    """Load DL_info.csv (or a split or excerpt of it) into a :class:`LesionTable`.

    Non-strict: rows that cannot be parsed are left out and recorded as fatal problems in
    ``table.problems``, together with the consistency problems of :func:`validation.check_lesion`.
    Strict: the first fatal problem raises :class:`AnnotationError`.
    """
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
    data: dict[str, Any] = {}
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
