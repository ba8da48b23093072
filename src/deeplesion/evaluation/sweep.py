"""The FROC sweep shared by the 2-D (key-slice) and 3-D (LENS) detection protocols.

Boxes are ``[lo..., hi...]``: ``x1, y1, x2, y2`` in 2-D, ``x1, y1, z1, x2, y2, z2`` in 3-D,
in inclusive pixel (voxel) coordinates, so an extent is ``hi - lo + 1`` (the old Pascal
"+1" convention of the upstream code). Adding the same constant to every coordinate of
both boxes leaves every overlap unchanged, so the 1-based DL_info convention and the
0-based convention upstream worked in (it subtracted 1 from the ground truth) give
identical results, as long as predictions and ground truth use the same one.

The sweep follows ``docs/evaluation-protocol.md`` exactly, vectorised with numpy:

* detections of all images are pooled and sorted by score, descending; equal scores keep
  their input order (a stable sort; upstream's ``np.argsort(...)[::-1]`` left the order of
  ties to the sort implementation);
* a detection is a false positive when its image has no lesion or its best overlap is
  below the threshold;
* otherwise it finds every not-yet-found lesion of its image with overlap >= threshold
  (one box may find two lesions); a detection that only re-finds found lesions is neither
  a hit nor a false positive.

Because a detection that overlaps lesion ``j`` enough is never a false positive, lesion
``j`` is found by the first detection, in sweep order, that overlaps it enough. That makes
the sweep three array operations: pairwise overlaps, a per-lesion minimum rank, and
cumulative sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from deeplesion.errors import InvalidArgumentError
from deeplesion.evaluation.errors import EvaluationError

OVERLAP_METRICS = ("iou", "iobb")


def box_overlap(det_boxes: np.ndarray, gt_boxes: np.ndarray, metric: str = "iou") -> np.ndarray:
    """Row-wise overlap of ``det_boxes[i]`` with ``gt_boxes[i]`` (inclusive "+1" extents).

    ``iou``: intersection over union; ``iobb``: intersection over the DETECTED box.

    Two 10 x 10 boxes sharing 5 columns: intersection 50, union 150.

    Example:

        >>> box_overlap([[1, 1, 10, 10]], [[6, 1, 15, 10]]).round(4).tolist()
        [0.3333]
        >>> box_overlap([[1, 1, 10, 10]], [[6, 1, 15, 10]], metric="iobb").tolist()
        [0.5]
    """
    if metric not in OVERLAP_METRICS:
        raise InvalidArgumentError(f"unknown overlap metric {metric!r}; allowed: {OVERLAP_METRICS}")
    det = np.asarray(det_boxes, dtype=np.float64)
    gt = np.asarray(gt_boxes, dtype=np.float64)
    d = det.shape[1] // 2
    ext = np.maximum(
        np.minimum(det[:, d:], gt[:, d:]) - np.maximum(det[:, :d], gt[:, :d]) + 1.0, 0.0
    )
    det_ext = det[:, d:] - det[:, :d] + 1.0
    inter, det_size = ext[:, 0], det_ext[:, 0]
    for k in range(1, d):
        inter = inter * ext[:, k]
        det_size = det_size * det_ext[:, k]
    if metric == "iobb":
        return inter / det_size
    gt_ext = gt[:, d:] - gt[:, :d] + 1.0
    gt_size = gt_ext[:, 0]
    for k in range(1, d):
        gt_size = gt_size * gt_ext[:, k]
    return inter / (det_size + gt_size - inter)


@dataclass(frozen=True)
class FrocCurve:
    """One point per detection, in sweep order (descending score)."""

    sensitivity: np.ndarray  #: hits / n_lesions after each detection
    fp_per_image: np.ndarray  #: false positives / n_images after each detection
    scores: np.ndarray  #: the detection scores, descending
    hits: np.ndarray  #: cumulative found lesions (int)
    false_positives: np.ndarray  #: cumulative false positives (int)
    n_images: int
    n_lesions: int


@dataclass(frozen=True)
class Sweep:
    """The result of one pass over the detections, reusable for any subset of lesions."""

    order: np.ndarray  #: detection indices in sweep order
    is_fp: np.ndarray  #: per sorted detection: counted as a false positive
    first_hit_rank: np.ndarray  #: per lesion: sweep rank of the detection finding it (-1 never)
    n_images: int
    n_lesions: int
    n_double_hits: int  #: detections that newly found two or more lesions at once

    def curve(
        self, lesion_mask: np.ndarray | None = None, scores: np.ndarray | None = None
    ) -> FrocCurve:
        """The FROC curve counting only the lesions in ``lesion_mask`` (all by default).

        False positives and ``n_images`` never depend on the mask (stratified FROC).
        """
        n_det = len(self.order)
        found = self.first_hit_rank >= 0
        n_lesions = self.n_lesions
        if lesion_mask is not None:
            lesion_mask = np.asarray(lesion_mask, dtype=bool)
            found = found & lesion_mask
            n_lesions = int(lesion_mask.sum())
        hits = np.cumsum(np.bincount(self.first_hit_rank[found], minlength=n_det))[:n_det]
        fps = np.cumsum(self.is_fp)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = hits / n_lesions if n_lesions else np.full(n_det, np.nan)
        return FrocCurve(
            sensitivity=sens.astype(np.float64),
            fp_per_image=fps / self.n_images,
            scores=np.empty(0) if scores is None else scores[self.order],
            hits=hits,
            false_positives=fps,
            n_images=self.n_images,
            n_lesions=n_lesions,
        )


def sweep(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    n_images: int,
    *,
    metric: str = "iou",
    threshold: float = 0.5,
) -> Sweep:
    """Run the protocol's sweep. Images are integers ``0..n_images-1``."""
    det_image = np.asarray(det_image, dtype=np.int64)
    det_scores = np.asarray(det_scores, dtype=np.float64)
    gt_image = np.asarray(gt_image, dtype=np.int64)
    det_boxes = np.asarray(det_boxes, dtype=np.float64)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64)
    n_det, n_gt = len(det_image), len(gt_image)
    if n_images <= 0:
        raise EvaluationError("no images to evaluate")
    if len(det_scores) != n_det or len(det_boxes) != n_det or len(gt_boxes) != n_gt:
        raise EvaluationError("detection / ground-truth arrays have different lengths")
    for name, idx in (("detection", det_image), ("lesion", gt_image)):
        if len(idx) and (idx.min() < 0 or idx.max() >= n_images):
            raise EvaluationError(f"{name} image index outside 0..{n_images - 1}")

    order = np.argsort(-det_scores, kind="stable")
    rank = np.empty(n_det, dtype=np.int64)
    rank[order] = np.arange(n_det)

    # Lesions grouped by image (CSR): lesions of image i are by_image[start[i]:start[i]+count[i]].
    by_image = np.argsort(gt_image, kind="stable")
    count = np.bincount(gt_image, minlength=n_images)
    start = np.cumsum(count) - count
    per_det = count[det_image]
    pair_det = np.repeat(np.arange(n_det), per_det)
    first_pair = np.cumsum(per_det) - per_det
    offset = np.arange(len(pair_det)) - np.repeat(first_pair, per_det)
    pair_gt = by_image[np.repeat(start[det_image], per_det) + offset]

    overlap = box_overlap(det_boxes[pair_det], gt_boxes[pair_gt], metric)
    ok = overlap >= threshold  # NaN compares False: such a pair never matches
    n_ok = np.bincount(pair_det[ok], minlength=n_det)
    is_fp = (n_ok == 0)[order]

    first_hit_rank = np.full(n_gt, -1, dtype=np.int64)
    ok_gt, ok_rank = pair_gt[ok], rank[pair_det[ok]]
    if len(ok_gt):
        srt = np.lexsort((ok_rank, ok_gt))
        ok_gt, ok_rank = ok_gt[srt], ok_rank[srt]
        first = np.ones(len(ok_gt), dtype=bool)
        first[1:] = ok_gt[1:] != ok_gt[:-1]
        first_hit_rank[ok_gt[first]] = ok_rank[first]
    finds = np.bincount(first_hit_rank[first_hit_rank >= 0], minlength=n_det)
    return Sweep(
        order=order,
        is_fp=is_fp,
        first_hit_rank=first_hit_rank,
        n_images=int(n_images),
        n_lesions=n_gt,
        n_double_hits=int((finds >= 2).sum()),
    )


