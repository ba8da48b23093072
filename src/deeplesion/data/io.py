"""Safe file writing: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".incomplete", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the final file normal modes
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """Save a matplotlib ``Figure`` atomically (format from the suffix, PNG by default)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", **savefig_kwargs)
    return path


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's content (a leading BOM dropped).

    Bytes that are not UTF-8 raise :class:`~deeplesion.errors.CellError` naming the file,
    the line and the offending byte, instead of a bare UnicodeDecodeError.
    """
    return decode_utf8(Path(path).read_bytes(), path)


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` (the content of ``path``) as text, a leading BOM dropped; see :func:`read_text`."""
    from deeplesion.errors import CellError

    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CellError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8",
            file=str(path),
            line=line,
        ) from None


# --------------------------------------------------------------------------- output rules
#
# One rule for every command that writes: an existing output file is never replaced unless
# the caller asks (``overwrite=True``, the CLI's ``--overwrite``); folder writers keep what
# is already there and finish the rest. A folder being written holds a lock file, so a
# second run into it stops instead of interleaving.

#: Lock file a run holds in its output folder while it writes there.
LOCK_NAME = ".deeplesion.lock"
#: A lock file that cannot be read is taken for stale after this many seconds.
_UNREADABLE_LOCK_STALE_S = 10.0


def check_new_output(path: str | Path, *, overwrite: bool = False) -> Path:
    """Raise :class:`~deeplesion.errors.OutputExistsError` when ``path`` exists and
    ``overwrite`` is False; returns the path. Call it before any work is done."""
    from deeplesion.errors import OutputExistsError

    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    return path


def existing_outputs(paths: Iterable[str | Path]) -> list[Path]:
    """Those of ``paths`` that already exist."""
    return [Path(p) for p in paths if Path(p).exists() or Path(p).is_symlink()]


def _lock_holder(lock: Path) -> dict | None:
    import json

    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_stale(lock: Path, holder: dict | None) -> bool:
    import socket
    import time

    if holder is None:  # being written right now, or garbage left by a crash
        try:
            return time.time() - lock.stat().st_mtime > _UNREADABLE_LOCK_STALE_S
        except OSError:
            return True
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process cannot be checked from here
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False


@contextlib.contextmanager
def output_lock(folder: str | Path, *, command: str = "", name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold ``folder/name`` (created with O_EXCL, holding pid, host and command) while
    writing into ``folder``.

    A lock held by a live process raises :class:`~deeplesion.errors.OutputLockedError`
    naming it; a stale one (its process is gone on this host) is taken over. The lock is
    removed on exit.
    """
    import json
    import socket
    import time

    from deeplesion.errors import OutputLockedError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / name
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if _is_stale(lock, holder):
                # Rename first, so two runs that both found it stale do not both take it.
                aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
                with contextlib.suppress(OSError):
                    os.replace(lock, aside)
                    aside.unlink()
                continue
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')}, "
                f"{holder.get('command') or 'deeplesion'}, since {holder.get('started')}"
                if holder
                else "a run that is starting"
            )
            raise OutputLockedError(
                f"{folder} is being written by another run ({who}); wait for it to finish, "
                f"or delete {lock} if that run no longer exists"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record))
        break
    else:
        raise OutputLockedError(f"{folder}: could not take the lock {lock}")
    try:
        yield lock
    finally:
        if _lock_holder(lock) == record:
            with contextlib.suppress(OSError):
                lock.unlink()
