"""Annotated key slices: marks land exactly on the DL_info coordinates."""

import csv
import math
import os

import numpy as np
import pytest
from PIL import Image

from deeplesion.data.annotations import load_lesions
from deeplesion.data.paths import key_slice_path
from deeplesion.review.batch import render_key_slices
from deeplesion.review.crops import _crop_resize, annotated_crop, shift_lesion
from deeplesion.review.render import (
    BOX_RGB,
    LONG_AXIS_RGB,
    SHORT_AXIS_RGB,
    RenderError,
    render_key_slice,
)

LIVER_CSV = "NNProject_liver_image_dataset_info.csv"


def pixel(x_px1, y_px1):
    """DL_info 1-based (x, y) -> array (row, col), nearest pixel, computed independently."""
    return int(math.floor(y_px1 + 0.5)) - 1, int(math.floor(x_px1 + 0.5)) - 1


def expected_grey(png_path, low_hu, high_hu):
    """The official Key_slices formula applied to the raw 16-bit PNG."""
    raw = np.asarray(Image.open(png_path)).astype(np.int64)
    hu = raw - 32768
    return np.clip((hu - low_hu) / (high_hu - low_hu) * 255.0, 0, 255).astype(np.uint8)


def csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def floats(cell):
    return [float(v) for v in cell.split(",")]


def test_real_liver_slices_marks_land_on_the_coordinates(real_liver_dir):
    rows = csv_rows(real_liver_dir / LIVER_CSV)
    table = load_lesions(real_liver_dir / LIVER_CSV)
    assert len(rows) == len(table) == 23
    by_name = table.by_file_name()
    for row in rows:
        name = row["File_name"]
        rgb = render_key_slice(real_liver_dir, by_name[name])
        n_rows, n_cols = (int(v) for v in floats(row["Image_size"]))
        assert rgb.shape == (n_rows, n_cols, 3) and rgb.dtype == np.uint8
        m = floats(row["Measurement_coordinates"])
        for x, y in ((m[0], m[1]), (m[2], m[3])):
            assert tuple(rgb[pixel(x, y)]) == LONG_AXIS_RGB, (name, x, y)
        for x, y in ((m[4], m[5]), (m[6], m[7])):
            assert tuple(rgb[pixel(x, y)]) == SHORT_AXIS_RGB, (name, x, y)
        x1, y1, x2, y2 = floats(row["Bounding_boxes"])
        for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2)):
            assert tuple(rgb[pixel(x, y)]) == BOX_RGB, (name, x, y)
        # The long axis is a connected line: a quarter of the way along it is red.
        for t in (0.25, 0.75):
            r, c = pixel(m[0] + t * (m[2] - m[0]), m[1] + t * (m[3] - m[1]))
            near = rgb[r - 1 : r + 2, c - 1 : c + 2].reshape(-1, 3)
            assert (near == LONG_AXIS_RGB).all(axis=1).any(), name
        # Away from the box and its label, the image is the DICOM-windowed slice.
        low, high = floats(row["DICOM_windows"])
        grey = expected_grey(real_liver_dir / "Images_png" / name, low, high)
        changed = np.argwhere((rgb != grey[:, :, None]).any(axis=2))
        r_box0, c_box0 = pixel(x1, y1)
        r_box1, _c_box1 = pixel(x2, y2)
        assert changed[:, 0].min() >= r_box0 - 30 and changed[:, 0].max() <= r_box1 + 30
        assert changed[:, 1].min() >= c_box0 - 1 and changed[:, 1].max() <= c_box0 + 250
        untouched = (rgb == grey[:, :, None]).all(axis=2)
        assert untouched.mean() > 0.98


def test_preset_window_changes_the_grey_values(real_liver_dir):
    table = load_lesions(real_liver_dir / LIVER_CSV)
    lesion = table.lesions[0]
    rgb = render_key_slice(real_liver_dir, [lesion], window="lung")
    grey = expected_grey(real_liver_dir / "Images_png" / lesion.file_name, -1350, 150)
    assert (rgb[0:40, 0:40] == grey[0:40, 0:40, None]).all()


