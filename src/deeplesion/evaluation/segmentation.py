"""Scoring lesion masks: RECIST-style diameters and overlap with reference masks.

Per lesion: the key-slice mask's long and short axes measured as RECIST does
(:func:`deeplesion.data.masks.mask_axes`) against the annotated diameters in mm, the
diameter error (mean of the absolute long and short errors, MULAN's measure) and the area.
With reference masks: Dice, IoU and the 95 % Hausdorff distance (mm) on the key slice and,
for 3-D masks, over the slices either mask reaches. Summaries overall, by type and by size
(long diameter < 10, 10-30, >= 30 mm).

References are a masks folder (with ``masks.csv``, e.g. the sample's ``sample_masks``) or
a folder of ULS23-style files ``<folder>_<slice>_lesion_<NN>.nii.gz`` (NN = 1-based rank
of the lesion among the key slice's DL_info rows, in row order), each a binary volume on
the project NIfTI grid: shape (cols, rows, slices), affine ``diag(-sx, -sy, -sz)`` whose
z offset gives the first slice number (a single slice is allowed: key slice only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import Lesion
from deeplesion.data.maskfiles import (
    MASKS_CSV,
    MaskFileError,
    lesion_mask_slices,
    match_records,
    read_masks_csv,
    read_settings,
    slice_ranks,
)
from deeplesion.data.masks import dice, hausdorff95_mm, iou, mask_axes
from deeplesion.evaluation.errors import EvaluationError
from deeplesion.evaluation.froc import SIZE_BINS_MM

METRICS = (
    "long_error_mm",
    "short_error_mm",
    "diameter_error_mm",
    "area_mm2",
    "dice_2d",
    "iou_2d",
    "hd95_2d_mm",
    "dice_3d",
    "iou_3d",
    "hd95_3d_mm",
)


@dataclass(frozen=True)
class LesionScore:
    """One lesion's scores (NaN where a measure does not apply)."""

    row_index: int
    file_name: str
    type_name: str
    size_bin: str
    method: str
    long_ref_mm: float
    short_ref_mm: float
    long_mm: float
    short_mm: float
    long_error_mm: float
    short_error_mm: float
    diameter_error_mm: float
    area_mm2: float
    dice_2d: float = math.nan
    iou_2d: float = math.nan
    hd95_2d_mm: float = math.nan
    dice_3d: float = math.nan
    iou_3d: float = math.nan
    hd95_3d_mm: float = math.nan


@dataclass
class SegmentationReport:
    lesions: list[LesionScore]
    summary: dict[str, dict[str, dict[str, float]]]  #: group kind -> group -> metric -> mean
    without_mask: list[int]  #: DL_info rows with no usable mask (missing or failed)
    without_reference: list[int]  #: rows with a mask but no reference (with --reference)

    def as_dict(self) -> dict:
        return {
            "summary": self.summary,
            "without_mask": self.without_mask,
            "without_reference": self.without_reference,
            "lesions": [asdict(s) for s in self.lesions],
        }


def size_bin(long_mm: float) -> str:
    return next((label for lo, hi, label in SIZE_BINS_MM if lo <= long_mm < hi), "unknown")


# --------------------------------------------------------------------------- references


def uls23_name(lesion: Lesion, rank: int) -> str:
    """``<folder>_<slice>_lesion_<NN>.nii.gz`` of a lesion (``rank`` on its key slice)."""
    return f"{lesion.file_name[:-4]}_lesion_{rank:02d}.nii.gz"


def read_uls23_volume(path: Path, lesion: Lesion) -> dict[int, np.ndarray]:
    """A ULS23-style reference volume as ``{slice_number: bool [row, col]}``."""
    import nibabel as nib

    try:
        img = nib.nifti1.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = img.affine
    except Exception as exc:  # nibabel raises many kinds for a bad file
        raise MaskFileError(f"unreadable NIfTI: {exc}", file=str(path)) from None
    rows, cols = lesion.image_size
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[:2] != (cols, rows):
        raise MaskFileError(
            f"shape {data.shape} is not (cols, rows, slices) = ({cols}, {rows}, n) of the "
            "project NIfTI grid",
            file=str(path),
        )
    sz = -float(affine[2, 2])
    if sz <= 0 or abs(affine[0, 0]) <= 0 or np.count_nonzero(affine[:3, :3]) != 3:
        raise MaskFileError(
            f"affine is not the project layout's: {affine.tolist()}", file=str(path)
        )
    first = round(1 - float(affine[2, 3]) / sz)
    return {first + k: np.asarray(data[:, :, k]).T > 0 for k in range(data.shape[2])}


