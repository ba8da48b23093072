"""COCO export of DL_info key slices (and a reader for the round trip).

One image per key slice (``file_name`` = DL_info ``File_name``, ``path`` = its place under
the dataset root), one ``lesion`` category; each annotation carries the lesion's type as
an attribute. Boxes follow COCO's 0-based ``[x, y, w, h]`` with inclusive pixel extents,
the convention under which ``w * h`` is the "+1" Pascal area of the evaluation protocol:
``x = x1_px1 - 1``, ``w = x2_px1 - x1_px1 + 1``. RECIST end points are keypoints
(0-based, visibility 2): long axis then short axis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import (
    LESION_TYPES,
    Lesion,
    index_to_px1,
    px1_to_index,
    split_code,
)
from deeplesion.data.io import write_text_atomic
from deeplesion.data.lesion import box_px1_to_coco, coco_to_box_px1
from deeplesion.errors import DeepLesionError

KEYPOINT_NAMES = ("long_axis_end_1", "long_axis_end_2", "short_axis_end_1", "short_axis_end_2")
CATEGORY = {
    "id": 1,
    "name": "lesion",
    "supercategory": "lesion",
    "keypoints": list(KEYPOINT_NAMES),
    "skeleton": [[1, 2], [3, 4]],
    "types": {str(k): v for k, v in LESION_TYPES.items()},
}


class CocoError(DeepLesionError, ValueError):
    """A COCO file that cannot be read back, or an export with nothing in it."""


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a 2-D mask: ``{"size": [h, w], "counts": [...]}``, runs
    over the column-major pixel order, starting with a (possibly empty) background run."""
    mask = np.asarray(mask, dtype=bool)
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of :func:`rle_encode` (bool ``[row, col]``)."""
    h, w = (int(v) for v in rle["size"])
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(rle["counts"], dtype=np.int64))
    if flat.size != h * w:
        raise CocoError(f"RLE counts sum to {flat.size}, not {h} x {w}")
    return flat.reshape((h, w), order="F")


def _key_slice_masks(masks_dir: str | Path, lesions: list[Lesion]) -> dict[int, np.ndarray]:
    from deeplesion.data.maskfiles import (
        mask_png_path,
        match_records,
        read_label_png,
        read_masks_csv,
    )

    out = {}
    by_row = {l.row_index: l for l in lesions}
    for row, r in match_records(read_masks_csv(masks_dir), lesions).items():
        l = by_row[row]
        png = read_label_png(mask_png_path(masks_dir, l.series_folder, l.key_slice_index))
        out[row] = png == r.label
    return out


def export_coco(
    lesions: Iterable[Lesion],
    split: str | None = None,
    *,
    include_noisy: bool = False,
    masks_dir: str | Path | None = None,
) -> dict:
    """The COCO dict of ``lesions`` (one ``split`` or all; noisy ones left out by default).

    Images left without a lesion are not exported. With ``masks_dir`` (a masks folder from
    ``deeplesion masks``) each lesion with a mask gets its key-slice mask as uncompressed
    RLE in ``segmentation`` (``area`` stays the box area of the evaluation protocol).
    """
    code = None if split in (None, "all") else split_code(split)
    chosen = [
        l
        for l in lesions
        if (code is None or l.split_code == code) and (include_noisy or not l.possibly_noisy)
    ]
    masks = _key_slice_masks(masks_dir, chosen) if masks_dir is not None else {}
    images: list[dict] = []
    annotations: list[dict] = []
    ids: dict[str, int] = {}
    for lesion in chosen:
        if lesion.file_name not in ids:
            ids[lesion.file_name] = len(ids) + 1
            rows, cols = lesion.image_size
            images.append(
                {
                    "id": ids[lesion.file_name],
                    "file_name": lesion.file_name,
                    "path": lesion.png_relpath,
                    "width": cols,
                    "height": rows,
                    "spacing_mm": [lesion.spacing_mm[0], lesion.spacing_mm[1]],
                    "slice_interval_mm": lesion.slice_interval_mm,
                    "dicom_window_hu": list(lesion.dicom_window_hu),
                    "location_norm_z": lesion.location_norm[2],
                    "key_slice_index": lesion.key_slice_index,
                    "slice_range": list(lesion.slice_range),
                    "split": lesion.split,
                    "patient_index": lesion.patient_index,
                    "study_index": lesion.study_index,
                    "series_id": lesion.series_id,
                }
            )
        bbox = box_px1_to_coco(lesion.box_px1)
        keypoints: list[float] = []
        for x, y in px1_to_index(np.reshape(lesion.recist_px1, (4, 2))):
            keypoints += [float(x), float(y), 2]
        extra = (
            {"segmentation": rle_encode(masks[lesion.row_index])}
            if lesion.row_index in masks
            else {}
        )
        annotations.append(
            {
                **extra,
                "id": len(annotations) + 1,
                "image_id": ids[lesion.file_name],
                "category_id": 1,
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
                "keypoints": keypoints,
                "num_keypoints": 4,
                "attributes": {
                    "type": lesion.type_name,
                    "coarse_type": lesion.coarse_type,
                    "lesion_id": lesion.row_index,
                    "possibly_noisy": lesion.possibly_noisy,
                    "location_norm": list(lesion.location_norm),
                    "long_diameter_mm": lesion.long_diameter_mm,
                    "short_diameter_mm": lesion.short_diameter_mm,
                },
            }
        )
    return {
        "info": {
            "description": "DeepLesion key slices",
            "split": split or "all",
            "noisy_included": include_noisy,
            "bbox_convention": "0-based [x, y, w, h], inclusive pixel extents",
            "keypoints_convention": "0-based pixel coordinates",
            **({"segmentation": "uncompressed RLE of the key-slice mask"} if masks else {}),
        },
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }


def write_coco(
    path: str | Path,
    lesions: Iterable[Lesion],
    split: str | None = None,
    *,
    include_noisy: bool = False,
    masks_dir: str | Path | None = None,
) -> dict:
    """Write :func:`export_coco` to ``path`` atomically; returns the dict.

    An export without images raises :class:`CocoError` naming the splits the lesions
    hold (nothing is written).
    """
    lesions = list(lesions)
    coco = export_coco(lesions, split, include_noisy=include_noisy, masks_dir=masks_dir)
    if not coco["images"]:
        raise CocoError(_nothing_to_export(lesions, split, include_noisy))
    write_text_atomic(path, json.dumps(coco, indent=1) + "\n")
    return coco


def _nothing_to_export(lesions: list[Lesion], split: str | None, include_noisy: bool) -> str:
    counts: dict[str, list[int]] = {}
    for l in lesions:
        counts.setdefault(l.split, [0, 0])[int(l.possibly_noisy)] += 1
    held = ", ".join(
        f"{name} ({clean + noisy} lesions" + (f", {noisy} noisy)" if noisy else ")")
        for name, (clean, noisy) in sorted(counts.items())
    )
    what = "no lesions" if split in (None, "all") else f"no lesions in split {split!r}"
    if not include_noisy and (split in counts or (split in (None, "all") and counts)):
        what += " apart from noisy ones (include them with include_noisy / --include-noisy)"
    return f"nothing to export: {what}; the file holds: {held or 'no lesions'}"


@dataclass(frozen=True)
class CocoLesion:
    """One annotation read back, in DL_info conventions."""

    file_name: str
    lesion_id: int
    box_px1: tuple[float, float, float, float]
    recist_px1: tuple[float, ...]
    coarse_type: int


def read_coco(path: str | Path) -> list[CocoLesion]:
    """Read an export back; raises :class:`CocoError` naming the file and annotation."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        names = {img["id"]: img["file_name"] for img in coco["images"]}
        anns = coco["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CocoError(f"{path}: not a COCO export: {exc}") from exc
    out = []
    for i, ann in enumerate(anns):
        try:
            kp = index_to_px1(np.asarray(ann["keypoints"], dtype=float).reshape(4, 3)[:, :2])
            attrs = ann.get("attributes", {})
            out.append(
                CocoLesion(
                    names[ann["image_id"]],
                    int(attrs.get("lesion_id", -1)),
                    coco_to_box_px1(ann["bbox"]),
                    tuple(float(v) for v in kp.reshape(-1)),
                    int(attrs.get("coarse_type", -1)),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CocoError(f"{path}: annotation {i} (id {ann.get('id')!r}): {exc}") from exc
    return out
