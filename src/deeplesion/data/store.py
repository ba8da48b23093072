"""The training store: int16 HU sub-volumes that need no PNG decoding, and its reader.

A store folder (written by :func:`deeplesion.convert.store.build_store`) holds

``store.json``
    ``format`` (``npy`` or ``zarr``), ``version``, ``dtype`` and the body-crop parameters
    (``body_threshold_png``, ``opening_px``) its box table was computed with.
``index.csv``
    One row per array: ``volume`` (``{folder}_{first:03d}-{last:03d}``), ``path``
    (relative to the store), ``first_slice``, ``last_slice``, ``rows``, ``cols``,
    ``spacing_x``, ``spacing_y``, ``spacing_z`` (mm).
``boxes.csv``
    One row per stored slice: ``volume``, ``slice_number`` and the body-crop box
    ``x0, y0, x1, y1`` (0-based, inclusive; empty cells: the body mask is empty).
``volumes/<patient>/<volume>.npy`` (or ``.zarr``)
    Shape (slices, rows, cols), int16 HU = PNG value - 32768, slice ``first_slice + k`` at
    ``[k]``. ``.npy`` files load with ``numpy.load(path, mmap_mode="r")``; ``.zarr`` arrays
    (Zarr v3, one chunk per slice, Blosc zstd with bit-shuffle) with ``zarr.open_array``.

A sharded build writes ``index.shard-i-of-N.csv`` (and ``boxes...``, ``problems...``) instead;
the reader takes ``index.csv`` when it exists, else the union of the shard files.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplesion.errors import DeepLesionError, ImageReadError

STORE_VERSION = 1
FORMATS = ("npy", "zarr")
META = "store.json"
INDEX_COLUMNS = (
    "volume",
    "path",
    "first_slice",
    "last_slice",
    "rows",
    "cols",
    "spacing_x",
    "spacing_y",
    "spacing_z",
)
BOX_COLUMNS = ("volume", "slice_number", "x0", "y0", "x1", "y1")
HU_XOR = np.uint16(0x8000)  #: PNG value <-> int16 HU bits (PNG - 32768 without overflow)


class StoreError(DeepLesionError, ValueError):
    """A store folder that cannot be read (missing or malformed files)."""


# --------------------------------------------------------------------------- body box


def body_box(
    raw_png: np.ndarray, threshold_png: int = 32000, opening_px: int = 7
) -> tuple[int, int, int, int] | None:
    """The presets' body-crop box of one slice: 0-based inclusive ``(x0, y0, x1, y1)`` of
    ``raw_png > threshold_png`` opened with an ``opening_px`` square (outside the image =
    background, as ``scipy.ndimage.binary_opening``); None when the opened mask is empty.

    Computed as a separable minimum then maximum filter, which equals
    ``scipy.ndimage.binary_opening`` with a square (checked in the tests) at a quarter of
    its cost.
    """
    from scipy import ndimage

    mask = (np.asarray(raw_png) > threshold_png).view(np.uint8)
    if opening_px > 1:
        eroded = ndimage.minimum_filter(mask, size=opening_px, mode="constant", cval=0)
        # binary_dilation reflects an even structure: its centre moves one pixel up-left
        origin = -1 if opening_px % 2 == 0 else 0
        mask = ndimage.maximum_filter(eroded, size=opening_px, mode="constant", origin=origin)
    rows = np.flatnonzero(mask.any(1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StoreEntry:
    """One ``index.csv`` row."""

    volume: str
    path: str
    first_slice: int
    last_slice: int
    rows: int
    cols: int
    spacing_mm: tuple[float, float, float]

    @property
    def folder(self) -> str:
        return self.volume[:12]

    @property
    def n_slices(self) -> int:
        return self.last_slice - self.first_slice + 1

    def contains(self, slice_number: int) -> bool:
        return self.first_slice <= slice_number <= self.last_slice

    def row(self) -> list[str]:
        return [
            self.volume,
            self.path,
            str(self.first_slice),
            str(self.last_slice),
            str(self.rows),
            str(self.cols),
            *(repr(float(v)) for v in self.spacing_mm),
        ]


def index_files(out: Path, name: str = "index") -> list[Path]:
    """``index.csv`` if present, else the shard files ``index.shard-*.csv`` (sorted)."""
    whole = out / f"{name}.csv"
    if whole.is_file():
        return [whole]
    return sorted(out.glob(f"{name}.shard-*-of-*.csv"))


def read_meta(out: str | Path) -> dict:
    path = Path(out) / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(
            f"{out}: no {META} (not a store; build one with `deeplesion store`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable ({exc})") from None
    if meta.get("format") not in FORMATS or meta.get("version") != STORE_VERSION:
        raise StoreError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"this version reads {', '.join(FORMATS)} version {STORE_VERSION}"
        )
    return meta


def read_index(out: str | Path) -> list[StoreEntry]:
    """The store's arrays (``index.csv`` or the union of its shard files), sorted."""
    import csv

    out = Path(out)
    files = index_files(out)
    if not files:
        raise StoreError(f"{out}: no index.csv (the build did not finish; run it again)")
    entries: dict[str, StoreEntry] = {}
    for path in files:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
                raise StoreError(f"{path}: line 1: not a store index (columns {reader.fieldnames})")
            for line, row in enumerate(reader, start=2):
                try:
                    entry = StoreEntry(
                        row["volume"],
                        row["path"],
                        int(row["first_slice"]),
                        int(row["last_slice"]),
                        int(row["rows"]),
                        int(row["cols"]),
                        (float(row["spacing_x"]), float(row["spacing_y"]), float(row["spacing_z"])),
                    )
                except (TypeError, ValueError) as exc:
                    raise StoreError(f"{path}: line {line}: {exc}") from None
                entries[entry.volume] = entry
    return sorted(entries.values(), key=lambda e: (e.folder, e.first_slice))


