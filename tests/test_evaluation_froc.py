"""Key-slice FROC: worked example, perfect predictions, an independent brute force, parsing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from deeplesion.data.annotations import load_lesions
from deeplesion.evaluation import (
    Detections,
    GroundTruth,
    PredictionError,
    evaluate_detection,
    ground_truth,
    read_curve,
    read_predictions,
)
from deeplesion.evaluation.froc import FP_RATES, _stratum_labels, detection_sweep
from deeplesion.evaluation.sweep import FrocCurve, sweep

# --------------------------------------------------------------------------- brute force
# Written from docs/evaluation-protocol.md with plain loops; shares nothing with the module.


def bf_iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = 0.0 if iw <= 0 or ih <= 0 else iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def bf_froc(gt_boxes, counted, dets, n_images, thr=0.5):
    """gt_boxes[img] = list of boxes; counted[img] = list of bools; dets = [(img, box, score)]."""
    n_lesions = sum(sum(c) for c in counted)
    order = sorted(range(len(dets)), key=lambda i: -dets[i][2])  # Python's sort is stable
    found = [[False] * len(g) for g in gt_boxes]
    hits = fps = doubles = 0
    sens, fpi = [], []
    for i in order:
        img, box, _ = dets[i]
        ious = [bf_iou(box, g) for g in gt_boxes[img]]
        if not ious or max(ious) < thr:
            fps += 1
        else:
            new = 0
            for j, v in enumerate(ious):
                if v >= thr and not found[img][j]:
                    found[img][j] = True
                    new += 1
                    if counted[img][j]:
                        hits += 1
            doubles += new >= 2
        sens.append(hits / n_lesions)
        fpi.append(fps / n_images)
    return sens, fpi, doubles


def bf_read(sens, fpi, rate):
    equal = [k for k in range(len(fpi)) if fpi[k] == rate]
    if equal:
        return sens[equal[-1]]
    if not fpi or rate < fpi[0]:
        return 0.0
    if rate > fpi[-1]:
        return sens[-1]
    for k in range(len(fpi) - 1):
        if fpi[k] < rate < fpi[k + 1]:
            return sens[k] + (sens[k + 1] - sens[k]) * (rate - fpi[k]) / (fpi[k + 1] - fpi[k])
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def val_table(real_val_csv):
    return load_lesions(real_val_csv)


@pytest.fixture(scope="module")
def val_gt(val_table):
    return ground_truth(val_table, "val")


def _gt_from_boxes(per_image: list[list[tuple]]) -> GroundTruth:
    image_index = [i for i, boxes in enumerate(per_image) for _ in boxes]
    boxes = [b for bs in per_image for b in bs]
    return GroundTruth(
        "test",
        tuple(f"{i:06d}_01_01_001.png" for i in range(len(per_image))),
        tuple(range(len(boxes))),  # lesions unused here
        np.array(image_index),
        np.array(boxes, dtype=float).reshape(-1, 4),
        len(per_image),
        len(boxes),
    )


# --------------------------------------------------------------------------- worked example


def test_worked_example_of_protocol_document():
    a, b1, b2 = (11, 11, 30, 30), (101, 101, 140, 150), (301, 301, 320, 330)
    gt = _gt_from_boxes([[a], [b1, b2]])
    far = (400, 10, 420, 30)
    dets = Detections.from_arrays(
        [1, 0, 0, 0, 1, 1],
        [b1, a, (12, 11, 30, 31), far, far, far],
        [0.95, 0.9, 0.8, 0.7, 0.6, 0.5],
    )
    result = evaluate_detection(gt, dets)
    np.testing.assert_array_equal(
        result.curve.sensitivity, [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    )
    np.testing.assert_array_equal(result.curve.fp_per_image, [0, 0, 0, 0.5, 1, 1.5])
    assert all(v == 2 / 3 for v in result.sensitivity.values())
    assert list(result.sensitivity) == ["0.5", "1", "2", "4", "8", "16"]
    assert result.average == 2 / 3
    assert result.n_images == 2 and result.n_lesions == 3


def test_repeated_x_takes_last_point_and_left_of_curve_is_zero():
    # One image, 4 lesions: FP, hit, hit at FP=1; then FP, hit at FP=2.
    lesions = [(1 + 50 * k, 1, 20 + 50 * k, 20) for k in range(4)]
    gt = _gt_from_boxes([lesions])
    far = (400, 400, 420, 420)
    dets = Detections.from_arrays(
        [0] * 5, [far, lesions[0], lesions[1], far, lesions[2]], [0.9, 0.8, 0.7, 0.6, 0.5]
    )
    curve = detection_sweep(gt, dets).curve()
    np.testing.assert_array_equal(curve.fp_per_image, [1, 1, 1, 2, 2])
    np.testing.assert_array_equal(curve.sensitivity, [0, 0.25, 0.5, 0.5, 0.75])
    got = read_curve(curve, [0.5, 1, 1.5, 2, 3])
    np.testing.assert_array_equal(got, [0, 0.5, 0.5, 0.75, 0.75])
    # 3DCE-style extrapolation: line through the last two distinct-x points (1, .5), (2, .75)
    np.testing.assert_allclose(read_curve(curve, [3, 4, 16], extrapolate=True), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(read_curve(curve, [2.5], extrapolate=True), [0.875])


def test_extrapolation_on_hand_made_curve():
    curve = FrocCurve(
        sensitivity=np.array([0.1, 0.2, 0.3]),
        fp_per_image=np.array([0.5, 1, 2]),
        scores=np.empty(0),
        hits=np.empty(0),
        false_positives=np.empty(0),
        n_images=1,
        n_lesions=10,
    )
    np.testing.assert_allclose(read_curve(curve, [4, 8]), [0.3, 0.3])
    np.testing.assert_allclose(read_curve(curve, [4, 8], extrapolate=True), [0.5, 0.9])
    np.testing.assert_allclose(read_curve(curve, [0.25, 0.75]), [0.0, 0.15])


def test_no_detections_gives_zero_and_empty_image_detections_are_fps():
    gt = _gt_from_boxes([[(1, 1, 10, 10)], [(1, 1, 10, 10)]])
    empty = Detections.from_arrays([], np.empty((0, 4)), [])
    assert all(v == 0 for v in evaluate_detection(gt, empty).sensitivity.values())


# --------------------------------------------------------------------------- real val split


def test_val_split_counts_match_official(val_table, val_gt):
    assert (val_gt.n_images_unfiltered, val_gt.n_lesions_unfiltered) == (4793, 4889)
    assert (val_gt.n_images, val_gt.n_lesions) == (4791, 4887)
    assert not any(l.possibly_noisy for l in val_gt.lesions)


def test_perfect_predictions_give_one_everywhere(val_gt):
    dets = Detections.from_arrays(val_gt.image_index, val_gt.boxes_px1, np.ones(val_gt.n_lesions))
    for extrapolate in (False, True):
        result = evaluate_detection(
            val_gt, dets, extrapolate=extrapolate, by=("type", "size", "slice-interval")
        )
        assert all(v == 1.0 for v in result.sensitivity.values())
        assert result.average == 1.0
        for strata in result.strata.values():
            for s in strata:
                assert all(v == 1.0 for v in s.sensitivity.values())


def _augment_with_twins(gt: GroundTruth, rng) -> GroundTruth:
    """Add near-copies of some lesions so one box can find two lesions."""
    pick = rng.choice(gt.n_lesions, size=150, replace=False)
    shift = rng.integers(-2, 3, size=(len(pick), 4)).astype(float)
    twins = gt.boxes_px1[pick] + shift
    twins[:, 2] = np.maximum(twins[:, 2], twins[:, 0])
    twins[:, 3] = np.maximum(twins[:, 3], twins[:, 1])
    return replace(
        gt,
        lesions=gt.lesions + tuple(gt.lesions[i] for i in pick),
        image_index=np.concatenate([gt.image_index, gt.image_index[pick]]),
        boxes_px1=np.vstack([gt.boxes_px1, twins]),
    )


def _random_predictions(gt: GroundTruth, rng, ties: str) -> Detections:
    per_image: list[list[int]] = [[] for _ in range(gt.n_images)]
    for j, i in enumerate(gt.image_index):
        per_image[i].append(j)
    images, boxes = [], []
    chosen = rng.choice(gt.n_images, size=gt.n_images // 3, replace=False)
    for img in chosen:
        for _ in range(rng.poisson(2.5)):
            kind = rng.random()
            if kind < 0.45:  # jittered lesion box, often a hit, sometimes a duplicate
                g = gt.boxes_px1[rng.choice(per_image[img])]
                w, h = g[2] - g[0] + 1, g[3] - g[1] + 1
                box = g + rng.normal(0, rng.choice([0.02, 0.1, 0.3]), 4) * [w, h, w, h]
            elif kind < 0.55 and len(per_image[img]) > 1:  # between two lesions
                a, b = rng.choice(per_image[img], size=2, replace=False)
                box = (gt.boxes_px1[a] + gt.boxes_px1[b]) / 2
            elif kind < 0.65:  # exact copy (duplicates after the first)
                box = gt.boxes_px1[rng.choice(per_image[img])].copy()
            else:  # random box: almost always a false positive
                c = rng.uniform(1, 450, 2)
                box = np.concatenate([c, c + rng.uniform(5, 60, 2)])
            box[2] = max(box[2], box[0])
            box[3] = max(box[3], box[1])
            images.append(img)
            boxes.append(box)
    n = len(images)
    if ties == "none":
        scores = rng.random(n)
    elif ties == "coarse":
        scores = np.round(rng.random(n), 1)
    else:  # all equal: the order is the input order
        scores = np.full(n, 0.5)
    return Detections.from_arrays(images, np.array(boxes), scores)


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_brute_force_on_real_val(val_gt, seed):
    rng = np.random.default_rng(seed)
    gt = _augment_with_twins(val_gt, rng) if seed % 2 == 0 else val_gt
    dets = _random_predictions(gt, rng, ["none", "coarse", "coarse", "equal"][seed % 4])
    gt_boxes = [[] for _ in range(gt.n_images)]
    for i, box in zip(gt.image_index, gt.boxes_px1):
        gt_boxes[i].append(tuple(float(v) for v in box))
    counted = [[True] * len(g) for g in gt_boxes]
    det_list = [
        (int(i), tuple(float(v) for v in b), float(s))
        for i, b, s in zip(dets.image_index, dets.boxes_px1, dets.scores)
    ]
    sens, fpi, doubles = bf_froc(gt_boxes, counted, det_list, gt.n_images)

    result = evaluate_detection(gt, dets)
    np.testing.assert_allclose(result.curve.sensitivity, sens, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.curve.fp_per_image, fpi, rtol=0, atol=1e-12)
    assert result.n_double_hits == doubles
    if seed % 2 == 0:
        assert doubles > 0  # boxes matching two lesions were exercised
    rates = list(FP_RATES) + [fpi[len(fpi) // 3], fpi[-1], 0.05, 0.3, 40.0]
    got = read_curve(result.curve, rates)
    want = [bf_read(sens, fpi, r) for r in rates]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)

    # strata restrict the lesions only: same FPs, brute force with a counted mask
    labels = _stratum_labels(gt.lesions, "size")
    result = evaluate_detection(gt, dets, by=("size",))
    for stratum in result.strata["size"]:
        counted = [[] for _ in range(gt.n_images)]
        for i, label in zip(gt.image_index, labels):
            counted[i].append(label == stratum.name)
        s_sens, s_fpi, _ = bf_froc(gt_boxes, counted, det_list, gt.n_images)
        assert s_fpi == fpi
        assert stratum.n_lesions == sum(map(sum, counted))
        for key, rate in zip(stratum.sensitivity, FP_RATES):
            assert abs(stratum.sensitivity[key] - bf_read(s_sens, s_fpi, rate)) <= 1e-12


def test_strata_labels(val_gt):
    sizes = _stratum_labels(val_gt.lesions, "size")
    for lesion, label in zip(val_gt.lesions, sizes):
        d = lesion.long_diameter_mm
        assert label == ("<10 mm" if d < 10 else "10-30 mm" if d < 30 else ">=30 mm")
    intervals = set(_stratum_labels(val_gt.lesions, "slice-interval"))
    assert intervals == {"<5 mm", ">=5 mm"}
    types = set(_stratum_labels(val_gt.lesions, "type"))
    assert "unlabelled" not in types and "lung" in types


# --------------------------------------------------------------------------- reading files


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_rows_name_their_line(tmp_path, val_gt):
    good = val_gt.file_names[0]
    x1, y1, x2, y2 = val_gt.boxes_px1[0]
    rows = [
        "file_name,x1,y1,x2,y2,score",
        f"{good},{x1},{y1},{x2},{y2},0.9",  # 2 ok
        f"{good},{x1},{y1},{x2},{y2}",  # 3 too few cells
        f"{good},abc,{y1},{x2},{y2},0.5",  # 4 not a number
        f"{good},{x2},{y1},{x1},{y2},0.5",  # 5 x2 < x1
        f"{good},{x1},{y1},{x2},{y2},nan",  # 6 non-finite score
        "999999_01_01_001.png,1,1,5,5,0.5",  # 7 unknown file name
        "not-a-file,1,1,5,5,0.5",  # 8 not a DeepLesion name
        f"{good},{x1},{y1},{x2},{y2},inf",  # 9 non-finite score
        "",
    ]
    path = _write(tmp_path / "p.csv", rows)
    dets = read_predictions(path, val_gt)
    assert len(dets) == 1
    assert [p.line for p in dets.problems] == [3, 4, 5, 6, 7, 8, 9]
    assert dets.problems[1].column == "x1" and dets.problems[1].value == "abc"
    assert dets.problems[2].column == "x2"
    assert "line 6" in str(dets.problems[3]) and "score" in str(dets.problems[3])
    with pytest.raises(PredictionError, match="line 3") as info:
        read_predictions(path, val_gt, strict=True)
    assert info.value.line == 3 and isinstance(info.value, ValueError)
    with pytest.raises(PredictionError, match="missing columns"):
        read_predictions(_write(tmp_path / "h.csv", ["name,x1,y1,x2,y2,score"]), val_gt)


def test_rows_outside_split_are_ignored_and_counted(tmp_path, real_excerpt_csv):
    table = load_lesions(real_excerpt_csv)
    gt = ground_truth(table, "test")
    other = [l for l in table if l.split_code != 3]
    rows = ["file_name,x1,y1,x2,y2,score"]
    rows += [f"{l.file_name},{','.join(map(str, l.box_px1))},0.5" for l in other[:7]]
    rows += [f"{l.file_name},{','.join(map(str, l.box_px1))},1" for l in gt.lesions]
    dets = read_predictions(_write(tmp_path / "p.csv", rows), gt, strict=True)
    assert dets.ignored_outside == 7 and len(dets) == gt.n_lesions
    result = evaluate_detection(gt, dets)
    assert result.ignored_outside == 7
    assert all(v == 1.0 for v in result.sensitivity.values())


def test_coco_results_with_export_image_ids(tmp_path, real_excerpt_csv):
    gt = ground_truth(load_lesions(real_excerpt_csv), "test")
    export = {
        "images": [{"id": 100 + i, "file_name": name} for i, name in enumerate(gt.file_names)]
    }
    results = []
    for i, (x1, y1, x2, y2) in zip(gt.image_index, gt.boxes_px1):
        # inclusive 0-based COCO box: x = x1 - 1, w = x2 - x1 + 1
        results.append(
            {
                "image_id": 100 + int(i),
                "category_id": 1,
                "score": 0.9,
                "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
            }
        )
    (tmp_path / "coco.json").write_text(json.dumps(export))
    (tmp_path / "res.json").write_text(
        json.dumps(results + [{"image_id": 5, "bbox": [0, 0, 1, 1], "score": 0.1}])
    )
    dets = read_predictions(tmp_path / "res.json", gt, coco_images=tmp_path / "coco.json")
    np.testing.assert_allclose(dets.boxes_px1, gt.boxes_px1)
    assert len(dets.problems) == 1 and "image id" in str(dets.problems[0])
    assert all(v == 1.0 for v in evaluate_detection(gt, dets).sensitivity.values())
    with pytest.raises(PredictionError, match="COCO export"):
        read_predictions(tmp_path / "res.json", gt)


def test_sweep_matches_brute_force_with_iobb_in_3d():
    rng = np.random.default_rng(7)
    n_images = 6
    gt_image = rng.integers(0, n_images, 15)
    lo = rng.uniform(0, 50, (15, 3))
    gt_boxes = np.hstack([lo, lo + rng.uniform(3, 20, (15, 3))])
    det_image = rng.integers(0, n_images, 80)
    base = gt_boxes[rng.integers(0, 15, 80)]
    det_boxes = base + rng.normal(0, 4, (80, 6))
    det_boxes[:, 3:] = np.maximum(det_boxes[:, 3:], det_boxes[:, :3])
    scores = np.round(rng.random(80), 1)
    curve = sweep(
        det_image, det_boxes, scores, gt_image, gt_boxes, n_images, metric="iobb", threshold=0.3
    ).curve()

    def iobb(d, g):
        inter = 1.0
        for k in range(3):
            e = min(d[k + 3], g[k + 3]) - max(d[k], g[k]) + 1
            inter *= max(e, 0.0)
        vol = 1.0
        for k in range(3):
            vol *= d[k + 3] - d[k] + 1
        return inter / vol

    order = sorted(range(80), key=lambda i: -scores[i])
    found = set()
    hits = fps = 0
    for pos, i in enumerate(order):
        ov = {j: iobb(det_boxes[i], gt_boxes[j]) for j in range(15) if gt_image[j] == det_image[i]}
        if not ov or max(ov.values()) < 0.3:
            fps += 1
        else:
            for j, v in ov.items():
                if v >= 0.3 and j not in found:
                    found.add(j)
                    hits += 1
        assert abs(curve.sensitivity[pos] - hits / 15) < 1e-12
        assert abs(curve.fp_per_image[pos] - fps / n_images) < 1e-12
