"""Core commands: info, validate, stats."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import (
    console,
    fail_cleanly,
    find_csv,
    load_table,
    print_json,
    print_problems,
    print_values,
    progress_bar,
)
from deeplesion.data.annotations import OFFICIAL_ROWS, git_blob_id, is_official, load_lesions
from deeplesion.data.citation import citation_note
from deeplesion.data.paths import flat_key_slices
from deeplesion.data.stats import dataset_stats
from deeplesion.data.validation import validate as validate_csv
from deeplesion.fetch.completeness import completeness


@click.command()
@click.argument("root_or_csv", type=click.Path(exists=True, path_type=Path))
def info(root_or_csv: Path) -> None:
    """Describe a DL_info.csv, or a dataset root (folder with Images_png/ and DL_info.csv)."""
    with fail_cleanly():
        root = root_or_csv if root_or_csv.is_dir() else None
        csv_path = (
            find_csv(root_or_csv) if root is None or (root / "DL_info.csv").is_file() else None
        )
        if csv_path is not None:
            table = load_lesions(csv_path)
            stats = dataset_stats(table)
            official = is_official(csv_path)
            console.print(f"[bold]{csv_path}[/bold]")
            console.print(
                f"  git blob id {git_blob_id(csv_path)}: "
                + (
                    "[green]the official DL_info.csv[/green]"
                    if official
                    else f"not the official DL_info.csv ({len(table)} of "
                    f"{OFFICIAL_ROWS} rows; a split, excerpt or modified copy)"
                )
            )
            console.print(
                f"  {stats['lesions']} lesions on {stats['key_slices']} key slices, "
                f"{stats['series']} series, {stats['studies']} studies, "
                f"{stats['patients']} patients"
            )
            if table.problems:
                console.print(
                    f"  {len(table.fatal_problems)} fatal problems, {len(table.warnings)} "
                    "warnings (run `deeplesion validate`)"
                )
        if root is not None:
            images = root / "Images_png"
            folders = [p for p in images.iterdir() if p.is_dir()] if images.is_dir() else []
            n_slices = sum(1 for f in folders for _ in f.glob("*.png"))
            flat = flat_key_slices(root)
            if folders or not flat:
                console.print(
                    f"[bold]{root}[/bold]: {len(folders)} series folders, "
                    f"{n_slices} slices in Images_png/"
                )
            if flat:
                console.print(
                    f"[bold]{root}[/bold]: a flat folder of {len(flat)} key slices named by "
                    "File_name (render, gallery, report, similar and growth --root read it; "
                    "context slices, volumes and nifti need Images_png/<folder>/<NNN>.png)"
                )
            elif not folders:
                console.print(
                    "  no slices found: a dataset root holds DL_info.csv and Images_png/"
                    "<patient>_<study>_<series>/<NNN>.png (`deeplesion extract` makes it), "
                    "or key slices named by File_name directly in it or in Images_png/"
                )
            if csv_path is not None:
                c = completeness(root, table)
                console.print(
                    f"  series present: {c.series_present} of {c.series_expected} "
                    f"({c.series_complete} complete)"
                )
                console.print(f"  slices present: {c.slices_present} of {c.slices_expected}")
                console.print(
                    f"  key slices present: {c.key_slices_present} of {c.key_slices_expected}"
                )
        console.print(citation_note(), style="dim", highlight=False)


@click.command()
@click.argument(
    "csv_path", metavar="CSV", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--images",
    "images_root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset root; also check that every key slice PNG exists.",
)
@click.option("--max-shown", default=50, help="Problems to print.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def validate(csv_path: Path, images_root: Path | None, max_shown: int, strict: bool) -> None:
    """Check every row of a DL_info.csv; exit 1 when an error (or, with --strict, a
    warning) is found."""
    with fail_cleanly(), progress_bar("validating rows", None) as update:
        report = validate_csv(csv_path, images_root=images_root, progress=update)
    print_problems(report.problems, max_shown)
    if images_root is not None:
        present = report.key_slices - report.key_slices_absent
        console.print(
            f"{report.key_slices_absent:,} key slices are not under {images_root}; "
            f"{present:,} of {report.key_slices:,} present"
            + (
                " (absent ones are not errors: a partial download)"
                if present
                else " (none: is it the folder that holds Images_png/?)"
            )
        )
    console.print(
        f"{report.rows} rows: {len(report.fatal)} errors, {len(report.warnings)} warnings"
    )
    if report.fatal or (strict and report.problems):
        raise SystemExit(1)


@click.command()
@click.argument("csv_path", metavar="CSV", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(csv_path: Path, as_json: bool) -> None:
    """Counts of lesions, key slices, series, studies, patients, splits and types."""
    with fail_cleanly():
        result = dataset_stats(load_table(csv_path))
    if as_json:
        print_json(result)
        return
    keys = ("lesions", "key_slices", "series", "studies", "patients", "noisy")
    print_values(
        str(csv_path),
        {
            **{key: result[key] for key in keys},
            **{f"split {split}": n for split, n in result["by_split"].items()},
            **{f"type {name}": n for name, n in result["by_type"].items()},
        },
        digits=0,
    )
