"""Screenshots of the lesion explorer on the synthetic sample: ``python explorer.py OUT``.

For the explorer page: the lesion list, one lesion, and the body map (of the real val split
when DEEPLESION_REAL_DATA has it). Needs the ``[serve]`` extra, Playwright and a Chromium
(``apt-get install chromium``); without them the pictures only say so.
"""

import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from deeplesion.data.sample import write_sample
from deeplesion.explorer.server import open_explorer

out = Path(sys.argv[1] if len(sys.argv) > 1 else "explorer-shots")
out.mkdir(parents=True, exist_ok=True)
root = write_sample(out / "sample", seed=0)
real = Path(os.environ.get("DEEPLESION_REAL_DATA", "/nonexistent"))
val_csv = real / "fsafe__Capstone" / "annotation_info" / "DL_info_val.csv"
app = open_explorer(root).app()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]


def serve(app, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


server = serve(app, port)
# The body map of the real val split (4,889 lesions, no images needed) when it is there.
map_port, map_server = port, None
if val_csv.is_file():
    table_only = out / "real-val"
    table_only.mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        map_port = s.getsockname()[1]
    map_server = serve(open_explorer(table_only, csv_path=val_csv).app(), map_port)

chromium = shutil.which("chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
views = {
    "explorer_lesions": "#/lesions",
    "explorer_lesion": "#/lesion/3",
    "explorer_bodymap": "#/map",
}
# What each view shows once it is drawn (a hash change is no page load: "networkidle" alone
# let the lesion view be taken while the list was still on screen).
drawn = {
    "explorer_lesions": "() => document.querySelectorAll('#lesions tbody tr').length > 0",
    "explorer_lesion": "() => document.querySelector('#slice[data-loaded]') !== null"
    " && document.querySelectorAll('#similar .tile').length > 0"
    " && document.querySelector('#similar .loading') === null",
    "explorer_bodymap": "() => document.querySelector('#map-count') !== null",
}
if sync_playwright is None or chromium is None:
    from PIL import Image, ImageDraw  # a placeholder that says why, so the site still builds

    for name in views:
        image = Image.new("RGB", (600, 80), "white")
        ImageDraw.Draw(image).text(
            (10, 30), "screenshot needs Playwright and Chromium", fill="black"
        )
        image.save(out / f"{name}.png")
else:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        for name, view in views.items():
            at = map_port if name == "explorer_bodymap" else port
            page.goto(f"http://127.0.0.1:{at}/{view}")
            page.wait_for_function(drawn[name], timeout=60_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(300)
            page.screenshot(path=out / f"{name}.png", full_page=name == "explorer_bodymap")
        browser.close()
server.should_exit = True
if map_server is not None:
    map_server.should_exit = True
