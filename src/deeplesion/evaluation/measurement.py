"""RECIST measurement metrics (MULAN): diameter error and end-point-to-contour distance.

Coordinates are 1-based DL_info pixels (``_px1``); millimetres come from the lesion's x/y
pixel spacing (``Spacing_mm_px_``), applied per axis. RECIST end points are 8 numbers:
long axis ``x11, y11, x12, y12`` then short axis ``x21, y21, x22, y22``.

* diameter error of a lesion: mean of ``|long_gt - long_pred|`` and
  ``|short_gt - short_pred|`` in mm, both diameters taken as end-point distances;
* end-point-to-contour distance: mean over the 4 ground-truth end points of the distance
  (mm) to the predicted lesion contour, a closed polygon (distance to its nearest edge).
  For a contour of boundary pixels (:func:`mask_contour_px1`) use ``vertices_only`` to
  take the nearest boundary pixel instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import Lesion, index_to_px1
from deeplesion.data.table import read_table
from deeplesion.evaluation.errors import EvaluationError, PredictionError, prediction_rows

RECIST_COLUMNS = ("x11", "y11", "x12", "y12", "x21", "y21", "x22", "y22")


def recist_diameters_mm(
    recist_px1: np.ndarray, spacing_xy_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Long and short diameters (mm) of ``[n, 8]`` end points with ``[n, 2]`` spacing."""
    r = np.asarray(recist_px1, dtype=np.float64).reshape(-1, 8)
    sp = np.asarray(spacing_xy_mm, dtype=np.float64).reshape(-1, 2)
    long_mm = np.hypot((r[:, 2] - r[:, 0]) * sp[:, 0], (r[:, 3] - r[:, 1]) * sp[:, 1])
    short_mm = np.hypot((r[:, 6] - r[:, 4]) * sp[:, 0], (r[:, 7] - r[:, 5]) * sp[:, 1])
    return long_mm, short_mm


