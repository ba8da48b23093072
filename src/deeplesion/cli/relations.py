"""``deeplesion relations``: co-occurrence of lesion types or LesaNet tags."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    load_table,
    print_json,
    print_table,
)
from deeplesion.cli._options import (
    NEW_DIR,
    SPLIT_OR_ALL,
    choice_option,
    csv_argument,
    json_option,
    lesanet_options,
    out_option,
)
from deeplesion.cli._tags import load_tagged


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


@click.command("relations")
@csv_argument
@choice_option(
    "--by",
    ["type", "tag"],
    "type",
    "Coarse lesion types (val/test rows) or LesaNet tags (official DL_info.csv).",
)
@choice_option("--within", ["patient", "study", "slice"], "patient", "What counts as together.")
@click.option("--split", type=SPLIT_OR_ALL, default="all")
@choice_option(
    "--correction",
    ["bh", "holm"],
    "bh",
    "Multiple-testing correction: Benjamini-Hochberg (FDR) or Holm (FWER).",
)
@out_option("out_dir", NEW_DIR, "Write pairs.csv, labels.csv, followup.csv and heatmap.png here.")
@click.option(
    "--top",
    type=click.IntRange(min=2),
    default=20,
    help="Pairs printed; labels in the heat map (most frequent).",
)
@json_option("Print one JSON object (every pair).")
@lesanet_options("LesaNet program_data folder for --by tag (default: $DEEPLESION_LESANET).")
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
            tagged, _ = load_tagged(csv_path, lesanet, override_fingerprint, ontology=False)
            table = tagged.table
            labels = tag_labels(tagged.tags, include_uncertain=uncertain)
        else:
            table = load_table(csv_path)
        lesions = [l for l in table.lesions if split == "all" or l.split == split]
        result = relations(lesions, labels, by=by, within=within, correction=correction)
        written = write_relations(result, out_dir, top=top) if out_dir is not None else []
    if as_json:
        print_json(result.to_json())
        return
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
    print_table(
        (f"{by} A", f"{by} B", "both", "expected", "lift", "p adj.", "median distance"),
        (
            (
                p.label_a,
                p.label_b,
                str(p.n_both),
                f"{p.expected:.1f}",
                _num(p.lift),
                f"{p.p_adjusted:.2g}",
                _num(p.median_distance_norm, 3),
            )
            for p in result.pairs[:top]
        ),
        title=f"pairs of {by}s in one {within}, strongest first "
        f"(Fisher's exact test, {CORRECTIONS[correction]}-adjusted p)",
        right_from=2,
    )
    if len(result.pairs) > top:
        console.print(f"... {len(result.pairs) - top} more pairs (--json or --out for all)")
    print_table(
        (by, "studies with a next one", "again", "rate"),
        (
            (r.label, str(r.n_with_next), str(r.n_again), _num(r.rate))
            for r in result.followup
            if r.n_with_next
        ),
        title="annotated again in the patient's next study",
        right_from=1,
    )
    console.print("median distance: normalised body coordinates (x, y, z in [0, 1])")
    if written:
        err_console.print(f"wrote {', '.join(p.name for p in written)} in {out_dir}")
