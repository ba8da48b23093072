"""Reading predictions for the key-slice FROC: a CSV (``file_name,x1,y1,x2,y2,score``,
the format :func:`.froc.write_predictions_csv` writes) or a COCO results JSON with the COCO
export that names its images. See :mod:`.froc` for the conventions."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deeplesion.data.lesion import coco_to_box_px1
from deeplesion.data.paths import parse_file_name
from deeplesion.data.table import read_table
from deeplesion.evaluation.errors import PredictionError
from deeplesion.evaluation.froc import PREDICTION_COLUMNS, Detections, GroundTruth


def _normalise_file_name(name: str) -> str:
    """``000001_01_01_103.png``; also accepts ``[Images_png/]000001_01_01/103.png``."""
    name = name.strip()
    parts = name.replace("\\", "/").split("/")
    if len(parts) >= 2 and not _is_dl_name(parts[-1]):
        candidate = f"{parts[-2]}_{parts[-1]}"
        if _is_dl_name(candidate):
            return candidate
    return parts[-1]


def _is_dl_name(name: str) -> bool:
    try:
        parse_file_name(name)
    except ValueError:
        return False
    return True


class _Collector:
    """Collects rows; records (or raises, when strict) a problem per bad row."""

    def __init__(self, gt: GroundTruth, source: str, strict: bool) -> None:
        self.index = gt.index_of()
        self.other = gt.other_file_names
        self.source, self.strict = source, strict
        self.images: list[int] = []
        self.boxes: list[tuple[float, float, float, float]] = []
        self.scores: list[float] = []
        self.ignored = 0
        self.problems: list[PredictionError] = []

    def problem(self, message: str, line: int | None, column: str, value: object) -> None:
        error = PredictionError(message, file=self.source, line=line, column=column, value=value)
        if self.strict:
            raise error
        self.problems.append(error)

    def check(
        self, name: str, values: Sequence[str | float], columns: Sequence[str], line: int | None
    ) -> tuple[int, np.ndarray] | None:
        """(image index, [x1, y1, x2, y2, score]) of a usable row; else None, with the
        problem recorded (or raised) or the row counted as outside the evaluated images."""
        numbers = []
        for column, text in zip(columns, values):
            try:
                number = float(text)
            except (TypeError, ValueError):
                self.problem("not a number", line, column, text)
                return None
            if not math.isfinite(number):
                self.problem("non-finite value", line, column, text)
                return None
            numbers.append(number)
        x1, y1, x2, y2, _ = numbers
        if x2 < x1:
            self.problem(f"x2 < x1 ({x2:g} < {x1:g})", line, columns[2], values[2])
            return None
        if y2 < y1:
            self.problem(f"y2 < y1 ({y2:g} < {y1:g})", line, columns[3], values[3])
            return None
        file_name = _normalise_file_name(name)
        image = self.index.get(file_name)
        if image is None:
            if file_name in self.other:
                self.ignored += 1
            elif not _is_dl_name(file_name):
                self.problem("not a DeepLesion file name", line, "file_name", name)
            else:
                self.problem("unknown file name (not in the annotations)", line, "file_name", name)
            return None
        return image, np.array(numbers)

    def add(
        self, name: str, values: Sequence[str | float], columns: Sequence[str], line: int | None
    ) -> None:
        found = self.check(name, values, columns, line)
        if found is not None:
            self.images.append(found[0])
            self.boxes.append(tuple(found[1][:4].tolist()))
            self.scores.append(float(found[1][4]))

    def result(self) -> Detections:
        return Detections(
            np.array(self.images, dtype=np.int64),
            np.array(self.boxes, dtype=np.float64).reshape(-1, 4),
            np.array(self.scores, dtype=np.float64),
            self.ignored,
            self.problems,
            self.source,
        )


def read_predictions(
    path: str | Path,
    gt: GroundTruth,
    *,
    strict: bool = False,
    coco_images: str | Path | None = None,
) -> Detections:
    """Read a predictions CSV (or COCO results JSON with ``coco_images``).

    Bad rows (malformed, unknown file name, x2 < x1, non-finite numbers) raise
    :class:`PredictionError` naming the line when ``strict``; otherwise they are skipped
    and listed in ``Detections.problems``. Rows for images of the annotations that are
    not evaluated (another split, or only noisy lesions) are counted in
    ``ignored_outside``. A missing column is always an error.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        if coco_images is None:
            raise PredictionError(
                "a COCO results JSON needs the COCO export that defines "
                "its image ids (coco_images / --coco-images)",
                file=str(path),
            )
        return _read_coco(path, Path(coco_images), gt, strict)
    return _read_csv(path, gt, strict)