def point_to_contour_mm(
    points_px1: np.ndarray,
    contour_px1: np.ndarray,
    spacing_xy_mm: Sequence[float],
    *,
    vertices_only: bool = False,
) -> np.ndarray:
    """Distance (mm) from each ``[k, 2]`` point to a closed polygon ``[m, 2]`` (x, y)."""
    sp = np.asarray(spacing_xy_mm, dtype=np.float64)
    p = np.asarray(points_px1, dtype=np.float64).reshape(-1, 2) * sp
    c = np.asarray(contour_px1, dtype=np.float64).reshape(-1, 2) * sp
    if len(c) == 0:
        raise EvaluationError("empty contour")
    if vertices_only or len(c) == 1:
        return np.sqrt(((p[:, None, :] - c[None, :, :]) ** 2).sum(-1)).min(axis=1)
    a, b = c, np.roll(c, -1, axis=0)  # edges a[i] -> b[i], closing the polygon
    ab = b - a
    length2 = (ab**2).sum(-1)
    ap = p[:, None, :] - a[None, :, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(length2 > 0, (ap * ab[None]).sum(-1) / length2, 0.0)
    t = np.clip(t, 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((p[:, None, :] - nearest) ** 2).sum(-1)).min(axis=1)


def mask_contour_px1(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary ``[row, col]`` mask as ``[m, 2]`` (x, y) 1-based pixels.

    A boundary pixel is inside the mask with a 4-neighbour outside it (or at the border).
    """
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    rows, cols = np.nonzero(m & ~inner)
    return index_to_px1(np.column_stack([cols, rows]).astype(np.float64)).reshape(-1, 2)


@dataclass
class MeasurementResult:
    n_lesions: int
    long_error_mm: np.ndarray
    short_error_mm: np.ndarray
    diameter_error_mm: np.ndarray  #: per lesion, mean of the long and short errors
    endpoint_distance_mm: np.ndarray  #: per lesion, NaN without a contour

    @property
    def mean_diameter_error_mm(self) -> float:
        return float(self.diameter_error_mm.mean()) if self.n_lesions else float("nan")

    @property
    def mean_endpoint_distance_mm(self) -> float:
        d = self.endpoint_distance_mm[~np.isnan(self.endpoint_distance_mm)]
        return float(d.mean()) if len(d) else float("nan")

    def to_json(self) -> dict:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else float(v)

        n_contours = int(np.count_nonzero(~np.isnan(self.endpoint_distance_mm)))
        return {
            "n_lesions": self.n_lesions,
            "mean_diameter_error_mm": num(self.mean_diameter_error_mm),
            "mean_long_error_mm": num(float(self.long_error_mm.mean())) if self.n_lesions else None,
            "mean_short_error_mm": num(float(self.short_error_mm.mean()))
            if self.n_lesions
            else None,
            "n_with_contour": n_contours,
            "mean_endpoint_to_contour_mm": num(self.mean_endpoint_distance_mm),
        }


def measurement_errors(
    gt_recist_px1: np.ndarray,
    pred_recist_px1: np.ndarray,
    spacing_xy_mm: np.ndarray,
    contours_px1: Sequence[np.ndarray | None] | None = None,
    *,
    vertices_only: bool = False,
) -> MeasurementResult:
    """Per-lesion errors of predicted RECIST end points (and contours) vs ground truth."""
    gt = np.asarray(gt_recist_px1, dtype=np.float64).reshape(-1, 8)
    pred = np.asarray(pred_recist_px1, dtype=np.float64).reshape(-1, 8)
    sp = np.asarray(spacing_xy_mm, dtype=np.float64).reshape(-1, 2)
    if not (len(gt) == len(pred) == len(sp)):
        raise EvaluationError("ground truth, predictions and spacings differ in length")
    gl, gs = recist_diameters_mm(gt, sp)
    pl, ps = recist_diameters_mm(pred, sp)
    long_err, short_err = np.abs(gl - pl), np.abs(gs - ps)
    dist = np.full(len(gt), np.nan)
    if contours_px1 is not None:
        for i, contour in enumerate(contours_px1):
            if contour is not None and len(contour):
                dist[i] = point_to_contour_mm(
                    gt[i].reshape(4, 2), contour, sp[i], vertices_only=vertices_only
                ).mean()
    return MeasurementResult(len(gt), long_err, short_err, (long_err + short_err) / 2, dist)


def read_measurements(
    path: str | Path, lesions: Sequence[Lesion]
) -> tuple[list[Lesion], np.ndarray, list[np.ndarray | None]]:
    """Predicted measurements CSV: ``row_index,file_name,x11,...,y22[,contour]``.

    ``row_index`` is the 0-based data row of the annotations file (``Lesion.row_index``),
    ``file_name`` must agree with it; ``contour`` (optional) is ``x y x y ...`` in 1-based
    pixels. Any bad row raises :class:`PredictionError` naming the line.
    """
    path = Path(path)
    by_row = {l.row_index: l for l in lesions}
    chosen: list[Lesion] = []
    recists: list[list[float]] = []
    contours: list[np.ndarray | None] = []
    need = ("row_index", "file_name") + RECIST_COLUMNS
    table = read_table(path, need, error=PredictionError, optional=("contour",))
    for row in prediction_rows(table):
        cells = row.cells
        absent = [c for c in need if cells[c] is None]
        if absent:
            raise row.error("missing cell", absent[0], None)
        row_index = row.integer("row_index")
        lesion = by_row.get(row_index)
        if lesion is None:
            raise row.error("no such lesion row in the annotations", "row_index", row_index)
        if cells["file_name"] != lesion.file_name:
            raise row.error(
                f"row {row_index} is {lesion.file_name}", "file_name", cells["file_name"]
            )
        values = row.finite(RECIST_COLUMNS)
        contour = None
        text = cells.get("contour")
        if text:
            try:
                numbers = [float(v) for v in text.split()]
            except ValueError:
                raise row.error("contour must be numbers 'x y x y ...'", "contour", text) from None
            if len(numbers) % 2 or not np.isfinite(numbers).all():
                raise row.error("contour needs an even count of finite numbers", "contour", text)
            contour = np.array(numbers).reshape(-1, 2)
        chosen.append(lesion)
        recists.append(values)
        contours.append(contour)
    return chosen, np.array(recists, dtype=np.float64).reshape(-1, 8), contours


def evaluate_measurements(
    lesions: Sequence[Lesion],
    pred_recist_px1: np.ndarray,
    contours_px1: Sequence[np.ndarray | None] | None = None,
    *,
    vertices_only: bool = False,
) -> MeasurementResult:
    """Errors of predictions for these ground-truth lesions (same order)."""
    gt = np.array([l.recist_px1 for l in lesions], dtype=np.float64).reshape(-1, 8)
    sp = np.array([l.spacing_mm[:2] for l in lesions], dtype=np.float64).reshape(-1, 2)
    return measurement_errors(gt, pred_recist_px1, sp, contours_px1, vertices_only=vertices_only)
