"""``deeplesion masks``, ``evaluate segmentation`` and ``export nnunet|monai``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from deeplesion.cli._common import console, err_console, fail_cleanly, load_table, progress_bar

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_CSV = click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Annotation file (default: ROOT/DL_info.csv).",
)


def _need(modules: tuple[str, ...], extra: str) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise click.ClickException(
                f"this command needs {name}: pip install 'deeplesion[{extra}]' ({exc})"
            ) from None


@click.command()
@click.argument("root", type=_DIR)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@_CSV
@click.option(
    "--method",
    type=click.Choice(["ellipse", "grabcut", "best"]),
    default="best",
    show_default=True,
    help="ellipse: the RECIST ellipse; grabcut: GrabCut in the DICOM window; best: GrabCut "
    "under several windows, the one whose axes agree best with RECIST, else the ellipse.",
)
@click.option(
    "--3d",
    "three_d",
    is_flag=True,
    help="Propagate each key-slice mask through its sub-volume (release layout only).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--overwrite", is_flag=True, help="Replace masks OUT holds that were made with other settings."
)
def masks(
    root: Path,
    out: Path,
    csv_path: Path | None,
    method: str,
    three_d: bool,
    workers: int,
    overwrite: bool,
) -> None:
    """A mask per lesion from its RECIST marks: label PNGs, NIfTI labels, masks.csv in OUT.

    ROOT is a dataset root or a flat folder of key slices named by File_name. Resumable:
    run the same command again after an interruption.
    """
    _need(("cv2", "scipy", "skimage"), "seg")
    from deeplesion.segmentation.run import make_masks

    with fail_cleanly(), progress_bar("lesions", None) as update:
        report = make_masks(
            root,
            out,
            csv_path=csv_path,
            method=method,
            three_d=three_d,
            workers=workers,
            overwrite=overwrite,
            progress=update,
        )
    for note in report.notes:
        err_console.print(f"[yellow]note[/yellow]: {escape(note)}", highlight=False)
    for record in report.failed:
        err_console.print(
            f"[yellow]failed[/yellow] row {record.row_index} {record.file_name}: "
            f"{escape(record.status)}",
            highlight=False,
        )
    ok = [r for r in report.records if r.ok]
    chosen: dict[str, int] = {}
    for r in ok:
        chosen[r.method] = chosen.get(r.method, 0) + 1
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
@click.argument("masks_dir", metavar="MASKS", type=_DIR)
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (or a split of it, or a dataset root holding it).",
)
@click.option(
    "--reference",
    type=_DIR,
    help="Reference masks: a masks folder (masks.csv) or ULS23-named "
    "<folder>_<slice>_lesion_NN.nii.gz volumes on the NIfTI export's grid.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every lesion too).")
def segmentation_cmd(masks_dir: Path, annotations: Path, reference: Path | None, as_json: bool):
    """Mask diameters against RECIST (mm), area, and Dice / IoU / HD95 against references."""
    _need(("scipy", "skimage"), "seg")
    from deeplesion.evaluation.segmentation import evaluate_segmentation

    with fail_cleanly():
        table = load_table(annotations)
        report = evaluate_segmentation(masks_dir, table.lesions, reference_dir=reference)
    if as_json:
        click.echo(json.dumps(_no_nan(report.as_dict()), indent=1))
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
    t = Table(title=f"segmentation: {masks_dir}")
    t.add_column("group")
    for _, title, _ in columns:
        t.add_column(title, justify="right")
    for kind, groups in report.summary.items():
        for name, values in groups.items():
            label = name if kind == "overall" else f"{kind}: {name}"
            t.add_row(label, *(_f(values.get(key), d) for key, _, d in columns))
    console.print(t)
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
@click.argument("root", type=_DIR)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--masks",
    "masks_dir",
    required=True,
    type=_DIR,
    help="Masks folder written by `deeplesion masks`.",
)
@_CSV
@click.option("--dataset-id", default=501, show_default=True, type=click.IntRange(1, 999))
@click.option("--name", default="DeepLesion", show_default=True, help="Dataset name.")
def nnunet_cmd(
    root: Path, out: Path, masks_dir: Path, csv_path: Path | None, dataset_id: int, name: str
) -> None:
    """nnU-Net v2 raw dataset (imagesTr, labelsTr, imagesTs, dataset.json, splits_final.json)."""
    from deeplesion.convert.nnunet import export_nnunet

    with fail_cleanly(), progress_bar("cases", None) as update:
        report = export_nnunet(
            root,
            out,
            masks_dir,
            csv_path=csv_path,
            dataset_id=dataset_id,
            name=name,
            progress=update,
        )
    console.print(
        f"{report.out_dir}: {len(report.train)} train, {len(report.val)} val, "
        f"{len(report.test)} test cases; images {report.images_written} written, "
        f"{report.images_kept} already complete; {len(report.left_out)} lesions left out"
    )
    reasons: dict[str, int] = {}
    for _, why in report.left_out:
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in sorted(reasons.items()):
        console.print(f"  left out: {count} ({why})")


@export.command("monai")
@click.argument("root", type=_DIR)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--masks",
    "masks_dir",
    type=_DIR,
    help="Masks folder written by `deeplesion masks` (adds label volumes).",
)
@_CSV
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
def monai_cmd(
    root: Path, out: Path, masks_dir: Path | None, csv_path: Path | None, workers: int
) -> None:
    """MONAI datalist.json (training / validation / test) over the NIfTI export of ROOT."""
    from deeplesion.convert.monai import export_monai

    with fail_cleanly(), progress_bar("slices", None) as update:
        report = export_monai(
            root,
            out,
            masks_dir=masks_dir,
            csv_path=csv_path,
            workers=workers,
            progress=lambda done, total: update(done, total),
        )
    console.print(
        f"{report.datalist_path}: "
        + ", ".join(f"{k} {v}" for k, v in report.entries.items())
        + f" volumes; images {report.images_written} written, {report.images_kept} already "
        f"complete; {report.labels_written} label volumes"
    )
