"""The explorer's fast image path: lookup-table windowing, OpenCV/Pillow encoding, the
response cache with ETag and Cache-Control, and image work kept off the event loop."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient

from deeplesion.data.windowing import WINDOW_PRESETS, Window
from deeplesion.explorer.images import ResponseCache, SliceReader, encode_png, window_raw
from deeplesion.explorer.server import open_explorer

ALL_RAW = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # every PNG value once


def _formula(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """The Key_slices formula written out here: min(255, max(0, (HU - A) / (B - A) * 255))."""
    hu = raw.astype(np.int64) - 32768
    return np.floor(np.clip((hu - low) / (high - low) * 255.0, 0, 255)).astype(np.uint8)


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_lookup_table_equals_the_formula_for_every_value(real_val_csv):
    """All 65,536 raw values, the presets, odd fractional windows and every distinct DICOM
    window of the real val split."""
    dicom = pd.read_csv(real_val_csv)["DICOM_windows"].drop_duplicates()
    windows = list(WINDOW_PRESETS.values()) + [Window(-0.5, 0.5), Window(-1000.3, 2.7)]
    windows += [Window(*(float(v) for v in text.split(","))) for text in dicom]
    assert len(windows) > 20
    for w in windows:
        np.testing.assert_array_equal(
            window_raw(ALL_RAW, w), _formula(ALL_RAW, w.low_hu, w.high_hu), err_msg=str(w)
        )


def test_window_of_int32_raw_values():
    """An old Pillow gives int32 'I' arrays: the same pixels."""
    w = WINDOW_PRESETS["lung"]
    got = window_raw(ALL_RAW.astype(np.int32), w)
    np.testing.assert_array_equal(got, _formula(ALL_RAW, w.low_hu, w.high_hu))


@pytest.mark.parametrize("level", [0, 1, 6])
@pytest.mark.parametrize("opencv", [True, False])
def test_encode_keeps_every_pixel(monkeypatch, level, opencv):
    """Grey and RGB (OpenCV writes BGR: channels must not swap), with and without OpenCV."""
    if not opencv:
        monkeypatch.setattr("deeplesion.explorer.images._cv2", lambda: None)
    rng = np.random.default_rng(level)
    grey = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    rgb = np.zeros((40, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: a swap would make it blue
    rgb[5:10, 5:10] = (10, 200, 90)
    np.testing.assert_array_equal(_decoded(encode_png(grey, level)), grey)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(rgb, level))).convert("RGB"))
    np.testing.assert_array_equal(decoded, rgb)


def test_level_0_is_larger_than_level_1(real_series_dir):
    raw = np.asarray(Image.open(sorted(real_series_dir.glob("*.png"))[0]))
    grey = window_raw(raw.astype(np.uint16), WINDOW_PRESETS["lung"])
    stored, packed = encode_png(grey, 0), encode_png(grey, 1)
    assert len(stored) >= grey.size > 2 * len(packed)
    np.testing.assert_array_equal(_decoded(stored), _decoded(packed))


def test_response_cache_is_an_lru_bounded_in_bytes():
    from deeplesion.explorer.images import Encoded

    cache = ResponseCache(max_bytes=25)
    for key in "abc":
        cache.put(key, Encoded.of(key.encode() * 10))
    assert len(cache) == 2 and cache.size_bytes == 20  # a went first
    assert cache.get("a") is None
    assert cache.get("b") is not None  # b is now the most recent: c goes next
    cache.put("d", Encoded.of(b"d" * 10))
    assert cache.get("c") is None and cache.get("b") is not None
    cache.put("huge", Encoded.of(b"x" * 26))  # larger than the whole cache: not kept
    assert cache.get("huge") is None and len(cache) == 2
    off = ResponseCache(max_bytes=0)
    off.put("a", Encoded.of(b"a"))
    assert len(off) == 0


def test_slice_answers_are_cached_with_etag(sample_root):
    explorer = open_explorer(sample_root)
    client = TestClient(explorer.app())
    cache = explorer.reader.responses
    name = "000001_01_01_010.png"
    first = client.get(f"/api/slice/{name}", params={"window": "lung"})
    assert first.status_code == 200 and len(cache) == 1
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("private, max-age=")
    again = client.get(f"/api/slice/{name}", params={"window": "lung"})
    assert again.content == first.content and again.headers["etag"] == etag
    assert len(cache) == 1  # answered from the cache
    # the browser's revalidation: 304 without a body
    r = client.get(f"/api/slice/{name}", params={"window": "lung"}, headers={"if-none-match": etag})
    assert r.status_code == 304 and r.content == b""
    # another window or the overlay is another answer with another tag
    bone = client.get(f"/api/slice/{name}", params={"window": "bone"})
    marks = client.get(f"/api/slice/{name}", params={"window": "lung", "overlay": "1"})
    assert len({etag, bone.headers["etag"], marks.headers["etag"]}) == 3
    assert len(cache) == 3
    assert not np.array_equal(_decoded(bone.content), _decoded(first.content))
    assert _decoded(marks.content).ndim == 3
    # crops too; JSON answers are never stored by the browser
    crop = client.get("/api/crop/0")
    assert crop.status_code == 200 and "etag" in crop.headers and len(cache) == 4
    assert client.get("/api/meta").headers["cache-control"] == "no-store"
    assert client.get("/api/slice/000001_01_01_999.png").headers["cache-control"] == "no-store"


def test_caches_off_read_every_time(tmp_path, sample_root):
    explorer = open_explorer(sample_root)
    explorer.reader = SliceReader(sample_root, cache_slices=0, cache_mib=0)
    client = TestClient(explorer.app())
    a = client.get("/api/slice/000001_01_01_010.png")
    b = client.get("/api/slice/000001_01_01_010.png")
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert len(explorer.reader.responses) == 0 and len(explorer.reader._cache) == 0


def test_unknown_slice_is_404_whatever_the_window(sample_root):
    client = TestClient(open_explorer(sample_root).app())
    assert client.get("/api/slice/000001_01_01_999.png?window=sunset").status_code == 404
    r = client.get("/api/slice/000001_01_01_010.png?window=sunset")
    assert r.status_code == 400 and r.json()["parameter"] == "window"


class _SlowSource:
    """A slice source whose reads wait until released (to hold a request in the pool)."""

    def __init__(self, root) -> None:
        from deeplesion.data.sources import PngSource

        self.png = PngSource(root)
        self.started = threading.Event()
        self.release = threading.Event()

    def has_slice(self, folder, number) -> bool:
        return self.png.has_slice(folder, number)

    def read_raw(self, folder, number):
        self.started.set()
        assert self.release.wait(20), "never released"
        return self.png.read_raw(folder, number)


def test_image_work_does_not_block_the_event_loop(sample_root):
    """While a slice is being read, the page's JSON requests are still answered."""
    import httpx

    source = _SlowSource(sample_root)
    explorer = open_explorer(sample_root, source=source)
    app = explorer.app()

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            slow = asyncio.create_task(http.get("/api/slice/000001_01_01_010.png"))
            for _ in range(2000):  # at most 20 s
                if source.started.is_set() or slow.done():
                    break
                await asyncio.sleep(0.01)
            assert source.started.is_set(), "the slice was never read"
            meta = await asyncio.wait_for(http.get("/api/meta"), timeout=10)
            assert not slow.done()  # the slice is still being read
            source.release.set()
            return meta.status_code, (await slow).status_code

    try:
        assert asyncio.run(scenario()) == (200, 200)
    finally:
        source.release.set()


def test_png_level_of_the_app(sample_root):
    """Level 0 (a page on this machine) and level 1 (across a network): same pixels."""
    name = "/api/slice/000001_01_01_010.png?window=lung"
    stored = TestClient(open_explorer(sample_root).app(png_level=0)).get(name).content
    packed = TestClient(open_explorer(sample_root).app(png_level=1)).get(name).content
    assert len(stored) > 1.5 * len(packed)
    np.testing.assert_array_equal(_decoded(stored), _decoded(packed))
