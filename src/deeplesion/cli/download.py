"""Getting the data: download, verify, extract."""

from __future__ import annotations

import threading
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress, TaskID

from deeplesion.cli._common import (
    KeyedBars,
    console,
    err_console,
    fail_cleanly,
    print_problems,
    progress_display,
)
from deeplesion.fetch.download import download_all
from deeplesion.fetch.download import verify as verify_files
from deeplesion.fetch.extract import ExtractLimits, ExtractProgress, extract_all, find_archives
from deeplesion.fetch.manifest import PART_SUFFIX, RELEASE_PAGE, load_manifest, select_entries
from deeplesion.fetch.transfer import FileProgress

_MANIFEST = click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Tab-separated file,url,md5 list (default: the official one).",
)
_ONLY = click.option(
    "--only", metavar="NUMBERS", help="Zip numbers, e.g. '1-5,9'; files without a number are kept."
)


def _seconds(name: str, default: float, minimum: float, help: str):
    """A duration option, in seconds, into the parameter ``<name>_s``."""
    dest = name.removeprefix("--") + "_s"
    return click.option(name, dest, type=click.FloatRange(minimum), default=default, help=help)


class _DownloadBars:
    """Turns FileProgress events (from worker threads) into one bar per file being fetched
    and an overall bar of the bytes this run still has to fetch."""

    def __init__(self, progress: Progress, files: list[str]) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.overall = progress.add_task("all files", total=None)
        self.tasks: dict[str, TaskID] = {}
        self.unstarted = set(files)  # neither fetched yet nor found present
        self.start: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.total: dict[str, int | None] = {}

    def _update_overall(self) -> None:
        fetched = sum(self.done[f] - self.start[f] for f in self.done)
        sizes = {f: t for f, t in self.total.items() if t is not None}
        to_fetch = sum(t - self.start[f] for f, t in sizes.items())
        if len(sizes) != len(self.total) or not sizes:
            total = None  # a server that does not say how big a file is
        else:  # files not started yet are guessed at the mean size of the others
            total = to_fetch + len(self.unstarted) * sum(sizes.values()) // len(sizes)
        label = "all files" + (
            f" ({len(self.unstarted)} not started, estimated)"
            if self.unstarted and total is not None
            else ""
        )
        self.progress.update(self.overall, completed=fetched, total=total, description=label)

    def __call__(self, event: FileProgress) -> None:
        with self.lock:
            name = event.file
            self.unstarted.discard(name)
            if event.state in ("downloading", "verifying", "retrying"):
                if name not in self.tasks:
                    self.tasks[name] = self.progress.add_task(
                        name, total=event.total_bytes, completed=event.done_bytes
                    )
                label = {
                    "downloading": name,
                    "verifying": f"{name} [cyan](checking MD5)",
                    "retrying": f"{name} [yellow](retrying: {escape(event.message)})",
                }
                self.progress.update(
                    self.tasks[name],
                    description=label[event.state],
                    completed=event.done_bytes,
                    total=event.total_bytes,
                )
                if event.state == "downloading":
                    self.start[name] = min(self.start.get(name, event.done_bytes), event.done_bytes)
                    self.done[name] = event.done_bytes
                    self.total[name] = event.total_bytes
                    self._update_overall()
                return
            if name in self.tasks:
                self.progress.remove_task(self.tasks.pop(name))
            if event.state == "done":
                self.progress.console.print(f"[green]downloaded[/green] {name}")
            elif event.state == "failed":
                if name in self.done:  # count it as finished so the overall bar can end
                    self.total[name] = self.done[name]
                    self._update_overall()
                self.progress.console.print(f"[red]failed[/red] {name}: {escape(event.message)}")


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@_MANIFEST
@_ONLY
@click.option(
    "--parallel", type=click.IntRange(1, 16), default=2, help="Files fetched at the same time."
)
@click.option(
    "--retries",
    type=click.IntRange(0, 1000),
    default=5,
    help="Consecutive attempts without progress before giving up on a file.",
)
@_seconds("--timeout", 60.0, 0.1, "Seconds without data before an attempt is dropped.")
@_seconds("--backoff", 1.0, 0, "First pause between retries (doubles each time).")
def download(
    dest: Path,
    manifest: Path | None,
    only: str | None,
    parallel: int,
    retries: int,
    timeout_s: float,
    backoff_s: float,
) -> None:
    """Download the release zips into DEST: resumable, retried, MD5-verified.

    Rerun the same command to resume; files already present and verified are skipped."""
    with fail_cleanly():
        entries = select_entries(load_manifest(manifest), only)
        try:
            with progress_display(in_bytes=True) as progress:
                report = download_all(
                    entries,
                    dest,
                    parallel=parallel,
                    retries=retries,
                    timeout_s=timeout_s,
                    backoff_s=backoff_s,
                    progress=_DownloadBars(progress, [e.file for e in entries]),
                )
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: partial files ({PART_SUFFIX}) are kept; run the "
                "same command again to resume"
            )
            raise SystemExit(130) from None
    downloaded, present = report.with_status("downloaded"), report.with_status("present")
    console.print(
        f"{dest}: {len(downloaded)} downloaded, {len(present)} already present, "
        f"{len(report.failed)} failed "
        f"({sum(r.fetched_bytes for r in report.results) / 1e6:.1f} MB fetched)"
    )
    unverified = [r.file for r in downloaded + present if not r.verified]
    if unverified:
        console.print(
            f"[yellow]unverified[/yellow] (no MD5 known; complete by length only, checked "
            f"again by each rerun): {', '.join(unverified)}"
        )
    if not any(e.file == "DL_info.csv" for e in entries):
        console.print(
            f"DL_info.csv is not in the manifest: download it from {RELEASE_PAGE} "
            "and put it in the dataset root next to Images_png/."
        )
    if report.failed:
        for r in report.failed:
            console.print(f"[red]FAILED[/red] {r.file}: {escape(r.error)}")
        raise click.ClickException(
            f"{len(report.failed)} file(s) failed: {', '.join(r.file for r in report.failed)}"
            "; run the same command again to retry them"
        )