def load_references(
    reference_dir: str | Path, lesions: list[Lesion]
) -> dict[int, dict[int, np.ndarray]]:
    """``{row_index: {slice_number: mask}}`` of the lesions that have a reference."""
    ref = Path(reference_dir)
    if not ref.is_dir():
        raise EvaluationError(f"{ref}: reference folder not found")
    out: dict[int, dict[int, np.ndarray]] = {}
    if (ref / MASKS_CSV).is_file():
        for row, record in match_records(read_masks_csv(ref), lesions).items():
            out[row] = lesion_mask_slices(ref, record)
        return out
    ranks = slice_ranks(lesions)
    for l in lesions:
        path = ref / uls23_name(l, ranks[l.row_index])
        if path.is_file():
            out[l.row_index] = read_uls23_volume(path, l)
    return out


# --------------------------------------------------------------------------- scoring


def _overlap(ours: np.ndarray, theirs: np.ndarray, spacing_mm: tuple[float, ...]):
    return dice(ours, theirs), iou(ours, theirs), hausdorff95_mm(ours, theirs, spacing_mm)


def score_lesion(
    lesion: Lesion,
    masks: dict[int, np.ndarray],
    method: str,
    reference: dict[int, np.ndarray] | None = None,
    *,
    three_d: bool = False,
) -> LesionScore:
    """Scores of one lesion's mask (``masks``: slice number -> bool mask)."""
    sx, sy, sz = (float(v) for v in lesion.spacing_mm)
    key = masks[lesion.key_slice_index]
    axes = mask_axes(key, (sy, sx))
    long_mm, short_mm = (axes.long_mm, axes.short_mm) if axes else (0.0, 0.0)
    long_ref, short_ref = lesion.long_diameter_mm, lesion.short_diameter_mm
    long_err, short_err = abs(long_mm - long_ref), abs(short_mm - short_ref)
    extra: dict[str, float] = {}
    if reference is not None:
        empty = np.zeros_like(key)
        ref_key = reference.get(lesion.key_slice_index, empty)
        extra["dice_2d"], extra["iou_2d"], extra["hd95_2d_mm"] = _overlap(key, ref_key, (sy, sx))
        if three_d:
            numbers = sorted(set(masks) | set(reference))
            ours = np.stack([masks.get(n, empty) for n in numbers])
            theirs = np.stack([reference.get(n, empty) for n in numbers])
            extra["dice_3d"], extra["iou_3d"], extra["hd95_3d_mm"] = _overlap(
                ours, theirs, (sz, sy, sx)
            )
    return LesionScore(
        lesion.row_index,
        lesion.file_name,
        lesion.type_name,
        size_bin(long_ref),
        method,
        long_ref,
        short_ref,
        long_mm,
        short_mm,
        long_err,
        short_err,
        (long_err + short_err) / 2,
        float(key.sum()) * sx * sy,
        **extra,
    )


def _means(scores: list[LesionScore]) -> dict[str, float]:
    out: dict[str, float] = {"n": float(len(scores))}
    for metric in METRICS:
        values = [getattr(s, metric) for s in scores]
        finite = [v for v in values if not math.isnan(v)]
        if finite:
            out[metric] = float(np.mean(finite))
    return out


def summarise(scores: list[LesionScore]) -> dict[str, dict[str, dict[str, float]]]:
    """Means overall, by type and by size bin (NaN values left out of each mean)."""
    summary: dict[str, dict[str, dict[str, float]]] = {"overall": {"all": _means(scores)}}
    for kind, key in (("type", "type_name"), ("size", "size_bin")):
        groups: dict[str, list[LesionScore]] = {}
        for s in scores:
            groups.setdefault(getattr(s, key), []).append(s)
        summary[kind] = {name: _means(group) for name, group in sorted(groups.items())}
    return summary


def evaluate_segmentation(
    masks_dir: str | Path,
    lesions: Iterable[Lesion],
    *,
    reference_dir: str | Path | None = None,
) -> SegmentationReport:
    """Score a masks folder against the DL_info rows (and reference masks when given)."""
    masks_dir = Path(masks_dir)
    lesions = list(lesions)
    records = match_records(read_masks_csv(masks_dir), lesions)
    three_d_folder = bool(read_settings(masks_dir).get("3d"))
    references = load_references(reference_dir, lesions) if reference_dir else None
    scores, without_mask, without_reference = [], [], []
    for lesion in lesions:
        record = records.get(lesion.row_index)
        if record is None:
            without_mask.append(lesion.row_index)
            continue
        masks = lesion_mask_slices(masks_dir, record)
        reference = None
        if references is not None:
            reference = references.get(lesion.row_index)
            if reference is None:
                without_reference.append(lesion.row_index)
                continue
        three_d = three_d_folder or record.first_slice < record.last_slice
        scores.append(score_lesion(lesion, masks, record.method, reference, three_d=three_d))
    if not scores:
        raise EvaluationError(
            f"{masks_dir}: no lesion of the annotations has a usable mask"
            + (" and a reference" if references is not None else "")
        )
    return SegmentationReport(scores, summarise(scores), without_mask, without_reference)
