"""Where slices come from: the release's PNGs, or a store that needs no decoding.

Everything that reads slices for training goes through a :class:`SliceSource`, so the same
pipeline runs on ``Images_png/`` and on a converted store with identical results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from deeplesion.data.paths import slice_path
from deeplesion.data.slices import read_png_raw


@runtime_checkable
class SliceSource(Protocol):
    """Raw slices by series folder (``000001_01_01``) and 1-based slice number."""

    def has_slice(self, folder: str, slice_number: int) -> bool:
        """Whether the slice exists in this source."""
        ...

    def read_raw(self, folder: str, slice_number: int) -> np.ndarray:
        """The slice as uint16 PNG values ``[row, col]`` (HU = value - 32768).

        Raises :class:`~deeplesion.errors.ImageReadError` when it is missing or unreadable.
        """
        ...


class PngSource:
    """Slices read from ``ROOT/Images_png/<folder>/<NNN>.png``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PngSource({str(self.root)!r})"

    def has_slice(self, folder: str, slice_number: int) -> bool:
        return slice_path(self.root, folder, slice_number).is_file()

    def read_raw(self, folder: str, slice_number: int) -> np.ndarray:
        return read_png_raw(slice_path(self.root, folder, slice_number), opencv=True)


def as_source(root_or_source: str | Path | SliceSource) -> SliceSource:
    """A dataset root (str or Path) becomes a :class:`PngSource`; a source is kept."""
    if isinstance(root_or_source, (str, Path)):
        return PngSource(root_or_source)
    return root_or_source
