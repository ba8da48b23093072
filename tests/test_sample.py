import hashlib
import math

import numpy as np

from deeplesion.data.annotations import load_lesions
from deeplesion.data.paths import slice_path
from deeplesion.data.sample import read_truth, write_sample
from deeplesion.data.slices import read_hu
from deeplesion.data.stats import dataset_stats
from deeplesion.data.validation import validate


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sample_validates_cleanly_with_images(sample_root):
    report = validate(sample_root / "DL_info.csv", images_root=sample_root)
    assert report.rows > 10
    assert report.ok, [str(p) for p in report.problems]


def test_sample_covers_what_the_release_has(sample_root):
    table = load_lesions(sample_root / "DL_info.csv", strict=True)
    stats = dataset_stats(table)
    assert all(stats["by_split"][s] > 0 for s in ("train", "val", "test"))
    assert stats["noisy"] >= 1
    assert {l.slice_interval_mm for l in table} >= {1.0, 2.0, 5.0}
    assert max(len(v) for v in table.by_file_name().values()) >= 2
    studies = {}
    for l in table:
        studies.setdefault(l.patient_index, set()).add(l.study_index)
    assert max(len(s) for s in studies.values()) >= 3
    assert {l.image_size for l in table} >= {(512, 512), (768, 768)}
    labelled = {l.type_name for l in table if l.split != "train"}
    assert labelled >= {
        "bone",
        "abdomen",
        "mediastinum",
        "liver",
        "lung",
        "kidney",
        "soft tissue",
        "pelvis",
    }
    assert any(l.age_years is None for l in table)


def test_every_provided_slice_exists_and_nothing_else(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    expected = set()
    for l in table:
        for n in range(l.slice_range[0], l.slice_range[1] + 1):
            expected.add(slice_path(sample_root, l.series_folder, n))
    found = set((sample_root / "Images_png").glob("*/*.png"))
    assert found == expected


def test_lesions_are_where_the_annotations_say(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    for l in table:
        hu = read_hu(sample_root / l.png_relpath).astype(float)
        rows, cols = np.mgrid[0 : hu.shape[0], 0 : hu.shape[1]]
        x, y = cols + 1.0, rows + 1.0  # 1-based DL_info pixels
        x11, y11, x12, y12, x21, y21, x22, y22 = l.recist_px1
        cx, cy = (x11 + x12) / 2, (y11 + y12) / 2
        a, b = math.dist((x11, y11), (x12, y12)) / 2, math.dist((x21, y21), (x22, y22)) / 2
        t = math.atan2(y12 - y11, x12 - x11)
        u = (x - cx) * math.cos(t) + (y - cy) * math.sin(t)
        v = -(x - cx) * math.sin(t) + (y - cy) * math.cos(t)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = hu[r < 0.5].mean()
        ring = hu[(r > 1.3) & (r < 1.8)]
        # the lesion core differs from its surroundings by much more than the noise
        assert abs(inside - np.median(ring)) > 30, l.file_name
        assert hu[r < 0.5].std() < 25


def test_truth_has_a_track_per_row_and_follow_ups(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    truth = read_truth(sample_root)
    assert sorted(truth) == [l.row_index for l in table]
    by_track = {}
    for l in table:
        by_track.setdefault(truth[l.row_index], []).append(l)
    followed = [ls for ls in by_track.values() if len(ls) > 1]
    assert len(followed) >= 3
    for ls in followed:
        assert len({l.patient_index for l in ls}) == 1
        assert len({l.study_index for l in ls}) == len(ls)


def test_same_seed_same_bytes(sample_root, tmp_path):
    again = write_sample(tmp_path / "again", seed=0)
    assert _digest(again) == _digest(sample_root)
