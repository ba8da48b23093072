"""Review commands: render, gallery, bodymap, report."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import (
    bad_parameter,
    console,
    err_console,
    fail_cleanly,
    load_table,
    overwrite_option,
    progress_bar,
)
from deeplesion.cli._options import (
    EXISTING_DIR,
    NEW_PATH,
    csv_argument,
    csv_option,
    figure_path,
    out_option,
    root_argument,
    seed_option,
    splits_option,
)
from deeplesion.data.annotations import LesionTable
from deeplesion.data.io import check_new_output
from deeplesion.data.windowing import WINDOW_PRESETS, parse_window
from deeplesion.errors import InvalidArgumentError, NotFoundError

_TYPE = click.option(
    "--type",
    "types",
    multiple=True,
    metavar="NAME|CODE",
    help="Only these lesion types, e.g. 'liver' or 4 (repeatable).",
)
_CSV = csv_option("Annotation file (default: ROOT/DL_info.csv). Extra columns are fine.")


def _fraction(help: str):
    return click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), help=help)


def _filter(table: LesionTable, splits=(), types=(), files=()) -> LesionTable:
    """The library's filters, with bad values reported against the option that gave them."""
    for hint, kwargs in (("--split", {"splits": splits}), ("--type", {"types": types})):
        with bad_parameter(hint, InvalidArgumentError):
            table.filtered(**kwargs)
    names = [n for f in files for n in f.split(",")]
    with bad_parameter("--files", NotFoundError):
        return table.filtered(splits, types, names)


def _odd_context(ctx, param, value: int) -> int:
    """Click callback: context slices are centred on the key slice, so an odd count."""
    if value < 1 or value % 2 == 0:
        raise click.BadParameter(f"must be an odd number >= 1, got {value}")
    return value


def _check_window(window: str) -> str:
    with bad_parameter("--window", ValueError):
        parse_window(window, (0.0, 1.0))
    return window


@click.command()
@root_argument
@out_option(
    "out_dir",
    NEW_PATH,
    "Folder for the PNGs (one per key slice, named by File_name).",
    required=True,
)
@click.option(
    "--window",
    default="dicom",
    help=f"dicom (the row's DICOM_windows), {', '.join(WINDOW_PRESETS)}, or MIN,MAX HU.",
)
@splits_option()
@_TYPE
@click.option(
    "--files",
    multiple=True,
    metavar="NAME",
    help="Only these key slices (File_name; repeatable or comma-separated).",
)
@_CSV
@click.option(
    "--crops",
    is_flag=True,
    help="Also write OUT/crops/: each lesion zoomed, context slices side by side.",
)
@click.option(
    "--context",
    "context_slices",
    default=3,
    callback=_odd_context,
    help="Slices per crop (odd; 2 mm apart).",
)
@click.option("--line-width", default=1, help="Line width in pixels.")
@click.option("--overwrite", is_flag=True, help="Redraw PNGs that already exist.")
def render(
    root: Path,
    out_dir: Path,
    window: str,
    splits,
    types,
    files,
    csv_path,
    crops: bool,
    context_slices: int,
    line_width: int,
    overwrite: bool,
) -> None:
    """Key slices with their lesions drawn (long axis, short axis, box, label).

    ROOT is a dataset root (Images_png/<folder>/<NNN>.png) or a flat folder of key slices
    named by File_name (ROOT/Images_png/<File_name> or ROOT/<File_name>). Existing PNGs
    are kept, so an interrupted run resumes.
    """
    from deeplesion.review.batch import group_by_key_slice, render_key_slices
    from deeplesion.review.render import DrawStyle

    with fail_cleanly():
        table = _filter(load_table(csv_path or root), splits, types, files)
        _check_window(window)
        n = len(group_by_key_slice(table))
        with progress_bar("rendering key slices", n) as update:
            result = render_key_slices(
                root,
                table,
                out_dir,
                window=window,
                style=DrawStyle(line_width_px=line_width),
                overwrite=overwrite,
                crops=crops,
                context_slices=context_slices,
                progress=update,
            )
    for name, reason in result.failed:
        err_console.print(f"[red]failed[/red] {name}: {reason}")
    if result.absent:
        err_console.print(
            f"[yellow]{len(result.absent):,} key slices are not under {root}; "
            f"{n - len(result.absent):,} of {n:,} present[/yellow] (not downloaded or "
            "extracted yet; not counted as failures)"
        )
    if result.crops_with_missing:
        err_console.print(
            f"[yellow]{len(result.crops_with_missing)} crops have context slices that are "
            "missing or unreadable, shown as blank tiles marked 'missing'[/yellow]"
        )
    counts = f"{len(result.written)} key slices written, {len(result.skipped)} already there"
    if crops:
        counts += (
            f"; {len(result.crops_written)} crops written, "
            f"{len(result.crops_skipped)} already there"
        )
    console.print(f"{counts}; {len(result.failed)} failed -> {out_dir}")
    kept = len(result.skipped) + len(result.crops_skipped)
    if kept:
        console.print(f"{kept} kept; pass --overwrite to redraw them")
    if result.failed:
        raise SystemExit(1)


