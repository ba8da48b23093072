"""Build and verify the training store (format: :mod:`deeplesion.data.store`).

What is stored: by default every lesion's ``Slice_range``; with ``context_mm`` the slices
within that many mm of each key slice; with ``whole_series`` every slice of the lesions'
series folders. The slices of one folder are grouped into contiguous runs (split at gaps
and unreadable slices, as in the NIfTI export) and each run becomes one array.

Runs are written under a temporary name and renamed, so an interrupted build leaves only
complete arrays; a rerun keeps them and writes the rest (same bytes). The index, box and
problem tables are written last.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplesion.convert import jobs
from deeplesion.convert.jobs import (
    PROBLEM_COLUMNS,
    csv_bytes,
    in_shard,
    prefetch,
    problem_row,
    remove_stale_temps,
    shard_suffix,
)
from deeplesion.data.annotations import Lesion, load_lesions, split_code
from deeplesion.data.io import atomic_path, write_bytes_atomic
from deeplesion.data.slices import read_png_raw
from deeplesion.data.store import (
    BOX_COLUMNS,
    FORMATS,
    HU_XOR,
    INDEX_COLUMNS,
    META,
    STORE_VERSION,
    StoreEntry,
    body_box,
    read_boxes,
    read_index,
    read_meta,
)
from deeplesion.data.volumes import (
    SubVolume,
    VolumeIndex,
    VolumeProblem,
    consecutive_runs,
    index_volumes,
)
from deeplesion.errors import DeepLesionError, ImageReadError

#: Zarr codec settings (measured in benchmarks/store.py: level 1 is within 2% of level 5's
#: size at under half its write time).
ZSTD_LEVEL = 1

Box = tuple[int, int, int, int] | None


class StoreBuildError(DeepLesionError, ValueError):
    """Bad store options, or an output folder holding another kind of store."""


# --------------------------------------------------------------------------- selection


def select_runs(
    index: VolumeIndex,
    lesions: Sequence[Lesion],
    *,
    context_mm: float | None = None,
    whole_series: bool = False,
) -> list[SubVolume]:
    """The contiguous runs to store for ``lesions`` (see the module docstring), sorted."""
    if context_mm is not None and whole_series:
        raise StoreBuildError("give either context_mm or whole_series, not both")
    if context_mm is not None and not (math.isfinite(context_mm) and context_mm >= 0):
        raise StoreBuildError(f"context_mm must be a number >= 0, got {context_mm}")
    wanted: dict[str, set[int]] = {}
    for lesion in lesions:
        numbers = wanted.setdefault(lesion.series_folder, set())
        if whole_series:
            continue
        lo, hi = lesion.slice_range
        interval = lesion.slice_interval_mm
        if context_mm is not None and math.isfinite(interval) and interval > 0:
            reach = int(math.floor(context_mm / interval + 1e-9))
            lo, hi = lesion.key_slice_index - reach, lesion.key_slice_index + reach
        numbers.update(range(max(lo, 1), hi + 1))
    runs: list[SubVolume] = []
    for volume in index.volumes:
        if volume.folder not in wanted:
            continue
        if whole_series:
            runs.append(volume)
            continue
        inside = sorted(n for n in wanted[volume.folder] if volume.contains(n))
        runs.extend(volume.sub(a, b) for a, b in consecutive_runs(inside))
    return sorted(runs, key=lambda v: (v.folder, v.first_slice))


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class StoreTask:
    """One contiguous run to store (picklable: runs in a worker process or on Dask)."""

    root: str
    out_dir: str
    subvolume: SubVolume
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


@dataclass(frozen=True)
class StoreTaskResult:
    runs: tuple[StoredRun, ...]
    problems: tuple[VolumeProblem, ...]
    written: int
    skipped: int
    n_slices: int


class _SliceFailure(Exception):
    def __init__(self, slice_number: int, reason: str) -> None:
        super().__init__(reason)
        self.slice_number, self.reason = slice_number, reason


def array_relpath(sub: SubVolume, fmt: str) -> str:
    """``volumes/<patient>/<volume>.npy`` (or ``.zarr``), relative to the store."""
    return f"volumes/{sub.folder[:6]}/{sub.name}.{fmt}"


def _decoded(root: str, sub: SubVolume):
    """(slice number, raw uint16) of each slice, decoded one ahead in a thread."""
    paths = sub.slice_paths(root)
    with ThreadPoolExecutor(max_workers=1) as decoder:
        for n, future in zip(sub.slice_numbers, prefetch(decoder, read_png_raw, paths)):
            try:
                yield n, future.result()
            except ImageReadError as exc:
                raise _SliceFailure(n, str(exc)) from exc


def _write_run(task: StoreTask, sub: SubVolume, path: Path) -> tuple[StoreEntry, list[Box]]:
    """Decode the run's PNGs and write its array at ``path`` (atomically)."""
    boxes: list[Box] = []
    shape: tuple[int, int] | None = None
    target = _npy_target if task.fmt == "npy" else _zarr_target
    with target(path, sub.n_slices) as put:
        for k, (n, raw) in enumerate(_decoded(task.root, sub)):
            if shape is None:
                shape = raw.shape
            elif raw.shape != shape:
                raise _SliceFailure(
                    n,
                    f"{sub.slice_paths(task.root)[k]}: size {raw.shape[0]}x{raw.shape[1]} "
                    f"differs from {shape[0]}x{shape[1]} of the run's first slice",
                )
            put(k, (raw ^ HU_XOR).view(np.int16))
            boxes.append(body_box(raw, task.threshold_png, task.opening_px))
    assert shape is not None
    return _entry(sub, task.fmt, shape), boxes


