"""Coarse lesion-type classification metrics.

Predictions CSV (what ``deeplesion classify`` writes): header ``row_index,file_name,
predicted_type`` then optional score columns; ``row_index`` is the 0-based data row of the
annotation file, ``file_name`` must be that row's ``File_name`` (a check that the two
files belong together), ``predicted_type`` a code 1-8 or a type name. Rows whose lesion
has no type (train rows, -1) are not scored and are counted.

Metrics over the eight types (codes 1..8), from the confusion matrix ``C[true, predicted]``:
accuracy (trace / n), per-type recall (``C[i, i]`` / row sum; None without true lesions),
precision (``C[i, i]`` / column sum; None when never predicted), F1 ``2 C[i, i] / (row +
column)`` (0 when the type is present but never found), balanced accuracy and macro F1 =
means over the types present in the truth.

Tag predictions (``lesion_idx,<171 terms>``) are scored by :mod:`.tagging`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import LESION_TYPES, TYPE_CODES, Lesion
from deeplesion.data.io import read_text, save_figure
from deeplesion.evaluation.errors import EvaluationError, PredictionError

#: Type codes scored, in order (confusion-matrix rows and columns).
TYPE_ORDER = tuple(code for code in LESION_TYPES if code > 0)
PREDICTION_COLUMNS = ("row_index", "file_name", "predicted_type")


@dataclass
class ClassificationResult:
    """Scores of type predictions against the annotations."""

    labels: list[str]  #: type names, in confusion-matrix order
    confusion: np.ndarray  #: int [true, predicted]
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    precision: list[float | None]
    recall: list[float | None]
    f1: list[float | None]
    support: list[int]  #: true lesions per type
    n_lesions: int
    unlabelled_rows: int = 0  #: predictions for rows without a type (not scored)

    def to_json(self) -> dict:
        return {
            "n_lesions": self.n_lesions,
            "unlabelled_rows": self.unlabelled_rows,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
            "per_type": {
                name: {"precision": p, "recall": r, "f1": f, "support": s}
                for name, p, r, f, s in zip(
                    self.labels, self.precision, self.recall, self.f1, self.support
                )
            },
            "confusion": {
                "rows": "true",
                "columns": "predicted",
                "matrix": self.confusion.tolist(),
            },
        }


def confusion_matrix(
    true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """``C[t, p]`` = how many items of class ``t`` (0-based) were predicted ``p``."""
    t = np.asarray(true, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if t.shape != p.shape:
        raise EvaluationError(f"{t.shape[0]} true labels but {p.shape[0]} predictions")
    for name, arr in (("true", t), ("predicted", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise EvaluationError(f"{name} class outside 0..{n_classes - 1}")
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (t, p), 1)
    return out


def classification_metrics(
    true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> ClassificationResult:
    """All metrics of 0-based class indexes ``predicted`` against ``true``."""
    k = len(labels)
    c = confusion_matrix(true, predicted, k)
    n = int(c.sum())
    if n == 0:
        raise EvaluationError("no labelled lesion to score")
    tp = np.diag(c).astype(np.float64)
    support, predicted_n = c.sum(axis=1), c.sum(axis=0)
    recall = [float(tp[i] / support[i]) if support[i] else None for i in range(k)]
    precision = [float(tp[i] / predicted_n[i]) if predicted_n[i] else None for i in range(k)]
    f1 = [
        float(2 * tp[i] / (support[i] + predicted_n[i])) if support[i] + predicted_n[i] else None
        for i in range(k)
    ]
    present = [i for i in range(k) if support[i]]
    return ClassificationResult(
        labels=list(labels),
        confusion=c,
        accuracy=float(tp.sum() / n),
        balanced_accuracy=float(np.mean([recall[i] for i in present])),
        macro_f1=float(np.mean([f1[i] for i in present])),
        precision=precision,
        recall=recall,
        f1=f1,
        support=[int(s) for s in support],
        n_lesions=n,
    )


def _type_code(value: str) -> int | None:
    text = value.strip()
    try:
        code = int(text)
    except ValueError:
        return TYPE_CODES.get(text.lower()) if text.lower() != "unlabelled" else None
    return code if code in TYPE_ORDER else None


@dataclass
class TypePredictions:
    row_index: np.ndarray
    file_name: list[str]
    predicted_type: np.ndarray  #: codes 1..8
    lines: list[int]  #: CSV line of each prediction (header = line 1)
    source: str = ""


def read_type_predictions(path: str | Path) -> TypePredictions:
    """Read a predictions CSV; a malformed row raises :class:`PredictionError` with its line."""
    path = Path(path)
    with io.StringIO(read_text(path), newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if header[:1] == ["lesion_idx"]:
            raise PredictionError(
                "this is a tag scores file (lesion_idx,<terms>): score it with "
                "`deeplesion evaluate tagging`",
                file=str(path),
                line=1,
            )
        missing = [c for c in PREDICTION_COLUMNS if c not in header]
        if missing:
            raise PredictionError(
                f"missing columns {missing}; expected header {','.join(PREDICTION_COLUMNS)}[,...]",
                file=str(path),
                line=1,
            )
        pos = {c: header.index(c) for c in PREDICTION_COLUMNS}
        rows, names, codes, lines = [], [], [], []
        seen: dict[int, int] = {}
        for cells in reader:
            line = reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise PredictionError(
                    f"expected {len(header)} cells, found {len(cells)}", file=str(path), line=line
                )
            raw = cells[pos["row_index"]]
            row = int(raw) if raw.strip().isdigit() else -1
            if row < 0:
                raise PredictionError(
                    "not a non-negative integer",
                    file=str(path),
                    line=line,
                    column="row_index",
                    value=raw,
                )
            if row in seen:
                raise PredictionError(
                    f"row_index {row} already predicted on line {seen[row]}",
                    file=str(path),
                    line=line,
                    column="row_index",
                    value=raw,
                )
            seen[row] = line
            code = _type_code(cells[pos["predicted_type"]])
            if code is None:
                raise PredictionError(
                    "not a lesion type: a code 1-8 or one of " + ", ".join(TYPE_CODES),
                    file=str(path),
                    line=line,
                    column="predicted_type",
                    value=cells[pos["predicted_type"]],
                )
            rows.append(row)
            names.append(cells[pos["file_name"]].strip())
            codes.append(code)
            lines.append(line)
    return TypePredictions(
        np.asarray(rows, dtype=np.int64), names, np.asarray(codes, dtype=np.int64), lines, str(path)
    )


def evaluate_types(predictions: TypePredictions, lesions: Sequence[Lesion]) -> ClassificationResult:
    """Score predictions against the lesions they name (joined on ``row_index``).

    A row index that is not in ``lesions`` or whose ``file_name`` differs raises
    :class:`PredictionError` naming the line.
    """
    by_row = {l.row_index: l for l in lesions}
    true, pred, unlabelled = [], [], 0
    for row, name, code, line in zip(
        predictions.row_index, predictions.file_name, predictions.predicted_type, predictions.lines
    ):
        lesion = by_row.get(int(row))
        if lesion is None:
            raise PredictionError(
                "no such row in the annotations (0-based data row index)",
                file=predictions.source,
                line=line,
                column="row_index",
                value=int(row),
            )
        if lesion.file_name != name:
            raise PredictionError(
                f"row {int(row)} of the annotations is {lesion.file_name}: are the predictions "
                "for another annotation file?",
                file=predictions.source,
                line=line,
                column="file_name",
                value=name,
            )
        if lesion.coarse_type <= 0:
            unlabelled += 1
            continue
        true.append(TYPE_ORDER.index(lesion.coarse_type))
        pred.append(TYPE_ORDER.index(int(code)))
    if not true:
        raise PredictionError(
            f"none of the {len(predictions.lines)} predicted lesions has a type "
            "(only val and test rows carry one)",
            file=predictions.source,
        )
    result = classification_metrics(true, pred, [LESION_TYPES[c] for c in TYPE_ORDER])
    result.unlabelled_rows = unlabelled
    return result


def confusion_figure(result: ClassificationResult, title: str = "Lesion type: confusion matrix"):
    """The confusion matrix as a matplotlib Figure: colour = share of each true type
    (row-normalised), text = count; recall per row and precision per column on the axes."""
    from matplotlib.figure import Figure

    c = result.confusion
    rows = c.sum(axis=1, keepdims=True)
    share = np.divide(c, rows, out=np.zeros(c.shape), where=rows > 0)
    k = len(result.labels)
    fig = Figure(figsize=(7.5, 6.5), dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if c[i, j]:
                ax.text(
                    j,
                    i,
                    str(c[i, j]),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black",
                )

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    ax.set_yticks(
        range(k),
        [f"{n} ({s}, R {pct(r)})" for n, s, r in zip(result.labels, result.support, result.recall)],
    )
    ax.set_xticks(
        range(k),
        [f"{n} (P {pct(p)})" for n, p in zip(result.labels, result.precision)],
        rotation=45,
        ha="right",
    )
    ax.set_ylabel("true type (lesions, recall)")
    ax.set_xlabel("predicted type (precision)")
    ax.set_title(
        f"{title}\n{result.n_lesions} lesions: accuracy {100 * result.accuracy:.1f}%, "
        f"balanced accuracy {100 * result.balanced_accuracy:.1f}%, "
        f"macro F1 {100 * result.macro_f1:.1f}%",
        fontsize=10,
    )
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true type")
    fig.tight_layout()
    return fig


def plot_confusion(result: ClassificationResult, path: str | Path, **kwargs) -> Path:
    return save_figure(confusion_figure(result, **kwargs), path, bbox_inches="tight")
