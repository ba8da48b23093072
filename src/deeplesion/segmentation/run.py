"""``make_masks``: a mask per lesion under a dataset root, written as a masks folder.

Work goes series folder by series folder (a folder's lesions share label images). Each
folder's PNGs and label volumes are written atomically, then ``.parts/<folder>.json``
records it as done: a rerun with the same settings skips finished folders, so an
interrupted run resumes, and the same input gives the same bytes. ``masks.csv`` is
rebuilt, sorted, at the end. A lesion that cannot be segmented (unreadable slice) gets a
``failed: ...`` status and the others go on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deeplesion.convert.labels import label_file_name, write_label_volume
from deeplesion.data.annotations import Lesion, load_lesions
from deeplesion.data.io import write_text_atomic
from deeplesion.data.maskfiles import (
    MASKS_CSV,
    NIFTI_DIR,
    PNG_DIR,
    MaskRecord,
    MaskSettingsError,
    mask_png_path,
    read_settings,
    series_labels,
    slice_ranks,
    write_label_png,
    write_masks_csv,
    write_settings,
)
from deeplesion.data.masks import mask_axes
from deeplesion.data.paths import IMAGES_DIR, key_slice_path, slice_path
from deeplesion.data.slices import read_hu
from deeplesion.data.volumes import SubVolume, index_volumes
from deeplesion.errors import DeepLesionError, MissingDataError
from deeplesion.segmentation.keyslice import check_method, key_slice_mask
from deeplesion.segmentation.propagate import propagate

PARTS_DIR = ".parts"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FolderTask:
    """One series folder's lesions (picklable, runs in a worker process)."""

    root: str
    out_dir: str
    folder: str
    lesions: tuple[Lesion, ...]
    ranks: tuple[int, ...]  #: each row's rank among its key slice's rows
    labels: tuple[int, ...]
    runs: tuple[SubVolume | None, ...]  #: the sub-volume holding each key slice
    method: str
    three_d: bool


@dataclass
class MasksReport:
    """What :func:`make_masks` wrote, kept and could not do."""

    out_dir: Path
    records: list[MaskRecord]
    written_folders: int
    skipped_folders: int
    nifti_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[MaskRecord]:
        return [r for r in self.records if not r.ok]


def _settings(method: str, three_d: bool) -> dict:
    return {"method": method, "3d": three_d, "format": FORMAT_VERSION}


def _segment_lesion(task: FolderTask, lesion: Lesion, run: SubVolume | None):
    """(slice -> mask, record fields) of one lesion; raises DeepLesionError on bad data."""
    key_hu = read_hu(key_slice_path(task.root, lesion.file_name))
    result = key_slice_mask(key_hu, lesion, task.method)
    masks = {lesion.key_slice_index: result.mask}
    if task.three_d and run is not None:
        propagation = propagate(
            lambda n: read_hu(slice_path(task.root, lesion.series_folder, n)),
            key_hu,
            result.mask,
            lesion,
            run.first_slice,
            run.last_slice,
        )
        masks = propagation.masks
    sx, sy = lesion.spacing_mm[0], lesion.spacing_mm[1]
    axes = mask_axes(result.mask, (sy, sx))
    return masks, result.method, axes


def run_folder(task: FolderTask) -> list[MaskRecord]:
    """Segment one folder's lesions and write its PNGs and label volumes."""
    out = Path(task.out_dir)
    shutil.rmtree(out / PNG_DIR / task.folder, ignore_errors=True)
    records: list[MaskRecord] = []
    images: dict[int, np.ndarray] = {}
    files: list[str] = []
    for lesion, rank, label, run in zip(task.lesions, task.ranks, task.labels, task.runs):
        base = MaskRecord(lesion.row_index, lesion.file_name, rank, label, task.method)
        try:
            masks, method, axes = _segment_lesion(task, lesion, run)
        except DeepLesionError as exc:
            records.append(replace(base, status=f"failed: {exc}"))
            continue
        for n, mask in masks.items():
            image = images.setdefault(n, np.zeros(mask.shape, dtype=np.uint8))
            image[mask & ((image == 0) | (image > label))] = label
        records.append(
            replace(
                base,
                method=method,
                first_slice=min(masks),
                last_slice=max(masks),
                area_px=int(masks[lesion.key_slice_index].sum()),
                long_mm=axes.long_mm if axes else float("nan"),
                short_mm=axes.short_mm if axes else float("nan"),
            )
        )
    for n, image in sorted(images.items()):
        path = mask_png_path(out, task.folder, n)
        write_label_png(path, image)
        files.append(path.relative_to(out).as_posix())
    for run in sorted({r for r in task.runs if r is not None}, key=lambda r: r.first_slice):
        shape = next(iter(images.values())).shape if images else None
        if shape is None or run.spacing_mm is None:
            continue
        stack = np.zeros((run.n_slices,) + shape, dtype=np.uint8)
        for n, image in images.items():
            if run.contains(n) and image.shape == shape:
                stack[n - run.first_slice] = image
        path = out / NIFTI_DIR / label_file_name(run)
        write_label_volume(path, run, stack)
        files.append(path.relative_to(out).as_posix())
    part = {"records": [r.row() for r in records], "files": files}
    write_text_atomic(out / PARTS_DIR / f"{task.folder}.json", json.dumps(part) + "\n")
    return records


