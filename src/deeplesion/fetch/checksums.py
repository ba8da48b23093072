"""Checksums of downloaded files: MD5 with progress, and a per-folder record of files
already verified (so a rerun does not hash 4 GB again).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path

from deeplesion.data.io import write_text_atomic

#: Per-folder record of files whose MD5 was checked, keyed by size and mtime.
VERIFIED_CACHE = ".deeplesion-verified.json"


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


class VerifiedCache:
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
