"""Safe, resumable extraction of the release zips into ``ROOT/Images_png/...``.

Every member is checked before it is written: paths that would land outside ROOT
(``..``, absolute paths, drive letters, paths through a link), links and special files are
refused. Members are written to a temporary name and renamed, so an interrupted run leaves
no half files; members already present with the right size and CRC-32 are skipped.

Zip bombs: a member whose declared size or compression ratio is implausible for a CT slice
(:class:`ExtractLimits`) is refused, the bytes written are counted against the declared
size, and an archive is not started without the free space its members need. Duplicate
member names, two members that map to one path, and an existing file with other contents
are reported; the existing (or first) file is kept unless ``overwrite``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from deeplesion.data.io import atomic_path, output_lock
from deeplesion.data.paths import IMAGES_DIR
from deeplesion.errors import DeepLesionError, MissingDataError

_CHUNK_BYTES = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """What a member may declare. A release slice is a 16-bit PNG (already deflated, so
    zip compresses it hardly at all): 512 x 512 is about 0.3-0.5 MiB, the largest slices
    a few MiB. ``None`` switches a limit off."""

    max_member_bytes: int | None = 64 * _MIB
    #: uncompressed / compressed size; checked for members of at least ``ratio_floor_bytes``
    max_ratio: float | None = 100.0
    ratio_floor_bytes: int = _MIB


class ExtractError(DeepLesionError, OSError):
    """Extraction cannot go on (e.g. ROOT cannot be written)."""


class UnsafeMemberError(DeepLesionError, ValueError):
    """A zip member whose name or type is refused (zip-slip, absolute path, link)."""


class _TooLong(Exception):
    """Internal: a member decompressed to more bytes than it declares."""


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


def _limit_problem(info: zipfile.ZipInfo, limits: ExtractLimits) -> str:
    if limits.max_member_bytes is not None and info.file_size > limits.max_member_bytes:
        return (
            f"declares {info.file_size:,} bytes, more than a CT slice can be "
            f"({limits.max_member_bytes:,}; --max-member-mb raises the limit); refused"
        )
    if (
        limits.max_ratio is not None
        and info.file_size >= limits.ratio_floor_bytes
        and info.file_size > limits.max_ratio * max(info.compress_size, 1)
    ):
        ratio = info.file_size / max(info.compress_size, 1)
        return (
            f"compression ratio {ratio:.0f}:1 is implausible for a PNG slice (limit "
            f"{limits.max_ratio:g}:1; --max-ratio raises it); refused as a possible zip bomb"
        )
    return ""


def _needed_bytes(infos: list[zipfile.ZipInfo], root: Path, limits: ExtractLimits) -> int:
    """Declared bytes of the members that are not already there with their size."""
    needed = 0
    for info in infos:
        if info.is_dir() or _limit_problem(info, limits):
            continue
        try:
            target = root.joinpath(*member_relpath(info.filename).parts)
            if target.is_file() and target.stat().st_size == info.file_size:
                continue
        except (UnsafeMemberError, OSError):
            continue
        needed += info.file_size
    return needed


def extract_archive(
    zip_path: str | Path,
    root: str | Path,
    *,
    progress: Callable[[ExtractProgress], None] | None = None,
    limits: ExtractLimits = ExtractLimits(),
    overwrite: bool = False,
    claimed: dict[Path, str] | None = None,
) -> ArchiveResult:
    """Extract one zip into ``root``; never raises for a bad archive or member (they are
    reported in the result), raises ExtractError when ``root`` cannot be written.

    ``claimed`` maps the files written in this run (by earlier archives too) to the member
    that wrote them, so a later member mapping to the same file is reported and skipped."""
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
    claimed = {} if claimed is None else claimed
    with archive:
        infos = archive.infolist()
        result.members = len(infos)
        needed = _needed_bytes(infos, root, limits)
        free = shutil.disk_usage(root).free
        if needed > free:
            result.error = (
                f"needs {needed / 1e9:.2f} GB for its members, {free / 1e9:.2f} GB free "
                f"under {root}; nothing extracted"
            )
            return result
        safe_folders: set[Path] = set()  # folders already checked to lie inside ROOT
        for done, info in enumerate(infos, start=1):
            problem = _limit_problem(info, limits) or _extract_member(
                archive, info, root, root_real, result, safe_folders, overwrite, claimed
            )
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
    overwrite: bool,
    claimed: dict[Path, str],
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
        first = claimed.get(target)
        if first is not None:
            same = (
                "duplicate member name"
                if first.endswith(f": {info.filename}")
                else (f"maps to the same file as {first}")
            )
            return f"{same}; the first one is kept"
        claimed[target] = f"{result.archive.name}: {info.filename}"
        # An existing link at ``target`` itself is harmless: os.replace swaps the link out.
        if _already_extracted(target, info):
            result.skipped += 1
            return ""
        if not overwrite and (target.exists() or target.is_symlink()):
            return f"{target} exists with other contents; kept (--overwrite replaces it)"
    except (FileExistsError, NotADirectoryError) as exc:  # a file where a folder must go
        return f"cannot create its folder ({exc})"
    except OSError as exc:
        raise ExtractError(f"{target}: cannot write ({exc})") from exc
    try:
        with atomic_path(target) as tmp, archive.open(info) as src, open(tmp, "wb") as dst:
            written = 0
            while chunk := src.read(_CHUNK_BYTES):  # zipfile checks the CRC-32 at EOF
                written += len(chunk)
                if written > info.file_size:
                    raise _TooLong(written)
                dst.write(chunk)
            if written != info.file_size:
                raise zipfile.BadZipFile(f"{written} bytes, the zip declares {info.file_size}")
    except _TooLong as exc:
        return f"gives more bytes ({exc.args[0]:,}+) than it declares ({info.file_size:,}); refused"
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
    limits: ExtractLimits = ExtractLimits(),
    overwrite: bool = False,
) -> ExtractReport:
    """Extract each zip in turn into ``root``; a bad archive is reported and skipped.

    Holds ``root/.deeplesion.lock`` meanwhile (OutputLockedError when another run does)."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExtractError(f"{root}: cannot create the dataset root ({exc})") from exc
    claimed: dict[Path, str] = {}
    with output_lock(root, command="extract"):
        return ExtractReport(
            [
                extract_archive(
                    a, root, progress=progress, limits=limits, overwrite=overwrite, claimed=claimed
                )
                for a in archives
            ]
        )
