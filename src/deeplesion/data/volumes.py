"""Series folders and their contiguous sub-volumes, joined to the DL_info rows.

A sub-volume is a run of consecutive slice numbers in one series folder (the grouping of
the official NIfTI script). Loaded volumes are int16 HU arrays ``hu_xyk`` indexed
``[i, j, k]`` = DL_info pixel (x = i + 1, y = j + 1) of slice number ``first_slice + k``,
so DL_info boxes and RECIST points index them directly (after the usual -1).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import Lesion, load_lesions
from deeplesion.data.context import context_offsets_mm, plan_context
from deeplesion.data.paths import IMAGES_DIR, parse_folder, slice_path
from deeplesion.data.slices import decoded_slices, png_to_hu, read_png_raw
from deeplesion.errors import DeepLesionError, ImageReadError

_SLICE_FILE = re.compile(r"^(\d{3,})\.png$")

#: Kinds of :class:`VolumeProblem`.
PROBLEM_KINDS = (
    "folder-without-rows",  # images but no DL_info row: spacing unknown
    "row-without-image",  # a DL_info row whose key slice PNG is missing
    "incomplete-range",  # a row whose Slice_range is not all on disk
    "gap",  # slice numbers missing between two runs of one folder
    "inconsistent-spacing",  # rows of one folder disagree on the spacing
    "unreadable-slice",  # a PNG that cannot be decoded (or has another size)
)


class VolumeError(DeepLesionError, ValueError):
    """A dataset root or sub-volume request that cannot be served."""


@dataclass(frozen=True, slots=True)
class VolumeProblem:
    """Something the index or an export met; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    kind: str
    folder: str
    slice_number: int | None = None
    row_index: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = self.folder
        if self.slice_number is not None:
            where += f" slice {self.slice_number}"
        if self.row_index is not None:
            where += f" (DL_info row {self.row_index})"
        return f"{self.kind}: {where}" + (f": {self.detail}" if self.detail else "")

    def sort_key(self) -> tuple:
        return (self.folder, self.slice_number or 0, self.kind, self.row_index or -1, self.detail)


