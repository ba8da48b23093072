"""Benchmark: the project's vectorised FROC vs a per-detection loop of the upstream structure.

Synthetic data with the official test split's shape: 4,817 images, 4,912 lesions, 50 scored
boxes per image (240,850 detections). Both evaluators run side by side on the same data;
their curves and sensitivities are asserted equal, then the speed ratio is printed.

    PYTHONPATH=src python benchmarks/evaluation.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deeplesion.evaluation.sweep import read_curve, sweep

N_IMAGES, N_LESIONS, PER_IMAGE = 4817, 4912, 50
FP_RATES = [0.5, 1, 2, 4, 8, 16]


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    gt_image = np.concatenate(
        [np.arange(N_IMAGES), rng.choice(N_IMAGES, N_LESIONS - N_IMAGES, replace=False)]
    )
    lo = rng.uniform(1, 400, (N_LESIONS, 2))
    gt_boxes = np.hstack([lo, lo + rng.uniform(10, 80, (N_LESIONS, 2))])
    det_image = np.repeat(np.arange(N_IMAGES), PER_IMAGE)
    n_det = len(det_image)
    # A few boxes per image near a lesion of the image, the rest random (mostly FPs).
    first_lesion = np.full(N_IMAGES, -1)
    first_lesion[gt_image[::-1]] = np.arange(N_LESIONS)[::-1]
    near = rng.random(n_det) < 0.08
    base = gt_boxes[first_lesion[det_image]]
    w = base[:, 2:] - base[:, :2] + 1
    jitter = rng.normal(0, 0.12, (n_det, 4)) * np.hstack([w, w])
    rand_lo = rng.uniform(1, 450, (n_det, 2))
    rand = np.hstack([rand_lo, rand_lo + rng.uniform(5, 60, (n_det, 2))])
    boxes = np.where(near[:, None], base + jitter, rand)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    scores = np.where(near, rng.beta(5, 2, n_det), rng.beta(2, 5, n_det)).round(3)  # ties
    return gt_image, gt_boxes, det_image, boxes, scores


def upstream_style(gt_image, gt_boxes, det_image, boxes, scores, iou_th=0.5):
    """Straightforward per-detection loop, structured like the NIH authors' FROC code."""
    n_img = N_IMAGES
    gts_all = [gt_boxes[gt_image == i] for i in range(n_img)]
    order = np.argsort(-scores, kind="stable")  # same tie rule as the project
    hits = [np.zeros(len(g), dtype=bool) for g in gts_all]
    n_hits = n_miss = 0
    tps, fps = [], []
    for i in order:
        box, gts = boxes[i], gts_all[det_image[i]]
        iw = np.maximum(np.minimum(gts[:, 2], box[2]) - np.maximum(gts[:, 0], box[0]) + 1, 0)
        ih = np.maximum(np.minimum(gts[:, 3], box[3]) - np.maximum(gts[:, 1], box[1]) + 1, 0)
        inter = iw * ih
        union = (
            (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
            + (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)
            - inter
        )
        overlaps = inter / union
        if len(overlaps) == 0 or overlaps.max() < iou_th:
            n_miss += 1
        else:
            for j in range(len(overlaps)):
                if overlaps[j] >= iou_th and not hits[det_image[i]][j]:
                    hits[det_image[i]][j] = True
                    n_hits += 1
        tps.append(n_hits)
        fps.append(n_miss)
    sens = np.array(tps, dtype=float) / len(gt_image)
    fp_per_img = np.array(fps, dtype=float) / n_img
    max_fp = fp_per_img[-1]
    return sens, fp_per_img, np.interp(np.minimum(FP_RATES, max_fp), fp_per_img, sens)


def project(gt_image, gt_boxes, det_image, boxes, scores):
    curve = sweep(det_image, boxes, scores, gt_image, gt_boxes, N_IMAGES).curve()
    return curve.sensitivity, curve.fp_per_image, read_curve(curve, FP_RATES)


def best_time(fn, args, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = make_data()
    print(
        f"{N_IMAGES} images, {N_LESIONS} lesions, {len(data[2])} detections ({PER_IMAGE} per image)"
    )
    t_up, (s_up, f_up, r_up) = best_time(upstream_style, data, 1)
    t_pr, (s_pr, f_pr, r_pr) = best_time(project, data, args.repeats)
    np.testing.assert_array_equal(s_pr, s_up)
    np.testing.assert_array_equal(f_pr, f_up)
    np.testing.assert_array_equal(r_pr, r_up)
    print("sensitivity at", dict(zip(FP_RATES, np.round(r_pr, 4).tolist())))
    print(
        f"upstream-style loop: {t_up:.3f} s   project: {t_pr:.3f} s   "
        f"speed-up: {t_up / t_pr:.1f}x (results identical)"
    )


if __name__ == "__main__":
    main()
