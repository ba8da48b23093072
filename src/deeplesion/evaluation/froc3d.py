"""3-D lesion detection on the manually labelled DeepLesion 1K set (the LENS protocol).

Each sub-volume (named like ``000001_01_01_103-115.nii.gz``) holds fully annotated 3-D
boxes ``x1, y1, z1, x2, y2, z2``: x, y in 1-based DL_info pixels, z in the volume's slice
numbers. Predictions use the same convention. Same sweep as the key-slice FROC, with:

* overlap = 3-D IoBB, intersection over the PREDICTED box's volume, inclusive "+1"
  extents in x, y and z; a detection hits a lesion when IoBB >= 0.3;
* false positives per sub-volume (every listed sub-volume counts, with or without boxes);
* sensitivity at 0.125, 0.25, 0.5, 1, 2, 4, 8 FPs per sub-volume; 0 left of the curve,
  the last value right of it; the headline is their mean.

Box files are CSVs: ground truth ``volume,x1,y1,z1,x2,y2,z2`` and predictions with an
extra ``score`` column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplesion.data.io import read_text
from deeplesion.data.table import WidthProblem, read_table
from deeplesion.evaluation.errors import EvaluationError, PredictionError
from deeplesion.evaluation.froc import rate_key
from deeplesion.evaluation.sweep import FrocCurve, read_curve, sweep

FP_RATES_3D = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
IOBB_THRESHOLD_3D = 0.3
BOX_COLUMNS_3D = ("volume", "x1", "y1", "z1", "x2", "y2", "z2")


@dataclass
class Boxes3D:
    """3-D boxes keyed by sub-volume name; ``scores`` is None for ground truth."""

    volumes: list[str]
    boxes: np.ndarray  #: (n, 6) x1, y1, z1, x2, y2, z2
    scores: np.ndarray | None = None
    problems: list[PredictionError] = field(default_factory=list)


def read_boxes_3d(path: str | Path, *, scored: bool, strict: bool = False) -> Boxes3D:
    """Read a 3-D box CSV; bad rows raise (strict) or are skipped and listed."""
    path = Path(path)
    columns = BOX_COLUMNS_3D + (("score",) if scored else ())
    volumes: list[str] = []
    rows: list[list[float]] = []
    problems: list[PredictionError] = []

    def problem(message: str, line: int, column: str, value: object) -> None:
        error = PredictionError(message, file=str(path), line=line, column=column, value=value)
        if strict:
            raise error
        problems.append(error)

    table = read_table(path, columns, error=PredictionError, hint=f"expected {','.join(columns)}")
    for line, cells in table.rows():
        if isinstance(cells, WidthProblem):
            problem(cells.message, line, "", cells.text)
            continue
        values = []
        for column in columns[1:]:
            text = cells[column]
            if text is None:
                problem("missing cell", line, column, None)
                break
            try:
                v = float(text)
            except ValueError:
                problem("not a number", line, column, text)
                break
            if not math.isfinite(v):
                problem("non-finite value", line, column, text)
                break
            values.append(v)
        else:
            for axis in range(3):
                if values[axis + 3] < values[axis]:
                    col = columns[axis + 4]
                    problem(f"{col} < {columns[axis + 1]}", line, col, cells[col])
                    break
            else:
                volumes.append(str(cells[columns[0]]))
                rows.append(values)
    arr = np.array(rows, dtype=np.float64).reshape(-1, 7 if scored else 6)
    return Boxes3D(volumes, arr[:, :6], arr[:, 6] if scored else None, problems)


def read_volume_list(path: str | Path) -> list[str]:
    """Sub-volume names from a case list CSV (column ``Nifti_ct_name``, else the first)."""
    with io.StringIO(read_text(path), newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return []
    col = rows[0].index("Nifti_ct_name") if "Nifti_ct_name" in rows[0] else 0
    return [r[col].strip() for r in rows[1:] if r and r[col].strip()]


@dataclass
class Detection3DResult:
    n_volumes: int
    n_lesions: int
    n_detections: int
    sensitivity: dict[str, float]
    mean_sensitivity: float
    curve: FrocCurve
    ignored_outside: int = 0
    skipped_rows: int = 0

    def to_json(self) -> dict:
        return {
            "protocol": "3-D FROC (LENS, IoBB >= 0.3)",
            "n_volumes": self.n_volumes,
            "n_lesions": self.n_lesions,
            "n_detections": self.n_detections,
            "sensitivity": self.sensitivity,
            "mean_sensitivity": self.mean_sensitivity,
            "ignored_outside_volumes": self.ignored_outside,
            "skipped_rows": self.skipped_rows,
        }


def evaluate_detection_3d(
    gt: Boxes3D,
    predictions: Boxes3D,
    volumes: Sequence[str] | None = None,
    *,
    iobb: float = IOBB_THRESHOLD_3D,
    fp_rates: Sequence[float] = FP_RATES_3D,
) -> Detection3DResult:
    """LENS 3-D FROC. ``volumes``: the evaluated sub-volumes (default: those with GT)."""
    if predictions.scores is None:
        raise EvaluationError("predictions need scores")
    names = list(dict.fromkeys(volumes if volumes is not None else gt.volumes))
    index = {v: i for i, v in enumerate(names)}
    unknown = sorted({v for v in gt.volumes if v not in index})
    if unknown:
        raise EvaluationError(f"ground-truth volumes not in the volume list: {unknown[:5]}")
    gt_image = np.array([index[v] for v in gt.volumes], dtype=np.int64)
    keep = np.array([v in index for v in predictions.volumes], dtype=bool)
    det_image = np.array([index[v] for v, k in zip(predictions.volumes, keep) if k], dtype=np.int64)
    swept = sweep(
        det_image,
        predictions.boxes[keep],
        predictions.scores[keep],
        gt_image,
        gt.boxes,
        len(names),
        metric="iobb",
        threshold=iobb,
    )
    curve = swept.curve(scores=predictions.scores[keep])
    values = read_curve(curve, fp_rates)
    return Detection3DResult(
        n_volumes=len(names),
        n_lesions=len(gt_image),
        n_detections=int(keep.sum()),
        sensitivity={rate_key(r): float(v) for r, v in zip(fp_rates, values)},
        mean_sensitivity=float(np.mean(values)),
        curve=curve,
        ignored_outside=int((~keep).sum()),
        skipped_rows=len(predictions.problems),
    )
