"""DeepLesion file naming: ``000089_01_01_037.png`` <-> ``Images_png/000089_01_01/037.png``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deeplesion.errors import InvalidArgumentError

IMAGES_DIR = "Images_png"
_FILE_NAME = re.compile(r"^(\d{6})_(\d{2})_(\d{2})_(\d{3,})\.png$")
_FOLDER = re.compile(r"^(\d{6})_(\d{2})_(\d{2})$")


@dataclass(frozen=True, slots=True)
class SliceName:
    """A parsed ``File_name``: patient, study, series and 1-based slice number."""

    patient: int
    study: int
    series: int
    slice_number: int

    @property
    def folder(self) -> str:
        return series_folder(self.patient, self.study, self.series)

    @property
    def file_name(self) -> str:
        return f"{self.folder}_{slice_file(self.slice_number)}"

    @property
    def relpath(self) -> str:
        """Path relative to the dataset root, with ``/`` separators."""
        return f"{IMAGES_DIR}/{self.folder}/{slice_file(self.slice_number)}"


def series_folder(patient: int, study: int, series: int) -> str:
    return f"{patient:06d}_{study:02d}_{series:02d}"


def slice_file(slice_number: int) -> str:
    """``37`` -> ``037.png``; numbers above 999 keep all their digits.

    Example:

        >>> slice_file(37), slice_file(1234)
        ('037.png', '1234.png')
    """
    return f"{slice_number:03d}.png"


def parse_file_name(file_name: str) -> SliceName:
    """Parse a DL_info ``File_name``; raises ValueError naming the value if malformed.

    Example:

        >>> name = parse_file_name("000089_01_01_037.png")
        >>> name.patient, name.study, name.series, name.slice_number
        (89, 1, 1, 37)
        >>> name.relpath  # the last underscore is a folder separator
        'Images_png/000089_01_01/037.png'
    """
    m = _FILE_NAME.match(file_name)
    if not m:
        raise InvalidArgumentError(
            f"not a DeepLesion file name: {file_name!r} (expected like '000089_01_01_037.png')"
        )
    return SliceName(*(int(g) for g in m.groups()))


def parse_folder(folder: str) -> tuple[int, int, int]:
    """``000089_01_01`` -> (patient, study, series).

    Example:

        >>> parse_folder("000089_01_01")
        (89, 1, 1)
    """
    m = _FOLDER.match(folder)
    if not m:
        raise InvalidArgumentError(f"not a DeepLesion series folder: {folder!r}")
    patient, study, series = (int(g) for g in m.groups())
    return patient, study, series


def slice_path(root: str | Path, folder: str, slice_number: int) -> Path:
    """Absolute path of one slice PNG under a dataset root."""
    return Path(root) / IMAGES_DIR / folder / slice_file(slice_number)


def key_slice_path(root: str | Path, file_name: str) -> Path:
    """Where the key slice ``file_name`` is under ``root``.

    The release layout ``Images_png/<folder>/<NNN>.png`` first; then flat copies named by
    ``File_name`` (``Images_png/<File_name>`` or ``<File_name>``). Returns the release path
    when none exists.
    """
    root = Path(root)
    release = root / parse_file_name(file_name).relpath
    for candidate in (release, root / IMAGES_DIR / file_name, root / file_name):
        if candidate.is_file():
            return candidate
    return release