def test_several_lesions_on_one_sample_slice(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    groups = {k: v for k, v in table.by_file_name().items() if len(v) > 1}
    assert groups, "the sample has key slices with several lesions"
    for lesions in groups.values():
        rgb = render_key_slice(sample_root, lesions)
        for lesion in lesions:
            m = lesion.recist_px1
            assert tuple(rgb[pixel(m[0], m[1])]) == LONG_AXIS_RGB
            assert tuple(rgb[pixel(m[2], m[3])]) == LONG_AXIS_RGB
            assert tuple(rgb[pixel(m[4], m[5])]) == SHORT_AXIS_RGB
            assert tuple(rgb[pixel(m[6], m[7])]) == SHORT_AXIS_RGB
    lesions = table.lesions
    other = next(l for l in lesions if l.file_name != lesions[0].file_name)
    with pytest.raises(RenderError):
        render_key_slice(sample_root, [lesions[0], other])


def test_render_key_slices_writes_resumes_and_survives_bad_images(real_liver_dir, tmp_path):
    table = load_lesions(real_liver_dir / LIVER_CSV)
    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    chosen = table.lesions[:4]
    for lesion in chosen[:3]:
        os.symlink(
            real_liver_dir / "Images_png" / lesion.file_name, root / "Images_png" / lesion.file_name
        )
    (root / "Images_png" / chosen[3].file_name).write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    result = render_key_slices(root, chosen, out)
    assert sorted(p.name for p in result.written) == sorted(l.file_name for l in chosen[:3])
    assert [name for name, _ in result.failed] == [chosen[3].file_name]
    assert chosen[3].file_name in result.failed[0][1] or "PNG" in result.failed[0][1]
    assert sorted(p.name for p in out.iterdir()) == sorted(l.file_name for l in chosen[:3])
    saved = np.asarray(Image.open(out / chosen[0].file_name))
    assert (saved == render_key_slice(root, [chosen[0]])).all()
    again = render_key_slices(root, chosen[:3], out)
    assert not again.written and len(again.skipped) == 3
    assert not again.crops_written and not again.crops_skipped


def test_release_layout_is_found_first(real_liver_dir, tmp_path):
    lesion = load_lesions(real_liver_dir / LIVER_CSV).lesions[0]
    release = tmp_path / "Images_png" / lesion.series_folder / f"{lesion.key_slice_index:03d}.png"
    release.parent.mkdir(parents=True)
    os.symlink(real_liver_dir / "Images_png" / lesion.file_name, release)
    assert key_slice_path(tmp_path, lesion.file_name) == release
    assert key_slice_path(real_liver_dir, lesion.file_name) == (
        real_liver_dir / "Images_png" / lesion.file_name
    )


def test_crop_coordinates_follow_the_resampling(real_liver_dir):
    lesion = load_lesions(real_liver_dir / LIVER_CSV).lesions[0]
    x, y = lesion.recist_px1[0], lesion.recist_px1[1]
    image = np.zeros((512, 512), np.uint8)
    image[pixel(x, y)] = 255
    for side, tile in ((40.0, 40), (40.0, 120), (64.0, 128)):
        left, top = pixel(x, y)[1] - side / 2 + 0.3, pixel(x, y)[0] - side / 2 - 0.2
        crop = _crop_resize(image, left, top, side, tile)
        moved = shift_lesion(lesion, left, top, tile / side)
        # where the crop says the point is (1-based) vs. where its brightness ended up
        mx, my = moved.recist_px1[0] - 1, moved.recist_px1[1] - 1
        # point stays put relative to the bright pixel's true centre
        ex = (pixel(x, y)[1] - left) * tile / side - 0.5
        ey = (pixel(x, y)[0] - top) * tile / side - 0.5
        r, c = np.unravel_index(np.argmax(crop), crop.shape)
        assert abs(r - ey) <= 1.0 and abs(c - ex) <= 1.0
        assert abs(mx - (x - 1 - left) * tile / side + 0.5) < 1e-9
        assert abs(my - (y - 1 - top) * tile / side + 0.5) < 1e-9


def test_annotated_crop_with_context(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    lesion = table.lesions[0]
    crop = annotated_crop(sample_root, lesion, context_slices=3, tile_px=96)
    assert crop.shape == (96, 288, 3)
    red = (crop == LONG_AXIS_RGB).all(axis=2)
    assert red[:, 96:192].any() and not red[:, :96].any() and not red[:, 192:].any()
    # the crop is centred on the lesion: red pixels cluster around the middle tile's centre
    rows, cols = np.nonzero(red[:, 96:192])
    assert abs(rows.mean() - 47.5) < 12 and abs(cols.mean() - 47.5) < 12


def test_even_context_is_rejected_up_front(sample_root, tmp_path):
    table = load_lesions(sample_root / "DL_info.csv")
    with pytest.raises(RenderError, match="odd"):
        render_key_slices(
            sample_root, table.lesions[:2], tmp_path / "out", crops=True, context_slices=4
        )
    assert not (tmp_path / "out").exists()
