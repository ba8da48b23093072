"""Commands: volumes (index report), and the converters nifti (sub-volumes as NIfTI) and store
(the slices training reads, as int16 arrays; with --verify, checked against the PNGs)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.markup import escape

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    print_unconverted,
    progress_bar,
)
from deeplesion.cli._options import (
    choice_option,
    csv_option,
    out_argument,
    parallel_options,
    root_argument,
    splits_option,
)
from deeplesion.convert.nifti import BACKENDS, LAYOUTS, export_nifti
from deeplesion.convert.store import build_store, verify_store
from deeplesion.data.store import FORMATS
from deeplesion.data.volumes import index_volumes


def _spacing(ctx, param, value: str | None) -> tuple[float, float, float] | None:
    """Click callback: ``--spacing X,Y,Z`` in mm, all > 0."""
    if value is None:
        return None
    try:
        x_mm, y_mm, z_mm = (float(v) for v in value.replace(" ", "").split(","))
    except ValueError:  # not a number, or not three of them
        x_mm = y_mm = z_mm = 0.0
    if not (x_mm > 0 and y_mm > 0 and z_mm > 0):
        raise click.BadParameter(
            f"{value!r}: expected X,Y,Z in mm, all > 0, e.g. 0.8,0.8,5", param_hint="--spacing"
        )
    return x_mm, y_mm, z_mm


_CSV = csv_option("DL_info.csv (default: ROOT/DL_info.csv if present).")
_SPACING = click.option(
    "--spacing",
    "default_spacing_mm",
    callback=_spacing,
    help="X,Y,Z mm for series folders without DL_info rows "
    "(otherwise they are reported and skipped).",
)


@click.command()
@root_argument
@_CSV
@_SPACING
@click.option("--check", is_flag=True, help="Decode every slice; split runs at unreadable ones.")
@click.option("--list", "list_volumes", is_flag=True, help="List every sub-volume.")
def volumes(
    root: Path,
    csv_path: Path | None,
    default_spacing_mm: tuple[float, float, float] | None,
    check: bool,
    list_volumes: bool,
) -> None:
    """Index ROOT: series folders, contiguous sub-volumes, and what does not fit."""
    with fail_cleanly(), progress_bar("decoding slices", None, lazy=True) as update:
        index = index_volumes(
            root,
            csv_path,
            default_spacing_mm=default_spacing_mm,
            check_slices=check,
            progress=update if check else None,
        )
    if list_volumes:
        for v in index.volumes:
            spacing_text = (
                "unknown (no DL_info row; --spacing X,Y,Z)"
                if v.spacing_mm is None
                else ", ".join(f"{s:g}" for s in v.spacing_mm) + " mm"
            )
            keys = " ".join(map(str, v.key_slices)) or "-"
            console.print(
                f"{v.name}  {v.n_slices} slices  spacing {spacing_text}  key slices {keys}"
            )
    console.print(
        f"{len(index.slices)} series folders, {len(index.volumes)} sub-volumes, "
        f"{index.n_slices} slices"
    )
    for kind, count in sorted(Counter(p.kind for p in index.problems).items()):
        console.print(f"  {kind}: {count}")
    for problem in index.problems:
        if problem.kind != "gap":
            err_console.print(str(problem), markup=False)


@click.command()
@root_argument
@out_argument
@_CSV
@choice_option(
    "--layout",
    LAYOUTS,
    "project",
    "project: voxel (i,j,k) = DL_info pixel (x=i+1, y=j+1) of slice first+k; "
    "official: the official script's (row, col, slice) array and affine.",
)
@parallel_options
@_SPACING
@choice_option("--compression", BACKENDS, "auto", "gzip encoder: isal (extra [fast]) or zlib.")
@click.option("--level", type=int, help="gzip level (default: zlib 1, isal 2).")
def nifti(root: Path, out: Path, **settings) -> None:
    """Write one int16 .nii.gz per contiguous sub-volume of ROOT into OUT (resumable)."""
    # settings: csv_path, layout, workers, shard, scheduler, default_spacing_mm,
    # compression, level (export_nifti's own names)
    with fail_cleanly(), progress_bar("slices", None) as update:
        report = export_nifti(root, out, progress=update, **settings)
    print_unconverted(
        report.unreadable, report.not_exported, "spacing unknown (no DL_info row; pass --spacing)"
    )
    console.print(
        f"{len(report.volumes)} volumes in {out}: {report.written} written, "
        f"{report.skipped} already complete; {len(report.unreadable)} unreadable "
        f"slices, {len(report.not_exported)} runs without spacing"
    )
    console.print(f"manifest: {report.manifest_path}  report: {report.problems_path}")
    if not report.volumes:
        raise click.ClickException(
            f"no volume exported from {root}"
            + (
                " (series folders without DL_info rows need --spacing X,Y,Z)"
                if report.not_exported
                else ""
            )
        )


def _size(n_bytes: int) -> str:
    value, unit = float(n_bytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


@click.command()
@root_argument
@out_argument
@csv_option("DL_info.csv (default: ROOT/DL_info.csv).")
@splits_option("Only lesions of this split (repeatable; default: all).")
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
    shard: tuple[int, int] | None,
    scheduler: str | None,
    verify: bool,
) -> None:
    """Convert the slices training reads from ROOT's PNGs into int16 HU arrays in OUT.

    By default each lesion's Slice_range is stored. Resumable: a rerun keeps complete
    arrays. Training reads the result with --store OUT (no PNG decoding).
    """
    if context_mm is not None and whole_series:
        raise click.UsageError("give either --context-mm or --whole-series, not both")
    with fail_cleanly(), progress_bar("slices", None) as update:
        report = build_store(
            root,
            out,
            csv_path=csv_path,
            splits=splits or None,
            context_mm=context_mm,
            whole_series=whole_series,
            fmt=fmt,
            workers=workers,
            shard=shard,
            scheduler=scheduler,
            progress=update,
        )
    print_unconverted(report.unreadable, report.not_stored, "spacing unknown (no DL_info row)")
    missing = report.missing_series
    if missing:
        rows = sum(
            1 for p in report.problems if p.kind == "row-without-image" and p.folder in missing
        )
        err_console.print(
            f"[yellow]missing[/yellow] {len(missing)} series folders of the selected lesions "
            f"are not under {root}/Images_png ({rows} lesions; e.g. {missing[0]})"
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
            err_console.print(f"[red]mismatch[/red] {escape(line)}")
        if not checked.ok:
            raise click.ClickException(
                f"{len(checked.mismatches)} of {checked.slices} stored slices differ from the PNGs"
            )
        console.print(
            f"verified: {checked.slices} slices in {checked.volumes} arrays equal the PNGs"
        )
