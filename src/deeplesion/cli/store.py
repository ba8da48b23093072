"""Command: store (convert the slices training reads into int16 arrays, and verify them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.markup import escape

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    parallel_options,
    progress_bar,
)
from deeplesion.convert.jobs import parse_shard
from deeplesion.convert.store import StoreBuildError, build_store, verify_store
from deeplesion.data.store import FORMATS


def _size(n_bytes: int) -> str:
    value, unit = float(n_bytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


@click.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv).",
)
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(["train", "val", "test"]),
    help="Only lesions of this split (repeatable; default: all).",
)
@click.option(
    "--context-mm",
    type=click.FloatRange(min=0),
    metavar="MM",
    help="Store the slices within MM of each key slice instead of its Slice_range.",
)
@click.option("--whole-series", is_flag=True, help="Store every slice of the lesions' series.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="npy",
    show_default=True,
    help="npy: raw arrays for memory mapping (fastest reads); zarr: Zarr v3, Blosc zstd "
    "(smaller than the PNGs, extra [store]).",
)
@parallel_options
@click.option("--verify", is_flag=True, help="Afterwards re-read every PNG and compare.")
def store(
    root: Path,
    out: Path,
    csv_path: Path | None,
    splits: tuple[str, ...],
    context_mm: float | None,
    whole_series: bool,
    fmt: str,
    workers: int,
    shard: str | None,
    scheduler: str | None,
    verify: bool,
) -> None:
    """Convert the slices training reads from ROOT's PNGs into int16 HU arrays in OUT.

    By default each lesion's Slice_range is stored. Resumable: a rerun keeps complete
    arrays. Training reads the result with --store OUT (no PNG decoding).
    """
    if context_mm is not None and whole_series:
        raise click.UsageError("give either --context-mm or --whole-series, not both")
    with fail_cleanly():
        try:
            shard_spec = parse_shard(shard, StoreBuildError) if shard else None
        except StoreBuildError as exc:
            raise click.BadParameter(str(exc), param_hint="--shard") from None
        with progress_bar("slices", None) as update:
            report = build_store(
                root,
                out,
                csv_path=csv_path,
                splits=splits or None,
                context_mm=context_mm,
                whole_series=whole_series,
                fmt=fmt,
                workers=workers,
                shard=shard_spec,
                scheduler=scheduler,
                progress=update,
            )
    for problem in report.unreadable:
        err_console.print(f"[yellow]warning[/yellow] {escape(str(problem))}", highlight=False)
    for sub in report.not_stored:
        err_console.print(
            f"[yellow]skipped[/yellow] {sub.name}: spacing unknown (no DL_info row)",
            highlight=False,
        )
    missing = report.missing_series
    if missing:
        rows = sum(
            1 for p in report.problems if p.kind == "row-without-image" and p.folder in missing
        )
        err_console.print(
            f"[yellow]missing[/yellow] {len(missing)} series folders of the selected lesions "
            f"are not under {root}/Images_png ({rows} lesions; e.g. {missing[0]})",
            highlight=False,
        )
    ratio = report.size_bytes / report.png_bytes if report.png_bytes else float("nan")
    console.print(
        f"{len(report.runs)} arrays, {report.n_slices} slices in {out}: {report.written} "
        f"written, {report.skipped} already complete"
    )
    console.print(
        f"size {_size(report.size_bytes)} ({fmt}) for {_size(report.png_bytes)} of PNGs "
        f"(x{ratio:.2f})"
    )
    counts = Counter(p.kind for p in report.problems)
    console.print(
        "problems: "
        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
        + f"  (listed in {report.problems_path})"
    )
    console.print(f"index: {report.index_path}")
    if not report.runs:
        raise click.ClickException(f"nothing stored from {root} (no selected slice on disk)")
    if verify:
        with fail_cleanly(), progress_bar("verifying", None) as update:
            checked = verify_store(root, out, workers=workers, scheduler=scheduler, progress=update)
        for line in checked.mismatches:
            err_console.print(f"[red]mismatch[/red] {escape(line)}", highlight=False)
        if not checked.ok:
            raise click.ClickException(
                f"{len(checked.mismatches)} of {checked.slices} stored slices differ from the PNGs"
            )
        console.print(
            f"verified: {checked.slices} slices in {checked.volumes} arrays equal the PNGs"
        )
