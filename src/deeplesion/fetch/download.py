"""Resumable, checksum-verified downloads of the release files listed in a manifest.

Each file is fetched into ``FILE.part`` with HTTP Range requests, so an interrupted
download resumes where it stopped; it is renamed to ``FILE`` only after its MD5 matches
the manifest (:mod:`.transfer`). The list is read by :mod:`.manifest`; files already
there are checked with :mod:`.checksums`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from deeplesion.data.io import output_lock
from deeplesion.fetch.checksums import VerifiedCache, md5_of
from deeplesion.fetch.manifest import (
    CHECKSUMS_FILE,
    PART_SUFFIX,
    ManifestEntry,
    folder_checksums,
)
from deeplesion.fetch.transfer import (
    DownloadError,
    Fetcher,
    FileProgress,
    FileResult,
    ProgressCallback,
    describe,
)


@dataclass(slots=True)
class DownloadReport:
    """Every file's outcome, in manifest order."""

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
    with output_lock(dest, command="download"):
        return _run_guarded(Fetcher(entry, dest, retries, timeout_s, backoff_s, progress, cancel))


def _run_guarded(fetcher: Fetcher) -> FileResult:
    try:
        return fetcher.run()
    except OSError as exc:  # local disk trouble: report it, keep the other files going
        message = describe(exc)
        fetcher.emit("failed", 0, message)
        return fetcher.result("failed", error=message)


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
    with output_lock(dest, command="download"):
        cache = VerifiedCache(dest)

        def run(batch: list[ManifestEntry]) -> list[FileResult]:
            fetchers = [
                Fetcher(e, dest, retries, timeout_s, backoff_s, progress, cancel, cache)
                for e in batch
            ]
            return _run_parallel(fetchers, parallel, cancel)

        results: dict[str, FileResult] = {}
        first = [e for e in entries if e.file == CHECKSUMS_FILE]
        if first and any(e.md5 is None for e in entries if e.file != CHECKSUMS_FILE):
            results.update((r.file, r) for r in run(first))
        rest = _with_checksums(dest, [e for e in entries if e.file not in results])
        results.update((r.file, r) for r in run(rest))
    return DownloadReport([results[e.file] for e in entries])


def _run_parallel(
    fetchers: list[Fetcher], parallel: int, cancel: threading.Event
) -> list[FileResult]:
    """Every fetcher's result, ``parallel`` at a time; on an interrupt the others stop."""
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


def _with_checksums(dest: Path, entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """Entries whose MD5 is missing get the one ``dest/MD5_checksums.txt`` gives, if any."""
    if all(e.md5 for e in entries):
        return entries
    known = folder_checksums(dest)
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
    """Every manifest file's state, in manifest order."""

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
    extra = folder_checksums(dest)
    cache = VerifiedCache(dest) if dest.is_dir() else None
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
