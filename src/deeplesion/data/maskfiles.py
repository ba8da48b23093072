"""The masks folder: label PNGs per slice and ``masks.csv``, one row per lesion.

Layout of a masks folder ``M`` (written by ``deeplesion masks``; the synthetic sample's
exact masks use it too, in ``ROOT/sample_masks``)::

    M/masks.csv                    row_index, File_name, label, method, status, slices, size
    M/png/<folder>/<NNN>.png       uint8 labels of one slice, 0 = background
    M/nifti/<folder>_<a>-<b>.nii.gz  label volumes on the NIfTI export's grid (optional)

A lesion's ``label`` is 1 + the rank of its DL_info row among the rows of its series folder
(row order), so one value names one lesion on every slice of the series. A pixel two
lesions claim keeps the lower label.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import Lesion
from deeplesion.data.io import atomic_path, read_text, write_text_atomic
from deeplesion.data.paths import parse_file_name, slice_file
from deeplesion.errors import CellError, DeepLesionError, InvalidTypeError, MissingDataError

MASKS_CSV = "masks.csv"
PNG_DIR = "png"
NIFTI_DIR = "nifti"
SETTINGS_JSON = "settings.json"
COLUMNS = (
    "row_index",
    "File_name",
    "on_slice",
    "label",
    "method",
    "status",
    "first_slice",
    "last_slice",
    "area_px",
    "long_mm",
    "short_mm",
)


class MaskFileError(CellError):
    """A masks.csv cell or label PNG that cannot be used."""


@dataclass(frozen=True, slots=True)
class MaskRecord:
    """One lesion's mask: where it is and how it was made.

    ``status`` is ``ok`` or what went wrong; ``first_slice..last_slice`` are the slice
    numbers holding the mask (the key slice alone for 2-D masks); ``area_px``, ``long_mm``
    and ``short_mm`` are measured on the key slice.
    """

    row_index: int
    file_name: str
    on_slice: int  #: 1-based rank of the row among its key slice's rows (ULS23's NN)
    label: int
    method: str
    status: str = "ok"
    first_slice: int = 0
    last_slice: int = 0
    area_px: int = 0
    long_mm: float = math.nan
    short_mm: float = math.nan

    @property
    def folder(self) -> str:
        return parse_file_name(self.file_name).folder

    @property
    def key_slice(self) -> int:
        return parse_file_name(self.file_name).slice_number

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def slice_numbers(self) -> range:
        return range(self.first_slice, self.last_slice + 1) if self.ok else range(0)

    def row(self) -> list[str]:
        return [
            str(self.row_index),
            self.file_name,
            str(self.on_slice),
            str(self.label),
            self.method,
            self.status,
            str(self.first_slice),
            str(self.last_slice),
            str(self.area_px),
            f"{self.long_mm:.3f}",
            f"{self.short_mm:.3f}",
        ]


def series_labels(lesions: Iterable[Lesion]) -> dict[int, int]:
    """``{row_index: label}``: 1 + the row's rank among its series folder's rows."""
    by_folder: dict[str, list[int]] = {}
    for lesion in lesions:
        by_folder.setdefault(lesion.series_folder, []).append(lesion.row_index)
    labels = {}
    for rows in by_folder.values():
        for rank, row in enumerate(sorted(rows), start=1):
            if rank > 255:
                raise MaskFileError(f"more than 255 lesions in one series (row {row})")
            labels[row] = rank
    return labels


def slice_ranks(lesions: Iterable[Lesion]) -> dict[int, int]:
    """``{row_index: NN}``: 1-based rank of each row among its key slice's rows."""
    by_file: dict[str, list[int]] = {}
    for l in lesions:
        by_file.setdefault(l.file_name, []).append(l.row_index)
    return {row: i for rows in by_file.values() for i, row in enumerate(sorted(rows), start=1)}


