"""Bad input of every kind ends in a clear error or the right result, with nothing lost.

Grouped by the sections of the bad-input campaign: data safety (writers, locks, downloads,
archives), bad images, annotations, partial roots, the test run itself. Every bad input is
built here in ``tmp_path``; nothing large is committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.data.io import LOCK_NAME, check_new_output, output_lock
from deeplesion.errors import OutputExistsError, OutputLockedError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def no_traceback(result) -> None:
    """A CLI result ended without an uncaught exception (exit 0 or a clean exit 1)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output,
        result.exception,
    )
    assert "Traceback" not in result.output


# =========================================================================== data safety
# --------------------------------------------------------------- one rule for writers


def test_check_new_output_refuses_an_existing_file_unless_overwrite(tmp_path):
    target = tmp_path / "out.json"
    assert check_new_output(target) == target  # absent: fine
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_new_output(target)
    assert check_new_output(target, overwrite=True) == target
    assert target.read_text() == "mine"  # the check itself never touches the file


@pytest.mark.parametrize(
    "command",
    [
        ["export-coco", "{csv}", "--split", "val", "--out", "{out}"],
        ["bodymap", "{csv}", "--out", "{out}.png"],
        ["gallery", "{root}", "--out", "{out}.png", "--per-type", "1"],
        ["report", "{csv}", "--out", "{out}"],
        ["growth", "{csv}", "--out", "{out}"],
    ],
    ids=lambda c: c[0],
)
def test_writers_keep_an_existing_output_unless_overwrite(sample_root, tmp_path, command):
    out = tmp_path / "result"
    if command[0] == "report":
        out.mkdir()
        existing = out / "report.html"
    elif command[0] == "growth":
        out.mkdir()
        existing = out / "tracks.csv"
    else:
        existing = Path(str(out) + (".png" if command[0] in ("bodymap", "gallery") else ""))
    existing.write_bytes(b"the user's own file")
    args = [c.format(csv=sample_root / "DL_info.csv", root=sample_root, out=out) for c in command]
    refused = run_cli(*args)
    no_traceback(refused)
    assert refused.exit_code == 1
    assert "exists; pass --overwrite" in refused.output
    assert existing.read_bytes() == b"the user's own file"
    replaced = run_cli(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert existing.read_bytes() != b"the user's own file"


# --------------------------------------------------------------- one run per output folder


def test_output_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with output_lock(tmp_path, command="first") as lock:
        assert lock == tmp_path / LOCK_NAME
        assert str(os.getpid()) in lock.read_text()
        with (
            pytest.raises(OutputLockedError, match="first") as info,
            output_lock(tmp_path, command="second"),
        ):
            pass
        assert str(lock) in str(info.value)  # says which file to delete if stale
    assert not (tmp_path / LOCK_NAME).exists()


def test_output_lock_takes_over_a_stale_lock(tmp_path):
    # a lock left by a process that no longer exists on this host
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(child.stdout)
    import socket

    (tmp_path / LOCK_NAME).write_text(
        f'{{"pid": {dead_pid}, "host": "{socket.gethostname()}", "command": "x", "started": ""}}'
    )
    with output_lock(tmp_path, command="new"):
        assert '"command": "new"' in (tmp_path / LOCK_NAME).read_text()


def test_output_lock_is_exclusive_between_threads(tmp_path):
    """Many contenders at once: exactly one gets the lock (O_EXCL, no check-then-create)."""
    won, lost = [], []
    barrier = threading.Barrier(8)
    hold = threading.Event()

    def contend() -> None:
        barrier.wait()
        try:
            with output_lock(tmp_path):
                won.append(1)
                hold.wait(2)
        except OutputLockedError:
            lost.append(1)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    while len(won) + len(lost) < 8 and not (won and len(lost) == 7):
        threading.Event().wait(0.01)
    hold.set()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


@pytest.mark.parametrize("command", ["render", "nifti", "extract", "download", "store"])
def test_a_second_run_into_a_locked_folder_stops_and_says_so(sample_root, tmp_path, command):
    out = tmp_path / "out"
    if command == "render":
        args = ["render", sample_root, "--out", out]
    elif command in ("nifti", "store"):
        args = [command, sample_root, out]
    elif command == "extract":
        import zipfile

        with zipfile.ZipFile(tmp_path / "Images_png_01.zip", "w") as zf:
            zf.writestr("Images_png/000001_01_01/001.png", b"x")
        args = ["extract", tmp_path / "Images_png_01.zip", out]
    else:
        manifest = tmp_path / "manifest.tsv"
        manifest.write_text("file\turl\tmd5\nImages_png_01.zip\thttp://127.0.0.1:9/x\t\n")
        args = ["download", out, "--manifest", manifest, "--retries", "0"]
    with output_lock(out, command="the first run"):
        result = run_cli(*args)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
    no_traceback(result)
    assert result.exit_code == 1
    assert "being written by another run" in result.output
    assert "the first run" in result.output


# =========================================================================== test run


def test_a_run_that_skips_real_data_tests_ends_with_one_loud_line(tmp_path):
    env = dict(os.environ, DEEPLESION_REAL_DATA=str(tmp_path / "absent"), CI="")
    env["PYTHONPATH"] = str(REPO / "src")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_slices.py",
            "-k",
            "real",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "skipped" in run.stdout
    last = run.stdout.strip().splitlines()
    loud = [line for line in last if "REAL-DATA TESTS SKIPPED" in line]
    assert len(loud) == 1, run.stdout
    assert "DEEPLESION_REAL_DATA" in loud[0] and str(tmp_path / "absent") in loud[0]


# --------------------------------------------------------------- hostile archives


def _zip_members(path: Path, members, compression=None) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=compression or zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_zip_bomb_is_refused_before_it_is_written(tmp_path):
    from deeplesion.fetch.extract import ExtractLimits, extract_all

    zeros = b"\0" * (8 << 20)  # 8 MiB of zeros deflate to about 8 KB: ratio ~1000:1
    bomb = _zip_members(tmp_path / "Images_png_01.zip", [("Images_png/a/001.png", zeros)])
    assert bomb.stat().st_size < 100_000
    root = tmp_path / "root"
    report = extract_all([bomb], root)
    assert not (root / "Images_png" / "a" / "001.png").exists()
    assert len(report.problems) == 1 and "zip bomb" in report.problems[0].reason
    # the declared size alone: a limit below the member's size refuses it too
    small = extract_all(
        [bomb], root, limits=ExtractLimits(max_member_bytes=1 << 20, max_ratio=None)
    )
    assert "declares 8,388,608 bytes" in small.problems[0].reason
    # the option that overrides the limits lets it through
    allowed = extract_all([bomb], root, limits=ExtractLimits(max_member_bytes=None, max_ratio=None))
    assert allowed.ok and (root / "Images_png" / "a" / "001.png").stat().st_size == len(zeros)


def test_cli_extract_names_the_option_that_overrides_the_limit(tmp_path):
    bomb = _zip_members(tmp_path / "Images_png_01.zip", [("a/001.png", b"\0" * (4 << 20))])
    refused = run_cli("extract", bomb, tmp_path / "root")
    no_traceback(refused)
    assert refused.exit_code == 1 and "--max-ratio" in refused.output
    allowed = run_cli("extract", bomb, tmp_path / "root", "--max-ratio", "100000")
    assert allowed.exit_code == 0, allowed.output


def test_member_larger_than_it_declares_is_refused(tmp_path):
    import struct
    import zipfile

    from deeplesion.fetch.extract import extract_all

    data = os.urandom(5000)
    path = _zip_members(
        tmp_path / "Images_png_01.zip", [("Images_png/a/001.png", data)], zipfile.ZIP_STORED
    )
    raw = bytearray(path.read_bytes())
    # lower the uncompressed size in the central directory entry (signature PK\1\2, +24)
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, 1000)
    path.write_bytes(bytes(raw))
    report = extract_all([path], tmp_path / "root")
    assert len(report.problems) == 1
    assert not (tmp_path / "root" / "Images_png" / "a" / "001.png").exists()
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file() and p.name != LOCK_NAME]


