"""DL_info.csv: reading it into typed lesion records (:mod:`.lesion`), and writing it.

The record, its constants and the 1-based pixel convention live in :mod:`.lesion`; they
are imported here too, since every reader of the file needs them.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeplesion.data.checks import Problem, check_lesions, duplicate_problem
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
    type_code,
)
from deeplesion.data.parse import COLUMNS, parse_columns, parse_row
from deeplesion.data.table import CsvTable, gc_paused, read_table
from deeplesion.errors import AnnotationError, NotFoundError

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
    "lesions_frame",
    "load_lesions",
    "parse_row",
    "px1_to_index",
    "read_dl_info",
    "split_code",
    "type_code",
    "write_dl_info",
]

#: SHA-1 git blob id (``git hash-object``) of the official DL_info.csv.
OFFICIAL_BLOB_ID = "f954fe34176b3443f0d89b21e21367754637aa43"
OFFICIAL_ROWS = 32735


# --------------------------------------------------------------------------- tables


@dataclass
class LesionTable:
    """Lesions loaded from one DL_info.csv, with the problems met while loading."""

    source: str
    lesions: list[Lesion]
    problems: list = field(default_factory=list)  # list[validation.Problem]

    def __len__(self) -> int:
        return len(self.lesions)

    @property
    def dropped_lines(self) -> list[int]:
        """CSV lines left out because of a fatal problem, sorted."""
        return sorted({p.line for p in self.problems if p.fatal and p.line is not None})

    def __iter__(self) -> Iterator[Lesion]:
        return iter(self.lesions)

    def select(self, predicate: Callable[[Lesion], bool]) -> LesionTable:
        return LesionTable(
            self.source, [l for l in self.lesions if predicate(l)], list(self.problems)
        )

    def by_split(self, split: str) -> LesionTable:
        code = split_code(split)
        return self.select(lambda l: l.split_code == code)

    def filtered(
        self,
        splits: Iterable[str | int] = (),
        types: Iterable[str | int] = (),
        file_names: Iterable[str] = (),
    ) -> LesionTable:
        """The lesions of any of ``splits``, of any of ``types`` (names or codes, see
        :func:`.lesion.type_code`) and on any of ``file_names`` (each filter only when given).

        Unknown splits or types raise InvalidArgumentError; file names that no lesion left
        by the other filters has raise :class:`NotFoundError` naming them.
        """
        table = self
        split_codes = {split_code(s) for s in splits}
        if split_codes:
            table = table.select(lambda l: l.split_code in split_codes)
        type_codes = {type_code(t) for t in types}
        if type_codes:
            table = table.select(lambda l: l.coarse_type in type_codes)
        names = {n.strip() for n in file_names if n.strip()}
        if names:
            unknown = sorted(names - {l.file_name for l in table})
            if unknown:
                raise NotFoundError(
                    f"not in {self.source} (after other filters): {', '.join(unknown)}"
                )
            table = table.select(lambda l: l.file_name in names)
        return table

    def find(self, name: str, which: int = 1) -> Lesion:
        """Lesion number ``which`` (1-based, file order) on key slice ``name``, or the
        lesion of data row ``name`` when no key slice has that name."""
        matches = [l for l in self.lesions if l.file_name == name]
        if not matches and name.isdigit():
            matches = [l for l in self.lesions if l.row_index == int(name)]
        if not matches:
            raise NotFoundError(f"no lesion with file name or row index {name!r}")
        if not 1 <= which <= len(matches):
            raise NotFoundError(
                f"{name} has {len(matches)} lesion(s); --lesion must be 1..{len(matches)}"
            )
        return matches[which - 1]

    @property
    def fatal_problems(self) -> list:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list:
        return [p for p in self.problems if not p.fatal]

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

    Non-strict: rows with a fatal problem (that cannot be parsed, or fail a consistency or
    plausibility check of :func:`.checks.check_lesion`) are left out; every problem is in
    ``table.problems`` and ``table.dropped_lines`` lists the lines left out. Strict: the
    first fatal problem raises :class:`AnnotationError`.
    """
    _, lesions, problems = read_dl_info(path)
    if strict:
        for problem in problems:
            if problem.fatal:
                raise problem.to_error()
    fatal = {p.line for p in problems if p.fatal}
    if fatal:
        lesions = [l for l in lesions if l.row_index + 2 not in fatal]
    return LesionTable(str(path), lesions, problems)


def read_dl_info(path: str | Path) -> tuple[int, list[Lesion], list[Problem]]:
    """(data rows, lesions that parse, every problem in line order) of a DL_info.csv.

    Read by the shared table reader (:mod:`.table`): columns by name, blank lines skipped,
    a row longer than the header is a fatal problem (and left out).
    """
    table = read_table(path, COLUMNS, numbers=_NUMBER_COLUMNS, error=AnnotationError)
    with gc_paused():
        parsed = parse_columns(table)
    lesions, fast = parsed.lesions, parsed.fast
    problems = [Problem.from_error(e) for e in parsed.errors]
    if fast.all():
        problems += check_lesions(lesions, file=table.source, arrays=parsed.arrays)
    else:
        built = [l for l, f in zip(lesions, fast.tolist()) if f]
        problems += check_lesions(built, file=table.source, arrays=parsed.arrays)
        problems += check_lesions([l for l, f in zip(lesions, fast) if not f], file=table.source)
    if table.width_problems:
        too_long = {w.line for w in table.width_problems}
        lesions = [l for l in lesions if l.row_index + 2 not in too_long]
        problems = [p for p in problems if p.line not in too_long]
        problems += [
            Problem(table.source, w.line, "", w.text, w.message) for w in table.width_problems
        ]
    problems += _duplicates(table)
    problems.sort(key=lambda p: p.line or 0)  # stable: a row's problems keep their order
    return len(table), lesions, problems


def _duplicates(table: CsvTable) -> list[Problem]:
    """A warning for each row that repeats an earlier row cell for cell.

    Candidates are the rows whose file name and RECIST coordinates recur (a row equal cell
    for cell is among them); each is then compared cell for cell as written."""
    frame = pd.DataFrame({c: table.columns[c] for c in _DUPLICATE_KEY})
    candidates = np.flatnonzero(frame.duplicated(keep=False).to_numpy())
    seen: dict[tuple, int] = {}
    out = []
    for i in candidates.tolist():
        problem = duplicate_problem(table.cells(i), int(table.lines[i]), seen, file=table.source)
        if problem is not None:
            out.append(problem)
    return out


_DUPLICATE_KEY = ("File_name", "Measurement_coordinates")

#: Columns read as numbers by the table reader (the rest stay text).
_NUMBER_COLUMNS = (
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Train_Val_Test",
    "Patient_age",
)


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
            arr = np.asarray(values, dtype=float).reshape(len(lesions), len(_FRAME_COLUMNS[f.name]))
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
