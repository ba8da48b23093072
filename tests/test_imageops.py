"""The OpenCV-based image operations and PNG decoding of the training pipeline.

Every operation is checked against a brute-force numpy computation of its documented rule
(sliding windows, per-pixel bilinear sampling), not against the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

from deeplesion.data.slices import read_png_raw
from deeplesion.data.sources import PngSource
from deeplesion.errors import ImageReadError
from deeplesion.training.imageops import (
    blend_window,
    body_bbox,
    resize_bilinear,
    resized_size,
    warp_affine,
)
from deeplesion.training.pipeline import prepare_key_slice
from deeplesion.training.presets import preset

# --------------------------------------------------------------------------- oracles


def _opening_brute(mask: np.ndarray, k: int) -> np.ndarray:
    """Erode then dilate with a k x k square centred at (k // 2, k // 2), outside False."""
    rows, cols = mask.shape
    lo, hi = k // 2, k - 1 - k // 2

    def window(m: np.ndarray, r: int, c: int) -> np.ndarray:
        r0, r1, c0, c1 = r - lo, r + hi + 1, c - lo, c + hi + 1
        inside = m[max(r0, 0) : r1, max(c0, 0) : c1]
        return inside, inside.size == k * k

    eroded = np.zeros_like(mask)
    for r in range(rows):
        for c in range(cols):
            w, full = window(mask, r, c)
            eroded[r, c] = full and w.all()
    opened = np.zeros_like(mask)
    # dilation is the transpose: the element reflected, so offsets swap sides
    for r in range(rows):
        for c in range(cols):
            w = eroded[max(r - hi, 0) : r + lo + 1, max(c - hi, 0) : c + lo + 1]
            opened[r, c] = w.any()
    return opened


def _bilinear_brute(img: np.ndarray, x: float, y: float, outside: float | None) -> float:
    """Bilinear sample at (x, y); taps outside = ``outside``, or the clamped edge if None."""
    rows, cols = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            wgt = (1 - abs(x - (x0 + dx))) * (1 - abs(y - (y0 + dy)))
            if wgt == 0:
                continue
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < rows and 0 <= xx < cols:
                total += wgt * float(img[yy, xx])
            elif outside is None:
                total += wgt * float(img[min(max(yy, 0), rows - 1), min(max(xx, 0), cols - 1)])
            else:
                total += wgt * outside
    return total


# --------------------------------------------------------------------------- operations


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_body_bbox_is_the_box_of_the_opened_mask(k):
    rng = np.random.default_rng(k)
    for trial in range(6):
        rows, cols = rng.integers(6, 30, 2)
        mask = rng.random((rows, cols)) < (0.9 if trial % 2 else 0.6)
        if trial == 0:  # a body touching the image border
            mask[:, : cols // 2] = True
        raw = np.where(mask, 33000, 1000).astype(np.uint16)
        opened = _opening_brute(mask, k)
        ys, xs = np.nonzero(opened)
        want = None if not len(xs) else (xs.min(), ys.min(), xs.max(), ys.max())
        assert body_bbox(raw, 32000, k) == want


def test_body_bbox_of_an_empty_mask_is_none():
    assert body_bbox(np.full((20, 20), 100, np.uint16)) is None


@pytest.mark.parametrize("scale", [0.31, 0.5, 0.8 / 0.7, 1.7, 2.0, 0.04])
def test_resize_samples_the_documented_grid(scale):
    rng = np.random.default_rng(1)
    img = rng.normal(0, 100, (2, 13, 21)).astype(np.float32)
    out = resize_bilinear(img, scale)
    rows, cols = max(1, round(13 * scale)), max(1, round(21 * scale))
    assert out.shape == (2, rows, cols) == (2, *resized_size(img.shape, scale))
    for ch in range(2):
        for v in range(rows):
            for u in range(cols):
                x = min(max((u + 0.5) / scale - 0.5, 0), 20)
                y = min(max((v + 0.5) / scale - 0.5, 0), 12)
                want = _bilinear_brute(img[ch], x, y, None)
                assert abs(out[ch, v, u] - want) < 1e-3


def test_warp_samples_the_inverse_map_with_fill_outside():
    rng = np.random.default_rng(2)
    img = rng.normal(0, 100, (1, 17, 23)).astype(np.float32)
    angle, zoom = 0.3, 1.1
    c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
    matrix = np.array([[c, -s, 3.2], [s, c, -2.7]])
    out = warp_affine(img, matrix, (15, 19), fill=-7.0)
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    worst = 0.0
    for v in range(15):
        for u in range(19):
            x, y, _ = inv @ (u, v, 1.0)
            worst = max(worst, abs(out[0, v, u] - _bilinear_brute(img[0], x, y, -7.0)))
    assert worst < 1e-2  # on noise of sd 100


@pytest.mark.parametrize("n", [1, 2, 3])
def test_blend_window_is_one_pass_of_the_window_formula(n):
    rng = np.random.default_rng(n)
    planes = [(rng.integers(0, 65536, (9, 11)).astype(np.uint16), w) for w in (0.2, 0.3, 0.5)[:n]]
    hu = sum(p.astype(np.float64) * w for p, w in planes) - 32768
    want = np.clip((hu + 1024) / 4095, 0, 1) * 255 - 50
    out = np.empty((9, 11), np.float32)
    got = blend_window(planes, 32768, (-1024.0, 3071.0), 50.0, out=out)
    assert got is out and np.abs(got - want).max() < 2e-3


# --------------------------------------------------------------------------- decoding


def test_opencv_decoding_is_bit_identical_to_pillow(real_series_dir, real_liver_dir):
    files = sorted(real_series_dir.glob("*.png")) + sorted(
        (real_liver_dir / "Images_png").glob("*.png")
    )
    assert len(files) >= 40
    for path in files:
        with Image.open(path) as img:
            want = np.asarray(img).astype(np.int64)
        got = read_png_raw(path, opencv=True)
        assert got.dtype == np.uint16 and np.array_equal(got, want), path.name


def test_opencv_decoding_keeps_the_typed_errors(tmp_path, real_series_dir):
    good = (real_series_dir / "060.png").read_bytes()
    broken = bytearray(good)
    broken[50_000] ^= 0x55
    (tmp_path / "flipped.png").write_bytes(bytes(broken))
    (tmp_path / "short.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "eight.png")
    for name, words in [("flipped", "unreadable"), ("short", ""), ("eight", "16-bit")]:
        with pytest.raises(ImageReadError, match=rf"{name}\.png.*{words}"):
            read_png_raw(tmp_path / f"{name}.png", opencv=True)
    # a file Pillow reads despite a damaged trailer reads the same either way
    (tmp_path / "tail.png").write_bytes(good[:-12])
    assert np.array_equal(
        read_png_raw(tmp_path / "tail.png", opencv=True), read_png_raw(tmp_path / "tail.png")
    )


# --------------------------------------------------------------------------- pipeline


class _BoxSource(PngSource):
    """PNGs plus a precomputed body box, as a store may offer."""

    def __init__(self, root: Path, box) -> None:
        super().__init__(root)
        self.box = box
        self.asked: list[tuple] = []

    def body_box_px0(self, folder, slice_number, threshold_png, opening_px):
        self.asked.append((folder, slice_number, threshold_png, opening_px))
        return self.box


def test_precomputed_body_box_is_used_and_none_falls_back(sample_root):
    from deeplesion.data.annotations import load_lesions

    lesion = load_lesions(sample_root / "DL_info.csv").lesions[0]
    params = preset("3dce", max_size_px=128)
    args = (
        lesion.series_folder,
        lesion.key_slice_index,
        lesion.slice_interval_mm,
        lesion.spacing_mm[0],
        params,
    )
    plain = prepare_key_slice(sample_root, *args)
    given = _BoxSource(sample_root, (10, 20, 60, 90))
    boxed = prepare_key_slice(given, *args)
    assert boxed.transform.crop_px0 == (10, 20, 60, 90)
    assert given.asked == [(lesion.series_folder, lesion.key_slice_index, 32000, 7)]
    fallback = prepare_key_slice(_BoxSource(sample_root, None), *args)
    assert fallback.transform == plain.transform
    assert np.array_equal(fallback.image, plain.image)


def test_slices_of_another_size_are_a_typed_error(tmp_path, real_series_dir):
    root = tmp_path / "root"
    folder = root / "Images_png" / "000062_01_01"
    folder.mkdir(parents=True)
    for n in (69, 70):
        (folder / f"{n:03d}.png").symlink_to(real_series_dir / f"{n:03d}.png")
    Image.fromarray(np.full((256, 256), 32768, np.uint16)).save(folder / "071.png")
    with pytest.raises(ImageReadError, match="000062_01_01 slice 71: 256x256"):
        prepare_key_slice(root, "000062_01_01", 70, 2.0, 0.7, preset("native"))
