"""Safe, resumable extraction of the release zips into ``ROOT/Images_png/...``.

Every member is checked before it is written: paths that would land outside ROOT
(``..``, absolute paths, drive letters, paths through a link), links and special files are
refused. Members are written to a temporary name and renamed, so an interrupted run leaves
no half files; members already present with the right size and CRC-32 are skipped.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from deeplesion.data.io import atomic_path
from deeplesion.data.paths import IMAGES_DIR
from deeplesion.errors import DeepLesionError, MissingDataError

_CHUNK_BYTES = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class ExtractError(DeepLesionError, OSError):
    """Extraction cannot go on (e.g. ROOT cannot be written)."""


class UnsafeMemberError(DeepLesionError, ValueError):
    """A zip member whose name or type is refused (zip-slip, absolute path, link)."""


@dataclass(frozen=True, slots=True)
class MemberProblem:
    """A member that was not extracted, and why."""

    archive: str
    member: str
    reason: str

    def __str__(self) -> str:
        return f"{self.archive}: {self.member!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ExtractProgress:
    """Members of ``archive`` handled so far (written, skipped or refused)."""

    archive: str
    done_members: int
    total_members: int


@dataclass(slots=True)
class ArchiveResult:
    """One zip: members written, skipped (already there with the right CRC), problems, and
    ``error`` when the archive itself could not be read (truncated, not a zip)."""

    archive: Path
    members: int = 0
    written: int = 0
    skipped: int = 0
    problems: list[MemberProblem] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.problems


@dataclass(slots=True)
class ExtractReport:
    archives: list[ArchiveResult] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(a.written for a in self.archives)

    @property
    def skipped(self) -> int:
        return sum(a.skipped for a in self.archives)

    @property
    def problems(self) -> list[MemberProblem]:
        return [p for a in self.archives for p in a.problems]

    @property
    def unreadable(self) -> list[ArchiveResult]:
        return [a for a in self.archives if a.error]

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.archives)


def find_archives(dest: str | Path) -> list[Path]:
    """The release zips to extract: ``dest`` itself when it is a file, else the
    ``Images_png_*.zip`` files in the folder ``dest``, sorted by name."""
    dest = Path(dest)
    if dest.is_file():
        return [dest]
    if not dest.is_dir():
        raise MissingDataError(f"{dest}: no such file or folder")
    return sorted(dest.glob("Images_png_*.zip"))


def member_relpath(name: str) -> PurePosixPath:
    """Where a member goes, relative to ROOT: ``Images_png/...`` (prefixed when the member
    does not start with it). Raises UnsafeMemberError for paths that would leave ROOT."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise UnsafeMemberError("absolute path refused")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMemberError("path with '..' refused (it could land outside ROOT)")
    if not parts:
        raise UnsafeMemberError("empty member name")
    if parts[0] != IMAGES_DIR:
        parts.insert(0, IMAGES_DIR)
    return PurePosixPath(*parts)


def _member_kind(info: zipfile.ZipInfo) -> str:
    """``file``, ``dir``, ``link`` or ``special`` from the member's Unix mode bits."""
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no type
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "dir"
    if file_type == stat.S_IFLNK:
        return "link"
    if file_type not in (0, stat.S_IFREG):
        return "special"
    return "file"


def _inside(path: Path, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def _crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc


def _already_extracted(target: Path, info: zipfile.ZipInfo) -> bool:
    try:
        if not target.is_file() or target.stat().st_size != info.file_size:
            return False
        return _crc32_of(target) == info.CRC
    except OSError:
        return False


def extract_archive(
    zip_path: str | Path,
    root: str | Path,
    *,
    progress: Callable[[ExtractProgress], None] | None = None,
) -> ArchiveResult:
    """Extract one zip into ``root``; never raises for a bad archive or member (they are
    reported in the result), raises ExtractError when ``root`` cannot be written."""
    zip_path, root = Path(zip_path), Path(root)
    result = ArchiveResult(zip_path)
    name = zip_path.name
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        result.error = f"truncated or not a zip archive ({exc})"
        return result
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        archive.close()
        raise ExtractError(f"{root}: cannot create the dataset root ({exc})") from exc
    root_real = os.path.realpath(root)
    with archive:
        infos = archive.infolist()
        result.members = len(infos)
        safe_folders: set[Path] = set()  # folders already checked to lie inside ROOT
        for done, info in enumerate(infos, start=1):
            problem = _extract_member(archive, info, root, root_real, result, safe_folders)
            if problem:
                result.problems.append(MemberProblem(name, info.filename, problem))
            if progress is not None:
                progress(ExtractProgress(name, done, len(infos)))
    return result


def _extract_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    root: Path,
    root_real: str,
    result: ArchiveResult,
    safe_folders: set[Path],
) -> str:
    """Extract one member; returns a problem description, or '' when all went well."""
    try:
        rel = member_relpath(info.filename)
    except UnsafeMemberError as exc:
        return str(exc)
    kind = _member_kind(info)
    if kind == "link":
        return "symbolic link refused"
    if kind == "special":
        return "special file (device, fifo or socket) refused"
    target = root.joinpath(*rel.parts)
    folder = target if kind == "dir" else target.parent
    outside = "path resolves outside ROOT (through a link) and was refused"
    try:
        if folder not in safe_folders:
            if not _inside(folder, root_real):
                return outside
            folder.mkdir(parents=True, exist_ok=True)
            if not _inside(folder, root_real):  # a link raced into place meanwhile
                return outside
            safe_folders.add(folder)
        if kind == "dir":
            return ""
        # An existing link at ``target`` itself is harmless: os.replace swaps the link out.
        if _already_extracted(target, info):
            result.skipped += 1
            return ""
    except (FileExistsError, NotADirectoryError) as exc:  # a file where a folder must go
        return f"cannot create its folder ({exc})"
    except OSError as exc:
        raise ExtractError(f"{target}: cannot write ({exc})") from exc
    try:
        with atomic_path(target) as tmp, archive.open(info) as src, open(tmp, "wb") as dst:
            while chunk := src.read(_CHUNK_BYTES):  # zipfile checks the CRC-32 at EOF
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        return f"corrupt member ({exc})"
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
        return f"cannot be read ({exc})"
    except (IsADirectoryError, NotADirectoryError) as exc:  # a folder where the file must go
        return f"cannot be written ({exc})"
    except OSError as exc:
        raise ExtractError(f"{target}: cannot write ({exc})") from exc
    result.written += 1
    return ""


def extract_all(
    archives: Iterable[str | Path],
    root: str | Path,
    *,
    progress: Callable[[ExtractProgress], None] | None = None,
) -> ExtractReport:
    """Extract each zip in turn into ``root``; a bad archive is reported and skipped."""
    return ExtractReport([extract_archive(a, root, progress=progress) for a in archives])
