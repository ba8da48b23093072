"""One run of the training store: decode its PNGs, write its array atomically (``.npy``
or Zarr v3), check a finished one, and compare one with its PNGs. Tasks are picklable and
run in this process, a worker process or on Dask (:mod:`deeplesion.convert.jobs`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.convert.jobs import (
    RunResult,
    RunTask,
    convert_run,
    remove_stale_temps,
)
from deeplesion.data.io import atomic_path
from deeplesion.data.slices import decoded_slices, read_png_raw
from deeplesion.data.store import HU_XOR, StoreEntry, body_box
from deeplesion.data.volumes import SubVolume
from deeplesion.errors import ImageReadError

#: Zarr codec settings (measured in benchmarks/store.py: level 1 is within 2% of level 5's
#: size at under half its write time).
ZSTD_LEVEL = 1

Box = tuple[int, int, int, int] | None


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class StoreTask(RunTask):
    """One contiguous run to store."""

    fmt: str = "npy"
    threshold_png: int = 32000
    opening_px: int = 7
    known_boxes: tuple[tuple[str, tuple[Box, ...]], ...] = ()  #: from earlier tables


@dataclass(frozen=True)
class StoredRun:
    entry: StoreEntry
    boxes: tuple[Box, ...]  #: per slice, first..last
    size_bytes: int
    png_bytes: int


def array_relpath(sub: SubVolume, fmt: str) -> str:
    """``volumes/<patient>/<volume>.npy`` (or ``.zarr``), relative to the store."""
    return f"volumes/{sub.folder[:6]}/{sub.name}.{fmt}"


def _write_run(task: StoreTask, sub: SubVolume, path: Path) -> tuple[StoreEntry, list[Box]]:
    """Decode the run's PNGs and write its array at ``path`` (atomically)."""
    boxes: list[Box] = []
    shape: tuple[int, int] | None = None
    target = _npy_target if task.fmt == "npy" else _zarr_target
    with target(path, sub.n_slices) as put:
        for k, (_, raw) in enumerate(decoded_slices(sub.slice_numbers, sub.slice_paths(task.root))):
            shape = raw.shape
            put(k, (raw ^ HU_XOR).view(np.int16))
            boxes.append(body_box(raw, task.threshold_png, task.opening_px))
    assert shape is not None
    return _entry(sub, task.fmt, shape), boxes


def _entry(sub: SubVolume, fmt: str, shape: tuple[int, ...]) -> StoreEntry:
    assert sub.spacing_mm is not None
    x_mm, y_mm, z_mm = (float(v) for v in sub.spacing_mm)
    return StoreEntry(
        sub.name,
        array_relpath(sub, fmt),
        sub.first_slice,
        sub.last_slice,
        int(shape[0]),
        int(shape[1]),
        (x_mm, y_mm, z_mm),
    )


@contextlib.contextmanager
def _npy_target(path: Path, n_slices: int) -> Iterator[Callable[[int, np.ndarray], None]]:
    """``put(k, hu)`` streams slices into an ``.npy`` file (the header ``numpy.save``
    writes, then the data), renamed onto ``path`` when all are in."""
    from numpy.lib import format as npy

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:

        def put(k: int, hu: np.ndarray) -> None:
            if k == 0:
                header = {"descr": "<i2", "fortran_order": False, "shape": (n_slices, *hu.shape)}
                npy.write_array_header_1_0(fh, header)
            fh.write(np.ascontiguousarray(hu, dtype="<i2").tobytes())

        yield put


@contextlib.contextmanager
def _zarr_target(path: Path, n_slices: int) -> Iterator[Callable[[int, np.ndarray], None]]:
    """``put(k, hu)`` writes one chunk of a Zarr v3 array built in a temporary folder and
    renamed onto ``path`` when all are in."""
    import zarr
    from zarr.codecs import BloscCodec

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".incomplete", dir=path.parent))
    array = None
    try:

        def put(k: int, hu: np.ndarray) -> None:
            nonlocal array
            if array is None:
                array = zarr.create_array(
                    tmp / "a",
                    shape=(n_slices, *hu.shape),
                    chunks=(1, *hu.shape),
                    dtype="int16",
                    compressors=BloscCodec(cname="zstd", clevel=ZSTD_LEVEL, shuffle="bitshuffle"),
                    fill_value=0,
                    zarr_format=3,
                    config={"write_empty_chunks": True},
                )
            array[k] = hu

        yield put
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / "a", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_array(path: Path, fmt: str) -> np.ndarray:
    """A stored array read whole (int16, (slices, rows, cols))."""
    if fmt == "npy":
        return np.load(path, mmap_mode="r")
    import zarr

    return np.asarray(zarr.open_array(path, mode="r")[...])


