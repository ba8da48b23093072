"""Synthetic detector output for demos and benchmarks (fixed seed, no model needed)."""

from __future__ import annotations

import numpy as np

from deeplesion.evaluation.froc import (
    Detections,
    GroundTruth,
)


def noisy_predictions(
    gt: GroundTruth,
    *,
    seed: int = 0,
    miss_rate: float = 0.15,
    jitter: float = 0.15,
    false_positives_per_image: float = 4.0,
    image_size_px: float = 512.0,
) -> Detections:
    """Perturbed ground-truth boxes plus random false positives, scored so that hits tend
    to outrank false positives. Boxes are 1-based DL_info pixels."""
    rng = np.random.default_rng(seed)
    boxes = gt.boxes_px1
    keep = rng.random(len(boxes)) >= miss_rate
    b = boxes[keep]
    w = (b[:, 2] - b[:, 0] + 1)[:, None]
    h = (b[:, 3] - b[:, 1] + 1)[:, None]
    shift = rng.normal(0.0, jitter, size=(len(b), 4)) * np.hstack([w, h, w, h])
    tp = b + shift
    tp[:, 2] = np.maximum(tp[:, 2], tp[:, 0])
    tp[:, 3] = np.maximum(tp[:, 3], tp[:, 1])
    tp_scores = rng.beta(5, 2, size=len(b))
    n_fp = rng.poisson(false_positives_per_image, size=gt.n_images)
    fp_image = np.repeat(np.arange(gt.n_images), n_fp)
    size = rng.uniform(8, 60, size=(len(fp_image), 2))
    corner = rng.uniform(1, image_size_px - 60, size=(len(fp_image), 2))
    fp = np.hstack([corner, corner + size])
    fp_scores = rng.beta(2, 5, size=len(fp_image))
    return Detections.from_arrays(
        np.concatenate([gt.image_index[keep], fp_image]),
        np.vstack([tp, fp]),
        np.concatenate([tp_scores, fp_scores]),
    )
