"""Command: measure (RECIST diameters, area and checks; distances between lesions)."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import console, fail_cleanly, load_table, print_table
from deeplesion.cli._options import csv_argument


def _where(row_index: int) -> str:
    return f"row_index {row_index} (CSV line {row_index + 2})"


@click.command()
@csv_argument
@click.argument("file_names", nargs=-1)
@click.option(
    "--tolerance-px",
    default=0.01,
    help="Report rows whose end points and Lesion_diameters_Pixel_ differ more.",
)
def measure(csv_path: Path, file_names: tuple[str, ...], tolerance_px: float) -> None:
    """RECIST diameters (mm), ellipse area and checks; distances between listed lesions
    of the same patient.

    Rows are named by their 0-based data row index and their CSV line (header = line 1).
    """
    from deeplesion.data.measurement import MeasurementError, lesion_distance
    from deeplesion.data.measurement import measure as measure_lesion

    with fail_cleanly():
        table = load_table(csv_path)
    chosen = [l for l in table if l.file_name in set(file_names)] if file_names else []
    if file_names and not chosen:
        raise click.ClickException(f"none of {list(file_names)} is in {csv_path}")
    measured = [measure_lesion(l) for l in table]
    off = [m for m in measured if m.discrepancy_px > tolerance_px]
    worst = max(off, key=lambda m: m.discrepancy_px) if off else None
    console.print(
        f"{len(measured)} lesions; {len(off)} with end points and "
        f"Lesion_diameters_Pixel_ differing by more than {tolerance_px} px"
        + (f" (worst {worst.discrepancy_px:.3f} px, {_where(worst.row_index)})" if worst else ""),
        highlight=False,
    )
    if not chosen:
        return
    by_row = {m.row_index: m for m in measured}
    rows = [(l, by_row[l.row_index]) for l in chosen]
    print_table(
        [
            (heading, {"overflow": "fold"})
            for heading in (
                "row_index (0-based)",
                "CSV line",
                "file name",
                "long mm",
                "short mm",
                "area mm2",
                "axes angle",
            )
        ],
        (
            (
                str(l.row_index),
                str(l.row_index + 2),
                l.file_name,
                f"{m.long_mm:.2f}",
                f"{m.short_mm:.2f}",
                f"{m.area_mm2:.1f}",
                f"{m.axes_angle_deg:.1f}",
            )
            for l, m in rows
        ),
    )
    across_patients = 0
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            try:
                d = lesion_distance(a, b)
            except MeasurementError:
                across_patients += 1
                continue
            console.print(
                f"{_where(a.row_index)} - {_where(b.row_index)}: {d.mm:.1f} mm ({d.method})",
                highlight=False,
            )
    if across_patients:
        console.print(
            f"{across_patients} pair(s) of lesions of different patients left out: "
            "distances are measured within one patient only",
            highlight=False,
        )