def check_run(out_dir: Path, sub: SubVolume, fmt: str) -> StoreEntry | None:
    """The entry of a complete stored array for ``sub``, or None if it must be written."""
    path = out_dir / array_relpath(sub, fmt)
    try:
        if fmt == "npy":
            if not path.is_file():
                return None
            array = np.load(path, mmap_mode="r")
            shape, dtype = array.shape, array.dtype
            complete = array.size * 2 + array.offset == path.stat().st_size
        else:
            if not (path / "zarr.json").is_file():
                return None
            import zarr

            array = zarr.open_array(path, mode="r")
            shape, dtype = array.shape, array.dtype
            complete = array.nchunks_initialized == shape[0]
    except (OSError, ValueError, KeyError):
        return None
    if len(shape) != 3 or shape[0] != sub.n_slices or dtype != np.int16 or not complete:
        return None
    return _entry(sub, fmt, shape[1:])


def run_store_task(task: StoreTask) -> RunResult[StoredRun]:
    """Store one run: keep a complete array, split at unreadable slices, report them."""
    out_dir = Path(task.out_dir)
    known = dict(task.known_boxes)

    def convert(sub: SubVolume) -> tuple[StoredRun, bool]:
        path = out_dir / array_relpath(sub, task.fmt)
        remove_stale_temps(path.parent, sub, f".{task.fmt}")
        entry = check_run(out_dir, sub, task.fmt)
        written = entry is None
        if entry is not None:
            boxes = known.get(sub.name)
            if boxes is None or len(boxes) != sub.n_slices:  # recomputed from the array
                array = load_array(path, task.fmt)
                raws = (np.asarray(a).view(np.uint16) ^ HU_XOR for a in array)
                boxes = tuple(body_box(r, task.threshold_png, task.opening_px) for r in raws)
        else:
            entry, box_list = _write_run(task, sub, path)
            boxes = tuple(box_list)
        png_bytes = sum(os.path.getsize(p) for p in sub.slice_paths(task.root))
        return StoredRun(entry, boxes, _size(path), png_bytes), written

    return convert_run(task.subvolume, convert)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- verify one


@dataclass(frozen=True)
class VerifyTask:
    root: str
    out_dir: str
    entry: StoreEntry
    fmt: str
    threshold_png: int
    opening_px: int
    boxes: tuple[Box, ...] | None


@dataclass(frozen=True)
class VerifyResult:
    volume: str
    n_slices: int
    mismatches: tuple[str, ...]


def verify_run(task: VerifyTask) -> VerifyResult:
    """Re-read one array's PNGs; list every slice whose values or box differ."""
    from deeplesion.data.paths import slice_path

    entry = task.entry
    bad: list[str] = []
    try:
        array = load_array(Path(task.out_dir) / entry.path, task.fmt)
    except (OSError, ValueError, KeyError) as exc:
        return VerifyResult(entry.volume, entry.n_slices, (f"{entry.path}: unreadable: {exc}",))
    if tuple(array.shape) != (entry.n_slices, entry.rows, entry.cols):
        return VerifyResult(
            entry.volume, entry.n_slices, (f"{entry.path}: shape {array.shape} differs from index",)
        )
    for k, n in enumerate(range(entry.first_slice, entry.last_slice + 1)):
        png = slice_path(task.root, entry.folder, n)
        try:
            raw = read_png_raw(png)
        except ImageReadError as exc:
            bad.append(f"{entry.volume} slice {n}: {exc}")
            continue
        stored = np.asarray(array[k])
        if raw.shape != stored.shape or not np.array_equal((raw ^ HU_XOR).view(np.int16), stored):
            bad.append(f"{entry.volume} slice {n}: stored values differ from {png}")
        elif task.boxes is not None and (
            len(task.boxes) != entry.n_slices
            or task.boxes[k] != body_box(raw, task.threshold_png, task.opening_px)
        ):
            bad.append(f"{entry.volume} slice {n}: stored body box differs")
    if task.boxes is None:
        bad.append(f"{entry.volume}: no body boxes in the box table")
    return VerifyResult(entry.volume, entry.n_slices, tuple(bad))
