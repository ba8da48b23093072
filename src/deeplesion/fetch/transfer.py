"""One file's HTTP transfer: resumed with Range requests into ``FILE.part``, retried with
backoff, checked against its MD5 (or, without one, its length and an overlap of bytes)
and renamed to ``FILE`` only when complete.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deeplesion import __version__
from deeplesion.errors import DeepLesionError
from deeplesion.fetch.checksums import VerifiedCache, md5_of
from deeplesion.fetch.manifest import PART_SUFFIX, ManifestEntry

_CHUNK_BYTES = 256 * 1024
_MAX_BACKOFF_S = 60.0
_PROGRESS_INTERVAL_S = 0.1
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")
#: Without an MD5, a resumed request starts this many bytes early and the overlap must match
#: the bytes already downloaded (catches a server whose 206 starts elsewhere than it says).
_OVERLAP_BYTES = 64 * 1024


class DownloadError(DeepLesionError, OSError):
    """One file could not be downloaded (after all retries)."""


class DownloadCancelled(DeepLesionError, RuntimeError):
    """A download stopped on request (e.g. Ctrl-C); the ``.part`` file is kept."""


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


def describe(exc: BaseException) -> str:
    """A short reason for a network or disk error (``timed out``, ``ConnectionResetError: ...``)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Fetcher:
    """Downloads one manifest entry into ``dest`` (one instance per file); ``cache`` may be
    shared by the fetchers of one folder, ``cancel`` by those of one run."""

    def __init__(
        self,
        entry: ManifestEntry,
        dest: Path,
        retries: int,
        timeout_s: float,
        backoff_s: float,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        cache: VerifiedCache | None = None,
    ) -> None:
        self.entry, self.dest = entry, dest
        self.final = dest / entry.file
        self.part = dest / (entry.file + PART_SUFFIX)
        self.retries, self.timeout_s, self.backoff_s = retries, timeout_s, backoff_s
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.cache = cache or VerifiedCache(dest)
        self.total_bytes: int | None = None
        self.fetched_bytes = 0
        self.attempts = 0
        self.length_known = False  # the last response gave the file's length

    def emit(self, state: str, done: int, message: str = "") -> None:
        if self.progress is not None:
            self.progress(FileProgress(self.entry.file, state, done, self.total_bytes, message))

    def result(self, status: str, *, verified: bool = False, error: str = "") -> FileResult:
        return FileResult(
            self.entry.file, status, self.final, self.fetched_bytes, self.attempts, verified, error
        )

    def _verified_md5(self, path: Path) -> str:
        return md5_of(path, lambda n: self.emit("verifying", n))

    def run(self) -> FileResult:
        entry = self.entry
        rechecking = None  # (size, mtime) of a present file without MD5 being rechecked
        if self.final.is_file():
            size = self.final.stat().st_size
            if entry.md5 is None:
                # Nothing to hash against: ask the server again for its length (and the
                # last bytes) by resuming it as a part file; the bytes stay if that fails.
                st = self.final.stat()
                rechecking = (st.st_size, st.st_mtime_ns)
                os.replace(self.final, self.part)
            elif (
                self.cache.known_md5(self.final) == entry.md5
                or self._verified_md5(self.final) == entry.md5
            ):
                self.cache.record(self.final, entry.md5)
                self.emit("present", size)
                return self.result("present", verified=True)
            else:
                # Present but corrupt: fetch again; the good copy replaces it atomically.
                self.cache.forget(self.final)
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
                self._restore(rechecking)
                self.emit("failed", offset, str(exc))
                return self.result("failed", error=str(exc))
            except _Retryable as exc:
                last_error = str(exc)
                grown = (self.part.stat().st_size if self.part.exists() else 0) > offset
                failures = 0 if grown else failures + 1  # only stalled attempts count
                if failures > self.retries:
                    message = (
                        f"{last_error} (gave up after {self.retries} "
                        f"retr{'y' if self.retries == 1 else 'ies'} without progress)"
                    )
                    self._restore(rechecking)
                    self.emit("failed", offset, message)
                    return self.result("failed", error=message)
                self.emit("retrying", offset, last_error)
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
                    self.emit("failed", 0, message)
                    return self.result("failed", error=message)
                self.emit("retrying", 0, message)
                self._pause(checksum_failures)
                continue
            os.replace(self.part, self.final)
            if entry.md5 is not None:
                self.cache.record(self.final, digest)
            if rechecking is not None and rechecking[0] == size and not self.fetched_bytes:
                self.emit("present", size)  # the server's length agrees; nothing changed
                return self.result("present")
            self.emit("done", size)
            return self.result("downloaded", verified=entry.md5 is not None)

    def _restore(self, rechecking: tuple[int, int] | None) -> None:
        """A present file whose recheck failed goes back to its name if it is unchanged."""
        if rechecking is None or not self.part.exists():
            return
        st = self.part.stat()
        if (st.st_size, st.st_mtime_ns) == rechecking:
            os.replace(self.part, self.final)

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
        overlap = min(offset, _OVERLAP_BYTES) if self.entry.md5 is None else 0
        self.length_known = False
        if offset:
            headers["Range"] = f"bytes={offset - overlap}-"
        request = urllib.request.Request(self.entry.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                _, total = _content_range(exc.headers.get("Content-Range"))
                if total == offset:  # the part file already holds every byte
                    self.total_bytes = total
                    self.length_known = True
                    return
                self._restart(
                    f"server refused to resume at byte {offset} (HTTP 416); restarting the file"
                )
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
            raise _Fatal(f"HTTP {exc.code} {exc.reason} for {self.entry.url}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(describe(exc)) from exc
        with response:
            status = response.status
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise _Fatal(
                    f"server sent Content-Encoding {encoding!r} although identity was asked "
                    f"for; the bytes would not be the file ({self.entry.url})"
                )
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset - overlap:
                    self._restart(
                        f"server sent a range starting at byte {start}, the part "
                        f"file ends at byte {offset}; restarting the file"
                    )
                self.total_bytes = total
                self.length_known = total is not None
                if overlap:
                    self._check_overlap(response, offset, overlap)
                    if length is not None:
                        length -= overlap
                mode = "ab"
            elif status == 200:
                # A full response; when a range was asked for, the server ignored it.
                offset, mode = 0, "wb"
                self.total_bytes = length
                self.length_known = length is not None
            else:
                raise _Retryable(f"unexpected HTTP status {status}")
            received, last_emit = 0, time.monotonic()
            self.emit("downloading", offset)
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
                            f"connection lost after {offset + received} bytes ({describe(exc)})"
                        ) from exc
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    self.fetched_bytes += len(chunk)
                    now = time.monotonic()
                    if now - last_emit >= _PROGRESS_INTERVAL_S:
                        last_emit = now
                        self.emit("downloading", offset + received)
            self.emit("downloading", offset + received)
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
            if not self.length_known and self.entry.md5 is None:
                # Neither an MD5 nor a length: the body may have been cut short. Keep the
                # bytes and ask again with a range, whose Content-Range gives the total.
                raise _Retryable(
                    f"the server gave no length for {offset + received} bytes and the "
                    "manifest no MD5; asking again to confirm the size"
                )

    def _check_overlap(self, response, offset: int, overlap: int) -> None:
        """The first ``overlap`` bytes of a resumed answer must equal the part file's end."""
        got = b""
        try:
            while len(got) < overlap and (chunk := response.read1(overlap - len(got))):
                got += chunk
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection lost ({describe(exc)})") from exc
        with open(self.part, "rb") as fh:
            fh.seek(offset - overlap)
            have = fh.read(overlap)
        if got != have:
            self._restart(
                f"the server's bytes {offset - overlap}-{offset - 1} differ from those "
                "already downloaded (its range is not where it says); restarting the file"
            )
