import numpy as np
import pytest
from PIL import Image

from deeplesion.data.slices import hu_to_png, png_to_hu, read_hu, write_hu_png
from deeplesion.data.windowing import WINDOW_PRESETS, Window, apply_window, parse_window
from deeplesion.errors import ImageReadError


def _independent_hu(path):
    with Image.open(path) as img:
        return np.array(img).astype(np.int64) - 32768


def test_png_to_hu_never_wraps():
    raw = np.arange(65536, dtype=np.uint16)
    hu = png_to_hu(raw)
    assert hu.dtype == np.int16
    assert np.array_equal(hu.astype(np.int64), raw.astype(np.int64) - 32768)
    assert np.array_equal(hu_to_png(hu), raw)
    # old Pillow hands back int32
    assert np.array_equal(png_to_hu(raw.astype(np.int32)), hu)


def test_real_series_reads_as_plausible_hu(real_series_dir):
    files = sorted(real_series_dir.glob("*.png"))
    assert [int(p.stem) for p in files] == list(range(56, 85))
    for path in files:
        hu = read_hu(path)
        assert hu.dtype == np.int16 and hu.shape == (512, 512)
        assert np.array_equal(hu, _independent_hu(path))
        assert hu.min() >= -1100 and hu.max() <= 4000
        assert (hu < -900).mean() > 0.1  # air around the body
        assert ((hu > -200) & (hu < 200)).mean() > 0.1  # soft tissue


def test_real_key_slices_read_as_plausible_hu(real_liver_dir):
    files = sorted((real_liver_dir / "Images_png").glob("*.png"))
    assert len(files) == 23
    for path in files:
        hu = read_hu(path)
        assert np.array_equal(hu, _independent_hu(path))
        assert hu.min() >= -1100 and hu.max() <= 4000


@pytest.mark.parametrize("size", [512, 768, 1024])
def test_round_trip_every_release_size(tmp_path, size):
    rng = np.random.default_rng(size)
    hu = rng.integers(-1024, 3072, size=(size, size)).astype(np.int16)
    path = tmp_path / "001.png"
    write_hu_png(path, hu)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    assert np.array_equal(read_hu(path), hu)


def test_unreadable_files_raise_typed_errors(tmp_path):
    eight_bit = tmp_path / "8bit.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(eight_bit)
    with pytest.raises(ImageReadError, match=r"8bit\.png.*not a 16-bit"):
        read_hu(eight_bit)
    good = tmp_path / "good.png"
    write_hu_png(good, np.zeros((64, 64), np.int16))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageReadError, match=r"truncated\.png"):
        read_hu(truncated)
    with pytest.raises(ImageReadError, match=r"missing\.png") as info:
        read_hu(tmp_path / "missing.png")
    assert isinstance(info.value, OSError)


def test_dicom_window_uses_the_key_slices_formula():
    hu = np.arange(-400, 500, dtype=np.int16)
    a, b = -177.5, 307.5
    expected = [min(255, max(0, (v - a) / (b - a) * 255)) for v in hu.tolist()]
    got = apply_window(hu, parse_window("dicom", (a, b)))
    assert got.dtype == np.uint8
    assert got.tolist() == [int(v) for v in expected]
    unit = apply_window(hu, Window(a, b), dtype="unit")
    assert np.allclose(unit, np.array(expected) / 255, atol=1e-6)


def test_presets_from_width_and_level():
    # width/level from dataset-facts.md
    for name, (width, level) in {
        "lung": (1500, -600),
        "mediastinum": (350, 50),
        "soft-tissue": (400, 50),
        "liver": (150, 30),
        "bone": (1800, 400),
    }.items():
        assert WINDOW_PRESETS[name] == Window(level - width / 2, level + width / 2)
    assert parse_window("full") == Window(-1024, 3071)
    assert parse_window("soft tissue") == WINDOW_PRESETS["soft-tissue"]
    assert parse_window("-100,200") == Window(-100, 200)
    with pytest.raises(ValueError, match="unknown window"):
        parse_window("brain-ish")
    with pytest.raises(ValueError, match="must exceed"):
        Window(10, 10)
    with pytest.raises(ValueError, match="must exceed"):
        parse_window("100,-100")


def test_png_to_hu_into_a_buffer_is_value_minus_32768():
    from deeplesion.data.slices import png_to_hu

    raw = np.array([[0, 1, 32767], [32768, 40000, 65535]], dtype=np.uint16)
    out = np.full((2, 3), 7, dtype=np.int16)
    result = png_to_hu(raw, out=out)
    assert result is out
    assert out.tolist() == [[int(v) - 32768 for v in row] for row in raw.tolist()]
    wide = np.full((2, 3), 7, dtype=np.int16)
    png_to_hu(raw.astype(np.int32), out=wide)
    assert wide.tolist() == out.tolist()