def _finished(out: Path, task: FolderTask) -> list[MaskRecord] | None:
    """The records of a folder a previous run finished (same lesions), else None."""
    path = out / PARTS_DIR / f"{task.folder}.json"
    try:
        part = json.loads(path.read_text())
        rows = part["records"]
        if any(not (out / f).is_file() for f in part["files"]):
            return None
        records = [
            MaskRecord(int(r[0]), r[1], int(r[2]), int(r[3]), r[4], r[5], int(r[6]), int(r[7]),
                       int(r[8]), float(r[9]), float(r[10]))
            for r in rows
        ]  # fmt: skip
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if sorted(r.row_index for r in records) != sorted(l.row_index for l in task.lesions):
        return None
    return records


def make_masks(
    root: str | Path,
    out_dir: str | Path,
    *,
    csv_path: str | Path | None = None,
    method: str = "best",
    three_d: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> MasksReport:
    """Masks of every lesion of ``csv_path`` (default ``root/DL_info.csv``) into ``out_dir``.

    ``root`` is a dataset root (``Images_png/<folder>/<NNN>.png``) or a flat folder of key
    slices named by ``File_name``; ``three_d`` and the NIfTI label volumes need the release
    layout. An ``out_dir`` made with other settings is refused unless ``overwrite``.
    ``progress(done_lesions, total)`` is called after each folder.
    """
    check_method(method)
    if workers < 1:
        raise MaskSettingsError(f"workers must be >= 1, got {workers}")
    root, out = Path(root), Path(out_dir)
    csv_path = Path(csv_path) if csv_path is not None else root / "DL_info.csv"
    if not csv_path.is_file():
        raise MissingDataError(f"{csv_path}: annotation file not found (give --csv)")
    lesions = load_lesions(csv_path).lesions
    settings = _settings(method, three_d)
    previous = read_settings(out) if out.is_dir() else {}
    if previous and previous != settings:
        if not overwrite:
            raise MaskSettingsError(
                f"{out} holds masks made with {previous}; asked for {settings}: "
                "use another folder or pass --overwrite"
            )
        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
        shutil.rmtree(out / PNG_DIR, ignore_errors=True)
        shutil.rmtree(out / NIFTI_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out, settings)
    notes: list[str] = []
    release = (root / IMAGES_DIR).is_dir() and any(
        (root / IMAGES_DIR / l.series_folder).is_dir() for l in lesions
    )
    runs_of: dict[int, SubVolume] = {}
    if release:
        for sub in index_volumes(root, csv_path).volumes:
            for row, _ in sub.lesions:
                runs_of[row] = sub
    else:
        notes.append("flat folder of key slices: no 3-D propagation and no NIfTI label volumes")
    labels = series_labels(lesions)
    ranks = slice_ranks(lesions)
    by_folder: dict[str, list[Lesion]] = {}
    for lesion in lesions:
        by_folder.setdefault(lesion.series_folder, []).append(lesion)
    tasks = [
        FolderTask(
            str(root),
            str(out),
            folder,
            tuple(ls),
            tuple(ranks[l.row_index] for l in ls),
            tuple(labels[l.row_index] for l in ls),
            tuple(runs_of.get(l.row_index) for l in ls),
            method,
            three_d and release,
        )
        for folder, ls in sorted(by_folder.items())
    ]
    records: list[MaskRecord] = []
    written = skipped = done = 0
    total = len(lesions)
    pending = []
    for task in tasks:
        kept = _finished(out, task)
        if kept is None:
            pending.append(task)
        else:
            records += kept
            skipped += 1
            done += len(task.lesions)
    if progress:
        progress(done, total)

    def finish(task: FolderTask, result: list[MaskRecord]) -> None:
        nonlocal done, written
        records.extend(result)
        written += 1
        done += len(task.lesions)
        if progress:
            progress(done, total)

    if workers > 1 and len(pending) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_folder, t): t for t in pending}
            for future in as_completed(futures):
                finish(futures[future], future.result())
    else:
        for task in pending:
            finish(task, run_folder(task))
    write_masks_csv(out / MASKS_CSV, records)
    nifti = sorted((out / NIFTI_DIR).glob("*.nii.gz")) if (out / NIFTI_DIR).is_dir() else []
    return MasksReport(
        out, sorted(records, key=lambda r: r.row_index), written, skipped, nifti, notes
    )