def _entry(sub: SubVolume, fmt: str, shape: tuple[int, ...]) -> StoreEntry:
    assert sub.spacing_mm is not None
    return StoreEntry(
        sub.name,
        array_relpath(sub, fmt),
        sub.first_slice,
        sub.last_slice,
        int(shape[0]),
        int(shape[1]),
        tuple(float(v) for v in sub.spacing_mm),  # type: ignore[arg-type]
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


def run_store_task(task: StoreTask) -> StoreTaskResult:
    """Store one run: keep a complete array, split at unreadable slices, report them."""
    out_dir = Path(task.out_dir)
    known = dict(task.known_boxes)
    runs: list[StoredRun] = []
    problems: list[VolumeProblem] = []
    written = skipped = 0
    pending = [task.subvolume]
    while pending:
        sub = pending.pop(0)
        path = out_dir / array_relpath(sub, task.fmt)
        remove_stale_temps(path.parent, sub, f".{task.fmt}")
        entry = check_run(out_dir, sub, task.fmt)
        if entry is not None:
            skipped += 1
            boxes = known.get(sub.name)
            if boxes is None or len(boxes) != sub.n_slices:  # recomputed from the array
                array = load_array(path, task.fmt)
                raws = (np.asarray(a).view(np.uint16) ^ HU_XOR for a in array)
                boxes = tuple(body_box(r, task.threshold_png, task.opening_px) for r in raws)
        else:
            try:
                entry, box_list = _write_run(task, sub, path)
                boxes = tuple(box_list)
                written += 1
            except _SliceFailure as exc:
                problems.append(
                    VolumeProblem(
                        "unreadable-slice", sub.folder, exc.slice_number, detail=exc.reason
                    )
                )
                pending = sub.without(exc.slice_number) + pending
                continue
        png_bytes = sum(os.path.getsize(p) for p in sub.slice_paths(task.root))
        runs.append(StoredRun(entry, boxes, _size(path), png_bytes))
    return StoreTaskResult(tuple(runs), tuple(problems), written, skipped, task.subvolume.n_slices)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- whole runs


@dataclass
class StoreReport:
    """What a build wrote, kept and found."""

    out_dir: Path
    runs: list[StoredRun]
    problems: list[VolumeProblem]  #: index problems + unreadable slices met
    written: int
    skipped: int
    not_stored: list[SubVolume] = field(default_factory=list)  #: spacing unknown
    index_path: Path | None = None
    problems_path: Path | None = None

    @property
    def entries(self) -> list[StoreEntry]:
        return [r.entry for r in self.runs]

    @property
    def n_slices(self) -> int:
        return sum(r.entry.n_slices for r in self.runs)

    @property
    def size_bytes(self) -> int:
        return sum(r.size_bytes for r in self.runs)

    @property
    def png_bytes(self) -> int:
        return sum(r.png_bytes for r in self.runs)

    @property
    def unreadable(self) -> list[VolumeProblem]:
        return [p for p in self.problems if p.kind == "unreadable-slice"]

    @property
    def missing_series(self) -> list[str]:
        """Series folders named by the selected DL_info rows but absent under Images_png."""
        return sorted(
            {
                p.folder
                for p in self.problems
                if p.kind == "row-without-image" and "no folder" in p.detail
            }
        )


def _select_lesions(csv_path: Path, splits: Sequence[str] | None) -> list[Lesion]:
    lesions = list(load_lesions(csv_path).lesions)
    if splits:
        try:
            codes = {split_code(s) for s in splits}
        except ValueError as exc:
            raise StoreBuildError(str(exc)) from None
        lesions = [l for l in lesions if l.split_code in codes]
    return lesions


def _write_meta(out_dir: Path, fmt: str, threshold_png: int, opening_px: int) -> None:
    meta = {
        "format": fmt,
        "version": STORE_VERSION,
        "dtype": "int16",
        "values": "HU = PNG value - 32768",
        "body_threshold_png": threshold_png,
        "opening_px": opening_px,
    }
    path = out_dir / META
    if path.exists():
        old = read_meta(out_dir)
        if old != meta:
            raise StoreBuildError(
                f"{path}: this folder holds a store built with other settings ({old}); "
                "use another output folder"
            )
        return
    write_bytes_atomic(path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def _known_boxes(out_dir: Path) -> dict[str, tuple[Box, ...]]:
    if not out_dir.is_dir():
        return {}
    try:
        tables = read_boxes(out_dir)
    except (DeepLesionError, ValueError, KeyError, OSError):
        return {}
    return {
        name: tuple(None if r[0] < 0 else tuple(int(v) for v in r) for r in rows)  # type: ignore[misc]
        for name, rows in tables.items()
    }


def build_store(
    root: str | Path,
    out: str | Path,
    *,
    csv_path: str | Path | None = None,
    splits: Sequence[str] | None = None,
    context_mm: float | None = None,
    whole_series: bool = False,
    fmt: str = "npy",
    workers: int = 1,
    shard: tuple[int, int] | str | None = None,
    scheduler: str | None = None,
    threshold_png: int = 32000,
    opening_px: int = 7,
    index: VolumeIndex | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StoreReport:
    """Convert the slices training reads from ``root``'s PNGs into a store at ``out``.

    ``splits`` keeps the lesions of those splits (train, val, test). Complete arrays already
    there are kept (resumable, idempotent). Writes ``index.csv``, ``boxes.csv`` and
    ``problems.csv`` (``index.shard-i-of-N.csv`` ... for a shard). ``progress(done_slices,
    total_slices)`` is called after each run.
    """
    if fmt not in FORMATS:
        raise StoreBuildError(f"unknown store format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if workers < 1:
        raise StoreBuildError(f"workers must be >= 1, got {workers}")
    if isinstance(shard, str):
        shard = jobs.parse_shard(shard, StoreBuildError)
    root, out_dir = Path(root), Path(out)
    if csv_path is None:
        csv_path = root / "DL_info.csv"
        if not csv_path.is_file():
            raise StoreBuildError(f"{root}: no DL_info.csv; give the annotations with csv_path")
    lesions = _select_lesions(Path(csv_path), splits)
    if index is None:
        index = index_volumes(root, csv_path)
    runs = select_runs(index, lesions, context_mm=context_mm, whole_series=whole_series)
    folders = {l.series_folder for l in lesions}
    selected = [v for v in runs if in_shard(v, shard)]
    not_stored = [v for v in selected if v.spacing_mm is None]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_meta(out_dir, fmt, threshold_png, opening_px)
    known_by_folder: dict[str, list[tuple[str, tuple[Box, ...]]]] = {}
    for name, boxes in sorted(_known_boxes(out_dir).items()):
        known_by_folder.setdefault(name[:12], []).append((name, boxes))
    tasks = [
        StoreTask(
            str(root),
            str(out_dir),
            sub,
            fmt,
            threshold_png,
            opening_px,
            tuple(known_by_folder.get(sub.folder, ())),
        )
        for sub in selected
        if sub.spacing_mm is not None
    ]
    total = sum(t.subvolume.n_slices for t in tasks)
    results: list[StoreTaskResult] = []
    done = 0

    def on_result(result: StoreTaskResult) -> None:
        nonlocal done
        results.append(result)
        done += result.n_slices
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    jobs.run_tasks(
        run_store_task,
        sorted(tasks, key=lambda t: -t.subvolume.n_slices),
        on_result,
        workers=workers,
        scheduler=scheduler,
        error=StoreBuildError,
    )
    stored = sorted(
        (r for res in results for r in res.runs),
        key=lambda r: (r.entry.folder, r.entry.first_slice),
    )
    index_problems = [p for p in index.problems if p.folder in folders]
    if shard is not None:
        index_problems = [p for p in index_problems if _folder_in_shard(p.folder, runs, shard)]
    problems = sorted(
        index_problems + [p for r in results for p in r.problems], key=VolumeProblem.sort_key
    )
    suffix = shard_suffix(shard)
    problems_path = out_dir / f"problems{suffix}.csv"
    write_bytes_atomic(problems_path, csv_bytes(PROBLEM_COLUMNS, map(problem_row, problems)))
    write_bytes_atomic(out_dir / f"boxes{suffix}.csv", csv_bytes(BOX_COLUMNS, _box_rows(stored)))
    index_path = out_dir / f"index{suffix}.csv"
    write_bytes_atomic(index_path, csv_bytes(INDEX_COLUMNS, (r.entry.row() for r in stored)))
    return StoreReport(
        out_dir,
        stored,
        problems,
        sum(r.written for r in results),
        sum(r.skipped for r in results),
        not_stored,
        index_path,
        problems_path,
    )


def _folder_in_shard(folder: str, runs: list[SubVolume], shard: tuple[int, int]) -> bool:
    """Folder-level problems go to the shard of the folder's first run (or shard 1)."""
    first = next((v for v in runs if v.folder == folder), None)
    return in_shard(first, shard) if first is not None else shard[0] == 1


def _box_rows(stored: list[StoredRun]):
    for run in stored:
        for n, box in zip(range(run.entry.first_slice, run.entry.last_slice + 1), run.boxes):
            yield [run.entry.volume, n, *(("", "", "", "") if box is None else box)]


# --------------------------------------------------------------------------- verify


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


@dataclass
class VerifyReport:
    volumes: int
    slices: int
    mismatches: list[str]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def verify_store(
    root: str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Compare every stored slice (and its body box) with the PNG it came from."""
    out_dir = Path(out)
    meta = read_meta(out_dir)
    entries = read_index(out_dir)
    boxes = _known_boxes(out_dir)
    tasks = [
        VerifyTask(
            str(root),
            str(out_dir),
            e,
            meta["format"],
            int(meta["body_threshold_png"]),
            int(meta["opening_px"]),
            boxes.get(e.volume),
        )
        for e in entries
    ]
    total = sum(e.n_slices for e in entries)
    results: list[VerifyResult] = []
    done = 0

    def on_result(result: VerifyResult) -> None:
        nonlocal done
        results.append(result)
        done += result.n_slices
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    jobs.run_tasks(
        verify_run, tasks, on_result, workers=workers, scheduler=scheduler, error=StoreBuildError
    )
    mismatches = sorted(m for r in results for m in r.mismatches)
    return VerifyReport(len(entries), total, mismatches)
