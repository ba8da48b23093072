"""Commands: growth, lesions (tag filter), similar, measure."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from deeplesion.analysis.growth import NEW_LESION_RULES
from deeplesion.analysis.tracks import MatchRule
from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    find_csv,
    load_table,
    overwrite_option,
    progress_bar,
)
from deeplesion.data.io import check_new_output
from deeplesion.errors import InvalidArgumentError

_CSV = click.Path(exists=True, path_type=Path)
_ROOT = click.Path(exists=True, file_okay=False, path_type=Path)


def _lesanet_options(f):
    f = click.option(
        "--override-fingerprint",
        is_flag=True,
        help="Join tags to a file that is not the official DL_info.csv "
        "(only if it keeps the official row order).",
    )(f)
    f = click.option(
        "--lesanet",
        type=_ROOT,
        default=None,
        help="LesaNet program_data folder (default: $DEEPLESION_LESANET).",
    )(f)
    return f


def _load_tagged(
    csv_path: Path, lesanet: Path | None, override: bool, table=None, *, ontology: bool = True
):
    from deeplesion.data.tags import check_official, join_tags, load_lesanet
    from deeplesion.errors import FingerprintError, MissingDataError

    try:
        check_official(csv_path, override_fingerprint=override)  # refuse before loading LesaNet
    except FingerprintError as exc:
        raise click.ClickException(f"{exc} Option: --override-fingerprint.") from None
    try:
        lesa = load_lesanet(lesanet, ontology=ontology)
    except MissingDataError as exc:
        raise click.ClickException(f"{exc} Option: --lesanet DIR.") from None
    tagged = join_tags(csv_path, lesa, override_fingerprint=override, table=table)
    if not tagged.official:
        console.print(
            f"[yellow]warning:[/yellow] {csv_path} is not the official DL_info.csv; "
            "tags joined by row index at your request"
        )
    return tagged, lesa


def _warn_missing(missing: int, tiles: int, root: Path | None) -> None:
    if missing:
        err_console.print(
            f"[yellow]warning:[/yellow] {missing} of {tiles} crop tiles have no "
            f"image: key slice not found or unreadable under {root} (release "
            "layout Images_png/<folder>/<NNN>.png, or flat copies named by "
            "File_name)",
            highlight=False,
        )


@click.command()
@click.argument("csv_path", metavar="CSV", type=_CSV)
@click.option("--patient", type=int, multiple=True, help="Only these patients (repeatable).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write tracks.csv, responses.csv and per-patient plots here.",
)
@overwrite_option
@click.option("--root", type=_ROOT, help="Dataset root: add crop strips across studies.")
@click.option(
    "--max-cost",
    type=float,
    default=MatchRule.max_cost,
    show_default=True,
    help="Links costing more are refused.",
)
@click.option(
    "--location-scale",
    type=float,
    default=MatchRule.location_scale_norm,
    show_default=True,
    help="Normalised distance that costs one unit.",
)
@click.option(
    "--missing",
    type=click.Choice(["carry", "ne"]),
    default="carry",
    show_default=True,
    help="Target lesion not annotated in a follow-up: carry its "
    "last size forward, or call the follow-up NE.",
)
@click.option(
    "--new-lesions",
    type=click.Choice(["ignore", "pd"]),
    default="ignore",
    show_default=True,
    help="An unmatched lesion in a follow-up: ignore = a new annotation, listed but not "
    "PD (DeepLesion annotates only some lesions per study); pd = strict RECIST 1.1.",
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
    t = Table(title=f"tracks ({len(followed)} patients with follow-up studies)")
    for col in ("patient", "track", "studies", "long diameters (mm)", "change", "min conf"):
        t.add_column(col)
    for p, ts in followed.items():
        for tr in ts:
            conf = tr.min_confidence
            t.add_row(
                str(p),
                f"{tr.track_id}{new_label if tr.is_new else ''}",
                ",".join(str(o.study_index) for o in tr.observations),
                " -> ".join(f"{o.long_mm:.1f}" for o in tr.observations),
                f"{tr.change_mm:+.1f} mm ({tr.change_pct:+.0f}%)",
                "" if conf is None else f"{conf:.2f}",
            )
    console.print(t)
    r = Table(title="RECIST 1.1 response (targets = lesions of the first study)")
    for col in ("patient", "study", "SLD mm", "vs baseline", "vs nadir", "response", "reason"):
        r.add_column(col)
    for p in followed:
        for x in responses[p]:
            r.add_row(
                str(p),
                str(x.study_index),
                f"{x.sld_mm:.1f}",
                f"{x.change_from_baseline_pct:+.0f}%",
                f"{x.change_from_nadir_pct:+.0f}%",
                x.category,
                x.reason,
            )
    console.print(r)
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
        _warn_missing(output.missing_tiles, output.strip_tiles, root)


@click.command()
@click.argument("csv_path", metavar="CSV", type=_CSV)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    required=True,
    help="A LesaNet term or synonym; repeat for AND. A parent term also matches "
    "its children (e.g. 'lung' finds 'right lower lobe').",
)
@click.option("--uncertain", is_flag=True, help="Also count uncertain labels.")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print.")
@click.option(
    "--out",
    "out_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the matching rows (DL_info format) here.",
)
@_lesanet_options
def lesions(
    csv_path: Path,
    tags: tuple[str, ...],
    uncertain: bool,
    limit: int,
    out_csv: Path | None,
    lesanet: Path | None,
    override_fingerprint: bool,
) -> None:
    """List lesions of the official DL_info.csv carrying LesaNet tags."""
    from deeplesion.data.annotations import write_dl_info
    from deeplesion.data.tags import tag_label, tags_for_lesion

    with fail_cleanly():
        csv_path = find_csv(csv_path)
        tagged, lesa = _load_tagged(csv_path, lesanet, override_fingerprint)
        queries = [lesa.expand(t) for t in tags]
        found = tagged.filter(queries, include_uncertain=uncertain)
    onto = lesa.ontology
    t = Table(title=f"{len(found)} lesions tagged {' AND '.join(tags)}")
    for col in ("row", "file name", "split", "type", "long mm", "tags"):
        t.add_column(col)
    for l in found[:limit]:
        t.add_row(
            str(l.row_index),
            l.file_name,
            l.split,
            l.type_name,
            f"{l.long_diameter_mm:.1f}",
            tag_label(tags_for_lesion(tagged, l, include_uncertain=uncertain), onto),
        )
    console.print(t)
    if len(found) > limit:
        console.print(f"... {len(found) - limit} more (use --limit or --out)")
    if out_csv is not None:
        write_dl_info(found, out_csv)
        console.print(f"wrote {out_csv}")


@click.command()
@click.argument("csv_path", metavar="CSV", type=_CSV)
@click.argument("file_name")
@click.option("--k", default=10, show_default=True, help="Number of similar lesions.")
@click.option(
    "--lesion",
    "which",
    default=1,
    show_default=True,
    help="Which lesion of the key slice (1-based, file order).",
)
@click.option("--root", type=_ROOT, help="Dataset root: add image features.")
@click.option(
    "--out",
    "out_png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --root: write a strip of crops here.",
)
@click.option("--same-patient", is_flag=True, help="Also return the patient's own lesions.")
@click.option(
    "--tags/--no-tags",
    "use_tags",
    default=False,
    help="Add LesaNet tags to the features (official DL_info.csv only).",
)
@click.option(
    "--weight",
    "weights",
    multiple=True,
    metavar="BLOCK=W",
    help="Feature block weight: location, size, type, tags, image.",
)
@_lesanet_options
@overwrite_option
def similar(
    csv_path: Path,
    file_name: str,
    k: int,
    which: int,
    root: Path | None,
    out_png: Path | None,
    same_patient: bool,
    use_tags: bool,
    weights: tuple[str, ...],
    lesanet: Path | None,
    override_fingerprint: bool,
    overwrite: bool,
) -> None:
    """Find the K lesions most similar to the lesion on FILE_NAME (or a row index)."""
    from deeplesion.analysis.figures import similar_strip
    from deeplesion.analysis.retrieval import LesionIndex, parse_weights

    if out_png is not None and root is None:
        raise click.UsageError("--out needs --root (crops come from the images)")
    try:
        w = parse_weights(weights)
    except InvalidArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint="--weight") from None
    with fail_cleanly():
        if out_png is not None:
            check_new_output(out_png, overwrite=overwrite)
        csv_path = find_csv(csv_path)
        table = load_table(csv_path)
        query = table.find(file_name, which)
        tagged, terms = None, None
        if use_tags:
            # the 171 terms are features; the ontology (and openpyxl) is not needed
            tagged, lesa = _load_tagged(
                csv_path, lesanet, override_fingerprint, table, ontology=False
            )
            terms = lesa.labels.terms
        if root is not None:
            with progress_bar("image features", len(table.lesions)) as update:
                index = LesionIndex.build(
                    table.lesions,
                    weights=w,
                    tagged=tagged,
                    terms=terms,
                    root=root,
                    progress=lambda done, total: update(done),
                )
        else:
            index = LesionIndex.build(table.lesions, weights=w, tagged=tagged, terms=terms)
        found = index.similar(query, k, same_patient=same_patient)
    t = Table(
        title=f"{len(found)} lesions most like {query.file_name} (row "
        f"{query.row_index}, {query.type_name}, {query.long_diameter_mm:.1f} mm); "
        f"features: {', '.join(index.blocks)}"
    )
    for col in ("rank", "similarity", "row", "file name", "type", "long mm", "location"):
        t.add_column(col)
    for i, n in enumerate(found, start=1):
        l = n.lesion
        t.add_row(
            str(i),
            f"{n.similarity:.3f}",
            str(l.row_index),
            l.file_name,
            l.type_name,
            f"{l.long_diameter_mm:.1f}",
            ", ".join(f"{v:.2f}" for v in l.location_norm),
        )
    console.print(t)
    if root is not None:
        console.print(
            f"image features for {index.n_with_image} of {len(index.lesions)} lesions (key "
            f"slice found and readable under {root}); compared only between two lesions "
            "that both have them, other pairs on the remaining features",
            highlight=False,
        )
    if out_png is not None and root is not None:
        with fail_cleanly():
            strip = similar_strip(root, query, found, out_png)
        console.print(f"wrote {out_png}")
        _warn_missing(strip.missing, strip.tiles, root)


@click.command()
@click.argument("csv_path", metavar="CSV", type=_CSV)
@click.argument("file_names", nargs=-1)
@click.option(
    "--tolerance-px",
    default=0.01,
    show_default=True,
    help="Report rows whose end points and Lesion_diameters_Pixel_ differ more.",
)
def measure(csv_path: Path, file_names: tuple[str, ...], tolerance_px: float) -> None:
    """RECIST diameters (mm), ellipse area and checks; distances between listed lesions
    of the same patient.

    Rows are named by their 0-based data row index and their CSV line (header = line 1).
    """
    from deeplesion.data.measurement import MeasurementError, lesion_distance
    from deeplesion.data.measurement import measure as measure_lesion

    def where(row_index: int) -> str:
        return f"row_index {row_index} (CSV line {row_index + 2})"

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
        + (f" (worst {worst.discrepancy_px:.3f} px, {where(worst.row_index)})" if worst else ""),
        highlight=False,
    )
    if not chosen:
        return
    t = Table()
    for col in (
        "row_index (0-based)",
        "CSV line",
        "file name",
        "long mm",
        "short mm",
        "area mm2",
        "axes angle",
    ):
        t.add_column(col, overflow="fold")
    by_row = {m.row_index: m for m in measured}
    for l in chosen:
        m = by_row[l.row_index]
        t.add_row(
            str(l.row_index),
            str(l.row_index + 2),
            l.file_name,
            f"{m.long_mm:.2f}",
            f"{m.short_mm:.2f}",
            f"{m.area_mm2:.1f}",
            f"{m.axes_angle_deg:.1f}",
        )
    console.print(t)
    across_patients = 0
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            try:
                d = lesion_distance(a, b)
            except MeasurementError:
                across_patients += 1
                continue
            console.print(
                f"{where(a.row_index)} - {where(b.row_index)}: {d.mm:.1f} mm ({d.method})",
                highlight=False,
            )
    if across_patients:
        console.print(
            f"{across_patients} pair(s) of lesions of different patients left out: "
            "distances are measured within one patient only",
            highlight=False,
        )
