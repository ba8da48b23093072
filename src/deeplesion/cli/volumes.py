"""Commands: volumes (index report), nifti (export sub-volumes)."""

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
from deeplesion.convert.nifti import (
    BACKENDS,
    LAYOUTS,
    NiftiExportError,
    export_nifti,
    in_shard,
    parse_shard,
)
from deeplesion.data.volumes import index_volumes


def _spacing(value: str | None) -> tuple[float, float, float] | None:
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


_ROOT = click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
_CSV = click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv if present).",
)
_SPACING = click.option(
    "--spacing",
    help="X,Y,Z mm for series folders without DL_info rows "
    "(otherwise they are reported and skipped).",
)


@click.command()
@_ROOT
@_CSV
@_SPACING
@click.option("--check", is_flag=True, help="Decode every slice; split runs at unreadable ones.")
@click.option("--list", "list_volumes", is_flag=True, help="List every sub-volume.")
def volumes(
    root: Path, csv_path: Path | None, spacing: str | None, check: bool, list_volumes: bool
) -> None:
    """Index ROOT: series folders, contiguous sub-volumes, and what does not fit."""
    with fail_cleanly():
        if check:
            with progress_bar("decoding slices", None) as update:
                index = index_volumes(
                    root,
                    csv_path,
                    default_spacing_mm=_spacing(spacing),
                    check_slices=True,
                    progress=lambda d, t: update(d, t),
                )
        else:
            index = index_volumes(root, csv_path, default_spacing_mm=_spacing(spacing))
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
@_ROOT
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@_CSV
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="project",
    show_default=True,
    help="project: voxel (i,j,k) = DL_info pixel (x=i+1, y=j+1) of slice first+k; "
    "official: the official script's (row, col, slice) array and affine.",
)
@parallel_options
@_SPACING
@click.option(
    "--compression",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="gzip encoder: isal (extra [fast]) or zlib.",
)
@click.option("--level", type=int, help="gzip level (default: zlib 1, isal 2).")
def nifti(
    root: Path,
    out: Path,
    csv_path: Path | None,
    layout: str,
    workers: int,
    shard: str | None,
    scheduler: str | None,
    spacing: str | None,
    compression: str,
    level: int | None,
) -> None:
    """Write one int16 .nii.gz per contiguous sub-volume of ROOT into OUT (resumable)."""
    with fail_cleanly():
        try:
            shard_spec = parse_shard(shard) if shard else None
        except NiftiExportError as exc:
            raise click.BadParameter(str(exc), param_hint="--shard") from None
        index = index_volumes(root, csv_path, default_spacing_mm=_spacing(spacing))
        total = sum(
            v.n_slices
            for v in index.volumes
            if v.spacing_mm is not None and in_shard(v, shard_spec)
        )
        with progress_bar("slices", total) as update:
            report = export_nifti(
                root,
                out,
                index=index,
                layout=layout,
                workers=workers,
                shard=shard_spec,
                scheduler=scheduler,
                compression=compression,
                level=level,
                progress=lambda done, total: update(done),
            )
    for problem in report.unreadable:
        err_console.print(f"[yellow]warning[/yellow] {escape(str(problem))}", highlight=False)
    for sub in report.not_exported:
        err_console.print(
            f"[yellow]skipped[/yellow] {sub.name}: spacing unknown (no DL_info "
            "row; pass --spacing)",
            highlight=False,
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
