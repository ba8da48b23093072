"""Parsing DL_info.csv rows into :class:`Lesion` records.

:func:`parse_row` is the exact parser of one row; its messages name the column and value.
:func:`parse_columns` parses a whole table at once with NumPy and pandas, and hands every
row it cannot vouch for (a cell that is not a clean number, a wrong value count, an
unknown code, a File_name that disagrees) to :func:`parse_row`, so both paths accept the
same rows and report the same problems.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeplesion.data.lesion import LESION_TYPES, SPLITS, Lesion
from deeplesion.data.paths import parse_file_name
from deeplesion.data.table import CsvTable
from deeplesion.errors import AnnotationError

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


#: Columns of one integer each, with the codes they allow (None: any whole number).
_INTEGERS: dict[str, tuple[int, ...] | None] = {
    "Patient_index": None,
    "Study_index": None,
    "Series_ID": None,
    "Key_slice_index": None,
    "Coarse_lesion_type": tuple(LESION_TYPES),
    "Possibly_noisy": (0, 1),
    "Train_Val_Test": tuple(SPLITS),
}
#: Comma-separated columns: value count, and whether the values are whole numbers.
_VECTORS: dict[str, tuple[int, bool]] = {
    "Measurement_coordinates": (8, False),
    "Bounding_boxes": (4, False),
    "Lesion_diameters_Pixel_": (2, False),
    "Normalized_lesion_location": (3, False),
    "Slice_range": (2, True),
    "Spacing_mm_px_": (3, False),
    "Image_size": (2, True),
    "DICOM_windows": (2, False),
}


@dataclass
class ParsedRows:
    """Every row of a DL_info table, parsed."""

    lesions: list[Lesion]  #: the rows that parse, in file order
    errors: list[AnnotationError]  #: one per row that does not, in file order
    fast: np.ndarray  #: per lesion: built by the vectorised path
    arrays: dict[str, np.ndarray]  #: fields of the vectorised lesions, one row each


#: Comma-separated column -> the Lesion field it fills.
_ARRAY_FIELDS = {
    "Measurement_coordinates": "recist_px1",
    "Bounding_boxes": "box_px1",
    "Lesion_diameters_Pixel_": "diameters_px",
    "Normalized_lesion_location": "location_norm",
    "Slice_range": "slice_range",
    "Spacing_mm_px_": "spacing_mm",
    "Image_size": "image_size",
    "DICOM_windows": "dicom_window_hu",
}


def parse_columns(table: CsvTable) -> ParsedRows:
    """Every row of a DL_info table. A row's ``row_index`` is its line number minus 2
    (the data row of the file)."""
    n = len(table)
    if n == 0:
        return ParsedRows([], [], np.zeros(0, dtype=bool), {})
    row_index = table.lines - 2
    doubtful = np.zeros(n, dtype=bool)
    integers = {}
    for column, allowed in _INTEGERS.items():
        values = table.numbers(column)
        whole = np.isfinite(values) & (values == np.round(values))
        if allowed is not None:
            whole &= np.isin(values, allowed)
        doubtful |= ~whole
        integers[column] = np.where(whole, values, 0).astype(np.int64)
    sex = table.text("Patient_gender")
    doubtful |= (sex != "M") & (sex != "F")
    age_text = table.text("Patient_age")
    age = table.numbers("Patient_age")
    no_age = np.array([t.lower() in ("nan", "") for t in age_text.tolist()], dtype=bool)
    doubtful |= ~(no_age | np.isfinite(age))
    names = table.text("File_name")
    canonical = list(
        map(
            "%06d_%02d_%02d_%03d.png".__mod__,
            zip(*(integers[c].tolist() for c in list(_INTEGERS)[:4])),
        )
    )
    doubtful |= names != np.array(canonical, dtype=object)
    vectors, doubtful = _vector_columns(table, doubtful)

    good = ~doubtful
    fast = list(
        map(
            Lesion,
            row_index[good].tolist(),
            names[good].tolist(),
            *(integers[c][good].tolist() for c in list(_INTEGERS)[:4]),
            *(vectors[c] for c in list(_VECTORS)[:4]),
            integers["Coarse_lesion_type"][good].tolist(),
            (integers["Possibly_noisy"][good] == 1).tolist(),
            *(vectors[c] for c in list(_VECTORS)[4:]),
            sex[good].tolist(),
            [None if missing else a for missing, a in zip(no_age[good], age[good].tolist())],
            integers["Train_Val_Test"][good].tolist(),
        )
    )
    arrays = {name: vectors[name] for name in _ARRAY_FIELDS.values()}
    arrays.update(
        key_slice_index=integers["Key_slice_index"][good],
        age_years=np.where(no_age, np.nan, age)[good],
        coarse_type=integers["Coarse_lesion_type"][good],
        split_code=integers["Train_Val_Test"][good],
    )
    if good.all():
        return ParsedRows(fast, [], np.ones(n, dtype=bool), arrays)
    lesions: list[Lesion | None] = [None] * n
    for i, lesion in zip(np.flatnonzero(good).tolist(), fast):
        lesions[i] = lesion
    errors = []
    for i in np.flatnonzero(doubtful).tolist():
        short = table.short_row(i)
        if short is not None:
            errors.append(
                AnnotationError(
                    short.message, file=table.source, line=short.line, column="", value=short.text
                )
            )
            continue
        try:
            lesions[i] = parse_row(table.cells(i), int(row_index[i]), file=table.source)
        except AnnotationError as exc:
            errors.append(exc)
    kept = [(lesion, bool(g)) for lesion, g in zip(lesions, good) if lesion is not None]
    return ParsedRows(
        [lesion for lesion, _ in kept], errors, np.array([g for _, g in kept], bool), arrays
    )


def _comma_counts(cells: list[str]) -> np.ndarray:
    """The number of commas in each cell, counted over the cells' bytes at once."""
    text = "\n".join(cells)
    if not cells or text.count("\n") != len(cells) - 1:  # none, or a cell with a line break
        return np.array([c.count(",") for c in cells], dtype=np.int64)
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    commas = np.flatnonzero(data == ord(","))
    ends = np.searchsorted(commas, np.flatnonzero(data == ord("\n")))
    return np.diff(ends, prepend=0, append=len(commas))


