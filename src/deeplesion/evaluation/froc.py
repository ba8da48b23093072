"""Key-slice lesion detection FROC, as the published DeepLesion numbers were computed.

Ground truth: the lesions of one split (``Train_Val_Test``), without ``Possibly_noisy``
lesions, grouped by ``File_name`` (one key slice = one image); images left without a
lesion are dropped. Boxes stay in the DL_info convention (1-based pixels, suffix ``_px1``)
and predictions must use that same convention. The IoU uses inclusive "+1" extents
(``x2 - x1 + 1``); upstream subtracted 1 from the ground truth and worked 0-based, which
shifts both boxes equally and so gives the same IoU (see :mod:`.sweep`).

Predictions: a CSV with header ``file_name,x1,y1,x2,y2,score`` (one row per box; extra
columns are ignored), or a COCO results JSON (``[{"image_id", "bbox": [x, y, w, h],
"score"}, ...]``) together with the COCO export whose ``images[]`` give ``id`` and
``file_name``. COCO boxes are read as 0-based inclusive-pixel boxes
(``x1_px1 = x + 1``, ``x2_px1 = x + w``), the convention under which COCO ``w*h`` equals
the "+1" Pascal area.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from deeplesion.data.annotations import SPLITS, Lesion, LesionTable, split_code
from deeplesion.data.io import atomic_path
from deeplesion.errors import InvalidArgumentError
from deeplesion.evaluation.errors import EvaluationError, PredictionError
from deeplesion.evaluation.sweep import FrocCurve, Sweep, read_curve, sweep

#: FP-per-image rates of the published tables.
FP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: "Avg" in papers: mean sensitivity at these rates.
AVERAGE_RATES = (0.5, 1.0, 2.0, 4.0)
PREDICTION_COLUMNS = ("file_name", "x1", "y1", "x2", "y2", "score")

#: Stratum bins (project choice, documented in README): long diameter and slice interval.
SIZE_BINS_MM = ((0.0, 10.0, "<10 mm"), (10.0, 30.0, "10-30 mm"), (30.0, math.inf, ">=30 mm"))
INTERVAL_BINS_MM = ((0.0, 5.0, "<5 mm"), (5.0, math.inf, ">=5 mm"))
STRATA = ("type", "size", "slice-interval")


def rate_key(rate: float) -> str:
    """The JSON key of an FP rate.

    Example:

        >>> rate_key(0.5), rate_key(1.0), rate_key(16)
        ('0.5', '1', '16')
    """
    return f"{rate:g}"


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class GroundTruth:
    """The evaluated images and lesions of one split (noisy lesions, empty images dropped)."""

    split: str
    file_names: tuple[str, ...]  #: evaluated images, in first-appearance order
    lesions: tuple[Lesion, ...]  #: evaluated lesions, in file order
    image_index: np.ndarray  #: per lesion, index into ``file_names``
    boxes_px1: np.ndarray  #: (n_lesions, 4) x1, y1, x2, y2, 1-based DL_info pixels
    n_images_unfiltered: int
    n_lesions_unfiltered: int
    other_file_names: frozenset[str] = frozenset()  #: in the annotations, not evaluated

    @property
    def n_images(self) -> int:
        return len(self.file_names)

    @property
    def n_lesions(self) -> int:
        return len(self.lesions)

    def index_of(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.file_names)}


def ground_truth(
    lesions: LesionTable | Iterable[Lesion],
    split: str | int | None = "test",
    *,
    drop_noisy: bool = True,
) -> GroundTruth:
    """Ground truth of one split (``None``: every row given) per the protocol."""
    all_lesions = list(lesions)
    code = None if split is None else split_code(split)
    chosen = [l for l in all_lesions if code is None or l.split_code == code]
    n_images_unfiltered = len({l.file_name for l in chosen})
    kept = [l for l in chosen if not (drop_noisy and l.possibly_noisy)]
    names: dict[str, int] = {}
    for lesion in kept:
        names.setdefault(lesion.file_name, len(names))
    if not kept:
        present = sorted({l.split for l in all_lesions})
        raise EvaluationError(
            f"no lesions in split {split!r} to evaluate; the annotations "
            f"hold {', '.join(present) or 'no rows'} (choose with --split)"
        )
    evaluated = set(names)
    return GroundTruth(
        split="all" if code is None else SPLITS[code],
        file_names=tuple(names),
        lesions=tuple(kept),
        image_index=np.array([names[l.file_name] for l in kept], dtype=np.int64),
        boxes_px1=np.array([l.box_px1 for l in kept], dtype=np.float64).reshape(-1, 4),
        n_images_unfiltered=n_images_unfiltered,
        n_lesions_unfiltered=len(chosen),
        other_file_names=frozenset(l.file_name for l in all_lesions) - evaluated,
    )


# --------------------------------------------------------------------------- predictions


@dataclass
class Detections:
    """Scored boxes on the evaluated images (1-based DL_info pixels)."""

    image_index: np.ndarray  #: index into ``GroundTruth.file_names``
    boxes_px1: np.ndarray  #: (n, 4) x1, y1, x2, y2
    scores: np.ndarray
    ignored_outside: int = 0  #: rows for images of the annotations that are not evaluated
    problems: list[PredictionError] = field(default_factory=list)  #: skipped rows
    source: str = ""

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_arrays(
        cls, image_index: ArrayLike, boxes_px1: ArrayLike, scores: ArrayLike
    ) -> Detections:
        """Detections from arrays; raises :class:`EvaluationError` on bad shapes/values."""
        images = np.asarray(image_index, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes_px1, dtype=np.float64).reshape(-1, 4)
        score = np.asarray(scores, dtype=np.float64).reshape(-1)
        if not (len(images) == len(boxes) == len(score)):
            raise EvaluationError("image_index, boxes and scores differ in length")
        if not (np.isfinite(boxes).all() and np.isfinite(score).all()):
            raise EvaluationError("non-finite box coordinate or score")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            raise EvaluationError("box with x2 < x1 or y2 < y1")
        return cls(images, boxes, score)


# --------------------------------------------------------------------------- evaluation


@dataclass
class StratumResult:
    name: str
    n_lesions: int
    sensitivity: dict[str, float | None]
    average: float | None


@dataclass
class DetectionResult:
    """FROC evaluation of one prediction set on one split."""

    split: str
    iou: float
    extrapolate: bool
    n_images: int
    n_lesions: int
    n_detections: int
    fp_rates: tuple[float, ...]
    sensitivity: dict[str, float | None]  #: keyed by :func:`rate_key`; None: beyond the curve
    average: float | None
    curve: FrocCurve
    n_images_unfiltered: int = 0
    n_lesions_unfiltered: int = 0
    ignored_outside: int = 0
    skipped_rows: int = 0
    n_double_hits: int = 0
    strata: dict[str, list[StratumResult]] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "protocol": "key-slice FROC (DeepLesion official)",
            "split": self.split,
            "iou": self.iou,
            "beyond_curve": "extrapolate" if self.extrapolate else "hold",
            "n_images": self.n_images,
            "n_lesions": self.n_lesions,
            "n_detections": self.n_detections,
            "sensitivity": self.sensitivity,
            "average": self.average,
            "max_fp_per_image": float(self.curve.fp_per_image[-1])
            if len(self.curve.fp_per_image)
            else 0.0,
            "n_images_before_filter": self.n_images_unfiltered,
            "n_lesions_before_filter": self.n_lesions_unfiltered,
            "ignored_outside_split": self.ignored_outside,
            "skipped_rows": self.skipped_rows,
            "detections_finding_two_lesions": self.n_double_hits,
        }
        if self.strata:
            out["strata"] = {
                by: {
                    s.name: {
                        "n_images": self.n_images,
                        "n_lesions": s.n_lesions,
                        "sensitivity": s.sensitivity,
                        "average": s.average,
                    }
                    for s in strata
                }
                for by, strata in self.strata.items()
            }
        return out


def _stratum_labels(lesions: Sequence[Lesion], by: str) -> list[str]:
    def binned(value: float, bins) -> str:
        for lo, hi, label in bins:
            if lo <= value < hi:
                return label
        return "unknown"

    if by == "type":
        return [l.type_name for l in lesions]
    if by == "size":
        return [binned(l.long_diameter_mm, SIZE_BINS_MM) for l in lesions]
    if by == "slice-interval":
        return [binned(l.slice_interval_mm, INTERVAL_BINS_MM) for l in lesions]
    raise InvalidArgumentError(f"unknown stratum {by!r}; allowed: {STRATA}")


def _summary(
    curve: FrocCurve, fp_rates: Sequence[float], extrapolate: bool
) -> tuple[dict[str, float | None], float | None]:
    values = read_curve(curve, fp_rates, extrapolate=extrapolate)
    sens = {rate_key(r): (None if np.isnan(v) else float(v)) for r, v in zip(fp_rates, values)}
    avg_values = read_curve(curve, AVERAGE_RATES, extrapolate=extrapolate)
    average = None if np.isnan(avg_values).any() else float(np.mean(avg_values))
    return sens, average


def detection_sweep(gt: GroundTruth, dets: Detections, *, iou: float = 0.5) -> Sweep:
    """The protocol's sweep of ``dets`` against ``gt`` (reusable for strata)."""
    return sweep(
        dets.image_index,
        dets.boxes_px1,
        dets.scores,
        gt.image_index,
        gt.boxes_px1,
        gt.n_images,
        metric="iou",
        threshold=iou,
    )


