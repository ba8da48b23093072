"""Downloads against a real HTTP server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.fetch.download import download_all, download_file, verify
from deeplesion.fetch.manifest import (
    RELEASE_PAGE,
    ManifestEntry,
    ManifestError,
    load_manifest,
    parse_only,
    select_entries,
)
from deeplesion.fetch.transfer import DownloadError

REPO = Path(__file__).resolve().parents[1]
# the release's URL list sits next to the real-data folder (read, never copied)
OFFICIAL_TSV = (
    Path(
        os.environ.get("DEEPLESION_REAL_DATA", REPO.parent / "shared" / "data" / "deeplesion-real")
    ).parent
    / "official-downloads.tsv"
)
SEND_CHUNK = 16 * 1024


class Faults:
    """What the test server does wrong. Counters are per URL path and count down."""

    def __init__(self) -> None:
        self.cut_after: int | None = None  # body bytes sent per response before hanging up
        self.errors_500: dict[str, int] = {}
        self.ignore_range = False
        self.wrong_bytes: dict[str, int] = {}  # responses with one byte flipped
        self.wrong_range_start: dict[str, int] = {}  # 206 responses starting 1 byte early
        self.stall: dict[str, int] = {}  # responses that stall after the headers
        self.stall_s = 0.0
        self.chunk_delay_s = 0.0  # pause between 16 KB chunks (a slow link)


class Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.faults = Faults()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def ranges(self, name: str) -> list[str | None]:
        with self.lock:
            return [r for p, r in self.requests if p == name]

    def _take(self, counter: dict[str, int], name: str) -> bool:
        with self.lock:
            if counter.get(name, 0) > 0:
                counter[name] -= 1
                return True
            return False

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.lstrip("/")
        rng = h.headers.get("Range")
        with self.lock:
            self.requests.append((name, rng))
        f = self.faults
        if name not in self.files:
            h.send_error(404)
            return
        if self._take(f.errors_500, name):
            h.send_error(500)
            return
        body = self.files[name]
        if self._take(f.wrong_bytes, name):
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not f.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            if self._take(f.wrong_range_start, name):
                start -= 1
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(body) - start))
        h.end_headers()
        payload = body[start:]
        if f.cut_after is not None:
            payload = payload[: f.cut_after]
        if self._take(f.stall, name):
            time.sleep(f.stall_s)
        try:
            for i in range(0, len(payload), SEND_CHUNK):
                h.wfile.write(payload[i : i + SEND_CHUNK])
                h.wfile.flush()
                if f.chunk_delay_s:
                    time.sleep(f.chunk_delay_s)
        except OSError:
            pass
        h.close_connection = True

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _payload(seed: int, size: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32)


@pytest.fixture()
def files() -> dict[str, bytes]:
    return {f"Images_png_{i:02d}.zip": _payload(i, 600_000 + 1000 * i) for i in (1, 2, 3)}


@pytest.fixture()
def server(files: dict[str, bytes]):
    srv = Server(files)
    yield srv
    srv.close()


def _entries(server: Server, files: dict[str, bytes], *, md5: bool = True) -> list[ManifestEntry]:
    return [
        ManifestEntry(name, server.url(name), hashlib.md5(data).hexdigest() if md5 else None)
        for name, data in files.items()
    ]


def _write_manifest(path: Path, entries: list[ManifestEntry]) -> Path:
    lines = ["file\turl\tmd5"] + [f"{e.file}\t{e.url}\t{e.md5 or ''}" for e in entries]
    path.write_text("\n".join(lines) + "\n")
    return path


def _assert_complete(dest: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name
    assert not list(dest.glob("*.part"))


FAST = dict(timeout_s=5.0, backoff_s=0.01)


# ------------------------------------------------------------------ manifest


def test_official_manifest_matches_the_release_list() -> None:
    entries = load_manifest()
    zips = [e for e in entries if e.file.endswith(".zip")]
    assert [e.zip_number for e in zips] == list(range(1, 57))  # 56 zips (dataset facts)
    assert all(re.fullmatch(r"[0-9a-f]{32}", e.md5 or "") for e in zips)
    checksums = [e for e in entries if e.file == "MD5_checksums.txt"]
    assert len(checksums) == 1 and checksums[0].md5 is None
    if OFFICIAL_TSV.is_file():
        with OFFICIAL_TSV.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert [(e.file, e.url, e.md5 or "") for e in entries] == [
            (r["file"], r["url"], r["md5"]) for r in rows
        ]


@pytest.mark.parametrize(
    "body, column, value",
    [
        ("name\turl\tmd5\n", None, None),
        ("file\turl\tmd5\n../evil.zip\thttp://h/x\t\n", "file", "../evil.zip"),
        ("file\turl\tmd5\na.zip\tftp://h/x\t\n", "url", "ftp://h/x"),
        ("file\turl\tmd5\na.zip\thttp://h/x\tnot-an-md5\n", "md5", "not-an-md5"),
        ("file\turl\tmd5\na.zip\thttp://h/x\t\na.zip\thttp://h/y\t\n", "file", "a.zip"),
    ],
)
def test_bad_manifest_names_line_column_value(
    tmp_path: Path, body: str, column: str | None, value: str | None
) -> None:
    path = tmp_path / "m.tsv"
    path.write_text(body)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert str(path) in message
    if column is not None:
        assert f"column {column}" in message and repr(value) in message
        assert re.search(r"line \d", message)


def test_only_selects_zip_numbers_and_keeps_unnumbered_files() -> None:
    assert parse_only("1-3,9, 5") == {1, 2, 3, 5, 9}
    entries = load_manifest()
    picked = select_entries(entries, "2-3,56")
    assert [e.file for e in picked] == [
        "Images_png_02.zip",
        "Images_png_03.zip",
        "Images_png_56.zip",
        "MD5_checksums.txt",
    ]
    for bad in ("3-1", "x", "0", "57"):
        with pytest.raises(ManifestError):
            select_entries(entries, bad)


# ------------------------------------------------------------------ downloading


def test_download_through_a_server_that_cuts_every_connection(tmp_path, server, files):
    cut = 200_000
    server.faults.cut_after = cut
    report = download_all(_entries(server, files), tmp_path, parallel=2, retries=2, **FAST)
    assert report.ok and [r.status for r in report.results] == ["downloaded"] * 3
    assert all(r.verified for r in report.results)
    _assert_complete(tmp_path, files)
    for name, data in files.items():
        # every attempt resumed exactly where the previous one was cut
        expected = [None] + [f"bytes={k}-" for k in range(cut, len(data), cut)]
        assert server.ranges(name) == expected


def test_5xx_is_retried_then_given_up_naming_the_file(tmp_path, server, files):
    first, second, third = files
    server.faults.errors_500 = {first: 2, second: 100}
    report = download_all(_entries(server, files), tmp_path, parallel=3, retries=3, **FAST)
    status = {r.file: r for r in report.results}
    assert status[first].status == "downloaded" and len(server.ranges(first)) == 3
    assert status[third].status == "downloaded"
    assert status[second].status == "failed" and "500" in status[second].error
    assert len(server.ranges(second)) == 4  # first try + 3 retries
    assert [r.file for r in report.failed] == [second]
    with pytest.raises(DownloadError, match=re.escape(second)):
        report.raise_for_failures()
    assert not (tmp_path / second).exists()
    _assert_complete(tmp_path, {first: files[first], third: files[third]})


def test_404_fails_at_once(tmp_path, server, files):
    entry = ManifestEntry("Images_png_09.zip", server.url("nothing-here.zip"), None)
    result = download_file(entry, tmp_path, retries=5, **FAST)
    assert result.status == "failed" and "404" in result.error
    assert len(server.ranges("nothing-here.zip")) == 1
    assert not list(tmp_path.iterdir())


def test_server_ignoring_range_restarts_the_file_cleanly(tmp_path, server, files):
    name = next(iter(files))
    (tmp_path / f"{name}.part").write_bytes(b"garbage that must not stay" * 100)
    server.faults.ignore_range = True
    result = download_file(_entries(server, files)[0], tmp_path, **FAST)
    assert result.status == "downloaded"
    assert server.ranges(name) == ["bytes=2600-"]  # one request: the 200 replaced the part
    _assert_complete(tmp_path, {name: files[name]})


def test_range_answer_starting_elsewhere_is_refused(tmp_path, server, files):
    name = next(iter(files))
    server.faults.cut_after = 250_000
    server.faults.wrong_range_start = {name: 1}
    result = download_file(_entries(server, files)[0], tmp_path, **FAST)
    assert result.status == "downloaded"
    # resume at 250000 got a range starting at 249999: dropped, part removed, start over
    assert server.ranges(name)[:3] == [None, "bytes=250000-", None]
    _assert_complete(tmp_path, {name: files[name]})


def test_wrong_bytes_are_caught_by_md5_and_fetched_again(tmp_path, server, files):
    name = next(iter(files))
    server.faults.wrong_bytes = {name: 1}
    result = download_file(_entries(server, files)[0], tmp_path, **FAST)
    assert result.status == "downloaded" and len(server.ranges(name)) == 2
    _assert_complete(tmp_path, {name: files[name]})


def test_always_wrong_bytes_fail_and_leave_no_file(tmp_path, server, files):
    name = next(iter(files))
    server.faults.wrong_bytes = {name: 100}
    result = download_file(_entries(server, files)[0], tmp_path, retries=2, **FAST)
    assert result.status == "failed" and "MD5" in result.error
    assert hashlib.md5(files[name]).hexdigest() in result.error
    assert len(server.ranges(name)) == 3
    assert not list(tmp_path.glob("Images_png*"))


def test_slow_server_times_out_and_is_retried(tmp_path, server, files):
    name = next(iter(files))
    server.faults.stall = {name: 1}
    server.faults.stall_s = 1.5
    result = download_file(
        _entries(server, files)[0], tmp_path, timeout_s=0.3, backoff_s=0.01, retries=2
    )
    assert result.status == "downloaded" and len(server.ranges(name)) == 2
    _assert_complete(tmp_path, {name: files[name]})


def test_complete_part_file_is_verified_without_refetching(tmp_path, server, files):
    name = next(iter(files))
    (tmp_path / f"{name}.part").write_bytes(files[name])  # e.g. killed while checking MD5
    result = download_file(_entries(server, files)[0], tmp_path, **FAST)
    assert result.status == "downloaded" and result.fetched_bytes == 0
    assert server.ranges(name) == [f"bytes={len(files[name])}-"]  # answered 416
    _assert_complete(tmp_path, {name: files[name]})


def test_rerun_skips_verified_files_and_replaces_a_corrupt_one(tmp_path, server, files):
    entries = _entries(server, files)
    assert download_all(entries, tmp_path, **FAST).ok
    n_requests = len(server.requests)
    again = download_all(entries, tmp_path, **FAST)
    assert [r.status for r in again.results] == ["present"] * 3
    assert len(server.requests) == n_requests
    name = next(iter(files))
    damaged = bytearray(files[name])
    damaged[1000] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(damaged))
    third = download_all(entries, tmp_path, **FAST)
    assert [r.status for r in third.results] == ["downloaded", "present", "present"]
    _assert_complete(tmp_path, files)


def test_killed_download_resumes_with_a_range_request(tmp_path, server, files):
    name = next(iter(files))
    manifest = _write_manifest(tmp_path / "m.tsv", _entries(server, files)[:1])
    dest = tmp_path / "dest"
    part = dest / f"{name}.part"
    server.faults.chunk_delay_s = 0.05  # ~320 KB/s: the file takes about 2 s
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deeplesion",
            "download",
            str(dest),
            "--manifest",
            str(manifest),
            "--parallel",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 64_000):
            time.sleep(0.02)
        assert part.exists() and part.stat().st_size >= 64_000, "download never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert not (dest / name).exists()
    server.faults.chunk_delay_s = 0.0
    kept = part.stat().st_size
    assert 0 < kept < len(files[name])
    result = CliRunner().invoke(main, ["download", str(dest), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert server.ranges(name)[-1] == f"bytes={kept}-"
    _assert_complete(dest, {name: files[name]})


def test_unverifiable_file_without_md5_is_kept_as_present(tmp_path, server, files):
    entries = _entries(server, files, md5=False)[:1]
    first = download_all(entries, tmp_path, **FAST)
    assert first.results[0].status == "downloaded" and not first.results[0].verified
    again = download_all(entries, tmp_path, **FAST)
    assert again.results[0].status == "present"


# ------------------------------------------------------------------ verify


def test_verify_reports_complete_corrupt_partial_missing(tmp_path, server, files):
    names = list(files)
    entries = _entries(server, files)
    (tmp_path / names[0]).write_bytes(files[names[0]])
    (tmp_path / names[1]).write_bytes(files[names[1]][:-1] + b"?")
    (tmp_path / f"{names[2]}.part").write_bytes(files[names[2]][:1000])
    extra = ManifestEntry("Images_png_04.zip", server.url("x"), "0" * 32)
    nomd5 = ManifestEntry("DL_info.csv", server.url("y"), None)
    (tmp_path / "DL_info.csv").write_text("a,b\n")
    report = verify(tmp_path, entries + [extra, nomd5])
    assert [c.status for c in report.checks] == [
        "complete",
        "corrupt",
        "partial",
        "missing",
        "unchecked",
    ]
    assert report.checks[1].md5 == hashlib.md5(files[names[1]][:-1] + b"?").hexdigest()
    assert not report.ok


def test_verify_uses_md5_checksums_file_for_entries_without_md5(tmp_path, server, files):
    name, data = next(iter(files.items()))
    (tmp_path / name).write_bytes(data)
    (tmp_path / "MD5_checksums.txt").write_text(f"{'f' * 32}  {name}")
    report = verify(tmp_path, [ManifestEntry(name, server.url(name), None)])
    assert report.checks[0].status == "corrupt" and report.checks[0].expected_md5 == "f" * 32


def test_download_takes_missing_md5s_from_the_checksums_file(tmp_path, files):
    # The official layout: zips without an MD5 in the manifest, plus MD5_checksums.txt.
    checksums = "\n".join(f"{hashlib.md5(d).hexdigest()}  {n}" for n, d in files.items())
    srv = Server({**files, "MD5_checksums.txt": checksums.encode()})
    try:
        entries = [ManifestEntry(n, srv.url(n), None) for n in files]
        entries.append(ManifestEntry("MD5_checksums.txt", srv.url("MD5_checksums.txt"), None))
        dest = tmp_path / "dest"
        first = download_all(entries, dest, parallel=2, retries=2, backoff_s=0.01)
        assert first.ok
        _assert_complete(dest, files)
        # A damaged copy is no longer accepted as present: it is fetched again.
        name = next(iter(files))
        (dest / name).write_bytes(files[name][:1000])
        again = download_all(entries, dest, parallel=2, retries=2, backoff_s=0.01)
        assert again.ok
        assert (dest / name).read_bytes() == files[name]
        # Wrong bytes from the server for an entry checked only by the checksums file fail.
        srv.faults.wrong_bytes[name] = 99
        (dest / name).unlink()
        bad = download_all(entries, dest, parallel=1, retries=1, backoff_s=0.01)
        assert [r.file for r in bad.failed] == [name]
        assert not (dest / name).exists()
    finally:
        srv.close()


# ------------------------------------------------------------------ CLI


def test_cli_download_verify_and_failure_exit(tmp_path, server, files):
    manifest = _write_manifest(tmp_path / "m.tsv", _entries(server, files))
    dest = tmp_path / "dest"
    runner = CliRunner()
    ok = runner.invoke(
        main,
        ["download", str(dest), "--manifest", str(manifest), "--backoff", "0.01", "--only", "1,3"],
    )
    assert ok.exit_code == 0, ok.output
    words = " ".join(ok.output.split())  # rich wraps long lines
    assert "2 downloaded, 0 already present, 0 failed" in words and RELEASE_PAGE in words
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        "Images_png_01.zip",
        "Images_png_03.zip",
    ]
    partial = runner.invoke(main, ["verify", str(dest), "--manifest", str(manifest)])
    assert partial.exit_code == 1 and "missing" in partial.output
    assert "Images_png_02.zip" in partial.output
    full = runner.invoke(main, ["verify", str(dest), "--manifest", str(manifest), "--only", "1,3"])
    assert full.exit_code == 0, full.output
    server.faults.errors_500 = {"Images_png_02.zip": 100}
    bad = runner.invoke(
        main,
        ["download", str(dest), "--manifest", str(manifest), "--backoff", "0.01", "--retries", "1"],
    )
    assert bad.exit_code == 1
    assert "Images_png_02.zip" in bad.output and "500" in bad.output
    assert not (dest / "Images_png_02.zip").exists()


def test_dl_info_is_fetched_when_the_manifest_lists_it(tmp_path, server, files):
    server.files["DL_info.csv"] = b"File_name,Patient_index\n"
    entries = [ManifestEntry("DL_info.csv", server.url("DL_info.csv"), None)]
    manifest = _write_manifest(tmp_path / "m.tsv", entries)
    result = CliRunner().invoke(
        main, ["download", str(tmp_path / "d"), "--manifest", str(manifest)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "DL_info.csv").read_bytes() == server.files["DL_info.csv"]
    assert RELEASE_PAGE not in result.output


def test_sample_zips_download_verify_extract_end_to_end(tmp_path, sample_root):
    """Zips of the synthetic sample through a server that hangs up every 300 KB."""
    import zipfile

    folders = sorted(p for p in (sample_root / "Images_png").iterdir() if p.is_dir())[:3]
    zips: dict[str, bytes] = {}
    for number, folder in enumerate(folders, start=1):
        path = tmp_path / "src" / f"Images_png_{number:02d}.zip"
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for png in sorted(folder.glob("*.png")):
                zf.write(png, f"Images_png/{folder.name}/{png.name}")
        zips[path.name] = path.read_bytes()
    srv = Server(zips)
    try:
        srv.faults.cut_after = 300_000
        manifest = _write_manifest(tmp_path / "m.tsv", _entries(srv, zips))
        dest, root = tmp_path / "dest", tmp_path / "root"
        runner = CliRunner()
        for args in (
            [
                "download",
                str(dest),
                "--manifest",
                str(manifest),
                "--parallel",
                "3",
                "--backoff",
                "0.01",
            ],
            ["verify", str(dest), "--manifest", str(manifest)],
            ["extract", str(dest), str(root)],
        ):
            result = runner.invoke(main, args)
            assert result.exit_code == 0, (args[0], result.output)
        assert any(r and r.startswith("bytes=") for n in zips for r in srv.ranges(n))
    finally:
        srv.close()
    _assert_complete(dest, zips)
    for folder in folders:
        for png in folder.glob("*.png"):
            assert (root / png.relative_to(sample_root)).read_bytes() == png.read_bytes()
