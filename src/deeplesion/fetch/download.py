"""Resumable, checksum-verified downloads of the release files listed in a manifest.

A manifest is a tab-separated file with the columns ``file``, ``url`` and ``md5`` (the
md5 cell may be empty). The official one ships with the package. Each file is fetched into
``FILE.part`` with HTTP Range requests, so an interrupted download resumes where it stopped;
it is renamed to ``FILE`` only after its MD5 matches the manifest.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from deeplesion import __version__
from deeplesion.data.io import read_text, write_text_atomic
from deeplesion.errors import DeepLesionError

#: Public landing page of the release (where DL_info.csv and the zips are listed).
RELEASE_PAGE = "https://nihcc.app.box.com/v/DeepLesion"
PART_SUFFIX = ".part"
#: Per-folder record of files whose MD5 was checked, keyed by size and mtime.
VERIFIED_CACHE = ".deeplesion-verified.json"
CHECKSUMS_FILE = "MD5_checksums.txt"
_CHUNK_BYTES = 256 * 1024
_MAX_BACKOFF_S = 60.0
_PROGRESS_INTERVAL_S = 0.1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_ZIP_NUMBER = re.compile(r"_(\d+)\.zip$", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")


class ManifestError(DeepLesionError, ValueError):
    """A manifest that cannot be used; names the file, line, column and value."""


class DownloadError(DeepLesionError, OSError):
    """One file could not be downloaded (after all retries)."""


class DownloadCancelled(DeepLesionError, RuntimeError):
    """A download stopped on request (e.g. Ctrl-C); the ``.part`` file is kept."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One downloadable file: its name in the download folder, URL and MD5 (or None)."""

    file: str
    url: str
    md5: str | None

    @property
    def zip_number(self) -> int | None:
        """``Images_png_07.zip`` -> 7; None for files without a number."""
        m = _ZIP_NUMBER.search(self.file)
        return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class FileProgress:
    """A progress event for one file. ``state`` is one of ``downloading``, ``verifying``,
    ``retrying``, ``done``, ``present`` and ``failed``; ``total_bytes`` is None until known."""

    file: str
    state: str
    done_bytes: int
    total_bytes: int | None
    message: str = ""


ProgressCallback = Callable[[FileProgress], None]


@dataclass(frozen=True, slots=True)
class FileResult:
    """Outcome for one file: ``downloaded``, ``present`` (already there and verified, or
    unverifiable because the manifest has no MD5) or ``failed`` (``error`` says why)."""

    file: str
    status: str
    path: Path
    fetched_bytes: int = 0
    attempts: int = 0
    verified: bool = False
    error: str = ""


