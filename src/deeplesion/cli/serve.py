"""Command: serve (the lesion explorer web app)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import click

from deeplesion.cli._common import console, err_console, fail_cleanly, load_table
from deeplesion.cli._options import csv_option, lesanet_options, root_argument, store_option


@click.command()
@root_argument
@csv_option("Annotation file (default ROOT/DL_info.csv).")
@store_option("Read slices from a training store (deeplesion store ROOT OUT) before the PNGs.")
@lesanet_options("LesaNet program_data folder: tag filters.")
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8765, type=click.IntRange(1, 65535))
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
def serve(
    root: Path,
    csv_path: Path | None,
    store: Path | None,
    lesanet: Path | None,
    override_fingerprint: bool,
    host: str,
    port: int,
    open_browser: bool,
) -> None:
    """Browse ROOT's lesions and slices in a web browser (needs the [serve] extra).

    ROOT holds Images_png/ (or flat key slices) and DL_info.csv; with --store, slices come
    from the store first. The server only reads: slice names are checked and no file
    outside ROOT (or the store) is served.
    """
    started = time.perf_counter()
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        raise click.ClickException(
            'serve needs starlette and uvicorn: pip install "deeplesion[serve]"'
        )
    from deeplesion.data.store import open_store
    from deeplesion.explorer.server import (
        check_port,
        find_table,
        is_loopback,
        open_explorer,
        run,
        url_for,
    )

    with fail_cleanly():
        check_port(host, port)
        table = load_table(find_table(root, csv_path))
        source = open_store(store) if store is not None else None
        explorer = open_explorer(
            root,
            csv_path=csv_path,
            lesanet=lesanet,
            source=source,
            table=table,
            override_fingerprint=override_fingerprint,
        )
        # PNGs uncompressed for a browser on this machine (CPU is dearer than bytes there)
        app = explorer.app(png_level=0 if is_loopback(host) else 1)
    for note in explorer.notes:
        err_console.print(f"[yellow]note[/yellow]: {note}")
    if not is_loopback(host):
        err_console.print(
            f"[bold red]warning[/bold red]: listening on {host}: the images and annotations "
            "become reachable from the network, without any login. Use 127.0.0.1 unless "
            "you mean it."
        )
    url = url_for(host, port)
    console.print(
        f"{len(table)} lesions from {explorer.info['csv']} ready in "
        f"{time.perf_counter() - started:.1f} s: open {url} (Ctrl-C stops)",
        highlight=False,
    )
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    run(app, host, port)