def _read_csv(path: Path, gt: GroundTruth, strict: bool) -> Detections:
    """The CSV rows, checked vectorised; the rows that fail a check (few) are read again
    one by one by :class:`_Collector`, which names line, column and value."""
    import pandas as pd

    table = read_table(
        path,
        PREDICTION_COLUMNS,
        numbers=PREDICTION_COLUMNS[1:],
        error=PredictionError,
        hint=f"expected header {','.join(PREDICTION_COLUMNS)}",
    )
    boxes = np.column_stack([table.numbers(c) for c in PREDICTION_COLUMNS[1:5]]).reshape(-1, 4)
    scores = table.numbers("score")
    codes, uniques = pd.factorize(table.text("file_name"))
    normalised = [_normalise_file_name(str(u)) for u in uniques]
    index = gt.index_of()
    image = np.array([index.get(u, -1) for u in normalised], dtype=np.int64)[codes]
    other = np.array([u in gt.other_file_names for u in normalised], dtype=bool)[codes]
    x1, y1, x2, y2 = boxes.T
    sound = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (x2 >= x1) & (y2 >= y1)
    keep = sound & (image >= 0)
    ignored = sound & (image < 0) & other
    too_long = {w.line: w for w in table.width_problems}
    if too_long:
        long_rows = np.isin(table.lines, list(too_long))
        keep &= ~long_rows
        ignored &= ~long_rows
    collector = _Collector(gt, str(path), strict)
    collector.ignored = int(ignored.sum())
    for i in np.flatnonzero(~keep & ~ignored).tolist():
        line = int(table.lines[i])
        if line in too_long:
            w = too_long[line]
            collector.problem(w.message, line, "", w.text)
            continue
        cells = table.cells(i)
        absent = [c for c in PREDICTION_COLUMNS if cells[c] is None]
        if absent:
            collector.problem("missing cell", line, absent[0], None)
            continue
        found = collector.check(
            str(cells["file_name"]),
            [str(cells[c]) for c in PREDICTION_COLUMNS[1:]],
            PREDICTION_COLUMNS[1:],
            line,
        )
        if found is not None:  # the vectorised checks are a little stricter than needed
            keep[i] = True
            image[i], boxes[i], scores[i] = found[0], found[1][:4], found[1][4]
    if not keep.all():
        image, boxes, scores = image[keep], boxes[keep], scores[keep]
    return Detections(
        image,
        boxes,
        scores,
        collector.ignored,
        collector.problems,
        str(path),
    )


def coco_file_names(coco_path: str | Path) -> dict[int, str]:
    """``image id -> file_name`` from a COCO export (``images[].id``, ``.file_name``)."""
    coco_path = Path(coco_path)
    try:
        data = json.loads(coco_path.read_text(encoding="utf-8"))
        images = data["images"]
        return {int(im["id"]): str(im["file_name"]) for im in images}
    except (ValueError, KeyError, TypeError) as exc:
        raise PredictionError(
            f"not a COCO export with images[].id and images[].file_name ({exc})",
            file=str(coco_path),
        ) from None


def _read_coco(path: Path, coco_images: Path, gt: GroundTruth, strict: bool) -> Detections:
    names = coco_file_names(coco_images)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PredictionError(f"not JSON ({exc})", file=str(path)) from None
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise PredictionError("expected a list of COCO results", file=str(path))
    collector = _Collector(gt, str(path), strict)
    for i, item in enumerate(results):
        where = f"[{i}]"
        if not isinstance(item, dict) or not {"image_id", "bbox", "score"} <= set(item):
            collector.problem("expected an object with image_id, bbox and score", None, where, item)
            continue
        bbox = item["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            collector.problem("bbox must be [x, y, w, h]", None, f"{where}.bbox", bbox)
            continue
        try:
            image_id = int(item["image_id"])
        except (TypeError, ValueError):
            collector.problem("not an integer", None, f"{where}.image_id", item["image_id"])
            continue
        if image_id not in names:
            collector.problem(
                "image id not in the COCO export", None, f"{where}.image_id", image_id
            )
            continue
        try:
            box_px1 = coco_to_box_px1(bbox)
        except (TypeError, ValueError):
            collector.problem("not a number", None, f"{where}.bbox", bbox)
            continue
        collector.add(
            names[image_id],
            [*box_px1, item["score"]],
            [f"{where}.bbox"] * 4 + [f"{where}.score"],
            None,
        )
    return collector.result()