@dataclass(slots=True)
class DownloadReport:
    results: list[FileResult] = field(default_factory=list)

    def with_status(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[FileResult]:
        return self.with_status("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_for_failures(self) -> None:
        """Raise DownloadError naming every failed file and why."""
        if self.failed:
            raise DownloadError("; ".join(f"{r.file}: {r.error}" for r in self.failed))


# --------------------------------------------------------------------------- manifest


def official_manifest_path() -> Path:
    """Path of the official manifest shipped with the package."""
    return Path(str(resources.files("deeplesion.fetch") / "official-downloads.tsv"))


def load_manifest(path: str | Path | None = None) -> list[ManifestEntry]:
    """Read a manifest (``file``, ``url``, ``md5`` tab-separated; blank lines and lines
    starting with ``#`` ignored). ``None`` reads the official one shipped with the package."""
    path = official_manifest_path() if path is None else Path(path)
    text = read_text(path)
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ManifestError(
            f"file {path}: empty manifest (expected a header line 'file<TAB>url<TAB>md5')"
        )
    header_line, header = lines[0][0], next(csv.reader([lines[0][1]], delimiter="\t"))
    header = [h.strip().lower() for h in header]
    missing = [c for c in ("file", "url", "md5") if c not in header]
    if missing:
        raise ManifestError(
            f"file {path}, line {header_line}: header {header!r} lacks "
            f"column(s) {missing} (expected tab-separated file, url, md5)"
        )
    col = {name: header.index(name) for name in ("file", "url", "md5")}
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    for line_no, line in lines[1:]:
        cells = next(csv.reader([line], delimiter="\t"))

        def cell(name: str) -> str:
            i = col[name]
            return cells[i].strip() if i < len(cells) else ""

        def bad(column: str, value: str, why: str) -> ManifestError:
            return ManifestError(
                f"file {path}, line {line_no}, column {column}, value {value!r}: {why}"
            )

        name, url, md5 = cell("file"), cell("url"), cell("md5").lower()
        if not _SAFE_NAME.match(name) or name.endswith(PART_SUFFIX):
            raise bad(
                "file",
                name,
                "expected a plain file name (letters, digits, '.', '_', "
                "'-'; no folders, not ending in .part)",
            )
        if name in seen:
            raise bad("file", name, f"listed twice (first on line {seen[name]})")
        if not url.lower().startswith(("http://", "https://")):
            raise bad("url", url, "expected an http:// or https:// URL")
        if md5 and not _MD5.match(md5):
            raise bad("md5", md5, "expected 32 hexadecimal digits or an empty cell")
        seen[name] = line_no
        entries.append(ManifestEntry(name, url, md5 or None))
    return entries


def parse_only(spec: str) -> set[int]:
    """Zip numbers of an ``--only`` value; raises ManifestError naming the bad part.

    Example:

        >>> sorted(parse_only("1-5,9"))
        [1, 2, 3, 4, 5, 9]
    """
    numbers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ManifestError(
                f"--only: bad part {part!r} in {spec!r} (expected numbers and ranges like '1-5,9')"
            )
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if first > last or first < 1:
            raise ManifestError(f"--only: bad range {part!r} in {spec!r}")
        numbers.update(range(first, last + 1))
    return numbers


def select_entries(
    entries: Sequence[ManifestEntry], only: str | set[int] | None
) -> list[ManifestEntry]:
    """Entries whose zip number is in ``only``, plus every file without a number
    (``MD5_checksums.txt``, ``DL_info.csv``). ``None`` keeps all."""
    if only is None:
        return list(entries)
    numbers = parse_only(only) if isinstance(only, str) else set(only)
    available = {e.zip_number for e in entries if e.zip_number is not None}
    unknown = sorted(numbers - available)
    if unknown:
        raise ManifestError(
            f"--only: no zip numbered {unknown} in the manifest "
            f"(it has {min(available, default=0)}..{max(available, default=0)})"
        )
    return [e for e in entries if e.zip_number is None or e.zip_number in numbers]


# --------------------------------------------------------------------------- checksums


def md5_of(path: str | Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex MD5 of a file; ``progress(bytes_done)`` is called while reading."""
    with open(path, "rb") as fh:
        reader = fh if progress is None else _Counting(fh, progress)
        return hashlib.file_digest(reader, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


class _Counting(io.RawIOBase):
    """A binary file that reports the bytes read so far to ``progress``."""

    def __init__(self, fh, progress: Callable[[int], None]) -> None:
        self.fh, self.progress, self.done = fh, progress, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.fh.readinto(buffer)
        if n:
            self.done += n
            self.progress(self.done)
        return n


def read_checksums_file(path: str | Path) -> dict[str, str]:
    """Parse an ``MD5_checksums.txt`` (``<md5>  <file name>`` per line) into {name: md5}."""
    result: dict[str, str] = {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not _MD5.match(parts[0].lower()):
            raise ManifestError(
                f"file {path}, line {line_no}, value {line!r}: expected '<md5>  <file name>'"
            )
        result[parts[1].lstrip("*")] = parts[0].lower()
    return result


class _VerifiedCache:
    """Remembers which files in a folder were verified, keyed by (size, mtime), so that a
    rerun does not re-hash 4 GB files. Thread-safe; written atomically."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / VERIFIED_CACHE
        self._lock = threading.Lock()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._data = {}

    def known_md5(self, file: Path) -> str | None:
        with self._lock:
            record = self._data.get(file.name)
        try:
            st = file.stat()
        except OSError:
            return None
        if (
            isinstance(record, dict)
            and record.get("size") == st.st_size
            and record.get("mtime_ns") == st.st_mtime_ns
        ):
            return record.get("md5")
        return None

    def record(self, file: Path, md5: str) -> None:
        st = file.stat()
        with self._lock:
            self._data[file.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
            write_text_atomic(self.path, json.dumps(self._data, indent=1, sort_keys=True))

    def forget(self, file: Path) -> None:
        with self._lock:
            if self._data.pop(file.name, None) is not None:
                write_text_atomic(self.path, json.dumps(self._data, indent=1, sort_keys=True))


# --------------------------------------------------------------------------- downloading


class _Retryable(Exception):
    """A failure worth another attempt (dropped connection, timeout, 5xx, bad range)."""


class _Fatal(Exception):
    """A failure that another attempt will not fix (404, 403, ...)."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``'bytes 100-199/1000'`` -> (100, 1000); ``'bytes */1000'`` -> (None, 1000)."""
    m = _CONTENT_RANGE.match((value or "").strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Fetcher:
    """Downloads one manifest entry into ``dest`` (one instance per file)."""

    def __init__(
        self,
        entry: ManifestEntry,
        dest: Path,
        *,
        retries: int,
        timeout_s: float,
        backoff_s: float,
        progress: ProgressCallback | None,
        cache: _VerifiedCache,
        cancel: threading.Event,
    ) -> None:
        self.entry, self.dest = entry, dest
        self.final = dest / entry.file
        self.part = dest / (entry.file + PART_SUFFIX)
        self.retries, self.timeout_s, self.backoff_s = retries, timeout_s, backoff_s
        self.progress, self.cache, self.cancel = progress, cache, cancel
        self.total_bytes: int | None = None
        self.fetched_bytes = 0
        self.attempts = 0

    def _emit(self, state: str, done: int, message: str = "") -> None:
        if self.progress is not None:
            self.progress(FileProgress(self.entry.file, state, done, self.total_bytes, message))

    def _result(self, status: str, *, verified: bool = False, error: str = "") -> FileResult:
        return FileResult(
            self.entry.file, status, self.final, self.fetched_bytes, self.attempts, verified, error
        )

    def _verified_md5(self, path: Path) -> str:
        return md5_of(path, lambda n: self._emit("verifying", n))

    def run(self) -> FileResult:
        entry = self.entry
        if self.final.is_file():
            size = self.final.stat().st_size
            if entry.md5 is None:
                self._emit("present", size)
                return self._result("present")
            self.total_bytes = size
            if (
                self.cache.known_md5(self.final) == entry.md5
                or self._verified_md5(self.final) == entry.md5
            ):
                self.cache.record(self.final, entry.md5)
                self._emit("present", size)
                return self._result("present", verified=True)
            # Present but corrupt: fetch again; the good copy replaces it atomically.
            self.cache.forget(self.final)
            self.total_bytes = None
        failures = checksum_failures = 0
        last_error = ""
        while True:
            if self.cancel.is_set():
                raise DownloadCancelled(
                    f"{entry.file}: download cancelled; {self.part.name} kept for resuming"
                )
            offset = self.part.stat().st_size if self.part.exists() else 0
            self.attempts += 1
            try:
                self._fetch(offset)
            except _Fatal as exc:
                self._emit("failed", offset, str(exc))
                return self._result("failed", error=str(exc))
            except _Retryable as exc:
                last_error = str(exc)
                grown = (self.part.stat().st_size if self.part.exists() else 0) > offset
                failures = 0 if grown else failures + 1  # only stalled attempts count
                if failures > self.retries:
                    message = (
                        f"{last_error} (gave up after {self.retries} "
                        f"retr{'y' if self.retries == 1 else 'ies'} without progress)"
                    )
                    self._emit("failed", offset, message)
                    return self._result("failed", error=message)
                self._emit("retrying", offset, last_error)
                if failures:
                    self._pause(failures)
                continue
            size = self.part.stat().st_size
            digest = self._verified_md5(self.part)
            if entry.md5 is not None and digest != entry.md5:
                self.part.unlink()
                checksum_failures += 1
                message = f"MD5 of the downloaded bytes is {digest}, the manifest says {entry.md5}"
                if checksum_failures > self.retries:
                    message += f" (gave up after {checksum_failures} full downloads)"
                    self._emit("failed", 0, message)
                    return self._result("failed", error=message)
                self._emit("retrying", 0, message)
                self._pause(checksum_failures)
                continue
            os.replace(self.part, self.final)
            if entry.md5 is not None:
                self.cache.record(self.final, digest)
            self._emit("done", size)
            return self._result("downloaded", verified=entry.md5 is not None)

    def _pause(self, failures: int) -> None:
        delay = min(self.backoff_s * 2 ** (failures - 1), _MAX_BACKOFF_S)
        if delay > 0:
            self.cancel.wait(delay)  # returns early on cancel

    def _restart(self, why: str) -> None:
        self.part.unlink(missing_ok=True)
        raise _Retryable(why)

    def _fetch(self, offset: int) -> None:
        """One HTTP request continuing ``self.part`` from ``offset``; returns when the whole
        file is in the part file, raises _Retryable / _Fatal otherwise."""
        headers = {"User-Agent": f"deeplesion/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(self.entry.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                _, total = _content_range(exc.headers.get("Content-Range"))
                if total == offset:  # the part file already holds every byte
                    self.total_bytes = total
                    return
                self._restart(
                    f"server refused to resume at byte {offset} (HTTP 416); restarting the file"
                )
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
            raise _Fatal(f"HTTP {exc.code} {exc.reason} for {self.entry.url}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(_describe(exc)) from exc
        with response:
            status = response.status
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    self._restart(
                        f"server sent a range starting at byte {start}, the part "
                        f"file ends at byte {offset}; restarting the file"
                    )
                self.total_bytes = total
                mode = "ab"
            elif status == 200:
                # A full response; when a range was asked for, the server ignored it.
                offset, mode = 0, "wb"
                self.total_bytes = length
            else:
                raise _Retryable(f"unexpected HTTP status {status}")
            received, last_emit = 0, time.monotonic()
            self._emit("downloading", offset)
            with open(self.part, mode) as fh:
                while True:
                    if self.cancel.is_set():
                        raise DownloadCancelled(
                            f"{self.entry.file}: download cancelled; "
                            f"{self.part.name} kept for resuming"
                        )
                    try:
                        chunk = response.read1(_CHUNK_BYTES)  # returns as data arrives
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(
                            f"connection lost after {offset + received} bytes ({_describe(exc)})"
                        ) from exc
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    self.fetched_bytes += len(chunk)
                    now = time.monotonic()
                    if now - last_emit >= _PROGRESS_INTERVAL_S:
                        last_emit = now
                        self._emit("downloading", offset + received)
            self._emit("downloading", offset + received)
            if length is not None and received < length:
                raise _Retryable(
                    f"connection closed after {offset + received} of {offset + length} bytes"
                )
            if self.total_bytes is not None and offset + received < self.total_bytes:
                raise _Retryable(
                    f"response ended at byte {offset + received} of {self.total_bytes}"
                )
            if self.total_bytes is not None and offset + received > self.total_bytes:
                self._restart(
                    f"got {offset + received} bytes, expected {self.total_bytes}; "
                    "restarting the file"
                )


def download_file(
    entry: ManifestEntry,
    dest: str | Path,
    *,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> FileResult:
    """Download one manifest entry into ``dest``, resuming ``FILE.part`` if present.

    Retries with exponential backoff (from ``backoff_s`` seconds) on dropped connections,
    timeouts and 5xx; an attempt that added bytes resets the count, so ``retries`` is the
    number of consecutive attempts without progress. A file whose MD5 does not match is
    deleted and fetched again, at most ``retries`` times. Never raises for network trouble:
    the result's ``status`` is ``failed`` and ``error`` says why.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(
        entry,
        dest,
        retries=retries,
        timeout_s=timeout_s,
        backoff_s=backoff_s,
        progress=progress,
        cache=_VerifiedCache(dest),
        cancel=cancel or threading.Event(),
    )
    return _run_guarded(fetcher)


def _run_guarded(fetcher: _Fetcher) -> FileResult:
    try:
        return fetcher.run()
    except OSError as exc:  # local disk trouble: report it, keep the other files going
        message = f"{_describe(exc)}"
        fetcher._emit("failed", 0, message)
        return fetcher._result("failed", error=message)


def download_all(
    entries: Iterable[ManifestEntry],
    dest: str | Path,
    *,
    parallel: int = 2,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> DownloadReport:
    """Download every entry into ``dest``, ``parallel`` files at a time; files already
    present and verified are skipped. Returns a report in manifest order; failed files do
    not stop the others. On KeyboardInterrupt the workers stop and ``.part`` files stay.
    ``progress`` is called from the worker threads.

    Entries without an MD5 take theirs from ``MD5_checksums.txt`` (fetched first when the
    manifest lists it), so they are verified too.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    entries = list(entries)
    cancel = cancel or threading.Event()
    cache = _VerifiedCache(dest)

    def run(batch: list[ManifestEntry]) -> list[FileResult]:
        fetchers = [
            _Fetcher(
                e,
                dest,
                retries=retries,
                timeout_s=timeout_s,
                backoff_s=backoff_s,
                progress=progress,
                cache=cache,
                cancel=cancel,
            )
            for e in batch
        ]
        with ThreadPoolExecutor(
            max_workers=max(1, parallel), thread_name_prefix="deeplesion-download"
        ) as pool:
            futures = [pool.submit(_run_guarded, f) for f in fetchers]
            try:
                return [f.result() for f in futures]
            except BaseException:
                cancel.set()
                for f in futures:
                    f.cancel()
                raise

    results: dict[str, FileResult] = {}
    first = [e for e in entries if e.file == CHECKSUMS_FILE]
    if first and any(e.md5 is None for e in entries if e.file != CHECKSUMS_FILE):
        results.update((r.file, r) for r in run(first))
    rest = _with_checksums(dest, [e for e in entries if e.file not in results])
    results.update((r.file, r) for r in run(rest))
    return DownloadReport([results[e.file] for e in entries])


def _with_checksums(dest: Path, entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """Entries whose MD5 is missing get the one ``dest/MD5_checksums.txt`` gives, if any."""
    path = dest / CHECKSUMS_FILE
    if not path.is_file() or all(e.md5 for e in entries):
        return entries
    try:
        known = read_checksums_file(path)
    except (ManifestError, UnicodeDecodeError):
        return entries
    return [
        replace(e, md5=known[e.file]) if e.md5 is None and e.file in known else e for e in entries
    ]


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class FileCheck:
    """State of one manifest file in a download folder: ``complete`` (MD5 matches),
    ``corrupt`` (MD5 differs), ``unchecked`` (present, no MD5 known), ``partial`` (only a
    ``.part`` file) or ``missing``."""

    file: str
    status: str
    path: Path
    size_bytes: int = 0
    md5: str | None = None
    expected_md5: str | None = None


@dataclass(slots=True)
class VerifyReport:
    checks: list[FileCheck] = field(default_factory=list)

    def with_status(self, status: str) -> list[FileCheck]:
        return [c for c in self.checks if c.status == status]

    @property
    def ok(self) -> bool:
        """True when every file is complete (or present without a known MD5)."""
        return all(c.status in ("complete", "unchecked") for c in self.checks)


def verify(
    dest: str | Path, entries: Iterable[ManifestEntry], *, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Hash every present file and compare it with the manifest MD5 (or, for entries without
    one, with ``MD5_checksums.txt`` in ``dest`` when present). Updates the verified cache."""
    dest = Path(dest)
    entries = list(entries)
    extra: dict[str, str] = {}
    if (dest / CHECKSUMS_FILE).is_file():
        try:
            extra = read_checksums_file(dest / CHECKSUMS_FILE)
        except (ManifestError, UnicodeDecodeError):
            extra = {}
    cache = _VerifiedCache(dest) if dest.is_dir() else None
    checks = []
    for entry in entries:
        path = dest / entry.file
        expected = entry.md5 or extra.get(entry.file)
        if not path.is_file():
            part = dest / (entry.file + PART_SUFFIX)
            status = "partial" if part.is_file() else "missing"
            size = part.stat().st_size if part.is_file() else 0
            checks.append(FileCheck(entry.file, status, path, size, None, expected))
            continue
        size = path.stat().st_size
        if expected is None:
            checks.append(FileCheck(entry.file, "unchecked", path, size, None, None))
            continue

        def tick(n: int, name: str = entry.file, total: int = size) -> None:
            if progress is not None:
                progress(FileProgress(name, "verifying", n, total))

        digest = md5_of(path, tick)
        if digest == expected:
            assert cache is not None
            cache.record(path, digest)
            checks.append(FileCheck(entry.file, "complete", path, size, digest, expected))
        else:
            if cache is not None:
                cache.forget(path)
            checks.append(FileCheck(entry.file, "corrupt", path, size, digest, expected))
    return VerifyReport(checks)
