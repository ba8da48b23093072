"""Slices for the explorer: names checked, files only under ROOT, windowed as ``render`` does.

A slice is asked for by its DeepLesion name (``000001_01_01_103.png``). The name must match
the release pattern before anything touches the disk; the file is then looked up in the
slice source (``Images_png/<folder>/<NNN>.png``, or a store) and, for a PNG root, in the flat
layouts ``render`` accepts (``Images_png/<name>``, ``<name>``). A file whose real path (links
followed) lies outside ROOT is treated as missing. Nothing is ever written.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from deeplesion.data.annotations import Lesion
from deeplesion.data.paths import IMAGES_DIR, SliceName, parse_file_name, slice_path
from deeplesion.data.slices import png_to_hu, read_png_raw
from deeplesion.data.sources import SliceSource
from deeplesion.data.windowing import Window, apply_window
from deeplesion.explorer.catalog import NotFoundError, ParameterError
from deeplesion.review.render import draw_lesions

#: Slice numbers have 3 digits in the release (4 allowed for very long series).
_NAME = re.compile(r"^\d{6}_\d{2}_\d{2}_\d{3,4}\.png$")


def check_name(name: str) -> SliceName:
    """A slice name from a URL -> its parts; :class:`ParameterError` for anything else."""
    if ".." in name or "/" in name or "\\" in name or "\x00" in name:
        raise ParameterError("name", f"{name!r} is not a slice name (path characters)")
    if not _NAME.match(name):
        raise ParameterError(
            "name", f"{name!r} is not a DeepLesion slice name (like '000001_01_01_103.png')"
        )
    parsed = parse_file_name(name)
    if parsed.slice_number < 1:
        raise ParameterError("name", f"{name!r}: slice numbers start at 1")
    return parsed


def encode_png(image: np.ndarray) -> bytes:
    """uint8 grey or RGB array -> PNG bytes (fast compression: the page is local)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class SliceReader:
    """Raw slices by name from a source, PNG flat layouts too, with a small LRU cache."""

    def __init__(
        self,
        root: str | Path | None,
        source: SliceSource | None = None,
        *,
        cache_slices: int = 24,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.source = source
        self.cache_slices = cache_slices
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._source_lock = threading.Lock()
        allowed = []
        if self.root is not None:
            allowed = [self.root, (self.root / IMAGES_DIR).resolve()]
        self._allowed = allowed

    def _inside(self, path: Path) -> bool:
        real = path.resolve()
        return any(real.is_relative_to(base) for base in self._allowed)

    def _png_path(self, name: SliceName) -> Path | None:
        """The PNG of a slice under ROOT, or None."""
        if self.root is None:
            return None
        candidates = (
            slice_path(self.root, name.folder, name.slice_number),
            self.root / IMAGES_DIR / name.file_name,
            self.root / name.file_name,
        )
        for path in candidates:
            if path.is_file() and self._inside(path):
                return path
        return None

    def has(self, name: SliceName) -> bool:
        if self.source is not None and self.source.has_slice(name.folder, name.slice_number):
            return True
        return self._png_path(name) is not None

    def present(self, folder: str, numbers: range) -> list[bool]:
        """Whether each slice number of a series folder can be read."""
        from deeplesion.data.paths import parse_folder

        patient, study, series = parse_folder(folder)
        return [self.has(SliceName(patient, study, series, n)) for n in numbers]

    def read_raw(self, name: SliceName) -> np.ndarray:
        """uint16 PNG values ``[row, col]``; :class:`NotFoundError` when not under ROOT."""
        key = name.file_name
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        raw = None
        if self.source is not None and self.source.has_slice(name.folder, name.slice_number):
            with self._source_lock:  # a source keeps open files; requests come in threads
                raw = self.source.read_raw(name.folder, name.slice_number)
        else:
            path = self._png_path(name)
            if path is None:
                raise NotFoundError(f"slice {key} is not under ROOT")
            raw = read_png_raw(path)
        if self.cache_slices:
            with self._lock:
                self._cache[key] = raw
                while len(self._cache) > self.cache_slices:
                    self._cache.popitem(last=False)
        return raw

    def read_hu(self, name: SliceName) -> np.ndarray:
        return png_to_hu(self.read_raw(name))


def window_image(hu: np.ndarray, window: Window, lesions: list[Lesion], overlay: bool) -> bytes:
    """PNG bytes of a slice windowed with the Key_slices formula, lesions drawn if asked."""
    grey = apply_window(hu, window)
    if overlay and lesions:
        return encode_png(draw_lesions(grey, lesions))
    return encode_png(grey)


def lesion_tile(hu: np.ndarray, lesion: Lesion, window: Window, tile_px: int = 128) -> bytes:
    """PNG bytes of a square crop around a lesion with its marks (as ``render --crops``)."""
    from deeplesion.review.crops import key_slice_tile

    return encode_png(key_slice_tile(hu, lesion, window=window, tile_px=tile_px))
