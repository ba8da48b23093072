"""MONAI Decathlon-style datalist over the NIfTI export (and label volumes from masks).

``OUT/images/`` is the NIfTI export of the root (project layout, with its manifest;
resumable), ``OUT/labels/{volume}.nii.gz`` the uint8 lesion labels (0/1, same grid) of the
volumes that hold a mask, and ``OUT/datalist.json`` lists one entry per sub-volume with
lesions under ``training``, ``validation`` and ``test`` (the official split)::

    {"image": "images/V.nii.gz", "label": "labels/V.nii.gz",
     "boxes": [[x1, y1, k, x2, y2, k], ...], "lesion_types": [...], "lesion_ids": [...]}

Boxes are the DL_info boxes in the image's 0-based voxel coordinates (voxel (i, j, k) =
DL_info pixel (i + 1, j + 1) of slice first + k), on the key slice: ``x = x_px1 - 1``,
``k = key slice - first``. Noisy lesions are left out.
``monai.data.load_decathlon_datalist(path, is_segmentation=True, data_list_key=...)``
reads it and ``LoadImaged(keys=["image", "label"])`` loads the (cols, rows, slices) arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.convert.labels import write_label_volume
from deeplesion.convert.nifti import export_nifti
from deeplesion.convert.nnunet import SegmentationExportError, case_label_volume
from deeplesion.data.annotations import Lesion, load_lesions, px1_to_index
from deeplesion.data.io import write_text_atomic
from deeplesion.data.maskfiles import match_records, read_masks_csv

DATALIST = "datalist.json"
SPLIT_KEYS = {"train": "training", "val": "validation", "test": "test"}


@dataclass
class MonaiExport:
    out_dir: Path
    datalist_path: Path
    entries: dict[str, int] = field(default_factory=dict)  #: datalist key -> entries
    labels_written: int = 0
    images_written: int = 0
    images_kept: int = 0


def lesion_box_voxels(lesion: Lesion, first_slice: int) -> list[float]:
    """``[x1, y1, k, x2, y2, k]`` of the DL_info box in 0-based voxel coordinates."""
    x1, y1, x2, y2 = px1_to_index(lesion.box_px1).tolist()
    k = float(lesion.key_slice_index - first_slice)
    return [x1, y1, k, x2, y2, k]


def export_monai(
    root: str | Path,
    out_dir: str | Path,
    *,
    masks_dir: str | Path | None = None,
    csv_path: str | Path | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> MonaiExport:
    """Write images (NIfTI export), labels (from ``masks_dir``) and ``datalist.json``."""
    root, out = Path(root), Path(out_dir)
    csv_path = Path(csv_path) if csv_path else root / "DL_info.csv"
    lesions = {l.row_index: l for l in load_lesions(csv_path).lesions}
    report = export_nifti(
        root, out / "images", csv_path=csv_path, workers=workers, progress=progress
    )
    records = (
        match_records(read_masks_csv(masks_dir), lesions.values()) if masks_dir is not None else {}
    )
    lists: dict[str, list[dict]] = {key: [] for key in SPLIT_KEYS.values()}
    labels_written = 0
    for volume in report.volumes:
        rows = [
            lesions[row]
            for row in sorted(lesions)
            if lesions[row].series_folder == volume.folder
            and volume.first_slice <= lesions[row].key_slice_index <= volume.last_slice
            and not lesions[row].possibly_noisy
        ]
        if not rows:
            continue
        entry: dict = {"image": f"images/{volume.file}"}
        masked = [r for r in rows if r.row_index in records]
        if masked and masks_dir is not None:
            sub = next(v for v in _subvolumes(report) if v.name + ".nii.gz" == volume.file)
            cols, rows_n, _ = volume.shape
            labels = case_label_volume(Path(masks_dir), sub, (rows_n, cols))
            write_label_volume(out / "labels" / volume.file, sub, labels)
            labels_written += 1
            entry["label"] = f"labels/{volume.file}"
        entry["boxes"] = [lesion_box_voxels(l, volume.first_slice) for l in rows]
        entry["lesion_types"] = [l.type_name for l in rows]
        entry["lesion_ids"] = [l.row_index for l in rows]
        entry["spacing_mm"] = list(volume.spacing_mm)
        lists[SPLIT_KEYS[rows[0].split]].append(entry)
    if not any(lists.values()):
        raise SegmentationExportError(f"{root}: no sub-volume holds a lesion of {csv_path}")
    datalist = {
        "name": "DeepLesion",
        "description": "DeepLesion sub-volumes (int16 HU); boxes [x1, y1, k, x2, y2, k] in "
        "0-based voxels of the (cols, rows, slices) array",
        "labels": {"0": "background", "1": "lesion"},
        **lists,
    }
    path = out / DATALIST
    write_text_atomic(path, json.dumps(datalist, indent=1) + "\n")
    return MonaiExport(
        out,
        path,
        {k: len(v) for k, v in lists.items()},
        labels_written,
        report.written,
        report.skipped,
    )


def _subvolumes(report):
    from deeplesion.data.volumes import SubVolume

    for v in report.volumes:
        yield SubVolume(v.folder, v.first_slice, v.last_slice, v.spacing_mm)