def test_archive_needing_more_space_than_free_is_not_started(tmp_path, monkeypatch):
    import shutil as shutil_mod

    from deeplesion.fetch import extract

    path = _zip_members(tmp_path / "Images_png_01.zip", [("a/001.png", os.urandom(4096))])
    real = shutil_mod.disk_usage
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    report = extract.extract_all([path], tmp_path / "root")
    assert "GB free" in report.archives[0].error
    assert not (tmp_path / "root" / "Images_png").exists()


def test_duplicate_and_colliding_members_keep_the_first_and_are_reported(tmp_path):
    import warnings

    from deeplesion.fetch.extract import extract_all

    first, second, third = os.urandom(300), os.urandom(300), os.urandom(300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        path = _zip_members(
            tmp_path / "Images_png_01.zip",
            [
                ("Images_png/a/001.png", first),
                ("Images_png/a/001.png", second),  # the same name twice
                ("a/001.png", third),  # lands on the same file
            ],
        )
    report = extract_all([path], tmp_path / "root")
    assert (tmp_path / "root" / "Images_png" / "a" / "001.png").read_bytes() == first
    reasons = [p.reason for p in report.problems]
    assert len(reasons) == 2
    assert reasons[0].startswith("duplicate member name")
    assert "maps to the same file as Images_png_01.zip: Images_png/a/001.png" in reasons[1]


def test_existing_file_with_other_contents_is_kept_unless_overwrite(tmp_path):
    path = _zip_members(tmp_path / "Images_png_01.zip", [("a/001.png", b"from the zip")])
    target = tmp_path / "root" / "Images_png" / "a" / "001.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the user's file")
    kept = run_cli("extract", path, tmp_path / "root")
    assert kept.exit_code == 1 and "other contents" in kept.output
    assert target.read_bytes() == b"the user's file"
    replaced = run_cli("extract", path, tmp_path / "root", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert target.read_bytes() == b"from the zip"


# --------------------------------------------------------------- a faulty HTTP server


class FaultyServer:
    """127.0.0.1 server whose answers are scripted per request: ``script(n, start)`` for
    the n-th request (0-based) with its Range start (None without Range) returns
    (status, headers, body)."""

    def __init__(self, script) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script, self.ranges = script, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                import re

                rng = self.headers.get("Range")
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                outer.ranges.append(rng)
                status, headers, body = outer.script(
                    len(outer.ranges) - 1, int(m.group(1)) if m else None
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Images_png_01.zip"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _honest_range(data: bytes, start: int):
    if start >= len(data):
        return 416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": 0}, b""
    return (
        206,
        {
            "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
            "Content-Length": len(data) - start,
        },
        data[start:],
    )


def _fetch(server, tmp_path):
    from deeplesion.fetch.download import download_all
    from deeplesion.fetch.manifest import ManifestEntry

    entry = ManifestEntry("Images_png_01.zip", server.url, None)  # no MD5
    return download_all([entry], tmp_path / "dest", retries=3, backoff_s=0, timeout_s=5).results[0]


DATA = os.urandom(300_000)


def test_body_cut_short_without_content_length_is_not_renamed(tmp_path):
    def script(n, start):
        if start is None:  # no length, and the connection closes after a third
            return 200, {}, DATA[:100_000]
        return _honest_range(DATA, start)

    with FaultyServer(script) as server:
        result = _fetch(server, tmp_path)
    assert result.status == "downloaded" and not result.verified
    assert (tmp_path / "dest" / "Images_png_01.zip").read_bytes() == DATA
    assert server.ranges[1] is not None  # the rest was asked for with a range


def test_body_cut_short_from_a_server_without_ranges_never_gets_the_final_name(tmp_path):
    with FaultyServer(lambda n, start: (200, {}, DATA[:100_000])) as server:
        result = _fetch(server, tmp_path)
    assert result.status == "failed"
    assert not (tmp_path / "dest" / "Images_png_01.zip").exists()


def test_content_length_shorter_than_the_data_is_unverified_and_a_rerun_completes_it(tmp_path):
    def script(n, start):
        if start is None:  # claims 200,000 bytes of a 300,000-byte file
            return 200, {"Content-Length": 200_000}, DATA
        return _honest_range(DATA, start)

    with FaultyServer(script) as server:
        first = _fetch(server, tmp_path)
        assert first.status == "downloaded" and not first.verified
        again = _fetch(server, tmp_path)  # checks it again: the server's total is larger
        assert again.status == "downloaded"
        third = _fetch(server, tmp_path)
    assert (tmp_path / "dest" / "Images_png_01.zip").read_bytes() == DATA
    assert third.status == "present" and not third.verified


def test_206_starting_elsewhere_than_its_content_range_is_caught(tmp_path):
    def script(n, start):
        if n == 0:  # cut after 100,000 bytes
            return 200, {"Content-Length": len(DATA)}, DATA[:100_000]
        if start is not None and n == 1:  # says "from start", sends bytes from 0
            body = DATA[: len(DATA) - start]
            return (
                206,
                {
                    "Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}",
                    "Content-Length": len(body),
                },
                body,
            )
        if start is not None:
            return _honest_range(DATA, start)
        return 200, {"Content-Length": len(DATA)}, DATA

    with FaultyServer(script) as server:
        result = _fetch(server, tmp_path)
    final = tmp_path / "dest" / "Images_png_01.zip"
    assert result.status == "downloaded"
    assert final.read_bytes() == DATA  # never the shifted bytes


def test_unasked_content_encoding_is_refused(tmp_path):
    import gzip

    body = gzip.compress(DATA)
    with FaultyServer(
        lambda n, start: (200, {"Content-Encoding": "gzip", "Content-Length": len(body)}, body)
    ) as server:
        result = _fetch(server, tmp_path)
    assert result.status == "failed" and "Content-Encoding" in result.error
    assert not (tmp_path / "dest" / "Images_png_01.zip").exists()


def test_cli_download_reports_unverified_files(tmp_path):
    with FaultyServer(lambda n, start: (200, {"Content-Length": len(DATA)}, DATA)) as server:
        manifest = tmp_path / "m.tsv"
        manifest.write_text(f"file\turl\tmd5\nImages_png_01.zip\t{server.url}\t\n")
        result = run_cli("download", tmp_path / "dest", "--manifest", manifest)
    assert result.exit_code == 0, result.output
    assert "unverified" in result.output and "Images_png_01.zip" in result.output


# =========================================================================== bad images


def _png_with_header(path: Path, rows: int, cols: int, depth: int = 16, color: int = 0) -> Path:
    """A PNG whose header claims ``rows`` x ``cols`` (its data is a few bytes only)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", cols, rows, depth, color, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _write_slice(path: Path, rows: int, cols: int, value: int = 0) -> Path:
    import numpy as np

    from deeplesion.data.slices import write_hu_png

    write_hu_png(path, np.full((rows, cols), value, dtype=np.int16))
    return path


def test_huge_header_is_refused_before_decoding(tmp_path):
    from deeplesion.data.slices import read_hu
    from deeplesion.errors import ImageReadError

    bomb = _png_with_header(tmp_path / "001.png", 12000, 12000)
    with pytest.raises(ImageReadError, match=r"12000x12000.*not decoded") as info:
        read_hu(bomb)
    assert str(bomb) in str(info.value)
    with pytest.raises(ImageReadError, match=r"12000x12000.*DL_info says 512x512"):
        read_hu(bomb, (512, 512))


def test_wrong_size_and_depth_name_the_file_and_both_sizes(tmp_path):
    from deeplesion.data.slices import read_hu, read_png_header
    from deeplesion.errors import ImageReadError

    small = _write_slice(tmp_path / "small.png", 256, 256)
    assert read_hu(small).shape == (256, 256)  # fine when no size is expected
    with pytest.raises(ImageReadError) as info:
        read_hu(small, (512, 512))
    assert str(small) in str(info.value) and "256x256" in str(info.value)
    assert "512x512" in str(info.value)
    eight = tmp_path / "eight.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(eight)
    assert read_png_header(eight).bit_depth == 8
    with pytest.raises(ImageReadError, match="not a 16-bit grayscale PNG \\(8-bit grayscale\\)"):
        read_hu(eight)


def _partial_root(sample_root: Path, tmp_path: Path, folders: tuple[str, ...]) -> Path:
    """A root with the full DL_info.csv but only some series folders."""
    import shutil

    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    shutil.copy(sample_root / "DL_info.csv", root / "DL_info.csv")
    for folder in folders:
        shutil.copytree(sample_root / "Images_png" / folder, root / "Images_png" / folder)
    return root


def _key_slices(root: Path, folder: str) -> list[str]:
    import csv

    with open(root / "DL_info.csv", newline="") as fh:
        return sorted({r["File_name"] for r in csv.DictReader(fh) if r["File_name"][:12] == folder})


@pytest.mark.parametrize("bad", ["small", "bomb"])
def test_commands_report_and_skip_a_bad_key_slice(sample_root, tmp_path, bad):
    root = _partial_root(sample_root, tmp_path, ("000001_01_01",))
    names = _key_slices(root, "000001_01_01")
    victim = names[0]
    path = root / "Images_png" / "000001_01_01" / victim[-7:]
    path.unlink()
    if bad == "small":
        _write_slice(path, 256, 256)
    else:
        _png_with_header(path, 12000, 12000)
    out = tmp_path / "out"
    rendered = run_cli("render", root, "--out", out / "render")
    no_traceback(rendered)
    assert rendered.exit_code == 1 and f"failed {victim}" in rendered.output
    assert sorted(p.name for p in (out / "render").glob("*.png")) == names[1:]
    gallery = run_cli("gallery", root, "--out", out / "g.png", "--per-type", "9")
    no_traceback(gallery)
    assert gallery.exit_code == 0 and "left out" in gallery.output
    report = run_cli("report", root / "DL_info.csv", "--root", root, "--out", out / "report")
    no_traceback(report)
    assert report.exit_code == 0, report.output
    volumes = run_cli("volumes", root, "--check")
    no_traceback(volumes)
    assert victim[-7:-4].lstrip("0") in volumes.output and "unreadable" in volumes.output
    nifti = run_cli("nifti", root, out / "nifti")
    no_traceback(nifti)
    assert "1 unreadable" in nifti.output
    validated = run_cli("validate", root / "DL_info.csv", "--images", root)
    no_traceback(validated)
    assert validated.exit_code == 1 and str(path) in validated.output
    similar = run_cli("similar", root / "DL_info.csv", names[1], "--root", root)
    no_traceback(similar)
    assert similar.exit_code == 0, similar.output


def test_gallery_skips_an_unreadable_context_slice_and_says_so(sample_root, tmp_path):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.review.crops import context_crop, missing_tile

    root = _partial_root(sample_root, tmp_path, ("000001_01_01",))
    lesion = next(
        l for l in load_lesions(root / "DL_info.csv") if l.file_name.startswith("000001_01_01")
    )
    # the neighbour 2 mm toward the head (interval 5 mm: blended from key-1 and key)
    above = root / "Images_png" / "000001_01_01" / f"{lesion.key_slice_index - 1:03d}.png"
    above.write_bytes(b"not a png")
    crop = context_crop(root, lesion, context_slices=3, tile_px=64)
    assert crop.missing_mm == (-2.0,)
    import numpy as np

    assert np.array_equal(crop.image[:, :64], missing_tile(64))  # shown as missing
    assert not np.array_equal(crop.image[:, 128:], missing_tile(64))  # the other is there
    result = run_cli(
        "gallery", root, "--out", tmp_path / "g.png", "--context", "3", "--per-type", "9"
    )
    no_traceback(result)
    assert result.exit_code == 0
    assert "missing or unreadable, shown as blank tiles marked 'missing'" in result.output


# =========================================================================== partial roots


def test_render_and_validate_summarise_absent_series_instead_of_failing(sample_root, tmp_path):
    root = _partial_root(sample_root, tmp_path, ("000001_01_01",))
    import csv

    with open(root / "DL_info.csv", newline="") as fh:
        all_names = {r["File_name"] for r in csv.DictReader(fh)}
    present = _key_slices(root, "000001_01_01")
    absent = len(all_names) - len(present)
    rendered = run_cli("render", root, "--out", tmp_path / "out")
    no_traceback(rendered)
    assert rendered.exit_code == 0, rendered.output
    assert rendered.output.count("failed") == 1 and "; 0 failed" in rendered.output
    assert (
        f"{absent:,} key slices are not under {root}; {len(present)} of {len(all_names)} present"
        in rendered.output
    )
    validated = run_cli("validate", root / "DL_info.csv", "--images", root)
    no_traceback(validated)
    assert "image missing" not in validated.output
    assert f"{absent:,} key slices are not under {root}" in validated.output


def test_report_draws_a_key_slice_once_with_all_its_lesions(sample_root, tmp_path):
    import re

    from deeplesion.data.annotations import load_lesions
    from deeplesion.review.report import build_report

    table = load_lesions(sample_root / "DL_info.csv")
    groups = table.by_file_name()
    shared = next(name for name, ls in groups.items() if len(ls) > 1 and ls[0].coarse_type > 0)
    # only the lesions of that slice (one type row each): the gallery shows both tiles
    html = build_report(table.select(lambda l: l.file_name == shared), root=sample_root, per_type=4)
    key_section = html[html.index("<h2>Key slices</h2>") :]
    assert len(re.findall(re.escape(f'alt="{shared}"'), key_section)) == 1
    assert f"{len(groups[shared])} lesions drawn" in key_section


# =========================================================================== annotations


def _csv_rows(sample_root: Path) -> tuple[list[str], list[dict[str, str]]]:
    import csv

    with open(sample_root / "DL_info.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _one_changed(sample_root, tmp_path, **changes) -> Path:
    """The sample's first 3 rows with the second one changed (line 3)."""
    header, rows = _csv_rows(sample_root)
    rows = rows[:3]
    rows[1] = {**rows[1], **changes}
    return _write_csv(tmp_path / "DL_info.csv", header, rows)


def test_non_strict_load_drops_rows_with_fatal_errors_and_says_so(sample_root, tmp_path):
    from deeplesion.data.annotations import load_lesions

    _, rows = _csv_rows(sample_root)
    x, y, z = rows[1]["Spacing_mm_px_"].split(",")
    path = _one_changed(sample_root, tmp_path, Spacing_mm_px_=f"-{x.strip()}, -{y.strip()}, {z}")
    table = load_lesions(path)
    assert [l.row_index for l in table] == [0, 2]
    assert table.dropped_lines == [3]
    assert all(l.long_diameter_mm > 0 for l in table)
    measured = run_cli("measure", path)
    no_traceback(measured)
    assert "1 rows of" in measured.output and "left out" in measured.output
    assert "-" + f"{float(rows[1]['Lesion_diameters_Pixel_'].split(',')[0]):.1f}" not in (
        measured.output
    )
    for command in (["stats", path], ["report", path, "--out", tmp_path / "r"]):
        result = run_cli(*command)
        no_traceback(result)
        assert result.exit_code == 0 and "left out" in result.output


@pytest.mark.parametrize(
    ("column", "value", "fatal"),
    [
        ("Spacing_mm_px_", "1e300, 1e300, 5", True),
        ("Spacing_mm_px_", "1e-300, 1e-300, 5", True),
        ("Spacing_mm_px_", "0.8, 0.8, 1e300", True),
        ("Spacing_mm_px_", "3.5, 3.5, 5", False),  # possible, not DeepLesion-like
        ("Patient_age", "-5", True),
        ("Patient_age", "1e308", True),
        ("Patient_age", "115", False),
        ("Image_size", "100000, 100000", True),
        ("Slice_range", "1, 999999999", True),
        ("Slice_range", "1, 1500", False),
    ],
)
def test_plausibility_checks(sample_root, tmp_path, column, value, fatal):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.data.validation import validate

    path = _one_changed(sample_root, tmp_path, **{column: value})
    report = validate(path)
    found = [p for p in report.problems if p.column == column and p.line == 3]
    assert len(found) == 1, report.problems
    assert found[0].fatal is fatal
    assert (3 in load_lesions(path).dropped_lines) is fatal


def test_report_of_a_file_with_an_overflowing_spacing_works(sample_root, tmp_path):
    path = _one_changed(sample_root, tmp_path, Spacing_mm_px_="1e300, 1e300, 5")
    result = run_cli("report", path, "--out", tmp_path / "r")
    no_traceback(result)
    assert result.exit_code == 0 and (tmp_path / "r" / "report.html").is_file()


def test_duplicated_rows_are_a_warning(sample_root, tmp_path):
    from deeplesion.data.validation import validate

    header, rows = _csv_rows(sample_root)
    path = _write_csv(tmp_path / "DL_info.csv", header, [rows[0], rows[1], rows[0]])
    report = validate(path)
    assert [(p.line, p.message, p.fatal) for p in report.problems] == [
        (4, "duplicate of line 2", False)
    ]


@pytest.mark.parametrize(
    "name",
    [
        "000001_01_01_\u0661\u0660.png",  # Arabic-Indic digits
        "000001_01_01_0010.png",  # an extra leading zero
        "\uff10\uff10\uff10\uff10\uff10\uff11_01_01_010.png",  # full-width digits
    ],
)
def test_only_canonical_ascii_file_names_are_accepted(sample_root, tmp_path, name):
    from deeplesion.data.annotations import load_lesions

    path = _one_changed(sample_root, tmp_path, File_name=name)
    table = load_lesions(path)
    assert table.dropped_lines == [3]
    problem = next(p for p in table.problems if p.line == 3)
    assert problem.column == "File_name" and problem.value == name


def test_a_huge_cell_is_a_located_error(sample_root, tmp_path):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.errors import AnnotationError

    path = _one_changed(sample_root, tmp_path, Bounding_boxes="1" * 200_000)
    with pytest.raises(AnnotationError) as info:
        load_lesions(path)
    assert info.value.line == 3 and str(path) in str(info.value)
    result = run_cli("validate", path)
    no_traceback(result)
    assert result.exit_code == 1 and "line 3" in result.output


def test_header_only_csv_gives_empty_results_not_tracebacks(sample_root, tmp_path):
    header, _ = _csv_rows(sample_root)
    path = _write_csv(tmp_path / "DL_info.csv", header, [])
    for command in (
        ["report", path, "--out", tmp_path / "r"],
        ["stats", path],
        ["validate", path],
        ["measure", path],
        ["bodymap", path, "--out", tmp_path / "b.png"],
    ):
        result = run_cli(*command)
        no_traceback(result)
        assert result.exit_code == 0, (command, result.output)


def test_row_with_a_missing_cell_names_the_cell_count(sample_root, tmp_path):
    from deeplesion.data.annotations import load_lesions

    header, rows = _csv_rows(sample_root)
    path = _write_csv(tmp_path / "DL_info.csv", header, rows[:2])
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # drop the last cell (Train_Val_Test)
    path.write_text("\n".join(lines) + "\n")
    table = load_lesions(path)
    problem = next(p for p in table.problems if p.line == 3)
    assert problem.message == "expected 18 cells, found 17"
    assert problem.column == ""


def test_growth_default_rule_is_for_partial_annotations_and_says_so(sample_root, tmp_path):
    import csv

    default = run_cli("growth", sample_root / "DL_info.csv", "--out", tmp_path / "d")
    strict = run_cli(
        "growth", sample_root / "DL_info.csv", "--out", tmp_path / "s", "--new-lesions", "pd"
    )
    assert default.exit_code == 0 and strict.exit_code == 0
    assert "new annotations, not new lesions" in default.output
    assert "--new-lesions pd for strict RECIST 1.1" in default.output
    assert "strict RECIST 1.1: an unmatched follow-up lesion is a new lesion" in strict.output

    def categories(folder: Path) -> list[tuple[str, str, str, str]]:
        with open(folder / "responses.csv", newline="") as fh:
            return [
                (r["patient_index"], r["study_index"], r["response"], r["new_lesions"])
                for r in csv.DictReader(fh)
            ]

    d, s = categories(tmp_path / "d"), categories(tmp_path / "s")
    # a follow-up with an unmatched lesion is PD only under the strict rule
    assert any(n != "0" and cs == "PD" and cd != "PD" for (_, _, cd, n), (_, _, cs, _) in zip(d, s))


def _predictions(sample_root: Path, tmp_path: Path, share: float) -> Path:
    """The val lesions' boxes as predictions (score 0.9) for ``share`` of the val images,
    plus one false positive per image."""
    import csv

    _, rows = _csv_rows(sample_root)
    val = [r for r in rows if r["Train_Val_Test"] == "2" and r["Possibly_noisy"] == "0"]
    names = sorted({r["File_name"] for r in val})
    keep = set(names[: max(1, int(len(names) * share))])
    path = tmp_path / "pred.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "x1", "y1", "x2", "y2", "score"])
        for r in val:
            if r["File_name"] in keep:
                writer.writerow([r["File_name"], *r["Bounding_boxes"].split(","), 0.9])
        for name in sorted(keep):
            writer.writerow([name, 1, 1, 10, 10, 0.5])
    return path


def test_evaluate_warns_when_predictions_cover_few_images_and_orders_strata(sample_root, tmp_path):
    csv_path = sample_root / "DL_info.csv"
    few = run_cli(
        "evaluate",
        "detection",
        _predictions(sample_root, tmp_path, 0.3),
        "--annotations",
        csv_path,
        "--split",
        "val",
        "--by",
        "size",
    )
    no_traceback(few)
    assert few.exit_code == 0 and "the predictions cover" in few.output
    assert "size <10 mm" not in few.output  # the sample's val lesions are 15-34 mm
    # all three size strata, in size order (not in the order of their names)
    from dataclasses import replace

    from deeplesion.data.annotations import LesionTable, load_lesions
    from deeplesion.evaluation.froc import evaluate_detection, ground_truth
    from deeplesion.evaluation.predictions import read_predictions

    table = load_lesions(csv_path)
    shrunk = [  # lesions under 20 mm made 3 times smaller in mm
        replace(l, spacing_mm=(l.spacing_mm[0] / 3, l.spacing_mm[1] / 3, l.spacing_mm[2]))
        if l.long_diameter_mm < 20
        else l
        for l in table.lesions
    ]
    gt = ground_truth(LesionTable(table.source, shrunk), "val")
    dets = read_predictions(_predictions(sample_root, tmp_path, 1.0), gt)
    names = [s.name for s in evaluate_detection(gt, dets, by=["size"]).strata["size"]]
    assert names == ["<10 mm", "10-30 mm", ">=30 mm"]
    full = run_cli(
        "evaluate",
        "detection",
        _predictions(sample_root, tmp_path, 1.0),
        "--annotations",
        csv_path,
        "--split",
        "val",
    )
    assert full.exit_code == 0 and "the predictions cover" not in full.output


def test_froc_plot_labels_published_points_and_ends_curves_at_their_last_point(
    sample_root, tmp_path
):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.evaluation.froc import evaluate_detection, ground_truth
    from deeplesion.evaluation.plot import froc_figure
    from deeplesion.evaluation.predictions import read_predictions

    gt = ground_truth(load_lesions(sample_root / "DL_info.csv"), "val")
    dets = read_predictions(_predictions(sample_root, tmp_path, 1.0), gt)
    result = evaluate_detection(gt, dets)
    fig = froc_figure({"ours": result.curve})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(l.endswith("(published, test split)") for l in labels if l != "ours")
    ours = next(line for line in ax.get_lines() if line.get_label() == "ours")
    assert max(ours.get_xdata()) == pytest.approx(result.curve.fp_per_image[-1])


def test_similar_compares_image_features_only_between_lesions_that_both_have_them(
    sample_root, tmp_path
):
    from deeplesion.analysis.retrieval import LesionIndex
    from deeplesion.data.annotations import load_lesions

    root = _partial_root(sample_root, tmp_path, ("000001_01_01",))
    lesions = load_lesions(root / "DL_info.csv").lesions
    with_images = LesionIndex.build(lesions, root=root)
    without = LesionIndex.build(lesions)
    have = {l.row_index for l, h in zip(lesions, with_images.has_image) if h}
    assert 0 < len(have) < len(lesions)
    # a query without an image: its ranking is exactly the one without image features
    query = next(l for l in lesions if l.row_index not in have)
    a = [(n.lesion.row_index, round(n.similarity, 5)) for n in with_images.similar(query, 8)]
    b = [(n.lesion.row_index, round(n.similarity, 5)) for n in without.similar(query, 8)]
    assert a == b
    result = run_cli("similar", root / "DL_info.csv", query.file_name, "--root", root)
    no_traceback(result)
    assert f"image features for {len(have)} of {len(lesions)} lesions" in result.output


def test_info_recognises_a_flat_folder_of_key_slices(real_liver_dir, tmp_path):
    flat = run_cli("info", real_liver_dir / "Images_png")
    no_traceback(flat)
    n = len(list((real_liver_dir / "Images_png").glob("*.png")))
    assert f"a flat folder of {n} key slices named by File_name" in flat.output
    empty = run_cli("info", tmp_path)
    assert "no slices found: a dataset root holds DL_info.csv and Images_png/" in empty.output


def test_refusals_name_the_option_to_use(real_excerpt_csv, tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPLESION_LESANET", raising=False)
    refused = run_cli("lesions", real_excerpt_csv, "--tag", "liver")
    no_traceback(refused)
    assert refused.exit_code == 1 and "--override-fingerprint" in refused.output
    no_lesanet = run_cli("lesions", real_excerpt_csv, "--tag", "liver", "--override-fingerprint")
    no_traceback(no_lesanet)
    assert no_lesanet.exit_code == 1 and "--lesanet" in no_lesanet.output


def test_volumes_list_says_spacing_unknown_without_a_unit(sample_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(
        sample_root / "Images_png" / "000004_01_02", root / "Images_png" / "000004_01_02"
    )
    result = run_cli("volumes", root, "--list")
    no_traceback(result)
    assert "spacing unknown (no DL_info row; --spacing X,Y,Z)" in result.output
    assert "unknown mm" not in result.output


def test_report_caption_says_when_context_slices_are_missing(sample_root, tmp_path):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.review.report import build_report

    root = _partial_root(sample_root, tmp_path, ("000001_01_01",))
    table = load_lesions(root / "DL_info.csv")
    complete = build_report(table, root=root)
    assert "context slices at -2, 0, +2 mm" in complete and "marked 'missing'" not in complete
    lesion = next(l for l in table if l.file_name.startswith("000001_01_01"))
    (root / "Images_png" / "000001_01_01" / f"{lesion.key_slice_index - 1:03d}.png").unlink()
    partial = build_report(table, root=root)
    assert "context slices missing or unreadable under the root" in partial


def test_nifti_checks_slice_sizes_against_dl_info(sample_root, tmp_path):
    root = _partial_root(sample_root, tmp_path, ("000001_01_01",))
    first = min((root / "Images_png" / "000001_01_01").glob("*.png"))
    first.unlink()
    _write_slice(first, 256, 256)  # the run's first slice: the others must not be blamed
    result = run_cli("nifti", root, tmp_path / "nifti")
    no_traceback(result)
    assert "; 1 unreadable slices" in result.output
    assert "DL_info says 512x512" in result.output


# =========================================================================== progress totals
def test_validate_progress_reports_its_total(sample_root):
    """Every progress call carries the total, and the last one says all rows are done."""
    from deeplesion.data.validation import validate

    csv_path = sample_root / "DL_info.csv"
    n_rows = len(csv_path.read_text().strip().splitlines()) - 1
    calls: list[tuple[int, int]] = []
    validate(csv_path, images_root=sample_root, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (n_rows, n_rows)
    assert all(0 <= done <= total for done, total in calls)


def test_report_progress_sections_are_the_declared_ones(sample_root, tmp_path):
    """The CLI's bar total comes from REPORT_SECTIONS: they must be what build_report reports."""
    from deeplesion.data.annotations import load_lesions
    from deeplesion.review.report import REPORT_SECTIONS, build_report

    table = load_lesions(sample_root / "DL_info.csv")
    with_root: list[str] = []
    build_report(table, root=sample_root, progress=with_root.append)
    without_root: list[str] = []
    build_report(table, progress=without_root.append)
    assert tuple(with_root) == REPORT_SECTIONS
    assert tuple(without_root) == REPORT_SECTIONS[:-1]
