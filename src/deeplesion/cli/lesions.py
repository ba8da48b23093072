"""Command: lesions (the lesions of the official DL_info.csv carrying LesaNet tags)."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import (
    console,
    fail_cleanly,
    find_csv,
    overwrite_option,
    print_table,
)
from deeplesion.cli._options import NEW_FILE, csv_argument, lesanet_options, out_option
from deeplesion.cli._tags import load_tagged


@click.command()
@csv_argument
@click.option(
    "--tag",
    "tags",
    multiple=True,
    required=True,
    help="A LesaNet term or synonym; repeat for AND. A parent term also matches "
    "its children (e.g. 'lung' finds 'right lower lobe').",
)
@click.option("--uncertain", is_flag=True, help="Also count uncertain labels.")
@click.option("--limit", type=int, default=50, help="Rows to print.")
@out_option("out_csv", NEW_FILE, "Write the matching rows (DL_info format) here.")
@overwrite_option
@lesanet_options()
def lesions(
    csv_path: Path,
    tags: tuple[str, ...],
    uncertain: bool,
    limit: int,
    out_csv: Path | None,
    overwrite: bool,
    lesanet: Path | None,
    override_fingerprint: bool,
) -> None:
    """List lesions of the official DL_info.csv carrying LesaNet tags."""
    from deeplesion.data.annotations import write_dl_info
    from deeplesion.data.io import check_new_output
    from deeplesion.data.tags import tag_label, tags_for_lesion

    with fail_cleanly():
        if out_csv is not None:
            check_new_output(out_csv, overwrite=overwrite)
        csv_path = find_csv(csv_path)
        tagged, lesa = load_tagged(csv_path, lesanet, override_fingerprint)
        queries = [lesa.expand(t) for t in tags]
        found = tagged.filter(queries, include_uncertain=uncertain)
    print_table(
        ("row", "file name", "split", "type", "long mm", "tags"),
        (
            (
                str(l.row_index),
                l.file_name,
                l.split,
                l.type_name,
                f"{l.long_diameter_mm:.1f}",
                tag_label(tags_for_lesion(tagged, l, include_uncertain=uncertain), lesa.ontology),
            )
            for l in found[:limit]
        ),
        title=f"{len(found)} lesions tagged {' AND '.join(tags)}",
    )
    if len(found) > limit:
        console.print(f"... {len(found) - limit} more (use --limit or --out)")
    if out_csv is not None:
        with fail_cleanly():
            write_dl_info(found, out_csv)
        console.print(f"wrote {out_csv}")
