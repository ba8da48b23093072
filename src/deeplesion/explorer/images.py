"""Slices for the explorer: names checked, files only under ROOT, windowed as ``render`` does.

A slice is asked for by its DeepLesion name (``000001_01_01_103.png``). The name must match
the release pattern before anything touches the disk; the file is then looked up in the
slice source (``Images_png/<folder>/<NNN>.png``, or a store) and, for a PNG root, in the flat
layouts ``render`` accepts (``Images_png/<name>``, ``<name>``). A file whose real path (links
followed) lies outside ROOT is treated as missing. Nothing is ever written.

Speed (``benchmarks/serve.py``): windowing maps the raw uint16 values through a 65,536-entry
uint8 table computed with :func:`~deeplesion.data.windowing.apply_window` itself (so the
pixels are those of ``render``), PNGs are encoded by OpenCV (level 0 for a page on this
machine: ten times faster than level 1, 2-5x the bytes; level 1 with run-length matching
and the Sub filter otherwise, 2.5x faster than Pillow and smaller), and the encoded answers
are kept in a bounded LRU (:class:`ResponseCache`).
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from functools import lru_cache
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


def _cv2():
    try:
        import cv2
    except ImportError:  # opencv-python-headless is in the [serve] extra; Pillow otherwise
        return None
    return cv2


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """uint8 grey or RGB array -> PNG bytes at zlib ``level`` (0: stored, no filter).

    OpenCV when installed (level >= 1: run-length matching and the Sub filter, the
    fastest and smallest of its settings on CT slices), else Pillow: the same pixels
    either way, only the compressed bytes differ.
    """
    cv2 = _cv2()
    if cv2 is not None:
        bgr = image[:, :, ::-1] if image.ndim == 3 else image  # OpenCV writes BGR order
        params = [cv2.IMWRITE_PNG_COMPRESSION, level]
        if level == 0:
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
        else:
            params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), params)
        if ok:
            return buf.tobytes()
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG", compress_level=level)
    return out.getvalue()


@lru_cache(maxsize=64)
def window_lut(window: Window) -> np.ndarray:
    """uint8 ``[65536]``: :func:`apply_window` of every raw PNG value (HU = value - 32768)."""
    lut = apply_window(np.arange(-32768, 32768, dtype=np.int32), window)
    lut.setflags(write=False)
    return lut


def window_raw(raw: np.ndarray, window: Window) -> np.ndarray:
    """Raw uint16 slice -> uint8 grey, pixel for pixel ``apply_window(png_to_hu(raw))``."""
    if raw.dtype != np.uint16:  # int32 from an old Pillow: the formula itself
        return apply_window(png_to_hu(raw), window)
    return np.take(window_lut(window), raw)


class SliceReader:
    """Raw slices by name from a source, PNG flat layouts too, with a small LRU cache."""

    def __init__(
        self,
        root: str | Path | None,
        source: SliceSource | None = None,
        *,
        cache_slices: int = 24,
        cache_mib: float = 256,
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
        #: encoded answers (slice and crop PNGs); ``cache_mib=0`` turns it off
        self.responses = ResponseCache(int(cache_mib * 2**20))

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
            raw = read_png_raw(path, opencv=True)
        if self.cache_slices:
            with self._lock:
                self._cache[key] = raw
                while len(self._cache) > self.cache_slices:
                    self._cache.popitem(last=False)
        return raw

    def read_hu(self, name: SliceName) -> np.ndarray:
        return png_to_hu(self.read_raw(name))


def window_image(
    raw: np.ndarray, window: Window, lesions: list[Lesion], overlay: bool, level: int = 1
) -> bytes:
    """PNG bytes of a raw slice windowed with the Key_slices formula, lesions drawn if asked."""
    grey = window_raw(raw, window)
    if overlay and lesions:
        return encode_png(draw_lesions(grey, lesions), level)
    return encode_png(grey, level)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An answer's bytes and its entity tag (a hash of the bytes)."""

    data: bytes
    etag: str

    @classmethod
    def of(cls, data: bytes) -> Encoded:
        return cls(data, '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"')


class ResponseCache:
    """Thread-safe LRU of encoded answers, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Encoded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Encoded | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Encoded) -> None:
        if len(value.data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old.data)
            self._items[key] = value
            self._bytes += len(value.data)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.data)


def lesion_tile(hu: np.ndarray, lesion: Lesion, window: Window, tile_px: int = 128) -> bytes:
    """PNG bytes of a square crop around a lesion with its marks (as ``render --crops``)."""
    from deeplesion.review.crops import key_slice_tile

    return encode_png(key_slice_tile(hu, lesion, window=window, tile_px=tile_px))
