"""Download and extraction speed: the project's way versus the plain standard-library way.

Serves generated files from a loopback HTTP server (with Range support) and compares
``download_all`` (resumable, MD5-verified, N at a time) with sequential ``urlretrieve``
(what the official script does, no checksum) and ``urlretrieve`` + MD5; then compares
``extract_all`` (CRC-checked, atomic, zip-slip safe) with ``ZipFile.extractall``.

    PYTHONPATH=src python benchmarks/download.py [--files 4] [--mb 16] [--members 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from deeplesion.fetch.download import download_all
from deeplesion.fetch.extract import extract_all
from deeplesion.fetch.manifest import ManifestEntry


def serve(files: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = files[self.path.lstrip("/")]
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(m.group(1)) if m else 0
            self.send_response(206 if m else 200)
            if m:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            view = memoryview(body)[start:]
            for i in range(0, len(view), 1 << 20):
                self.wfile.write(view[i : i + (1 << 20)])

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mb", type=int, default=16)
    ap.add_argument("--members", type=int, default=2000)
    args = ap.parse_args()
    files = {f"Images_png_{i:02d}.zip": os.urandom(args.mb << 20) for i in range(1, args.files + 1)}
    httpd = serve(files)
    port = httpd.server_address[1]
    entries = [
        ManifestEntry(n, f"http://127.0.0.1:{port}/{n}", hashlib.md5(d).hexdigest())
        for n, d in files.items()
    ]
    total_mb = args.files * args.mb
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def baseline(check: bool) -> None:
            out = tmp / "baseline"
            out.mkdir(exist_ok=True)
            for e in entries:
                urllib.request.urlretrieve(e.url, out / e.file)
                if check:
                    hashlib.md5((out / e.file).read_bytes()).hexdigest()
            shutil.rmtree(out)

        def ours(parallel: int) -> None:
            out = tmp / f"ours{parallel}"
            assert download_all(entries, out, parallel=parallel).ok
            shutil.rmtree(out)

        t_plain = timed(lambda: baseline(False))
        t_md5 = timed(lambda: baseline(True))
        t_ours1 = timed(lambda: ours(1))
        t_ours4 = timed(lambda: ours(4))
        print(f"download {args.files} x {args.mb} MB over loopback:")
        print(f"  urlretrieve, no checksum     {t_plain:6.2f} s  {total_mb / t_plain:7.1f} MB/s")
        print(f"  urlretrieve + md5            {t_md5:6.2f} s  {total_mb / t_md5:7.1f} MB/s")
        print(
            f"  download_all parallel=1      {t_ours1:6.2f} s  {total_mb / t_ours1:7.1f} MB/s"
            f"  ratio vs urlretrieve+md5 {t_md5 / t_ours1:.2f}x"
        )
        print(
            f"  download_all parallel=4      {t_ours4:6.2f} s  {total_mb / t_ours4:7.1f} MB/s"
            f"  ratio vs urlretrieve+md5 {t_md5 / t_ours4:.2f}x"
        )
        httpd.shutdown()

        archive = tmp / "Images_png_01.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(args.members):
                zf.writestr(
                    f"Images_png/{i // 100:06d}_01_01/{i % 100 + 1:03d}.png", os.urandom(20_000)
                )
        t_plain = timed(lambda: zipfile.ZipFile(archive).extractall(tmp / "plain"))
        t_ours = timed(lambda: extract_all([archive], tmp / "ours"))
        t_rerun = timed(lambda: extract_all([archive], tmp / "ours"))
        print(f"extract {args.members} members of 20 KB:")
        print(f"  ZipFile.extractall           {t_plain:6.2f} s")
        print(f"  extract_all                  {t_ours:6.2f} s  ratio {t_plain / t_ours:.2f}x")
        print(f"  extract_all rerun (skips)    {t_rerun:6.2f} s  ratio {t_plain / t_rerun:.2f}x")


if __name__ == "__main__":
    main()