def match_records(
    records: dict[int, MaskRecord], lesions: Iterable[Lesion], *, ok_only: bool = True
) -> dict[int, MaskRecord]:
    """``{row_index: record}`` of the lesions that have a mask.

    A record belongs to a lesion by key slice and rank on it (``File_name``, ``on_slice``),
    so a split or an excerpt of the DL_info.csv the masks were made from still finds them.
    """
    lesions = list(lesions)
    by_slice = {(r.file_name, r.on_slice): r for r in records.values()}
    ranks = slice_ranks(lesions)
    out = {}
    for l in lesions:
        record = by_slice.get((l.file_name, ranks[l.row_index]))
        if record is not None and (record.ok or not ok_only):
            out[l.row_index] = record
    return out


def mask_png_path(masks_dir: str | Path, folder: str, slice_number: int) -> Path:
    return Path(masks_dir) / PNG_DIR / folder / slice_file(slice_number)


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write a uint8 label image atomically (8-bit grey PNG, same array, same bytes)."""
    from PIL import Image

    arr = np.asarray(labels)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise InvalidTypeError(f"label images are 2-D uint8, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", compress_level=6)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def read_label_png(path: str | Path) -> np.ndarray:
    """A label PNG as uint8 ``[row, col]``; :class:`MaskFileError` if it is not one."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: label PNG not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "1"):
                raise MaskFileError(f"not an 8-bit label image (mode {img.mode})", file=str(path))
            return np.asarray(img.convert("L") if img.mode == "1" else img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise MaskFileError(f"unreadable PNG: {exc}", file=str(path)) from None


def write_masks_csv(path: str | Path, records: Iterable[MaskRecord]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(r.row() for r in sorted(records, key=lambda r: r.row_index))
    write_text_atomic(path, text.getvalue())


def read_masks_csv(path: str | Path) -> dict[int, MaskRecord]:
    """``{row_index: record}``; bad cells raise :class:`MaskFileError` with line and column."""
    path = Path(path)
    if path.is_dir():
        path = path / MASKS_CSV
    if not path.is_file():
        raise MissingDataError(f"{path}: no masks.csv (write one with `deeplesion masks`)")
    reader = csv.DictReader(io.StringIO(read_text(path)))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise MaskFileError(f"missing columns {missing}", file=str(path), line=1)
    out: dict[int, MaskRecord] = {}
    for line, row in enumerate(reader, start=2):
        values: dict[str, object] = {}
        for column, kind in zip(
            COLUMNS, (int, str, int, int, str, str, int, int, int, float, float)
        ):
            cell = row[column]
            try:
                values[column] = kind(cell) if kind is not str else (cell or "")
            except (TypeError, ValueError):
                raise MaskFileError(
                    f"expected {kind.__name__}",
                    file=str(path),
                    line=line,
                    column=column,
                    value=cell,
                ) from None
        try:
            parse_file_name(str(values["File_name"]))
        except ValueError:
            raise MaskFileError(
                "not a DeepLesion File_name",
                file=str(path),
                line=line,
                column="File_name",
                value=values["File_name"],
            ) from None
        record = MaskRecord(*values.values())  # type: ignore[arg-type]
        out[record.row_index] = record
    return out


def lesion_mask_slices(masks_dir: str | Path, record: MaskRecord) -> dict[int, np.ndarray]:
    """``{slice_number: bool mask}`` of one lesion, from the folder's label PNGs."""
    out = {}
    for n in record.slice_numbers:
        out[n] = read_label_png(mask_png_path(masks_dir, record.folder, n)) == record.label
    return out


def write_settings(masks_dir: str | Path, settings: dict) -> None:
    write_text_atomic(Path(masks_dir) / SETTINGS_JSON, json.dumps(settings, sort_keys=True) + "\n")


def read_settings(masks_dir: str | Path) -> dict:
    """The settings a masks folder was made with (``{}`` when it has none)."""
    path = Path(masks_dir) / SETTINGS_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(read_text(path))
    except ValueError as exc:
        raise MaskFileError(f"not JSON: {exc}", file=str(path)) from None


class MaskSettingsError(DeepLesionError, ValueError):
    """A masks folder made with other settings than the ones asked for."""