@click.command()
@click.argument("dest", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_MANIFEST
@_ONLY
def verify(dest: Path, manifest: Path | None, only: str | None) -> None:
    """Check the files in DEST against the manifest MD5s; exit 1 unless all are complete."""
    with fail_cleanly():
        entries = select_entries(load_manifest(manifest), only)
        with progress_display(in_bytes=True) as display:
            bars = KeyedBars(display)

            def update(event: FileProgress) -> None:
                bars.update(
                    f"{event.file} (MD5)",
                    event.done_bytes,
                    event.total_bytes,
                    remove_when_done=True,
                )

            report = verify_files(dest, entries, progress=update)
    labels = {
        "complete": "[green]complete[/green]",
        "unchecked": "present (no MD5 to check)",
        "partial": "[yellow]partial[/yellow]",
        "missing": "[yellow]missing[/yellow]",
        "corrupt": "[red]corrupt[/red]",
    }
    for check in report.checks:
        if check.status == "complete":
            continue
        detail = ""
        if check.status == "corrupt":
            detail = f": MD5 {check.md5}, expected {check.expected_md5}"
        elif check.status == "partial":
            detail = f": {check.size_bytes} bytes in {check.file}{PART_SUFFIX}"
        console.print(f"{labels[check.status]} {check.file}{detail}")
    counts = {s: len(report.with_status(s)) for s in labels}
    console.print(
        ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "complete")
        + f" (of {len(report.checks)} files in the manifest)"
    )
    if not report.ok:
        raise SystemExit(1)


@click.command()
@click.argument("dest", type=click.Path(exists=True, path_type=Path))
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-shown", default=50, help="Problems to print.")
@click.option(
    "--max-member-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=64.0,
    help="Refuse members declaring more MiB than this (a CT slice is well under 8).",
)
@click.option(
    "--max-ratio",
    type=click.FloatRange(min=1),
    default=100.0,
    help="Refuse members (of 1 MiB or more) compressed more than this (zip bombs).",
)
@click.option("--overwrite", is_flag=True, help="Replace files under ROOT whose contents differ.")
def extract(
    dest: Path,
    root: Path,
    max_shown: int,
    max_member_mb: float,
    max_ratio: float,
    overwrite: bool,
) -> None:
    """Unpack the Images_png_*.zip files in DEST (or the zip DEST) into ROOT/Images_png/.

    Checks CRCs, skips members already extracted, refuses members that would land outside
    ROOT, links and zip bombs; keeps (and reports) existing files with other contents and
    duplicate members; a damaged archive is reported and the others still extracted."""
    limits = ExtractLimits(max_member_bytes=int(max_member_mb * 2**20), max_ratio=max_ratio)
    with fail_cleanly():
        archives = find_archives(dest)
        if not archives:
            raise click.ClickException(f"{dest}: no Images_png_*.zip files here")
        with progress_display() as display:
            bars = KeyedBars(display)

            def update(event: ExtractProgress) -> None:
                bars.update(event.archive, event.done_members, event.total_members)

            report = extract_all(
                archives, root, progress=update, limits=limits, overwrite=overwrite
            )
    for result in report.archives:
        state = (
            f"[red]unreadable[/red]: {escape(result.error)}"
            if result.error
            else f"{result.written} written, {result.skipped} already there, "
            f"{len(result.problems)} refused or corrupt"
        )
        console.print(f"{result.archive.name}: {state}")
    print_problems(report.problems, max_shown)
    console.print(
        f"{root}: {report.written} files written, {report.skipped} already there "
        f"from {len(report.archives)} archive(s)"
    )
    if not report.ok:
        raise SystemExit(1)
