"""Command: growth (lesions linked across a patient's studies, RECIST 1.1 responses)."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.analysis.growth import NEW_LESION_RULES
from deeplesion.analysis.tracks import MatchRule
from deeplesion.cli._common import (
    console,
    fail_cleanly,
    load_table,
    overwrite_option,
    print_table,
    progress_bar,
    warn,
)
from deeplesion.cli._options import EXISTING_DIR, NEW_DIR, choice_option, csv_argument, out_option
from deeplesion.data.io import check_new_output


def warn_missing_tiles(missing: int, tiles: int, root: Path | None) -> None:
    """Say how many crop tiles had no image under ``root``."""
    if missing:
        warn(
            f"{missing} of {tiles} crop tiles have no image: key slice not found or unreadable "
            f"under {root} (release layout Images_png/<folder>/<NNN>.png, or flat copies "
            "named by File_name)"
        )


@click.command()
@csv_argument
@click.option("--patient", type=int, multiple=True, help="Only these patients (repeatable).")
@out_option("out_dir", NEW_DIR, "Write tracks.csv, responses.csv and per-patient plots here.")
@overwrite_option
@click.option("--root", type=EXISTING_DIR, help="Dataset root: add crop strips across studies.")
@click.option("--max-cost", default=MatchRule.max_cost, help="Links costing more are refused.")
@click.option(
    "--location-scale",
    default=MatchRule.location_scale_norm,
    help="Normalised distance that costs one unit.",
)
@choice_option(
    "--missing",
    ["carry", "ne"],
    "carry",
    "Target lesion not annotated in a follow-up: carry its last size forward, or call the "
    "follow-up NE.",
)
@choice_option(
    "--new-lesions",
    ["ignore", "pd"],
    "ignore",
    "An unmatched lesion in a follow-up: ignore = a new annotation, listed but not PD "
    "(DeepLesion annotates only some lesions per study); pd = strict RECIST 1.1.",
)
def growth(
    csv_path: Path,
    patient: tuple[int, ...],
    out_dir: Path | None,
    root: Path | None,
    max_cost: float,
    location_scale: float,
    missing: str,
    new_lesions: str,
    overwrite: bool,
) -> None:
    """Link lesions across each patient's studies; tracks and RECIST 1.1 responses."""
    from deeplesion.analysis.figures import write_growth_files
    from deeplesion.analysis.growth import analyse_growth

    with fail_cleanly():
        if out_dir is not None:
            for name in ("tracks.csv", "responses.csv"):
                check_new_output(out_dir / name, overwrite=overwrite)
        table = load_table(csv_path)
        lesions = [l for l in table if not patient or l.patient_index in patient]
        if not lesions:
            raise click.ClickException(f"no lesions for patient(s) {list(patient)}")
        rule = MatchRule(max_cost=max_cost, location_scale_norm=location_scale)
        analysis = analyse_growth(lesions, rule, missing=missing, new_lesions=new_lesions)
        output = None
        if out_dir is not None:
            with progress_bar("growth files (patients)", None) as update:
                output = write_growth_files(analysis, out_dir, root=root, progress=update)
    responses, followed = analysis.responses, analysis.followed
    new_label = " new annotation" if new_lesions == "ignore" else " new"
    print_table(
        ("patient", "track", "studies", "long diameters (mm)", "change", "min conf"),
        (
            (
                str(p),
                f"{tr.track_id}{new_label if tr.is_new else ''}",
                ",".join(str(o.study_index) for o in tr.observations),
                " -> ".join(f"{o.long_mm:.1f}" for o in tr.observations),
                f"{tr.change_mm:+.1f} mm ({tr.change_pct:+.0f}%)",
                "" if tr.min_confidence is None else f"{tr.min_confidence:.2f}",
            )
            for p, ts in followed.items()
            for tr in ts
        ),
        title=f"tracks ({len(followed)} patients with follow-up studies)",
    )
    print_table(
        ("patient", "study", "SLD mm", "vs baseline", "vs nadir", "response", "reason"),
        (
            (
                str(p),
                str(x.study_index),
                f"{x.sld_mm:.1f}",
                f"{x.change_from_baseline_pct:+.0f}%",
                f"{x.change_from_nadir_pct:+.0f}%",
                x.category,
                x.reason,
            )
            for p in followed
            for x in responses[p]
        ),
        title="RECIST 1.1 response (targets = lesions of the first study)",
    )
    new_tracks = sum(tr.is_new for ts in followed.values() for tr in ts)
    console.print(
        f"new-lesion rule ({'--new-lesions ' + new_lesions}): {NEW_LESION_RULES[new_lesions]}; "
        f"{new_tracks} unmatched follow-up lesions"
        + ("" if new_lesions == "pd" else " (pass --new-lesions pd for strict RECIST 1.1)"),
        highlight=False,
    )
    if output is not None:
        console.print(
            f"wrote {len(output.written)} files under {out_dir}: tracks.csv, "
            f"responses.csv, {len(output.plots)} patient plots"
            + (f", {len(output.strips)} crop strips in strips/" if root is not None else "")
        )
        warn_missing_tiles(output.missing_tiles, output.strip_tiles, root)
