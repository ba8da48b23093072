"""The explorer page in a real browser: Playwright driving Debian's Chromium.

The server runs in a thread on 127.0.0.1 (a free port). Screenshots go to the test's
temporary folder. Under CI a missing browser fails these tests instead of skipping them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(message: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - playwright is in the [test] extra
    sync_playwright = None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if sync_playwright is None:
        _missing("playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 950},
        )
        yield context
        context.close()


class LiveServer:
    """uvicorn serving an explorer app in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _serve(root: Path, csv: Path | None = None):
    from deeplesion.explorer.server import open_explorer

    server = LiveServer(open_explorer(root, csv_path=csv).app())
    return server


@pytest.fixture(scope="module")
def sample_server(sample_root):
    server = _serve(sample_root)
    yield server
    server.stop()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.errors = []  # console errors and uncaught exceptions
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    page.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready]", state="attached")


def _pixels(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def _coloured(rgb: np.ndarray) -> int:
    """Pixels clearly not grey (the marks: red, blue, yellow)."""
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum())


def _save(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    target = os.environ.get("DEEPLESION_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def _types(csv: Path) -> pd.Series:
    names = {-1: "unlabelled", 4: "liver", 5: "lung", 6: "kidney"}
    return pd.read_csv(csv)["Coarse_lesion_type"].map(names)


def test_list_filters_by_type(page, sample_server, sample_root, tmp_path):
    _open(page, sample_server.url)
    expect(page.locator("#count")).to_have_text("21")
    rows_before = page.locator("#lesions tbody tr").count()
    page.select_option("select[name=type]", "liver")
    liver = int((_types(sample_root / "DL_info.csv") == "liver").sum())
    expect(page.locator("#count")).to_have_text(str(liver))
    assert "type=liver" in page.url
    assert page.locator("#lesions tbody tr").count() == liver < rows_before
    _save(page, tmp_path, "lesion-list")
    # the filter lives in the URL: a fresh load of it shows the same count
    _open(page, page.url)
    expect(page.locator("#count")).to_have_text(str(liver))
    assert page.errors == []


def test_lesion_view_slices_windows_overlay(page, sample_server, sample_root, tmp_path):
    _open(page, sample_server.url)
    page.locator("#lesions tbody tr[data-row='1'] td").first.click()
    image = page.locator("#slice")
    expect(image).to_have_attribute("data-loaded", re.compile(r"000001_01_01_032\.png"))
    expect(page.locator("#slicelabel")).to_contain_text("slice 32 (key)")
    _save(page, tmp_path, "lesion-view")
    key = _pixels(image)
    assert _coloured(key) > 50  # RECIST axes and box drawn

    page.keyboard.press("ArrowDown")
    expect(page.locator("#slicelabel")).to_contain_text("slice 33")
    expect(page.locator("#slicelabel")).to_contain_text("+5.0 mm")
    expect(image).to_have_attribute("data-loaded", re.compile(r"000001_01_01_033\.png"))
    assert np.abs(_pixels(image) - key).sum() > 0
    page.keyboard.press("ArrowUp")
    expect(image).to_have_attribute("data-loaded", re.compile(r"_032\.png"))

    page.click("button[data-window='lung']")
    expect(image).to_have_attribute("data-loaded", re.compile(r"window=lung"))
    lung = _pixels(image)
    assert np.abs(lung - key).sum() > 1000

    # the HU under the pointer is the raw value - 32768 of that pixel
    box = image.bounding_box()
    col, row = 200, 300  # 0-based pixel of the 512 x 512 slice
    page.mouse.move(
        box["x"] + (col + 0.5) * box["width"] / 512, box["y"] + (row + 0.5) * box["height"] / 512
    )
    raw = np.asarray(Image.open(sample_root / "Images_png/000001_01_01/032.png"))
    expect(page.locator("#hulabel")).to_have_text(
        f"x {col + 1}, y {row + 1} (DL_info px): {int(raw[row, col]) - 32768} HU"
    )
    # dragging sets a free window (level/width), shown in the label and used by the image
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2 + 30, steps=4)
    page.mouse.up()
    expect(page.locator("#wllabel")).not_to_contain_text("width 1500")
    expect(image).to_have_attribute("data-loaded", re.compile(r"window=-?\d+%2C-?\d+"))
    page.click("button[data-window='lung']")
    expect(image).to_have_attribute("data-loaded", re.compile(r"window=lung"))
    # zoom: the image grows on screen
    width = image.bounding_box()["width"]
    page.click("#zoomin")
    assert image.bounding_box()["width"] > width * 1.2
    page.click("#zoomout")

    page.click("#overlay")
    expect(image).to_have_attribute("data-loaded", re.compile(r"overlay=0"))
    plain = _pixels(image)
    assert _coloured(plain) == 0
    _save(page, tmp_path, "lesion-view-lung-no-marks")
    assert page.errors == []


def test_patient_view_lists_studies(page, sample_server, sample_root, tmp_path):
    _open(page, sample_server.url + "#/lesion/1")
    page.click("#patient-link")
    expect(page.locator("#studies .study")).to_have_count(3)
    frame = pd.read_csv(sample_root / "DL_info.csv")
    studies = sorted(frame.loc[frame["Patient_index"] == 1, "Study_index"].unique())
    assert [
        int(s)
        for s in page.locator("#studies .study").evaluate_all(
            "els => els.map(e => e.dataset.study)"
        )
    ] == studies
    expect(page.locator("#responses")).to_be_visible()
    tiles = page.locator("#tracks img")
    expect(tiles.first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert all(w > 0 for w in tiles.evaluate_all("els => els.map(e => e.naturalWidth)"))
    _save(page, tmp_path, "patient-view")
    assert page.errors == []


def test_body_map_click_opens_the_lesion(page, sample_server, tmp_path):
    _open(page, sample_server.url + "#/map?split=val")
    expect(page.locator("#map-count")).to_have_text("8")
    _save(page, tmp_path, "body-map")
    # lesion row 14 (bone): click exactly where the map draws it
    import httpx

    points = httpx.get(sample_server.url + "api/bodymap?split=val").json()["points"]
    row, x, z, _ = next(p for p in points if p[0] == 14)
    box = page.locator("#bodymap").bounding_box()
    pad, width, height = 20, 440, 760
    page.mouse.click(
        box["x"] + (pad + x * (width - 2 * pad)) * box["width"] / width,
        box["y"] + (pad + z * (height - 2 * pad)) * box["height"] / height,
    )
    expect(page.locator("#facts")).to_contain_text("000005_01_01_008.png")
    assert page.url.endswith(f"#/lesion/{row}")
    assert page.errors == []


def test_real_slices(page, real_liver_dir, tmp_path):
    csv = real_liver_dir / "NNProject_liver_image_dataset_info.csv"
    server = _serve(real_liver_dir, csv)
    try:
        _open(page, server.url)
        expect(page.locator("#count")).to_have_text(str(len(pd.read_csv(csv))))
        page.select_option("select[name=type]", "lung")
        expect(page.locator("#count")).to_have_text("0")
        page.select_option("select[name=type]", "liver")
        expect(page.locator("#count")).to_have_text(str(len(pd.read_csv(csv))))
        page.locator("#lesions tbody tr[data-row='0'] td").first.click()
        image = page.locator("#slice")
        expect(image).to_have_attribute("data-loaded", re.compile(r"002648_01_01_061\.png"))
        expect(page.locator("#similar .tile")).to_have_count(8)
        expect(page.locator("#similar .loading")).to_have_count(0)  # every crop has arrived
        assert page.locator("#similar .noimg").count() == 0
        _save(page, tmp_path, "real-lesion-view")
        key = _pixels(image)
        assert _coloured(key) > 20
        page.click("button[data-window='bone']")
        expect(image).to_have_attribute("data-loaded", re.compile(r"window=bone"))
        assert np.abs(_pixels(image) - key).sum() > 1000
        # only key slices are in this folder: the next slice is shown as missing
        page.keyboard.press("ArrowDown")
        expect(page.locator("#missing")).to_contain_text("002648_01_01_062.png is missing")
        expect(image).to_be_hidden()
        assert page.errors == []
    finally:
        server.stop()


def test_table_without_images(page, tmp_path, real_val_csv):
    root = tmp_path / "no-images"
    root.mkdir()
    server = _serve(root, real_val_csv)
    try:
        _open(page, server.url)
        expect(page.locator("#notice")).to_contain_text("Images are missing")
        expect(page.locator("#count")).to_have_text("4,889")
        page.locator("#lesions tbody tr").first.locator("td").first.click()
        expect(page.locator("#missing")).to_contain_text("images are missing")
        _save(page, tmp_path, "no-images")
        assert page.errors == []
    finally:
        server.stop()


def test_unreadable_or_missing_crops_say_so(page, tmp_path, sample_root):
    """A crop that cannot be served is a labelled tile, never a black box (it was one:
    the broken image showed the tile's black background)."""
    from deeplesion.data.annotations import load_lesions

    root = tmp_path / "root"
    shutil.copytree(sample_root, root, ignore=shutil.ignore_patterns("sample_masks"))
    from deeplesion.explorer.server import open_explorer

    lesions = load_lesions(root / "DL_info.csv").lesions
    explorer = open_explorer(root)
    shown = [n.lesion for n in explorer.catalog.similar(3, 8)]
    names = [l.file_name for l in shown]
    broken, gone, absent = [l for l in shown if names.count(l.file_name) == 1][:3]
    assert lesions[3].patient_index not in (broken.patient_index, gone.patient_index)
    (root / broken.png_relpath).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 20)
    (root / absent.png_relpath).unlink()  # not under ROOT from the start
    slow = next(
        l for l in shown if l not in (broken, gone, absent) and names.count(l.file_name) == 1
    )
    held = []  # the slow crop's request, answered only once the tile was seen waiting
    server = LiveServer(explorer.app())
    try:
        _open(page, server.url)
        # the strip is made (image flags included) before the second file goes away
        page.route(
            re.compile(rf"/api/crop/{gone.row_index}\b"),
            lambda route: route.fulfill(status=404, body="{}", content_type="application/json"),
        )
        page.route(re.compile(rf"/api/crop/{slow.row_index}\b"), lambda route: held.append(route))
        page.goto(f"{server.url}#/lesion/3")
        strip = page.locator("#similar")
        expect(strip.locator(".tile")).to_have_count(8)
        waiting = strip.locator(f".tile[title='{slow.file_name}'] .loading")
        expect(waiting).to_have_text("loading…")  # not a black box while it loads
        expect(waiting).to_be_visible()
        page.wait_for_function("() => true")  # let the route callback run
        assert len(held) == 1
        held[0].continue_()
        expect(waiting).to_have_count(0)
        bad = strip.locator(f".tile[title='{broken.file_name}']")
        expect(bad.locator(".noimg")).to_have_text("image unreadable")
        for missing in (gone, absent):
            expect(strip.locator(f".tile[title='{missing.file_name}'] .noimg")).to_have_text(
                "image missing"
            )
        page.wait_for_function(
            "() => [...document.querySelectorAll('#similar img')].every((e) => e.complete)"
        )
        broken_imgs = strip.locator("img").evaluate_all(
            "els => els.filter((e) => e.complete && e.naturalWidth === 0).length"
        )
        assert broken_imgs == 0
        _save(page, tmp_path, "similar-strip-unreadable")
        # the slice viewer says so too, and shows no other slice in its place
        page.goto(f"{server.url}#/lesion/{broken.row_index}")
        expect(page.locator("#missing")).to_contain_text("could not be read")
        expect(page.locator("#slice")).to_be_hidden()
        assert all("Failed to load resource" in e for e in page.errors), page.errors
    finally:
        server.stop()
