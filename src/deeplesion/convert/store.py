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

import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.convert import jobs
from deeplesion.convert.jobs import (
    RunsReport,
    by_folder,
    csv_bytes,
    in_shard,
    run_counted,
    run_runs,
    shard_suffix,
    write_problems,
)
from deeplesion.convert.store_runs import (
    Box,
    StoredRun,
    StoreTask,
    VerifyResult,
    VerifyTask,
    run_store_task,
    verify_run,
)
from deeplesion.data.annotations import Lesion, load_lesions, split_code
from deeplesion.data.io import LOCK_NAME, output_lock, write_bytes_atomic
from deeplesion.data.store import (
    BOX_COLUMNS,
    FORMATS,
    INDEX_COLUMNS,
    META,
    STORE_VERSION,
    StoreEntry,
    read_boxes,
    read_index,
    read_meta,
)
from deeplesion.data.volumes import (
    SubVolume,
    VolumeIndex,
    consecutive_runs,
    index_volumes,
)
from deeplesion.errors import DeepLesionError


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


# --------------------------------------------------------------------------- whole runs


@dataclass(kw_only=True)
class StoreReport(RunsReport):
    """What a build wrote, kept and found."""

    runs: list[StoredRun]
    not_stored: list[SubVolume] = field(default_factory=list)  #: spacing unknown
    index_path: Path | None = None

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
    return {name: tuple(_box(r) for r in rows) for name, rows in tables.items()}


def _box(row) -> Box:
    """A stored box row: ``(x0, y0, x1, y1)``, or None where ``x0`` is negative (no body)."""
    if row[0] < 0:
        return None
    x0, y0, x1, y1 = (int(v) for v in row)
    return x0, y0, x1, y1


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
    shard = jobs.check_parallel(workers, shard, StoreBuildError)
    for module in ("scipy", "zarr") if fmt == "zarr" else ("scipy",):
        if importlib.util.find_spec(module) is None:
            raise StoreBuildError(
                f"building a {fmt} store needs {module}: pip install 'deeplesion[store]'"
            )
    root, out_dir = Path(root), Path(out)
    if csv_path is None:
        csv_path = root / "DL_info.csv"
        if not csv_path.is_file():
            raise StoreBuildError(
                f"{root}: no DL_info.csv; give the annotations (--csv CSV, csv_path=)"
            )
    lesions = _select_lesions(Path(csv_path), splits)
    if index is None:
        index = index_volumes(root, csv_path)
    runs = select_runs(index, lesions, context_mm=context_mm, whole_series=whole_series)
    folders = {l.series_folder for l in lesions}
    selected = [v for v in runs if in_shard(v, shard)]
    not_stored = [v for v in selected if v.spacing_mm is None]
    # Shards run side by side on purpose, each under its own lock; one run per shard.
    with output_lock(out_dir, command="store", name=f"{LOCK_NAME}{shard_suffix(shard)}"):
        _write_meta(out_dir, fmt, threshold_png, opening_px)
        known_by_folder = by_folder(_known_boxes(out_dir))
        tasks = [
            StoreTask(
                str(root),
                str(out_dir),
                sub,
                fmt,
                threshold_png,
                opening_px,
                known_by_folder.get(sub.folder, ()),
            )
            for sub in selected
            if sub.spacing_mm is not None
        ]
        results = run_runs(
            run_store_task,
            tasks,
            progress=progress,
            workers=workers,
            scheduler=scheduler,
            error=StoreBuildError,
        )
        stored = sorted(
            (r for res in results for r in res.items),
            key=lambda r: (r.entry.folder, r.entry.first_slice),
        )
        index_problems = [p for p in index.problems if p.folder in folders]
        if shard is not None:
            index_problems = [p for p in index_problems if _folder_in_shard(p.folder, runs, shard)]
        report = write_problems(out_dir, shard, index_problems, results)
        suffix = shard_suffix(shard)
        write_bytes_atomic(
            out_dir / f"boxes{suffix}.csv", csv_bytes(BOX_COLUMNS, _box_rows(stored))
        )
        index_path = out_dir / f"index{suffix}.csv"
        write_bytes_atomic(index_path, csv_bytes(INDEX_COLUMNS, (r.entry.row() for r in stored)))
        return StoreReport(
            **vars(report), runs=stored, not_stored=not_stored, index_path=index_path
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
    results: list[VerifyResult] = run_counted(
        verify_run,
        tasks,
        total,
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        error=StoreBuildError,
    )
    mismatches = sorted(m for r in results for m in r.mismatches)
    return VerifyReport(len(entries), total, mismatches)
