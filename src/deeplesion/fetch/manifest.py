"""The download list: a manifest of release files (``file``, ``url``, ``md5``), which
of them to fetch (``--only``), and the release's ``MD5_checksums.txt``.

A manifest is a tab-separated file with the columns ``file``, ``url`` and ``md5`` (the
md5 cell may be empty). The official one ships with the package.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deeplesion.data.io import read_text
from deeplesion.errors import DeepLesionError

#: Public landing page of the release (where DL_info.csv and the zips are listed).
RELEASE_PAGE = "https://nihcc.app.box.com/v/DeepLesion"
#: A file being downloaded is ``FILE.part`` until its checksum matches.
PART_SUFFIX = ".part"
CHECKSUMS_FILE = "MD5_checksums.txt"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MD5_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_ZIP_NUMBER = re.compile(r"_(\d+)\.zip$", re.IGNORECASE)


class ManifestError(DeepLesionError, ValueError):
    """A manifest that cannot be used; names the file, line, column and value."""


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
        if md5 and not MD5_PATTERN.match(md5):
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


def read_checksums_file(path: str | Path) -> dict[str, str]:
    """Parse an ``MD5_checksums.txt`` (``<md5>  <file name>`` per line) into {name: md5}."""
    result: dict[str, str] = {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not MD5_PATTERN.match(parts[0].lower()):
            raise ManifestError(
                f"file {path}, line {line_no}, value {line!r}: expected '<md5>  <file name>'"
            )
        result[parts[1].lstrip("*")] = parts[0].lower()
    return result


def folder_checksums(dest: Path) -> dict[str, str]:
    """{name: md5} from ``dest/MD5_checksums.txt``; empty when it is absent or unreadable."""
    path = dest / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        return read_checksums_file(path)
    except (ManifestError, UnicodeDecodeError):
        return {}
