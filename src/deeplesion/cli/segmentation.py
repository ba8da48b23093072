"""``deeplesion masks``, ``evaluate segmentation`` and ``export nnunet|monai``."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import click
from rich.markup import escape

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    load_table,
    need_extra,
    print_json,
    print_table,
    progress_bar,
)
from deeplesion.cli._options import (
    EXISTING_DIR,
    annotations_option,
    csv_option,
    json_option,
    out_argument,
    root_argument,
    workers_option,
)

_CSV = csv_option()


def _masks_option(help: str, *, required: bool = False):
    return click.option("--masks", "masks_dir", required=required, type=EXISTING_DIR, help=help)


@click.command()
@root_argument
@out_argument
@_CSV
@click.option(
    "--method",
    type=click.Choice(["ellipse", "grabcut", "best"]),
    default="best",
    help="ellipse: the RECIST ellipse; grabcut: GrabCut in the DICOM window; best: GrabCut "
    "under several windows, the one whose axes agree best with RECIST, else the ellipse.",
)
@click.option(
    "--3d",
    "three_d",
    is_flag=True,
    help="Propagate each key-slice mask through its sub-volume (release layout only).",
)
@workers_option()
@click.option(
    "--overwrite", is_flag=True, help="Replace masks OUT holds that were made with other settings."
)
def masks(root: Path, out: Path, **settings) -> None:
    """A mask per lesion from its RECIST marks: label PNGs, NIfTI labels, masks.csv in OUT.

    ROOT is a dataset root or a flat folder of key slices named by File_name. Resumable:
    run the same command again after an interruption.
    """
    # settings: csv_path, method, three_d, workers, overwrite (make_masks' own names)
    need_extra(("cv2", "scipy", "skimage"), "seg")
    from deeplesion.segmentation.run import make_masks

    with fail_cleanly(), progress_bar("lesions", None) as update:
        report = make_masks(root, out, progress=update, **settings)
    for note in report.notes:
        err_console.print(f"[yellow]note[/yellow]: {escape(note)}")
    for record in report.failed:
        err_console.print(
            f"[yellow]failed[/yellow] row {record.row_index} {record.file_name}: "
            f"{escape(record.status)}"
        )
    ok = [r for r in report.records if r.ok]
    chosen = Counter(r.method for r in ok)
    console.print(
        f"{len(ok)} of {len(report.records)} lesions masked in {out} "
        f"({report.written_folders} series written, {report.skipped_folders} already done; "
        f"{len(report.nifti_files)} NIfTI label volumes); made by: "
        + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items()))
    )
    if report.failed:
        raise SystemExit(1)


def _f(value: float | None, digits: int = 2) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


@click.command("segmentation")
@click.argument("masks_dir", metavar="MASKS", type=EXISTING_DIR)
@annotations_option("DL_info.csv (or a split of it, or a dataset root holding it).", required=True)
@click.option(
    "--reference",
    type=EXISTING_DIR,
    help="Reference masks: a masks folder (masks.csv) or ULS23-named "
    "<folder>_<slice>_lesion_NN.nii.gz volumes on the NIfTI export's grid.",
)
@json_option("Print one JSON object (every lesion too).")
def segmentation_cmd(masks_dir: Path, annotations: Path, reference: Path | None, as_json: bool):
    """Mask diameters against RECIST (mm), area, and Dice / IoU / HD95 against references."""
    need_extra(("scipy", "skimage"), "seg")
    from deeplesion.evaluation.segmentation import evaluate_segmentation

    with fail_cleanly():
        table = load_table(annotations)
        report = evaluate_segmentation(masks_dir, table.lesions, reference_dir=reference)
    if as_json:
        print_json(_no_nan(report.as_dict()), indent=1)
        return
    columns = [
        ("n", "n", 0),
        ("diameter_error_mm", "diam. err mm", 2),
        ("long_error_mm", "long err", 2),
        ("short_error_mm", "short err", 2),
        ("area_mm2", "area mm²", 0),
    ]
    if reference is not None:
        columns += [
            ("dice_2d", "Dice 2-D", 3),
            ("iou_2d", "IoU 2-D", 3),
            ("hd95_2d_mm", "HD95 2-D mm", 2),
            ("dice_3d", "Dice 3-D", 3),
            ("iou_3d", "IoU 3-D", 3),
            ("hd95_3d_mm", "HD95 3-D mm", 2),
        ]
    print_table(
        ["group", *(title for _, title, _ in columns)],
        (
            (
                name if kind == "overall" else f"{kind}: {name}",
                *(_f(values.get(key), d) for key, _, d in columns),
            )
            for kind, groups in report.summary.items()
            for name, values in groups.items()
        ),
        title=f"segmentation: {masks_dir}",
        right_from=1,
    )
    if report.without_mask:
        console.print(f"{len(report.without_mask)} lesions without a usable mask (left out)")
    if report.without_reference:
        console.print(f"{len(report.without_reference)} lesions without a reference (left out)")


def _no_nan(value):
    """NaN (a measure that does not apply) as JSON null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


@click.group()
def export() -> None:
    """Exports for segmentation and detection frameworks (nnU-Net v2, MONAI)."""


@export.command("nnunet")
@root_argument
@out_argument
@_masks_option("Masks folder written by `deeplesion masks`.", required=True)
@_CSV
@click.option("--dataset-id", default=501, type=click.IntRange(1, 999))
@click.option("--name", default="DeepLesion", help="Dataset name.")
def nnunet_cmd(root: Path, out: Path, **settings) -> None:
    """nnU-Net v2 raw dataset (imagesTr, labelsTr, imagesTs, dataset.json, splits_final.json)."""
    from deeplesion.convert.nnunet import export_nnunet

    # settings: masks_dir, csv_path, dataset_id, name (export_nnunet's own names)
    with fail_cleanly(), progress_bar("cases", None) as update:
        report = export_nnunet(root, out, progress=update, **settings)
    console.print(
        f"{report.out_dir}: {len(report.train)} train, {len(report.val)} val, "
        f"{len(report.test)} test cases; images {report.images_written} written, "
        f"{report.images_kept} already complete; {len(report.left_out)} lesions left out"
    )
    for why, count in sorted(Counter(why for _, why in report.left_out).items()):
        console.print(f"  left out: {count} ({why})")


@export.command("monai")
@root_argument
@out_argument
@_masks_option("Masks folder written by `deeplesion masks` (adds label volumes).")
@_CSV
@workers_option()
def monai_cmd(root: Path, out: Path, **settings) -> None:
    """MONAI datalist.json (training / validation / test) over the NIfTI export of ROOT."""
    from deeplesion.convert.monai import export_monai

    # settings: masks_dir, csv_path, workers (export_monai's own names)
    with fail_cleanly(), progress_bar("slices", None) as update:
        report = export_monai(root, out, progress=update, **settings)
    console.print(
        f"{report.datalist_path}: "
        + ", ".join(f"{k} {v}" for k, v in report.entries.items())
        + f" volumes; images {report.images_written} written, {report.images_kept} already "
        f"complete; {report.labels_written} label volumes"
    )
