"""The map between DL_info pixels and a prepared image's pixels (:class:`ImageTransform`).

Coordinates: ``_px0`` = 0-based pixel coordinates with pixel centres at integers (DL_info
x - 1, y - 1, through :func:`~deeplesion.data.lesion.px1_to_index`); the prepared image
uses the same convention. Without augmentation a point maps as
``u = (x - crop_x0 + 0.5) * scale - 0.5`` (OpenCV's ``INTER_LINEAR`` grid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deeplesion.data.annotations import BOX_PADDING_PX, Lesion, px1_to_index


@dataclass(frozen=True)
class ImageTransform:
    """Maps 0-based DL_info pixel coordinates to the prepared image's and back.

    ``matrix`` is the 2x3 affine ``[u, v] = M @ [x, y, 1]``. For the evaluation-time
    pipeline it is ``u = (x - crop_x0 + 0.5) * scale - 0.5`` (same for y).
    """

    matrix: tuple[tuple[float, float, float], tuple[float, float, float]]
    crop_px0: tuple[int, int, int, int]  #: x0, y0, x1, y1 (inclusive) of the crop
    scale: float  #: resize factor applied after the crop
    size: tuple[int, int]  #: rows, cols of the prepared image
    source_size: tuple[int, int]  #: rows, cols of the DL_info slice
    key_slice_index: int  #: centre slice actually used (may be shifted in training)
    flipped: bool = False
    rotated: bool = False

    def _m(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)

    @property
    def axis_aligned(self) -> bool:
        return not self.rotated

    def points_to_image(self, xy_px0: np.ndarray) -> np.ndarray:
        """(n, 2) DL_info 0-based points -> image points."""
        xy = np.asarray(xy_px0, dtype=np.float64).reshape(-1, 2)
        m = self._m()
        return xy @ m[:, :2].T + m[:, 2]

    def points_from_image(self, uv: np.ndarray) -> np.ndarray:
        """(n, 2) image points -> DL_info 0-based points (exact inverse)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        m = self._m()
        return np.linalg.solve(m[:, :2], (uv - m[:, 2]).T).T

    def boxes_to_image(self, boxes_px0: np.ndarray) -> np.ndarray:
        """(n, 4) x1, y1, x2, y2 boxes -> the box enclosing their mapped corners."""
        return _map_boxes(np.asarray(boxes_px0, dtype=np.float64), self.points_to_image)

    def boxes_from_image(self, boxes: np.ndarray) -> np.ndarray:
        return _map_boxes(np.asarray(boxes, dtype=np.float64), self.points_from_image)

    def to_dict(self) -> dict:
        return {
            "matrix": [list(r) for r in self.matrix],
            "crop_px0": list(self.crop_px0),
            "scale": self.scale,
            "size": list(self.size),
            "source_size": list(self.source_size),
            "key_slice_index": self.key_slice_index,
            "flipped": self.flipped,
            "rotated": self.rotated,
        }


def _map_boxes(boxes: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    boxes = boxes.reshape(-1, 4)
    if not len(boxes):
        return boxes.copy()
    x1, y1, x2, y2 = boxes.T
    corners = np.stack(
        [
            np.stack([x1, y1], 1),
            np.stack([x2, y1], 1),
            np.stack([x1, y2], 1),
            np.stack([x2, y2], 1),
        ],
        1,
    )
    mapped = fn(corners.reshape(-1, 2)).reshape(-1, 4, 2)
    return np.concatenate([mapped.min(1), mapped.max(1)], axis=1)


def lesion_recist(lesions: Sequence[Lesion], transform: ImageTransform) -> np.ndarray:
    if not lesions:
        return np.zeros((0, 4, 2), dtype=np.float32)
    pts = px1_to_index(np.array([l.recist_px1 for l in lesions]).reshape(-1, 2))
    return transform.points_to_image(pts).reshape(-1, 4, 2).astype(np.float32)


def lesion_boxes(lesions: Sequence[Lesion], transform: ImageTransform) -> np.ndarray:
    if not lesions:
        return np.zeros((0, 4), dtype=np.float32)
    if transform.axis_aligned:
        boxes = px1_to_index(np.array([l.box_px1 for l in lesions]))
        return transform.boxes_to_image(boxes).astype(np.float32)
    pts = lesion_recist(lesions, transform).astype(np.float64)
    pad = BOX_PADDING_PX * transform.scale
    return np.concatenate([pts.min(1) - pad, pts.max(1) + pad], 1).astype(np.float32)