def read_boxes(out: str | Path) -> dict[str, np.ndarray]:
    """Volume -> int32 array (slices, 4) of x0, y0, x1, y1; -1 rows: empty body mask."""
    import pandas as pd

    out = Path(out)
    frames = [pd.read_csv(p, dtype={"volume": str}) for p in index_files(out, "boxes")]
    if not frames:
        return {}
    table = pd.concat(frames).sort_values(["volume", "slice_number"], kind="stable")
    if tuple(table.columns) != BOX_COLUMNS:
        raise StoreError(f"{out}: boxes table has columns {list(table.columns)}")
    values = table[["x0", "y0", "x1", "y1"]].fillna(-1).to_numpy(np.int32)
    names = table["volume"].to_numpy()
    starts: list[int] = np.flatnonzero(np.r_[True, names[1:] != names[:-1]]).tolist()
    ends = starts[1:] + [len(names)]
    return {str(names[s]): values[s:e] for s, e in zip(starts, ends)}


# --------------------------------------------------------------------------- reader


class StoreSource:
    """A :class:`~deeplesion.data.sources.SliceSource` over a store: no PNG is decoded.

    ``read_raw`` gives the PNG values (HU + 32768, uint16) as the PNG source does;
    ``read_hu`` the int16 HU. ``body_box_px0`` returns the stored body-crop box when the
    parameters match the ones the store was built with (else None: compute it).
    Picklable (DataLoader workers): open files are not carried over.
    """

    _MAX_OPEN = 64

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        meta = read_meta(self.out)
        self.format: str = meta["format"]
        self.body_threshold_png = int(meta["body_threshold_png"])
        self.opening_px = int(meta["opening_px"])
        self.entries = read_index(self.out)
        self._by_folder: dict[str, list[StoreEntry]] = {}
        for entry in self.entries:
            self._by_folder.setdefault(entry.folder, []).append(entry)
        self._boxes = read_boxes(self.out)
        self._open: OrderedDict[str, object] = OrderedDict()
        self._offsets: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"StoreSource({str(self.out)!r})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return sum(e.n_slices for e in self.entries)

    def entry(self, folder: str, slice_number: int) -> StoreEntry | None:
        for entry in self._by_folder.get(folder, ()):
            if entry.contains(slice_number):
                return entry
        return None

    def has_slice(self, folder: str, slice_number: int) -> bool:
        return self.entry(folder, slice_number) is not None

    def read_hu(self, folder: str, slice_number: int) -> np.ndarray:
        """The slice as int16 HU ``[row, col]``."""
        entry = self.entry(folder, slice_number)
        if entry is None:
            raise ImageReadError(f"{self.out}: slice {slice_number} of {folder} is not stored")
        k = slice_number - entry.first_slice
        path = self.out / entry.path
        try:
            if self.format == "npy":
                return self._read_npy(path, entry, k)
            return np.asarray(self._array(path)[k], dtype=np.int16)
        except (OSError, ValueError, KeyError) as exc:
            raise ImageReadError(f"{path}: slice {slice_number}: {exc}") from None

    def read_raw(self, folder: str, slice_number: int) -> np.ndarray:
        return self.read_hu(folder, slice_number).view(np.uint16) ^ HU_XOR

    def body_box_px0(
        self, folder: str, slice_number: int, threshold_png: int, opening_px: int
    ) -> tuple[int, int, int, int] | None:
        """The stored body-crop box (0-based inclusive x0, y0, x1, y1), or None when the
        parameters differ from the store's, the slice is not stored or its mask is empty."""
        if (threshold_png, opening_px) != (self.body_threshold_png, self.opening_px):
            return None
        entry = self.entry(folder, slice_number)
        boxes = None if entry is None else self._boxes.get(entry.volume)
        if entry is None or boxes is None or len(boxes) != entry.n_slices:
            return None
        x0, y0, x1, y1 = (int(v) for v in boxes[slice_number - entry.first_slice])
        return None if x0 < 0 else (x0, y0, x1, y1)

    # reading ---------------------------------------------------------------------------

    def _read_npy(self, path: Path, entry: StoreEntry, k: int) -> np.ndarray:
        """One slice by offset (no memory map kept open: fork- and pickle-safe)."""
        with open(path, "rb") as fh:
            offset = self._offsets.get(entry.volume)
            if offset is None:
                offset = _npy_data_offset(fh, (entry.n_slices, entry.rows, entry.cols))
                self._offsets[entry.volume] = offset
            out = np.empty((entry.rows, entry.cols), dtype="<i2")
            fh.seek(offset + k * out.nbytes)
            if fh.readinto(out.data.cast("B")) != out.nbytes:
                raise StoreError("file shorter than its header says")
        return out

    def _array(self, path: Path) -> Any:  # a zarr array (zarr is optional, not typed here)
        key = str(path)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        import zarr

        array = zarr.open_array(path, mode="r")
        self._open[key] = array
        if len(self._open) > self._MAX_OPEN:
            self._open.popitem(last=False)
        return array


def _npy_data_offset(fh, shape: tuple[int, int, int]) -> int:
    """Where an ``.npy`` file's data starts, after checking its header describes ``shape``
    int16 C order."""
    from numpy.lib import format as npy

    major, _minor = npy.read_magic(fh)
    read = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
    header_shape, fortran, dtype = read(fh)
    if tuple(header_shape) != shape or fortran or dtype != np.dtype("<i2"):
        raise StoreError(f"header says {header_shape} {dtype}, index says {shape} int16")
    return fh.tell()


def open_store(out: str | Path) -> StoreSource:
    """A :class:`StoreSource` over the store folder ``out``."""
    return StoreSource(out)
