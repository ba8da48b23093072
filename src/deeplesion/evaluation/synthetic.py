"""Synthetic detector output for demos and benchmarks (fixed seed, no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..annotations import load_lesions
from ..io import write_text_atomic
from .errors import EvaluationError
from .froc import (Detections, GroundTruth, evaluate_detection, ground_truth,
                   read_predictions, write_predictions_csv)
from .plot import plot_froc


def noisy_predictions(gt: GroundTruth, *, seed: int = 0, miss_rate: float = 0.15,
                      jitter: float = 0.15, false_positives_per_image: float = 4.0,
                      image_size_px: float = 512.0) -> Detections:
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
    return Detections.from_arrays(np.concatenate([gt.image_index[keep], fp_image]),
                                  np.vstack([tp, fp]), np.concatenate([tp_scores, fp_scores]))


def demo(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """Evaluate noisy synthetic predictions on the sample's test split (val if no test).

    Writes ``predictions.csv``, ``evaluation.json`` and ``froc.png`` into ``out_dir``;
    returns the paths written. ``root`` is not needed (boxes only) but kept for a uniform
    demo signature.
    """
    del root
    out_dir = Path(out_dir)
    table = load_lesions(csv_path)
    for split in ("test", "val"):
        try:
            gt = ground_truth(table, split)
            break
        except EvaluationError:
            continue
    else:
        raise EvaluationError(f"{csv_path}: no test or val lesions to evaluate")
    dets = noisy_predictions(gt, seed=0)
    predictions = out_dir / "predictions.csv"
    write_predictions_csv(predictions, [gt.file_names[i] for i in dets.image_index],
                          dets.boxes_px1, dets.scores)
    result = evaluate_detection(gt, read_predictions(predictions, gt, strict=True),
                                by=("type", "size"))
    json_path = out_dir / "evaluation.json"
    write_text_atomic(json_path, json.dumps(result.to_json(), indent=2) + "\n")
    plot_path = plot_froc({f"synthetic predictions ({gt.split})": result.curve},
                          out_dir / "froc.png")
    return [predictions, json_path, plot_path]
