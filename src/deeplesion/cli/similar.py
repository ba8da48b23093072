"""Command: similar (lesion retrieval by location, size, type, tags and image features)."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import (
    bad_parameter,
    console,
    fail_cleanly,
    find_csv,
    load_table,
    overwrite_option,
    print_table,
    progress_bar,
)
from deeplesion.cli._options import (
    EXISTING_DIR,
    NEW_FILE,
    csv_argument,
    lesanet_options,
    out_option,
)
from deeplesion.cli._tags import load_tagged
from deeplesion.cli.growth import warn_missing_tiles
from deeplesion.data.io import check_new_output
from deeplesion.errors import InvalidArgumentError


@click.command()
@csv_argument
@click.argument("file_name")
@click.option("--k", default=10, help="Number of similar lesions.")
@click.option(
    "--lesion", "which", default=1, help="Which lesion of the key slice (1-based, file order)."
)
@click.option("--root", type=EXISTING_DIR, help="Dataset root: add image features.")
@out_option("out_png", NEW_FILE, "With --root: write a strip of crops here.")
@click.option("--same-patient", is_flag=True, help="Also return the patient's own lesions.")
@click.option(
    "--tags/--no-tags",
    "use_tags",
    default=False,
    show_default=False,
    help="Add LesaNet tags to the features (official DL_info.csv only).",
)
@click.option(
    "--weight",
    "weights",
    multiple=True,
    metavar="BLOCK=W",
    help="Feature block weight: location, size, type, tags, image.",
)
@lesanet_options()
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
    with bad_parameter("--weight", InvalidArgumentError):
        w = parse_weights(weights)
    with fail_cleanly():
        if out_png is not None:
            check_new_output(out_png, overwrite=overwrite)
        csv_path = find_csv(csv_path)
        table = load_table(csv_path)
        query = table.find(file_name, which)
        tagged, terms = None, None
        if use_tags:
            # the 171 terms are features; the ontology (and openpyxl) is not needed
            tagged, lesa = load_tagged(
                csv_path, lesanet, override_fingerprint, table, ontology=False
            )
            terms = lesa.labels.terms
        with progress_bar("image features", len(table.lesions), lazy=True) as update:
            index = LesionIndex.build(
                table.lesions,
                weights=w,
                tagged=tagged,
                terms=terms,
                root=root,
                progress=lambda done, total: update(done),
            )
        found = index.similar(query, k, same_patient=same_patient)
    print_table(
        ("rank", "similarity", "row", "file name", "type", "long mm", "location"),
        (
            (
                str(i),
                f"{n.similarity:.3f}",
                str(n.lesion.row_index),
                n.lesion.file_name,
                n.lesion.type_name,
                f"{n.lesion.long_diameter_mm:.1f}",
                ", ".join(f"{v:.2f}" for v in n.lesion.location_norm),
            )
            for i, n in enumerate(found, start=1)
        ),
        title=f"{len(found)} lesions most like {query.file_name} (row {query.row_index}, "
        f"{query.type_name}, {query.long_diameter_mm:.1f} mm); features: "
        f"{', '.join(index.blocks)}",
    )
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
        warn_missing_tiles(strip.missing, strip.tiles, root)
