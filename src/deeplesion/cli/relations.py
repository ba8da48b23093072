"""``deeplesion relations``: co-occurrence of lesion types or LesaNet tags."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from deeplesion.cli._common import console, err_console, fail_cleanly, load_table


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


@click.command("relations")
@click.argument("csv_path", metavar="CSV", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--by",
    type=click.Choice(["type", "tag"]),
    default="type",
    show_default=True,
    help="Coarse lesion types (val/test rows) or LesaNet tags (official DL_info.csv).",
)
@click.option(
    "--within",
    type=click.Choice(["patient", "study", "slice"]),
    default="patient",
    show_default=True,
    help="What counts as together.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test", "all"]),
    default="all",
    show_default=True,
)
@click.option(
    "--correction",
    type=click.Choice(["bh", "holm"]),
    default="bh",
    show_default=True,
    help="Multiple-testing correction: Benjamini-Hochberg (FDR) or Holm (FWER).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write pairs.csv, labels.csv, followup.csv and heatmap.png here.",
)
@click.option(
    "--top",
    type=click.IntRange(min=2),
    default=20,
    show_default=True,
    help="Pairs printed; labels in the heat map (most frequent).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every pair).")
@click.option(
    "--lesanet",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="LesaNet program_data folder for --by tag (default: $DEEPLESION_LESANET).",
)
@click.option(
    "--override-fingerprint",
    is_flag=True,
    help="Join tags to a file that is not the official DL_info.csv "
    "(only if it keeps the official row order).",
)
@click.option("--uncertain", is_flag=True, help="With --by tag: count uncertain tags too.")
def relations_cmd(
    csv_path: Path,
    by: str,
    within: str,
    split: str,
    correction: str,
    out_dir: Path | None,
    top: int,
    as_json: bool,
    lesanet: Path | None,
    override_fingerprint: bool,
    uncertain: bool,
) -> None:
    """Which lesion types (or tags) are annotated together, and again at follow-up."""
    from deeplesion.analysis.relations import CORRECTIONS, GROUP_NOUNS, relations, tag_labels
    from deeplesion.analysis.relations_output import write_relations

    with fail_cleanly():
        labels = None
        if by == "tag":
            from deeplesion.data.tags import check_official, join_tags, load_lesanet

            if not check_official(csv_path, override_fingerprint=override_fingerprint):
                err_console.print(
                    f"[yellow]warning:[/yellow] {csv_path} is not the official DL_info.csv; "
                    "tags joined by row index at your request",
                    highlight=False,
                )
            tagged = join_tags(
                csv_path,
                load_lesanet(lesanet, ontology=False),
                override_fingerprint=override_fingerprint,
            )
            table = tagged.table
            labels = tag_labels(tagged.tags, include_uncertain=uncertain)
        else:
            table = load_table(csv_path)
        lesions = [l for l in table.lesions if split == "all" or l.split == split]
        result = relations(lesions, labels, by=by, within=within, correction=correction)
        written = write_relations(result, out_dir, top=top) if out_dir is not None else []
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    unit = within
    console.print(
        f"{result.n_lesions} annotated lesions with a {by} in {result.n_groups} "
        f"{GROUP_NOUNS[within]}"
        + (
            f" ({result.unlabelled_lesions} without a {by} left out)"
            if result.unlabelled_lesions
            else ""
        )
    )
    console.print(f"[italic]{result.note}[/italic]", highlight=False)
    t = Table(
        title=f"pairs of {by}s in one {unit}, strongest first "
        f"(Fisher's exact test, {CORRECTIONS[correction]}-adjusted p)"
    )
    for col in (f"{by} A", f"{by} B", "both", "expected", "lift", "p adj.", "median distance"):
        t.add_column(col, justify="left" if col.startswith(by) else "right")
    for p in result.pairs[:top]:
        t.add_row(
            p.label_a,
            p.label_b,
            str(p.n_both),
            f"{p.expected:.1f}",
            _num(p.lift),
            f"{p.p_adjusted:.2g}",
            _num(p.median_distance_norm, 3),
        )
    console.print(t)
    if len(result.pairs) > top:
        console.print(f"... {len(result.pairs) - top} more pairs (--json or --out for all)")
    f = Table(title="annotated again in the patient's next study")
    for col in (by, "studies with a next one", "again", "rate"):
        f.add_column(col, justify="left" if col == by else "right")
    for r in result.followup:
        if r.n_with_next:
            f.add_row(r.label, str(r.n_with_next), str(r.n_again), _num(r.rate))
    console.print(f)
    console.print("median distance: normalised body coordinates (x, y, z in [0, 1])")
    if written:
        err_console.print(f"wrote {', '.join(p.name for p in written)} in {out_dir}")