@click.command()
@root_argument
@out_option("out_path", NEW_PATH, "Output PNG.", required=True)
@click.option("--per-type", default=4, help="Lesions per type.")
@seed_option("Random seed of the choice.")
@click.option(
    "--context",
    "context_slices",
    default=1,
    callback=_odd_context,
    help="Slices per tile (odd; 3 shows the neighbours 2 mm away).",
)
@click.option("--tile", "tile_px", default=128, help="Tile size (px).")
@click.option("--window", default="dicom", help="As for render.")
@click.option("--unlabelled", is_flag=True, help="Add a row of unlabelled (train) lesions.")
@splits_option()
@_TYPE
@_CSV
@overwrite_option
def gallery(
    root: Path,
    out_path: Path,
    per_type: int,
    seed: int,
    context_slices: int,
    tile_px: int,
    window: str,
    unlabelled: bool,
    splits,
    types,
    csv_path,
    overwrite: bool,
) -> None:
    """A montage of lesion crops grouped by lesion type, labelled a., b., c. ..."""
    from deeplesion.review.gallery import write_gallery

    with fail_cleanly():
        check_new_output(out_path, overwrite=overwrite)
        table = _filter(load_table(csv_path or root), splits, types)
        _check_window(window)
        skipped: list[tuple[object, str]] = []
        entries = write_gallery(
            out_path,
            root,
            table,
            per_type=per_type,
            seed=seed,
            tile_px=tile_px,
            context_slices=context_slices,
            window=window,
            include_unlabelled=unlabelled,
            on_skip=lambda lesion, reason: skipped.append((lesion, reason)),
        )
    for _, reason in skipped[:5]:
        err_console.print(f"[yellow]skipped[/yellow] {reason}")
    with_missing = sum(1 for e in entries if e.missing_mm)
    single = sum(e.n_slices < context_slices for e in entries)
    for count, message in (
        (len(skipped), "lesions left out: key slice unreadable or not the size DL_info gives"),
        (
            with_missing,
            f"of {len(entries)} tiles have context slices that are missing or unreadable, "
            "shown as blank tiles marked 'missing'",
        ),
        (
            single,
            f"of {len(entries)} tiles show the key slice only: context slices not found "
            f"under {root} (flat layout, key slices only)",
        ),
    ):
        if count:
            err_console.print(f"[yellow]{count} {message}[/yellow]")
    console.print(f"{len(entries)} lesions -> {out_path}")


@click.command()
@csv_argument
@out_option(
    "out_path", NEW_PATH, "Output file: .png, .svg or .pdf.", required=True, callback=figure_path
)
@_fraction("Plot a random fraction of the lesions (the README figure used 0.15).")
@seed_option()
@click.option("--no-unlabelled", is_flag=True, help="Leave out unlabelled (grey) lesions.")
@click.option(
    "--root",
    type=EXISTING_DIR,
    help="Dataset root: show example crops around the map with leader lines.",
)
@click.option("--thumbnails", default=8, help="How many crops with --root (one per type).")
@splits_option()
@overwrite_option
def bodymap(
    csv_path: Path,
    out_path: Path,
    fraction,
    seed: int,
    no_unlabelled: bool,
    root,
    thumbnails: int,
    splits,
    overwrite: bool,
) -> None:
    """Lesions' normalised x against z (head at the top), coloured by type (README Fig. 1)."""
    from deeplesion.review.bodymap import plotted_lesions, write_body_map

    with fail_cleanly():
        check_new_output(out_path, overwrite=overwrite)
        table = _filter(load_table(csv_path), splits)
        write_body_map(
            out_path,
            table,
            fraction=fraction,
            seed=seed,
            include_unlabelled=not no_unlabelled,
            root=root,
            thumbnails=thumbnails,
        )
        plotted, eligible = plotted_lesions(
            table, fraction=fraction, seed=seed, include_unlabelled=not no_unlabelled
        )
    shown = (
        f"{len(plotted)} of {len(eligible)}"
        if len(plotted) != len(eligible)
        else f"{len(eligible)}"
    )
    console.print(f"{shown} lesions plotted -> {out_path}")


@click.command()
@csv_argument
@click.option(
    "--root", type=EXISTING_DIR, help="Dataset root: adds a gallery and annotated key slices."
)
@out_option("out_dir", NEW_PATH, "Folder for report.html.", required=True)
@_fraction("Body map of a random fraction of the lesions.")
@click.option("--per-type", default=4, help="Gallery lesions per type.")
@seed_option()
@overwrite_option
def report(
    csv_path: Path, root, out_dir: Path, fraction, per_type: int, seed: int, overwrite: bool
) -> None:
    """One self-contained HTML page: counts, distributions, body map, gallery."""
    from deeplesion.review.report import REPORT_FILE, REPORT_SECTIONS, write_report

    with fail_cleanly():
        check_new_output(out_dir / REPORT_FILE, overwrite=overwrite)
    sections = REPORT_SECTIONS if root is not None else REPORT_SECTIONS[:-1]
    with fail_cleanly(), progress_bar("report", len(sections)) as update:
        done = []

        def step(name: str) -> None:
            done.append(name)
            update(len(done))

        table = load_table(csv_path)
        path = write_report(
            table.source,
            out_dir,
            root=root,
            table=table,
            fraction=fraction,
            per_type=per_type,
            seed=seed,
            progress=step,
        )
    console.print(f"report -> {path}")