def evaluate_detection(
    gt: GroundTruth,
    dets: Detections,
    *,
    iou: float = 0.5,
    fp_rates: Sequence[float] = FP_RATES,
    extrapolate: bool = False,
    by: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> DetectionResult:
    """Sensitivity at ``fp_rates`` FPs per image, overall and per stratum of lesions."""
    swept = detection_sweep(gt, dets, iou=iou)
    curve = swept.curve(scores=dets.scores)
    sensitivity, average = _summary(curve, fp_rates, extrapolate)
    strata: dict[str, list[StratumResult]] = {}
    for i, name in enumerate(by):
        labels = np.array(_stratum_labels(gt.lesions, name), dtype=object)
        results = []
        for label in sorted(set(labels.tolist())):
            mask = labels == label
            s_sens, s_avg = _summary(swept.curve(mask), fp_rates, extrapolate)
            results.append(StratumResult(label, int(mask.sum()), s_sens, s_avg))
        strata[name] = results
        if progress is not None:
            progress(i + 1)
    return DetectionResult(
        split=gt.split,
        iou=iou,
        extrapolate=extrapolate,
        n_images=gt.n_images,
        n_lesions=gt.n_lesions,
        n_detections=len(dets),
        fp_rates=tuple(fp_rates),
        sensitivity=sensitivity,
        average=average,
        curve=curve,
        n_images_unfiltered=gt.n_images_unfiltered,
        n_lesions_unfiltered=gt.n_lesions_unfiltered,
        ignored_outside=dets.ignored_outside,
        skipped_rows=len(dets.problems),
        n_double_hits=swept.n_double_hits,
        strata=strata,
    )


def write_predictions_csv(
    path: str | Path, file_names: Sequence[str], boxes_px1: ArrayLike, scores: ArrayLike
) -> None:
    """Write a predictions CSV in the format :func:`read_predictions` reads (atomic)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        for name, box, score in zip(
            file_names, np.asarray(boxes_px1), np.asarray(scores, dtype=np.float64)
        ):
            writer.writerow([name, *(f"{v:.4f}" for v in box), f"{score:.6f}"])
