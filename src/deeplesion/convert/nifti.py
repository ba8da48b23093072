"""NIfTI export: one int16 ``.nii.gz`` per contiguous sub-volume, resumable and parallel.

Layouts (both int16 HU, spacing in mm in ``pixdim``, qform = sform, code 2 "aligned"):

``project`` (default)
    Array shape (cols, rows, slices); voxel (i, j, k) is DL_info pixel (x = i + 1,
    y = j + 1) of slice number ``first + k``. Affine ``diag(-sx, -sy, -sz)`` with the
    origin at ``(0, 0, -(first - 1) * sz)``: the axes point to the patient's left (L),
    posterior (P) and inferior (I) (images in radiological display, slice numbers
    increasing toward the feet), and the sub-volumes of one series share one frame.
``official``
    The official script's array (rows, cols, slices) and affine
    ``[[0, -sy, 0, 0], [-sx, 0, 0, 0], [0, 0, -sz, 0], [0, 0, 0, 1]]`` (but int16).

Files are written as one deterministic gzip stream (no name, mtime 0) under a temporary
name and renamed; a manifest CSV lists every volume with its checksum.

(Over 400 lines: the header, the streaming writer, the completeness check and the
manifest share the record types here; running the tasks is in :mod:`.jobs`.)
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from deeplesion.convert import jobs
from deeplesion.convert.jobs import (
    RunResult,
    RunsReport,
    RunTask,
    by_folder,
    check_parallel,
    convert_run,
    csv_bytes,
    in_shard,
    remove_stale_temps,
    run_runs,
    shard_suffix,
    write_problems,
)
from deeplesion.data.io import LOCK_NAME, atomic_path, output_lock, write_bytes_atomic
from deeplesion.data.slices import decoded_slices, png_to_hu
from deeplesion.data.volumes import SubVolume, VolumeIndex, index_volumes
from deeplesion.errors import DeepLesionError

LAYOUTS = ("project", "official")
BACKENDS = ("auto", "zlib", "isal")
MANIFEST_COLUMNS = (
    "file",
    "folder",
    "first_slice",
    "last_slice",
    "n_slices",
    "shape",
    "spacing_mm",
    "layout",
    "key_slices",
    "size_bytes",
    "sha256",
)

#: Header ``descrip`` (at most 80 bytes) of each layout.
DESCRIP = {
    "project": "deeplesion int16 HU; voxel (i,j,k) = px (x=i+1,y=j+1) of slice first+k; LPI",
    "official": "deeplesion int16 HU; official layout (row,col,slice-first); axes PLI",
}
_XFORM_ALIGNED = 2
_VOX_OFFSET = 352  # 348-byte header + 4-byte (empty) extension flag


class NiftiExportError(DeepLesionError, ValueError):
    """Bad export options, or an output folder whose manifest cannot be read."""


# --------------------------------------------------------------------------- header


def volume_file_name(subvolume: SubVolume) -> str:
    """``{folder}_{first:03d}-{last:03d}.nii.gz``."""
    return f"{subvolume.name}.nii.gz"


def volume_affine(
    spacing_mm: tuple[float, float, float], layout: str = "project", first_slice: int = 1
) -> np.ndarray:
    """The 4x4 voxel -> mm affine of a layout (see the module docstring)."""
    sx, sy, sz = (float(v) for v in spacing_mm)
    if layout == "project":
        return np.array(
            [[-sx, 0, 0, 0], [0, -sy, 0, 0], [0, 0, -sz, -(first_slice - 1) * sz], [0, 0, 0, 1]]
        )
    if layout == "official":
        return np.array([[0, -sy, 0, 0], [-sx, 0, 0, 0], [0, 0, -sz, 0], [0, 0, 0, 1]])
    raise NiftiExportError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")


def volume_shape(rows: int, cols: int, n_slices: int, layout: str) -> tuple[int, int, int]:
    return (cols, rows, n_slices) if layout == "project" else (rows, cols, n_slices)


def nifti_header(
    shape: tuple[int, int, int],
    spacing_mm: tuple[float, float, float],
    layout: str,
    first_slice: int,
    name: str = "",
) -> nib.Nifti1Header:
    """The complete single-file NIfTI-1 header of one volume (deterministic)."""
    affine = volume_affine(spacing_mm, layout, first_slice)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.dtype("<i2"))
    hdr.set_data_shape(shape)
    hdr.set_qform(affine, code=_XFORM_ALIGNED)
    hdr.set_sform(affine, code=_XFORM_ALIGNED)
    hdr.set_xyzt_units("mm")
    hdr.set_slope_inter(1.0, 0.0)
    hdr["descrip"] = DESCRIP[layout].encode()
    hdr["aux_file"] = name.encode()[:23]
    hdr["vox_offset"] = _VOX_OFFSET
    return hdr


# --------------------------------------------------------------------------- gzip


@dataclass(frozen=True)
class Compression:
    """A gzip encoder: ``zlib`` (standard library) or ``isal`` (ISA-L, faster, extra)."""

    backend: str = "zlib"
    level: int = 1

    def compressobj(self):
        module = importlib.import_module("isal.isal_zlib") if self.backend == "isal" else zlib
        return module.compressobj(self.level, module.DEFLATED, 31)  # 31: gzip, mtime 0


def resolve_compression(backend: str = "auto", level: int | None = None) -> Compression:
    """``auto`` picks ``isal`` when installed (``pip install deeplesion[fast]``), else
    ``zlib``. Default levels: zlib 1 (as nibabel), isal 2 (same ratio, ~4x faster)."""
    if backend not in BACKENDS:
        raise NiftiExportError(f"unknown compression {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend in ("auto", "isal"):
        try:
            importlib.import_module("isal.isal_zlib")
            backend = "isal"
        except ImportError:
            if backend == "isal":
                raise NiftiExportError(
                    "compression 'isal' needs the optional extra: pip install 'deeplesion[fast]'"
                ) from None
            backend = "zlib"
    top = 3 if backend == "isal" else 9
    level = (2 if backend == "isal" else 1) if level is None else level
    if not 0 <= level <= top:
        raise NiftiExportError(f"{backend} level must be 0..{top}, got {level}")
    return Compression(backend, level)


# --------------------------------------------------------------------------- one volume


@dataclass(frozen=True)
class VolumeRecord:
    """One manifest row: a written volume."""

    file: str
    folder: str
    first_slice: int
    last_slice: int
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    layout: str
    key_slices: tuple[int, ...]
    size_bytes: int
    sha256: str

    @property
    def n_slices(self) -> int:
        return self.last_slice - self.first_slice + 1

    def row(self) -> list[str]:
        return [
            self.file,
            self.folder,
            str(self.first_slice),
            str(self.last_slice),
            str(self.n_slices),
            "x".join(map(str, self.shape)),
            ", ".join(repr(float(v)) for v in self.spacing_mm),
            self.layout,
            " ".join(map(str, self.key_slices)),
            str(self.size_bytes),
            self.sha256,
        ]


def _record(
    sub: SubVolume,
    shape: tuple[int, int, int],
    spacing_mm: tuple[float, float, float],
    layout: str,
    size: int,
    sha: str,
) -> VolumeRecord:
    return VolumeRecord(
        volume_file_name(sub),
        sub.folder,
        sub.first_slice,
        sub.last_slice,
        shape,
        spacing_mm,
        layout,
        sub.key_slices,
        size,
        sha,
    )


def write_volume(
    root: str | Path,
    sub: SubVolume,
    path: str | Path,
    *,
    layout: str = "project",
    compression: Compression = Compression(),
) -> VolumeRecord:
    """Convert one sub-volume to ``path`` (atomically), streaming slice by slice.

    Raises :class:`SliceFailure` (an :class:`ImageReadError`) naming the first slice that
    cannot be decoded (or whose size differs from the first slice's); nothing is left at
    ``path`` then.
    """
    path = Path(path)
    if sub.spacing_mm is None:
        raise NiftiExportError(f"{sub.name}: spacing unknown (no DL_info row); give one explicitly")
    digest = hashlib.sha256()
    size = 0
    shape = None
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        comp = compression.compressobj()

        def emit(chunk: bytes) -> None:
            nonlocal size
            if chunk:
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)

        buf = None
        # The next slice is decoded in a thread while this one is compressed (both
        # release the GIL), so one worker keeps decoding and deflating overlapped.
        for _, raw in decoded_slices(sub.slice_numbers, sub.slice_paths(root), sub.image_size):
            if buf is None:
                buf = np.empty(raw.shape, dtype="<i2")
                rows, cols = raw.shape
                shape = volume_shape(rows, cols, sub.n_slices, layout)
                hdr = nifti_header(shape, sub.spacing_mm, layout, sub.first_slice, sub.name)
                emit(comp.compress(hdr.binaryblock + b"\0\0\0\0"))
            png_to_hu(raw, out=buf)
            # NIfTI stores the first axis fastest: project = the slice's rows as they are
            emit(comp.compress(buf if layout == "project" else np.ascontiguousarray(buf.T)))
        emit(comp.flush())
        if shape is None:
            raise NiftiExportError(f"{sub.name}: no slices to write")
    return _record(sub, shape, sub.spacing_mm, layout, size, digest.hexdigest())


def _sha256(path: Path) -> tuple[str, int]:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest(), os.fstat(fh.fileno()).st_size


def check_volume(
    path: str | Path, sub: SubVolume, layout: str, expected_sha256: str | None = None
) -> VolumeRecord | None:
    """The record of an existing, complete volume file, or None if it must be rewritten.

    Complete = header identical to the one this module writes for ``sub``, gzip trailer
    size matching the header's data size, and (when known) the manifest checksum.
    """
    path = Path(path)
    if not path.is_file() or sub.spacing_mm is None:
        return None
    try:
        with gzip.open(path, "rb") as fh:
            block = fh.read(_VOX_OFFSET)
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            isize = int.from_bytes(fh.read(4), "little")
        if len(block) != _VOX_OFFSET or block[348:] != b"\0\0\0\0":
            return None
        shape = nib.Nifti1Header(block[:348]).get_data_shape()
    except (OSError, EOFError, ValueError, zlib.error, nib.spatialimages.HeaderDataError):
        return None
    if len(shape) != 3 or shape[2] != sub.n_slices:
        return None
    nx, ny, nz = (int(v) for v in shape)
    expected = nifti_header(shape, sub.spacing_mm, layout, sub.first_slice, sub.name)
    if block[:348] != expected.binaryblock:
        return None
    if isize != (_VOX_OFFSET + 2 * int(np.prod(shape))) % (1 << 32):
        return None
    sha, size = _sha256(path)
    if expected_sha256 is not None and sha != expected_sha256:
        return None
    return _record(sub, (nx, ny, nz), sub.spacing_mm, layout, size, sha)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class ExportTask(RunTask):
    """One contiguous run to export."""

    layout: str = "project"
    compression: Compression = Compression()
    known_sha256: tuple[tuple[str, str], ...] = ()  #: (file, sha256) from earlier manifests


def run_task(task: ExportTask) -> RunResult[VolumeRecord]:
    """Export one run: skip complete files, split at unreadable slices, report them."""
    out_dir = Path(task.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir, task.subvolume, ".nii.gz")
    known = dict(task.known_sha256)

    def convert(sub: SubVolume) -> tuple[VolumeRecord, bool]:
        path = out_dir / volume_file_name(sub)
        record = check_volume(path, sub, task.layout, known.get(path.name))
        if record is not None:
            return record, False
        return write_volume(
            task.root, sub, path, layout=task.layout, compression=task.compression
        ), True

    return convert_run(task.subvolume, convert)


# --------------------------------------------------------------------------- sharding


def parse_shard(spec: str) -> tuple[int, int]:
    """``'2/4'`` -> ``(2, 4)``: shard 2 of 4 (1-based)."""
    return jobs.parse_shard(spec, NiftiExportError)


# --------------------------------------------------------------------------- manifest


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV; :class:`NiftiExportError` if it is not one."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise NiftiExportError(
                f"{path}: line 1: not a volume manifest (columns {reader.fieldnames})"
            )
        return list(reader)


def _known_checksums(out_dir: Path) -> dict[str, str]:
    known: dict[str, str] = {}
    for path in sorted(out_dir.glob("manifest*.csv")):
        for row in read_manifest(path):
            known[row["file"]] = row["sha256"]
    return known


# --------------------------------------------------------------------------- runs


@dataclass(kw_only=True)
class ExportReport(RunsReport):
    """What an export wrote, reused and found."""

    volumes: list[VolumeRecord]
    not_exported: list[SubVolume] = field(default_factory=list)  #: spacing unknown
    manifest_path: Path | None = None

    @property
    def paths(self) -> list[Path]:
        return [self.out_dir / v.file for v in self.volumes]


def export_nifti(
    root: str | Path,
    out_dir: str | Path,
    *,
    csv_path: str | Path | None = None,
    layout: str = "project",
    workers: int = 1,
    shard: tuple[int, int] | str | None = None,
    scheduler: str | None = None,
    default_spacing_mm: tuple[float, float, float] | None = None,
    compression: str = "auto",
    level: int | None = None,
    index: VolumeIndex | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write every sub-volume of ``root`` (or of one shard) to ``out_dir``.

    Complete files already there are kept (resumable, idempotent). Runs of folders without
    DL_info rows are exported only with ``default_spacing_mm``. Writes ``manifest.csv`` and
    ``problems.csv`` (``manifest.shard-i-of-N.csv`` ... for a shard), sorted, atomically.
    ``progress(done_slices, total_slices)`` is called after each run.
    """
    if layout not in LAYOUTS:
        raise NiftiExportError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    shard = check_parallel(workers, shard, NiftiExportError)
    codec = resolve_compression(compression, level)
    out_dir = Path(out_dir)
    if index is None:
        index = index_volumes(root, csv_path, default_spacing_mm=default_spacing_mm)
    known = _known_checksums(out_dir) if out_dir.is_dir() else {}
    selected = [v for v in index.volumes if in_shard(v, shard)]
    not_exported = [v for v in selected if v.spacing_mm is None]
    known_by_folder = by_folder(known)
    tasks = [
        ExportTask(str(root), str(out_dir), sub, layout, codec, known_by_folder.get(sub.folder, ()))
        for sub in selected
        if sub.spacing_mm is not None
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    # Shards run side by side on purpose, each under its own lock; one run per shard.
    with output_lock(out_dir, command="nifti", name=f"{LOCK_NAME}{shard_suffix(shard)}"):
        results = run_runs(
            run_task,
            tasks,
            progress=progress,
            workers=workers,
            scheduler=scheduler,
            error=NiftiExportError,
        )
        volumes = sorted(
            (v for r in results for v in r.items), key=lambda v: (v.folder, v.first_slice)
        )
        report = write_problems(out_dir, shard, index.problems, results)
        manifest_path = out_dir / f"manifest{shard_suffix(shard)}.csv"
        write_bytes_atomic(manifest_path, csv_bytes(MANIFEST_COLUMNS, (v.row() for v in volumes)))
        return ExportReport(
            **vars(report),
            volumes=volumes,
            not_exported=not_exported,
            manifest_path=manifest_path,
        )
