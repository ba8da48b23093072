"""How complete a local copy is: series and slices present versus those DL_info.csv expects."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deeplesion.data.annotations import Lesion
from deeplesion.data.paths import IMAGES_DIR, slice_file


@dataclass(frozen=True, slots=True)
class Completeness:
    """Counts for one dataset root. A series is expected when a DL_info row names it; its
    expected slices are the union of the rows' ``Slice_range`` (first..last, inclusive)."""

    series_expected: int
    series_present: int  #: folder holds at least one expected slice
    series_complete: int  #: folder holds every expected slice
    slices_expected: int
    slices_present: int
    key_slices_expected: int
    key_slices_present: int
    missing_series: tuple[str, ...]  #: expected folders with no expected slice, sorted

    @property
    def complete(self) -> bool:
        return self.slices_present == self.slices_expected


def expected_slices(lesions: Iterable[Lesion]) -> dict[str, set[int]]:
    """{series folder: slice numbers} from the rows' ``Slice_range``."""
    expected: dict[str, set[int]] = {}
    for lesion in lesions:
        first, last = lesion.slice_range
        expected.setdefault(lesion.series_folder, set()).update(range(first, last + 1))
    return expected


def completeness(root: str | Path, lesions: Iterable[Lesion]) -> Completeness:
    """Compare ``root/Images_png`` with what the DL_info rows expect (one listing per
    series folder; nothing is opened)."""
    lesions = list(lesions)
    images = Path(root) / IMAGES_DIR
    expected = expected_slices(lesions)
    keys = {(l.series_folder, l.key_slice_index) for l in lesions}
    present_names: dict[str, set[str]] = {}
    for folder in expected:
        try:
            with os.scandir(images / folder) as it:
                present_names[folder] = {e.name for e in it if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            present_names[folder] = set()
    series_present = series_complete = slices_present = 0
    missing = []
    for folder, numbers in expected.items():
        names = present_names[folder]
        found = sum(1 for n in numbers if slice_file(n) in names)
        slices_present += found
        series_present += found > 0
        series_complete += found == len(numbers)
        if not found:
            missing.append(folder)
    keys_present = sum(1 for folder, n in keys if slice_file(n) in present_names[folder])
    return Completeness(
        series_expected=len(expected),
        series_present=series_present,
        series_complete=series_complete,
        slices_expected=sum(len(v) for v in expected.values()),
        slices_present=slices_present,
        key_slices_expected=len(keys),
        key_slices_present=keys_present,
        missing_series=tuple(sorted(missing)),
    )
