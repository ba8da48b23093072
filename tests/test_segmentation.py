"""Masks from RECIST (ellipse, GrabCut, best, 3-D), mask geometry and segmentation scores."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")

from deeplesion.data.annotations import load_lesions
from deeplesion.data.maskfiles import (
    MaskSettingsError,
    lesion_mask_slices,
    read_masks_csv,
)
from deeplesion.data.masks import (
    dice,
    hausdorff95_mm,
    iou,
    lesion_ellipse_mask,
    mask_axes,
)
from deeplesion.data.sample import SAMPLE_MASKS
from deeplesion.data.slices import read_hu
from deeplesion.segmentation.keyslice import key_slice_mask
from deeplesion.segmentation.run import make_masks


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _ellipse(shape, cx, cy, a, b, angle_deg=0.0):
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    t = math.radians(angle_deg)
    u = (cols - cx) * math.cos(t) + (rows - cy) * math.sin(t)
    v = -(cols - cx) * math.sin(t) + (rows - cy) * math.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 137.0])
def test_mask_axes_of_an_ellipse_are_its_diameters(angle):
    mask = _ellipse((120, 140), 70.3, 58.6, 40.0, 22.0, angle)
    axes = mask_axes(mask, (0.8, 0.8))
    assert axes is not None
    assert axes.long_mm == pytest.approx(80.0 * 0.8, abs=0.8)  # within one pixel
    assert axes.short_mm == pytest.approx(44.0 * 0.8, abs=0.8)
    assert axes.area_mm2 == pytest.approx(math.pi * 40 * 22 * 0.64, rel=0.03)


def test_mask_axes_apply_row_and_column_spacing_separately():
    mask = _ellipse((100, 100), 50, 50, 30.0, 20.0)  # 60 px wide, 40 px tall
    axes = mask_axes(mask, (2.0, 0.5))  # rows 2 mm, columns 0.5 mm: 30 mm wide, 80 mm tall
    assert axes.long_mm == pytest.approx(80.0, abs=2.0)
    assert axes.short_mm == pytest.approx(30.0, abs=0.5)
    x1, y1, x2, y2 = axes.long_end_points_px0
    assert abs(x2 - x1) < 2 and abs(y2 - y1) > 35  # the long axis runs along the rows


def _inside_run_oracle(mask, a, b, step=0.05):
    """Longest run of mask pixels on lines perpendicular to a-b (brute-force sampling)."""
    u = (b - a) / np.linalg.norm(b - a)
    v = np.array([-u[1], u[0]])
    length = np.linalg.norm(b - a)
    best = 0.0
    ts = np.arange(-200, 200, step)
    for c in np.arange(0.25, length, 0.25):
        pts = a + c * u + ts[:, None] * v
        cols, rows = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
        ok = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
        inside = np.zeros(len(ts), dtype=bool)
        inside[ok] = mask[rows[ok], cols[ok]]
        run = longest = 0
        for flag in inside:
            run = run + 1 if flag else 0
            longest = max(longest, run)
        best = max(best, longest * step)
    return best


def test_short_axis_is_the_longest_inside_chord_not_the_extent():
    # a C shape: perpendicular lines cross two arms; the chord must stay inside one piece
    mask = np.zeros((80, 120), dtype=bool)
    mask[10:20, 10:110] = True
    mask[55:65, 10:110] = True
    mask[10:65, 10:22] = True
    axes = mask_axes(mask, (1.0, 1.0))
    a = np.array(axes.long_end_points_px0[:2])
    b = np.array(axes.long_end_points_px0[2:])
    corners = np.argwhere(mask)
    brute_long = max(
        math.dist(p, q) for p in corners[::7] for q in corners[::7]
    )  # pixel centres: about 1 px shorter than the boundary's chord
    assert brute_long - 0.5 <= axes.long_mm <= brute_long + 2.0
    assert axes.short_mm == pytest.approx(_inside_run_oracle(mask, a, b), abs=1.5)
    extent = mask.shape[0] + mask.shape[1]  # what max-minus-min would give is far larger
    assert axes.short_mm < extent / 3


def test_mask_axes_of_empty_mask_is_none_and_other_components_are_ignored():
    assert mask_axes(np.zeros((10, 10), bool), (1.0, 1.0)) is None
    mask = _ellipse((100, 100), 30, 30, 15, 10)
    with_speck = mask.copy()
    with_speck[90:92, 90:92] = True
    assert mask_axes(with_speck, (1, 1)).long_mm == pytest.approx(mask_axes(mask, (1, 1)).long_mm)


def _surface_oracle(mask):
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    neighbours_out = ~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:]
    return np.argwhere(inner & neighbours_out)


def test_overlap_scores_against_brute_force():
    rng = np.random.default_rng(3)
    a = _ellipse((60, 70), 30, 28, 18, 11, 20) | (rng.random((60, 70)) > 0.995)
    b = _ellipse((60, 70), 33, 30, 15, 13, 70)
    inter, union = int((a & b).sum()), int((a | b).sum())
    assert dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()))
    assert iou(a, b) == pytest.approx(inter / union)
    spacing = (1.5, 0.7)
    sa, sb = _surface_oracle(a) * spacing, _surface_oracle(b) * spacing
    d = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=-1)
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert hausdorff95_mm(a, b, spacing) == pytest.approx(expected)
    assert hausdorff95_mm(a, a, spacing) == 0.0
    assert math.isnan(hausdorff95_mm(a, np.zeros_like(a), spacing))
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


# --------------------------------------------------------------------------- the sample


def test_sample_masks_are_the_painted_lesions(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    masks_dir = sample_root / SAMPLE_MASKS
    records = read_masks_csv(masks_dir)
    assert sorted(records) == [l.row_index for l in table]
    for l in table:
        r = records[l.row_index]
        slices = lesion_mask_slices(masks_dir, r)
        key = slices[l.key_slice_index]
        # on the key slice: the RECIST ellipse (end points rounded to 3 decimals)
        assert dice(key, lesion_ellipse_mask(l)) > 0.97, l.file_name
        # in z: an ellipsoid whose half height is half the short diameter
        half = l.short_diameter_mm / 2
        expected = [
            n
            for n in range(l.slice_range[0], l.slice_range[1] + 1)
            if abs(n - l.key_slice_index) * l.slice_interval_mm
            < half - 0.01  # 3-decimal end points
        ]
        assert list(slices) == expected, l.file_name
        assert all(m.any() for m in slices.values())
        areas = [int(slices[n].sum()) for n in expected]
        assert max(areas) == int(key.sum())  # widest on the key slice
        hu = read_hu(sample_root / l.png_relpath)
        core = lesion_ellipse_mask(l) & _shrunk(l, 0.5)
        ring = _shrunk(l, 1.6) & ~_shrunk(l, 1.2)
        assert abs(float(hu[core].mean()) - float(np.median(hu[ring]))) > 30
        assert not (key & ring).any()


def _shrunk(l, factor):
    x11, y11, x12, y12, x21, y21, x22, y22 = (v - 1 for v in l.recist_px1)
    cx, cy = (x11 + x12) / 2, (y11 + y12) / 2
    a = math.dist((x11, y11), (x12, y12)) / 2 * factor
    b = math.dist((x21, y21), (x22, y22)) / 2 * factor
    angle = math.degrees(math.atan2(y12 - y11, x12 - x11))
    return _ellipse(l.image_size, cx, cy, a, b, angle)


@pytest.mark.parametrize("method", ["grabcut", "best"])
def test_grabcut_and_best_reach_dice_on_sample_key_slices(sample_root, method):
    table = load_lesions(sample_root / "DL_info.csv")
    records = read_masks_csv(sample_root / SAMPLE_MASKS)
    scores = []
    for l in table:
        hu = read_hu(sample_root / l.png_relpath)
        truth = lesion_mask_slices(sample_root / SAMPLE_MASKS, records[l.row_index])
        result = key_slice_mask(hu, l, method)
        scores.append(dice(result.mask, truth[l.key_slice_index]))
        if method == "best":
            assert result.method == "ellipse" or dict(result.scores)[result.method] <= 0.2
    assert np.mean(scores) >= 0.85
    assert min(scores) >= 0.75


def _scaled_ellipse(l, factor_long, factor_short):
    x11, y11, x12, y12, x21, y21, x22, y22 = (v - 1 for v in l.recist_px1)
    a = math.dist((x11, y11), (x12, y12)) / 2 * factor_long
    b = math.dist((x21, y21), (x22, y22)) / 2 * factor_short
    angle = math.degrees(math.atan2(y12 - y11, x12 - x11))
    return _ellipse(l.image_size, (x11 + x12) / 2, (y11 + y12) / 2, a, b, angle)


def test_best_rule_lowest_score_tie_break_and_ellipse_fallback(sample_root):
    from deeplesion.segmentation.keyslice import choose_best

    l = load_lesions(sample_root / "DL_info.csv").lesions[1]
    near, far = _scaled_ellipse(l, 1.1, 1.1), _scaled_ellipse(l, 1.05, 1.0)
    leak = _scaled_ellipse(l, 1.5, 1.6)
    # the lowest mean relative axis error wins, wherever it is in the list
    result = choose_best([("a", near), ("b", far), ("c", leak)], l, l.image_size)
    assert result.method == "b" and result.mask is far
    scores = dict(result.scores)
    assert scores["a"] == pytest.approx(0.1, abs=0.03)  # both axes 10 % long
    assert scores["c"] == pytest.approx(0.55, abs=0.05)
    # equal scores: the first listed
    assert choose_best([("x", near), ("y", near.copy())], l, l.image_size).method == "x"
    # nothing within 0.2: the RECIST ellipse
    fallback = choose_best([("c", leak), ("e", np.zeros_like(leak))], l, l.image_size)
    assert fallback.method == "ellipse"
    assert np.array_equal(fallback.mask, lesion_ellipse_mask(l))
    assert dict(fallback.scores)["e"] == math.inf


@pytest.fixture(scope="module")
def masks_3d(sample_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("masks3d") / "m"
    report = make_masks(sample_root, out, method="best", three_d=True)
    return out, report


def test_3d_masks_reach_dice_and_stay_in_their_sub_volume(sample_root, masks_3d):
    out, report = masks_3d
    assert not report.failed
    table = load_lesions(sample_root / "DL_info.csv")
    truth = read_masks_csv(sample_root / SAMPLE_MASKS)
    scores = []
    for l in table:
        ours = lesion_mask_slices(out, report_record(report, l.row_index))
        ref = lesion_mask_slices(sample_root / SAMPLE_MASKS, truth[l.row_index])
        assert all(l.slice_range[0] <= n <= l.slice_range[1] for n in ours)
        numbers = sorted(set(ours) | set(ref))
        empty = np.zeros(l.image_size, dtype=bool)
        a = np.stack([ours.get(n, empty) for n in numbers])
        b = np.stack([ref.get(n, empty) for n in numbers])
        scores.append(dice(a, b))
    assert np.mean(scores) >= 0.75


def report_record(report, row):
    return next(r for r in report.records if r.row_index == row)


def test_label_volumes_lie_on_the_nifti_export_grid(sample_root, masks_3d, tmp_path):
    import nibabel as nib

    from deeplesion.convert.nifti import export_nifti

    out, report = masks_3d
    images = export_nifti(sample_root, tmp_path / "nifti", compression="zlib")
    table = load_lesions(sample_root / "DL_info.csv")
    labels = {p.name: p for p in report.nifti_files}
    assert labels and set(labels) <= {v.file for v in images.volumes}
    for v in images.volumes:
        if v.file not in labels:
            continue
        image, label = nib.load(images.out_dir / v.file), nib.load(labels[v.file])
        assert label.shape == image.shape
        assert np.array_equal(label.affine, image.affine)
        assert label.get_data_dtype() == np.uint8
        data = np.asarray(label.dataobj)
        for l in table:
            if l.series_folder == v.folder and v.first_slice <= l.key_slice_index <= v.last_slice:
                rec = report_record(report, l.row_index)
                cx, cy = l.center_px1
                voxel = data[round(cx) - 1, round(cy) - 1, l.key_slice_index - v.first_slice]
                assert voxel == rec.label  # voxel (i, j, k) = pixel (i + 1, j + 1)
                png = lesion_mask_slices(out, rec)[l.key_slice_index]
                section = rec.label == data[:, :, l.key_slice_index - v.first_slice].T
                assert np.array_equal(section, png)


def test_same_input_same_bytes_workers_and_resume(sample_root, tmp_path):
    a = make_masks(sample_root, tmp_path / "a", method="grabcut")
    make_masks(sample_root, tmp_path / "b", method="grabcut", workers=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert a.written_folders == len(
        {l.series_folder for l in load_lesions(sample_root / "DL_info.csv")}
    )
    # an interrupted run: a folder's record and one of its PNGs gone
    parts = sorted((tmp_path / "a" / ".parts").glob("*.json"))
    parts[0].unlink()
    next((tmp_path / "a" / "png" / parts[-1].stem).glob("*.png")).unlink()
    again = make_masks(sample_root, tmp_path / "a", method="grabcut")
    assert again.written_folders == 2 and again.skipped_folders == a.written_folders - 2
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_other_settings_are_refused_unless_overwrite(sample_root, tmp_path):
    make_masks(sample_root, tmp_path / "m", method="ellipse")
    with pytest.raises(MaskSettingsError, match="overwrite"):
        make_masks(sample_root, tmp_path / "m", method="grabcut")
    report = make_masks(sample_root, tmp_path / "m", method="grabcut", overwrite=True)
    assert {r.method for r in report.records} == {"grabcut:dicom"}
    assert json.loads((tmp_path / "m" / "settings.json").read_text())["method"] == "grabcut"


def test_unreadable_key_slice_fails_that_lesion_only(sample_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(sample_root, root)
    table = load_lesions(root / "DL_info.csv")
    broken = table.lesions[0]
    (root / broken.png_relpath).write_bytes(b"not a png")
    report = make_masks(root, tmp_path / "m", method="ellipse")
    assert [r.row_index for r in report.failed] == [broken.row_index]
    assert "failed" in report.failed[0].status
    assert sum(r.ok for r in report.records) == len(table) - 1


def test_flat_folder_of_real_key_slices(real_liver_dir, tmp_path):
    csv = real_liver_dir / "NNProject_liver_image_dataset_info.csv"
    report = make_masks(real_liver_dir, tmp_path / "m", csv_path=csv, method="best")
    table = load_lesions(csv)
    assert len(report.records) == len(table) and not report.failed
    assert report.nifti_files == [] and report.notes
    for r in report.records:
        l = next(x for x in table if x.row_index == r.row_index)
        # the mask's axes agree with the annotated diameters within 25 % (about 1-4 mm)
        assert r.long_mm == pytest.approx(l.long_diameter_mm, rel=0.25)
        assert r.short_mm == pytest.approx(l.short_diameter_mm, rel=0.25)


@pytest.mark.parametrize("angle", [0.0, 35.0, 60.0, 90.0])
def test_recist_ellipse_is_not_clipped_to_the_end_points_box(angle):
    # a rotated ellipse reaches beyond the box of its four end points
    from deeplesion.data.masks import recist_mask

    cx, cy, a, b = 60.2, 55.7, 30.0, 18.0
    t = math.radians(angle)
    u, v = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    c = np.array([cx, cy])
    ends = np.array([c + a * u, c - a * u, c + b * v, c - b * v])
    mask = recist_mask(ends, (120, 120))
    assert np.array_equal(mask, _ellipse((120, 120), cx, cy, a, b, angle)) or (
        np.logical_xor(mask, _ellipse((120, 120), cx, cy, a, b, angle)).sum() <= 4
    )
    assert mask.sum() == pytest.approx(math.pi * a * b, rel=0.02)