@dataclass(frozen=True, slots=True)
class SubVolume:
    """Consecutive slices ``first_slice..last_slice`` (inclusive) of one series folder.

    ``spacing_mm`` is (x, y, z) from the folder's DL_info rows (None when unknown);
    ``lesions`` pairs each DL_info row index with its key slice, for rows whose key slice
    lies in this run.
    """

    folder: str
    first_slice: int
    last_slice: int
    spacing_mm: tuple[float, float, float] | None = None
    lesions: tuple[tuple[int, int], ...] = ()
    #: rows, cols from the folder's DL_info rows (None when unknown); slices of another
    #: size are unreadable
    image_size: tuple[int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.first_slice < 1 or self.last_slice < self.first_slice:
            raise VolumeError(f"{self.folder}: bad slice run {self.first_slice}..{self.last_slice}")

    @property
    def name(self) -> str:
        """``{folder}_{first:03d}-{last:03d}``, the official script's volume name."""
        return f"{self.folder}_{self.first_slice:03d}-{self.last_slice:03d}"

    @property
    def n_slices(self) -> int:
        return self.last_slice - self.first_slice + 1

    @property
    def slice_numbers(self) -> range:
        return range(self.first_slice, self.last_slice + 1)

    @property
    def key_slices(self) -> tuple[int, ...]:
        return tuple(sorted({key for _, key in self.lesions}))

    @property
    def lesion_rows(self) -> tuple[int, ...]:
        return tuple(row for row, _ in self.lesions)

    def contains(self, slice_number: int) -> bool:
        return self.first_slice <= slice_number <= self.last_slice

    def slice_paths(self, root: str | Path) -> list[Path]:
        return [slice_path(root, self.folder, n) for n in self.slice_numbers]

    def sub(self, first_slice: int, last_slice: int) -> SubVolume:
        """The part ``first_slice..last_slice`` of this run (lesions filtered to it)."""
        if not (self.contains(first_slice) and self.contains(last_slice)):
            raise VolumeError(f"{self.name}: {first_slice}..{last_slice} is not inside")
        return replace(
            self,
            first_slice=first_slice,
            last_slice=last_slice,
            lesions=tuple(p for p in self.lesions if first_slice <= p[1] <= last_slice),
        )

    def without(self, slice_number: int) -> list[SubVolume]:
        """The runs left when one slice is dropped (0, 1 or 2 of them)."""
        parts = []
        if slice_number > self.first_slice:
            parts.append(self.sub(self.first_slice, slice_number - 1))
        if slice_number < self.last_slice:
            parts.append(self.sub(slice_number + 1, self.last_slice))
        return parts


@dataclass
class VolumeIndex:
    """Every sub-volume under a dataset root, with what the indexing found wrong."""

    root: Path
    csv_path: Path | None
    volumes: list[SubVolume]
    slices: dict[str, tuple[int, ...]]  #: folder -> sorted slice numbers on disk
    problems: list[VolumeProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.volumes)

    def __iter__(self) -> Iterator[SubVolume]:
        return iter(self.volumes)

    @property
    def n_slices(self) -> int:
        return sum(v.n_slices for v in self.volumes)

    def find(self, folder: str, slice_number: int) -> SubVolume | None:
        """The sub-volume holding this slice, or None."""
        for volume in self.volumes:
            if volume.folder == folder and volume.contains(slice_number):
                return volume
        return None

    def problems_of(self, kind: str) -> list[VolumeProblem]:
        return [p for p in self.problems if p.kind == kind]


def consecutive_runs(numbers: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """``[1, 2, 3, 7, 8]`` -> ``[(1, 3), (7, 8)]`` (input sorted, unique)."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def list_series(root: str | Path) -> dict[str, tuple[int, ...]]:
    """Series folder -> sorted slice numbers of the ``NNN.png`` files under ``Images_png``."""
    images = Path(root) / IMAGES_DIR
    if not images.is_dir():
        raise VolumeError(f"{root}: no {IMAGES_DIR}/ folder (not a DeepLesion dataset root)")
    series: dict[str, tuple[int, ...]] = {}
    with os.scandir(images) as entries:
        folders = sorted(e.name for e in entries if e.is_dir())
    for folder in folders:
        try:
            parse_folder(folder)
        except ValueError:
            continue
        with os.scandir(images / folder) as entries:
            numbers = sorted(int(m.group(1)) for e in entries if (m := _SLICE_FILE.match(e.name)))
        if numbers:
            series[folder] = tuple(numbers)
    return series


def _folder_spacing(
    folder: str, rows: list[Lesion], problems: list[VolumeProblem]
) -> tuple[float, float, float]:
    spacings = sorted({tuple(float(v) for v in r.spacing_mm) for r in rows})
    if len(spacings) > 1:
        problems.append(
            VolumeProblem(
                "inconsistent-spacing",
                folder,
                detail=f"rows give {spacings}; using {rows[0].spacing_mm} (row "
                f"{rows[0].row_index})",
            )
        )
    x_mm, y_mm, z_mm = (float(v) for v in rows[0].spacing_mm)
    return x_mm, y_mm, z_mm


def _row_without_image(row: Lesion, detail: str) -> VolumeProblem:
    return VolumeProblem(
        "row-without-image", row.series_folder, row.key_slice_index, row.row_index, detail=detail
    )


def index_volumes(
    root: str | Path,
    csv_path: str | Path | None = None,
    *,
    default_spacing_mm: tuple[float, float, float] | None = None,
    check_slices: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VolumeIndex:
    """Index a dataset root: series folders, runs of consecutive slices, DL_info rows.

    ``csv_path`` defaults to ``root/DL_info.csv`` when that exists. Folders without rows get
    ``default_spacing_mm`` (None: spacing unknown). ``check_slices`` decodes every PNG and
    splits runs at unreadable ones; ``progress(done, total)`` then counts slices.
    """
    root = Path(root)
    if csv_path is None and (root / "DL_info.csv").is_file():
        csv_path = root / "DL_info.csv"
    series = list_series(root)
    rows_by_folder: dict[str, list[Lesion]] = {}
    if csv_path is not None:
        for lesion in load_lesions(csv_path).lesions:
            rows_by_folder.setdefault(lesion.series_folder, []).append(lesion)
    problems: list[VolumeProblem] = []
    volumes: list[SubVolume] = []
    total = sum(len(v) for v in series.values()) if check_slices else 0
    done = 0
    for folder, numbers in series.items():
        rows = rows_by_folder.get(folder, [])
        spacing: tuple[float, float, float] | None
        if rows:
            spacing = _folder_spacing(folder, rows, problems)
        else:
            spacing = default_spacing_mm
            problems.append(
                VolumeProblem(
                    "folder-without-rows",
                    folder,
                    detail=f"{len(numbers)} slices; spacing "
                    + ("unknown" if spacing is None else f"{spacing} given"),
                )
            )
        on_disk = set(numbers)
        present = set(numbers)
        if check_slices:
            # every slice of a series has the size its DL_info rows give
            expected = rows[0].image_size if rows else None
            for n in numbers:
                try:
                    read_png_raw(slice_path(root, folder, n), expected)
                except ImageReadError as exc:
                    present.discard(n)
                    problems.append(VolumeProblem("unreadable-slice", folder, n, detail=str(exc)))
                done += 1
                if progress:
                    progress(done, total)
        runs = consecutive_runs(sorted(present))
        for (_, prev_last), (next_first, _) in itertools.pairwise(runs):
            missing = [n for n in range(prev_last + 1, next_first) if n not in on_disk]
            if missing:
                problems.append(
                    VolumeProblem(
                        "gap",
                        folder,
                        missing[0],
                        detail=f"slices {missing[0]}..{missing[-1]} missing between "
                        f"runs ending {prev_last} and starting {next_first}",
                    )
                )
        for first, last in runs:
            lesions = tuple(
                (r.row_index, r.key_slice_index) for r in rows if first <= r.key_slice_index <= last
            )
            size = rows[0].image_size if rows else None
            volumes.append(SubVolume(folder, first, last, spacing, lesions, size))
        for r in rows:
            if r.key_slice_index not in present:
                problems.append(_row_without_image(r, f"{r.png_relpath} missing or unreadable"))
            else:
                lo, hi = r.slice_range
                lacking = [n for n in range(lo, hi + 1) if n not in present]
                if lacking:
                    problems.append(
                        VolumeProblem(
                            "incomplete-range",
                            folder,
                            lacking[0],
                            r.row_index,
                            detail=f"Slice_range {lo}..{hi}: {len(lacking)} slices missing",
                        )
                    )
    for folder, rows in rows_by_folder.items():
        if folder not in series:
            problems += [_row_without_image(r, f"no folder {IMAGES_DIR}/{folder}") for r in rows]
    problems.sort(key=VolumeProblem.sort_key)
    return VolumeIndex(root, Path(csv_path) if csv_path else None, volumes, series, problems)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Volume:
    """A loaded sub-volume: int16 HU ``hu_xyk[i, j, k]`` = pixel (x=i+1, y=j+1) of slice
    ``first_slice + k``; shape (cols, rows, slices)."""

    subvolume: SubVolume
    hu_xyk: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float] | None:
        return self.subvolume.spacing_mm

    @property
    def hu_slices(self) -> np.ndarray:
        """The same data as ``[k, row, col]`` (a view): one :func:`read_hu` image per k."""
        return self.hu_xyk.transpose(2, 1, 0)

    def slice_hu(self, slice_number: int) -> np.ndarray:
        """One slice as ``[row, col]`` int16 HU (a view)."""
        if not self.subvolume.contains(slice_number):
            raise VolumeError(f"{self.subvolume.name}: no slice {slice_number}")
        return self.hu_slices[slice_number - self.subvolume.first_slice]

    def context(
        self, key_slice: int, *, n_slices: int = 3, step_mm: float = 2.0, weights: str = "linear"
    ) -> np.ndarray:
        """Context slices around ``key_slice`` as float32 ``(n_slices, rows, cols)``,
        sampled with the rules of :mod:`deeplesion.data.context`, within this volume."""
        interval = self.spacing_mm[2] if self.spacing_mm else float("nan")
        plan = plan_context(
            key_slice,
            interval,
            context_offsets_mm(n_slices, step_mm),
            self.subvolume.contains,
            weights=weights,
        )
        out = np.zeros((len(plan),) + self.hu_slices.shape[1:], dtype=np.float32)
        for i, blend in enumerate(plan):
            for number, weight in blend:
                out[i] += self.slice_hu(number).astype(np.float32) * np.float32(weight)
        return out


def load_subvolume(root: str | Path, subvolume: SubVolume) -> Volume:
    """Read a sub-volume's slices into one int16 HU :class:`Volume`.

    Raises :class:`~deeplesion.data.slices.SliceFailure` (an :class:`ImageReadError`) for
    an unreadable slice or one whose size differs from the first slice's.
    """
    paths = subvolume.slice_paths(root)
    buf: np.ndarray | None = None
    for k, (_, raw) in enumerate(decoded_slices(subvolume.slice_numbers, paths)):
        if buf is None:
            buf = np.empty((len(paths),) + raw.shape, dtype=np.int16)
        png_to_hu(raw, out=buf[k])
    assert buf is not None  # a SubVolume holds at least one slice
    return Volume(subvolume, buf.transpose(2, 1, 0))


def lesion_subvolume(lesion: Lesion) -> SubVolume:
    """The lesion's ``Slice_range`` as a :class:`SubVolume` (with its spacing)."""
    first, last = lesion.slice_range
    x_mm, y_mm, z_mm = lesion.spacing_mm
    return SubVolume(
        lesion.series_folder,
        first,
        last,
        (float(x_mm), float(y_mm), float(z_mm)),
        ((lesion.row_index, lesion.key_slice_index),),
    )


def load_slice_range(root: str | Path, lesion: Lesion) -> Volume:
    """A lesion's whole ``Slice_range`` as an int16 HU :class:`Volume`."""
    return load_subvolume(root, lesion_subvolume(lesion))
