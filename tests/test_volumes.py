"""Sub-volume index and loading (deeplesion.data.volumes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplesion.data.annotations import load_lesions, write_dl_info
from deeplesion.data.context import load_context
from deeplesion.data.volumes import (
    SubVolume,
    VolumeError,
    consecutive_runs,
    index_volumes,
    load_slice_range,
    load_subvolume,
)


def _png_hu(path: Path) -> np.ndarray:
    """Independent reference: Pillow -> int32 -> minus 32768 (the README's rule)."""
    return np.asarray(Image.open(path)).astype(np.int32) - 32768


def _expected_runs(csv_path: Path) -> set[tuple[str, int, int]]:
    """The sample writes exactly each row's Slice_range (merged ranges are shared)."""
    return {(l.series_folder, *l.slice_range) for l in load_lesions(csv_path).lesions}


def _mirror(src: Path, dst: Path, folders: list[str] | None = None) -> Path:
    """A dataset root whose slices are symlinks to ``src``'s (cheap, editable copy)."""
    images = src / "Images_png"
    for folder in sorted(p.name for p in images.iterdir()):
        if folders is not None and folder not in folders:
            continue
        (dst / "Images_png" / folder).mkdir(parents=True)
        for png in (images / folder).iterdir():
            (dst / "Images_png" / folder / png.name).symlink_to(png)
    lesions = [
        l
        for l in load_lesions(src / "DL_info.csv").lesions
        if folders is None or l.series_folder in folders
    ]
    write_dl_info(lesions, dst / "DL_info.csv")
    return dst


def test_consecutive_runs():
    assert consecutive_runs([1, 2, 3, 7, 8, 10]) == [(1, 3), (7, 8), (10, 10)]
    assert consecutive_runs([]) == []


def test_sample_runs_match_slice_ranges_and_join_rows(sample_root):
    index = index_volumes(sample_root)
    runs = {(v.folder, v.first_slice, v.last_slice) for v in index.volumes}
    assert runs == _expected_runs(sample_root / "DL_info.csv")
    assert len(runs) == len(index.volumes)
    for lesion in load_lesions(sample_root / "DL_info.csv").lesions:
        holder = index.find(lesion.series_folder, lesion.key_slice_index)
        assert holder is not None
        assert (lesion.row_index, lesion.key_slice_index) in holder.lesions
        assert holder.spacing_mm == pytest.approx(lesion.spacing_mm)
    assert sorted(v.name for v in index.volumes) == [v.name for v in index.volumes]
    # the sample's series with a gap: 2 mm, slices 1..31 and 57..87
    gaps = {(p.folder, p.slice_number) for p in index.problems_of("gap")}
    assert ("000003_01_01", 32) in gaps
    assert not index.problems_of("folder-without-rows")
    assert not index.problems_of("row-without-image")


def test_index_reports_what_does_not_fit(sample_root, tmp_path):
    root = _mirror(sample_root, tmp_path / "root", ["000005_01_01", "000008_01_01"])
    # a folder without rows, a key slice whose PNG is gone, a corrupt slice
    orphan = root / "Images_png" / "000099_01_01"
    orphan.mkdir()
    for n in (3, 4):
        (orphan / f"{n:03d}.png").symlink_to(root / "Images_png/000005_01_01/005.png")
    (root / "Images_png/000008_01_01/008.png").unlink()
    bad = root / "Images_png/000005_01_01/010.png"
    bad.unlink()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    index = index_volumes(root, check_slices=True)
    assert [p.folder for p in index.problems_of("folder-without-rows")] == ["000099_01_01"]
    assert index.find("000099_01_01", 3).spacing_mm is None
    missing = index.problems_of("row-without-image")
    assert {(p.folder, p.slice_number) for p in missing} == {("000008_01_01", 8)}
    assert [(p.folder, p.slice_number) for p in index.problems_of("unreadable-slice")] == [
        ("000005_01_01", 10)
    ]
    names = [v.name for v in index.volumes if v.folder == "000005_01_01"]
    assert names == ["000005_01_01_002-009", "000005_01_01_011-014"]
    # without decoding, the corrupt slice is not noticed; the deleted one still splits
    quick = index_volumes(root, default_spacing_mm=(1.0, 1.0, 2.0))
    assert [v.name for v in quick.volumes if v.folder == "000005_01_01"] == ["000005_01_01_002-014"]
    assert quick.find("000099_01_01", 4).spacing_mm == (1.0, 1.0, 2.0)
    assert [v.name for v in quick.volumes if v.folder == "000008_01_01"] == [
        "000008_01_01_001-007",
        "000008_01_01_009-016",
    ]


def test_not_a_root(tmp_path):
    with pytest.raises(VolumeError, match="Images_png"):
        index_volumes(tmp_path)


def test_subvolume_split_and_name():
    sub = SubVolume("000001_01_01", 4, 16, (0.5, 0.5, 5.0), ((0, 10), (1, 5)))
    assert sub.name == "000001_01_01_004-016" and sub.n_slices == 13
    left, right = sub.without(8)
    assert (left.first_slice, left.last_slice, left.lesions) == (4, 7, ((1, 5),))
    assert (right.first_slice, right.last_slice, right.lesions) == (9, 16, ((0, 10),))
    assert [v.name for v in sub.without(4)] == ["000001_01_01_005-016"]
    with pytest.raises(VolumeError):
        SubVolume("000001_01_01", 5, 4)


def test_load_slice_range_maps_dl_info_pixels(sample_root):
    lesion = load_lesions(sample_root / "DL_info.csv").lesions[0]
    volume = load_slice_range(sample_root, lesion)
    first, last = lesion.slice_range
    rows, cols = lesion.image_size
    assert volume.hu_xyk.dtype == np.int16
    assert volume.hu_xyk.shape == (cols, rows, last - first + 1)
    assert volume.spacing_mm == pytest.approx(lesion.spacing_mm)
    for k, n in enumerate(range(first, last + 1)):
        png = _png_hu(sample_root / "Images_png" / lesion.series_folder / f"{n:03d}.png")
        # voxel (i, j, k) = DL_info pixel (x = i + 1, y = j + 1) = PNG [y - 1, x - 1]
        assert np.array_equal(volume.hu_xyk[:, :, k], png.T)
    # the box, 1-based, indexes the volume directly
    x1, y1, x2, y2 = (int(round(v)) for v in lesion.box_px1)
    key = lesion.key_slice_index
    png = _png_hu(sample_root / lesion.png_relpath)
    assert np.array_equal(
        volume.hu_xyk[x1 - 1 : x2, y1 - 1 : y2, key - first], png[y1 - 1 : y2, x1 - 1 : x2].T
    )
    assert np.array_equal(volume.slice_hu(key), png)


def test_volume_context_equals_load_context(sample_root):
    for lesion in load_lesions(sample_root / "DL_info.csv").lesions[:4]:
        volume = load_slice_range(sample_root, lesion)
        ours = volume.context(lesion.key_slice_index, n_slices=9)
        reference = load_context(
            sample_root,
            lesion.series_folder,
            lesion.key_slice_index,
            lesion.slice_interval_mm,
            n_slices=9,
        )
        np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_load_subvolume_of_the_real_series(real_series_dir, tmp_path):
    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / "000062_01_01").symlink_to(real_series_dir)
    index = index_volumes(root)
    assert [v.name for v in index.volumes] == ["000062_01_01_056-084"]
    volume = load_subvolume(root, index.volumes[0])
    assert volume.hu_xyk.shape == (512, 512, 29)
    for k in (0, 13, 28):
        png = _png_hu(real_series_dir / f"{56 + k:03d}.png")
        assert np.array_equal(volume.hu_xyk[:, :, k], png.T)