def read_curve(curve: FrocCurve, fp_rates: ArrayLike, *, extrapolate: bool = False) -> np.ndarray:
    """Sensitivity at each FP rate, read off the curve as the protocol document says.

    Linear interpolation between consecutive curve points (as ``np.interp`` /
    ``scipy.interpolate.interp1d`` did upstream); at an FP rate equal to a repeated x
    value, the LAST point with that x. Left of the first point: 0. Right of the last
    point: the last sensitivity (MULAN, A3D), or with ``extrapolate`` the straight line
    through the last two distinct-x points of the curve (each x at its last point), as
    3DCE's ``interp1d(..., fill_value='extrapolate')``, clipped to [0, 1]. On a curve made
    by :func:`sweep` the points come from single detections, so this line's slope is the
    sensitivity gained at the final FP count; upstream's own call returned inf or nan
    whenever the last detection was not a false positive, which the distinct-x rule avoids.

    A curve with no lesions gives NaN; a curve with no detections gives 0.
    """
    rates = np.asarray(fp_rates, dtype=np.float64)
    x, s = curve.fp_per_image, curve.sensitivity
    if curve.n_lesions == 0:
        return np.full(len(rates), np.nan)
    if len(x) == 0:
        return np.zeros(len(rates))
    k = np.searchsorted(x, rates, side="right") - 1
    out = np.zeros(len(rates))
    n = len(x)
    for i, (f, j) in enumerate(zip(rates, k)):
        if j < 0:
            out[i] = 0.0
        elif x[j] == f:
            out[i] = s[j]
        elif j == n - 1:
            out[i] = _extrapolate(x, s, f) if extrapolate else s[-1]
        else:
            slope = (s[j + 1] - s[j]) / (x[j + 1] - x[j])
            out[i] = slope * (f - x[j]) + s[j]
    return out


def _extrapolate(x: np.ndarray, s: np.ndarray, f: float) -> float:
    last = np.ones(len(x), dtype=bool)
    last[:-1] = x[1:] != x[:-1]
    xs, ss = x[last], s[last]
    if xs[0] > 0:  # the curve starts at the origin: no detection accepted, nothing found
        xs, ss = np.concatenate([[0.0], xs]), np.concatenate([[0.0], ss])
    if len(xs) < 2:
        return float(ss[-1])
    slope = (ss[-1] - ss[-2]) / (xs[-1] - xs[-2])
    return float(min(1.0, max(0.0, slope * (f - xs[-1]) + ss[-1])))
