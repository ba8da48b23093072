"""nnU-Net v2 raw dataset from a dataset root and a masks folder.

``OUT/Dataset{id:03d}_{name}/``: ``imagesTr/{case}_0000.nii.gz`` (the int16 HU NIfTI
export of the case, channel 0 = CT), ``labelsTr/{case}.nii.gz`` (uint8, 0 background,
1 lesion, on the same grid), ``imagesTs/`` (test-split cases, images only),
``dataset.json`` and ``splits_final.json`` (one fold: the official train / val split).

Cases are named like the NIfTI export's volumes: with 3-D masks the whole sub-volume
holding a key slice (``{folder}_{first:03d}-{last:03d}``), with 2-D masks the key slice
alone (``{folder}_{n:03d}-{n:03d}``), so no unlabelled lesion slice is shown as background.
Every lesion pixel of the masks folder on a case's slices is labelled 1. Train and val
cases need at least one lesion with a mask; test cases are exported for every test lesion.
Images already there and complete are kept (resumable); labels and JSON files are
rewritten atomically, with the same bytes for the same input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplesion.convert.labels import write_label_volume
from deeplesion.convert.nifti import check_volume, write_volume
from deeplesion.data.annotations import Lesion, load_lesions
from deeplesion.data.io import write_text_atomic
from deeplesion.data.maskfiles import (
    mask_png_path,
    match_records,
    read_label_png,
    read_masks_csv,
    read_settings,
)
from deeplesion.data.volumes import SubVolume, index_volumes
from deeplesion.errors import DeepLesionError, MissingDataError

CHANNEL_SUFFIX = "_0000"


class SegmentationExportError(DeepLesionError, ValueError):
    """Bad export options, or inputs that give nothing to export."""


@dataclass
class ExportedCases:
    """Case names per split, what was written, and the lesions left out (with why)."""

    out_dir: Path
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    images_written: int = 0
    images_kept: int = 0
    left_out: list[tuple[int, str]] = field(default_factory=list)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise SegmentationExportError(f"dataset id must be 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise SegmentationExportError(
            f"dataset name {name!r}: use letters, digits, '_' and '-' (no spaces)"
        )
    return f"Dataset{dataset_id:03d}_{name}"


def case_label_volume(masks_dir: Path, case: SubVolume, shape: tuple[int, int]) -> np.ndarray:
    """uint8 ``[slice, row, col]``: 1 where the masks folder has any lesion on the case."""
    labels = np.zeros((case.n_slices,) + shape, dtype=np.uint8)
    for k, n in enumerate(case.slice_numbers):
        path = mask_png_path(masks_dir, case.folder, n)
        if path.is_file():
            labels[k] = read_label_png(path) > 0
    return labels


def plan_cases(
    lesions: list[Lesion], runs: dict[int, SubVolume], masked: set[int], three_d: bool
) -> tuple[dict[str, tuple[SubVolume, str]], list[tuple[int, str]]]:
    """``{case name: (sub-volume, split)}`` and the lesions left out with the reason."""
    cases: dict[str, tuple[SubVolume, str]] = {}
    left_out = []
    for l in lesions:
        run = runs.get(l.row_index)
        if run is None or run.spacing_mm is None:
            left_out.append((l.row_index, "key slice not in any exported sub-volume"))
            continue
        if l.split != "test" and l.row_index not in masked:
            left_out.append((l.row_index, "no mask"))
            continue
        case = run if three_d else run.sub(l.key_slice_index, l.key_slice_index)
        cases.setdefault(case.name, (case, l.split))
    return cases, left_out


def _write_image(root: Path, case: SubVolume, path: Path) -> tuple[bool, tuple[int, int]]:
    """(written?, (rows, cols)) of a case image; a complete file already there is kept."""
    record = check_volume(path, case, "project")
    written = record is None
    if record is None:
        record = write_volume(root, case, path)
    cols, rows, _ = record.shape
    return written, (rows, cols)


def runs_by_row(root: Path, csv_path: Path) -> dict[int, SubVolume]:
    """``{row_index: sub-volume holding its key slice}`` of a dataset root."""
    if not (root / "Images_png").is_dir():
        raise MissingDataError(f"{root}: no Images_png/ (the export needs the release layout)")
    return {row: sub for sub in index_volumes(root, csv_path).volumes for row, _ in sub.lesions}


def export_nnunet(
    root: str | Path,
    out_dir: str | Path,
    masks_dir: str | Path,
    *,
    csv_path: str | Path | None = None,
    dataset_id: int = 501,
    name: str = "DeepLesion",
    progress: Callable[[int, int], None] | None = None,
) -> ExportedCases:
    """Write the nnU-Net v2 raw dataset; returns the case names per split."""
    root, masks_dir = Path(root), Path(masks_dir)
    folder = Path(out_dir) / dataset_folder_name(dataset_id, name)
    csv_path = Path(csv_path) if csv_path else root / "DL_info.csv"
    lesions = load_lesions(csv_path).lesions
    masked = set(match_records(read_masks_csv(masks_dir), lesions))
    three_d = bool(read_settings(masks_dir).get("3d"))
    cases, left_out = plan_cases(lesions, runs_by_row(root, csv_path), masked, three_d)
    report = ExportedCases(folder, left_out=left_out)
    if not any(split != "test" for _, split in cases.values()):
        raise SegmentationExportError(
            f"{masks_dir}: no train or val lesion of {csv_path} has a mask; nothing to train on"
        )
    for done, (case_name, (case, split)) in enumerate(sorted(cases.items()), start=1):
        images = folder / ("imagesTs" if split == "test" else "imagesTr")
        written, shape = _write_image(root, case, images / f"{case_name}{CHANNEL_SUFFIX}.nii.gz")
        report.images_written += int(written)
        report.images_kept += int(not written)
        if split != "test":
            labels = case_label_volume(masks_dir, case, shape)
            write_label_volume(folder / "labelsTr" / f"{case_name}.nii.gz", case, labels)
        getattr(report, split).append(case_name)
        if progress:
            progress(done, len(cases))
    dataset = {
        "name": name,
        "description": "DeepLesion CT lesions; labels derived from RECIST by deeplesion masks",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(report.train) + len(report.val),
        "file_ending": ".nii.gz",
    }
    write_text_atomic(folder / "dataset.json", json.dumps(dataset, indent=1) + "\n")
    splits = [{"train": report.train, "val": report.val}]
    write_text_atomic(folder / "splits_final.json", json.dumps(splits, indent=1) + "\n")
    return report
