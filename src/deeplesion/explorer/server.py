"""Putting the explorer together: load the table, choose the slice source, run uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import LesionTable, is_official, load_lesions
from deeplesion.data.paths import IMAGES_DIR
from deeplesion.data.sources import SliceSource
from deeplesion.errors import DeepLesionError
from deeplesion.explorer.catalog import Catalog
from deeplesion.explorer.images import SliceReader


class ServeError(DeepLesionError, ValueError):
    """Options the explorer cannot start with (no table, port taken, ...)."""


@dataclass
class Explorer:
    """A loaded catalog, its slice reader, and what /api/meta tells the page."""

    catalog: Catalog
    reader: SliceReader
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  #: things the CLI should say

    def app(self, *, png_level: int = 0):
        """The Starlette app; ``png_level`` 0 (no compression) suits a page on this machine,
        1 a page across a network."""
        from deeplesion.explorer.app import create_app

        return create_app(self.catalog, self.reader, info=self.info, png_level=png_level)


def find_table(root: Path, csv_path: Path | None) -> Path:
    """``--csv`` or ``ROOT/DL_info.csv``."""
    if csv_path is not None:
        if not csv_path.is_file():
            raise ServeError(f"{csv_path}: no such file")
        return csv_path
    candidate = root / "DL_info.csv"
    if not candidate.is_file():
        raise ServeError(f"{root}: no DL_info.csv in this folder; pass --csv")
    return candidate


def images_available(root: Path, source: SliceSource | None) -> bool:
    """Whether ROOT (or the store) holds any slice at all (cheap: one directory peek)."""
    if source is not None:
        return True
    images = root / IMAGES_DIR
    if images.is_dir() and next(images.iterdir(), None) is not None:
        return True
    return next(root.glob("*.png"), None) is not None


def open_explorer(
    root: str | Path,
    *,
    csv_path: str | Path | None = None,
    lesanet: str | Path | None = None,
    source: SliceSource | None = None,
    table: LesionTable | None = None,
    override_fingerprint: bool = False,
) -> Explorer:
    """Load everything the app needs. ``table`` skips loading (the CLI loads it itself).

    Tags are joined only to the official DL_info.csv (LesaNet indexes are its row numbers),
    or to any file with ``override_fingerprint``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ServeError(f"{root}: not a folder")
    csv = find_table(root, Path(csv_path) if csv_path is not None else None)
    if table is None:
        table = load_lesions(csv)
    notes: list[str] = []
    tagged = lesa = None
    if lesanet is not None:
        from deeplesion.data.tags import join_tags, load_lesanet

        if not (override_fingerprint or is_official(csv)):
            notes.append(
                f"{csv} is not the official DL_info.csv: LesaNet tags need the official "
                "file's row order, so tag filters are off"
            )
        else:
            try:
                lesa = load_lesanet(lesanet)
            except ImportError:  # the ontology needs openpyxl ([tags]); terms still work
                lesa = load_lesanet(lesanet, ontology=False)
                notes.append("no openpyxl: tag filters match the 171 terms exactly")
            tagged = join_tags(csv, lesa, table=table, override_fingerprint=override_fingerprint)
    reader = SliceReader(root, source)
    has_images = images_available(root, source)
    if not has_images:
        notes.append(f"no images under {root}: browsing the table only")
    info = {
        "root": str(root),
        "csv": str(csv),
        "source": "store" if source is not None else "png",
        "images": has_images,
        "problems": len(table.problems),
    }
    return Explorer(Catalog(table, tagged, lesa), reader, info, notes)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_port(host: str, port: int) -> None:
    """Raise :class:`ServeError` when ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
            ) from None


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def run(app, host: str, port: int) -> None:
    """Serve until Ctrl-C (uvicorn, access log off)."""
    import uvicorn

    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning", access_log=False)