def _vector_columns(table: CsvTable, doubtful: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """The comma-separated columns, for the rows that stay clear of doubt, as tuples (by
    column name) and arrays (by field name): a wrong value count, a value that is not a
    finite number, or a fraction where whole numbers belong makes a row doubtful."""
    import csv

    import pandas as pd

    texts = []
    for column, (count, _) in _VECTORS.items():
        cells = table.text(column)
        counts = _comma_counts(cells.tolist())
        doubtful = doubtful | (counts != count - 1)
        texts.append((cells, ",".join(["nan"] * count)))
    joined = [np.where(doubtful, filler, cells).tolist() for cells, filler in texts]
    block = pd.read_csv(
        io.StringIO("\n".join(map(",".join, zip(*joined)))),
        header=None,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=False,
    )
    if block.shape != (len(doubtful), sum(count for count, _ in _VECTORS.values())):
        return {c: [] for c in _VECTORS}, np.ones_like(doubtful)  # a cell spanning lines
    values = np.column_stack(
        [pd.to_numeric(block[c], errors="coerce").to_numpy(np.float64) for c in block.columns]
    )
    doubtful = doubtful | ~np.isfinite(values).all(axis=1)
    parts = {}
    start = 0
    for column, (count, integer) in _VECTORS.items():
        parts[column] = values[:, start : start + count]
        start += count
        if integer:
            doubtful = doubtful | (parts[column] != np.round(parts[column])).any(axis=1)
    good = ~doubtful
    out: dict[str, Any] = {}
    for column, (_, integer) in _VECTORS.items():
        part = parts[column][good]
        out[column] = list(zip(*(part.astype(np.int64) if integer else part).T.tolist()))
        out[_ARRAY_FIELDS[column]] = part
    return out, doubtful
