"""``deeplesion evaluate detection`` (key-slice FROC) and ``detection3d`` (3-D FROC)."""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import (
    console,
    fail_cleanly,
    load_table,
    overwrite_option,
    percent,
    print_json,
    print_skipped,
    print_table,
    warn,
)
from deeplesion.cli._options import (
    EXISTING_FILE,
    NEW_FILE,
    annotations_option,
    figure_path,
    json_option,
)
from deeplesion.data.io import check_new_output
from deeplesion.evaluation import froc as froc_mod
from deeplesion.evaluation.froc import FP_RATES, STRATA, evaluate_detection, ground_truth
from deeplesion.evaluation.froc3d import evaluate_detection_3d, read_boxes_3d, read_volume_list
from deeplesion.evaluation.plot import plot_froc
from deeplesion.evaluation.predictions import read_predictions

#: ``PREDICTIONS``: the CSV (or JSON) a command scores.
predictions_argument = click.argument("predictions", type=EXISTING_FILE)
strict_option = click.option("--strict", is_flag=True, help="Stop at the first bad prediction row.")


@click.command()
@predictions_argument
@annotations_option("DL_info.csv (or a split of it, or a dataset root holding it).", required=True)
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test")
@click.option(
    "--iou",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    help="IoU a detection needs to find a lesion.",
)
@click.option(
    "--extrapolate",
    is_flag=True,
    help="Past the curve's end, extend it linearly (3DCE) instead of holding "
    "the last sensitivity (MULAN, A3D).",
)
@click.option(
    "--by",
    multiple=True,
    type=click.Choice(STRATA),
    help="Also report per stratum of lesions (repeatable).",
)
@click.option(
    "--coco-images",
    type=EXISTING_FILE,
    help="COCO export giving images[].id -> file_name, for a COCO results JSON.",
)
@strict_option
@json_option()
@click.option(
    "--plot",
    "plot_path",
    type=NEW_FILE,
    callback=figure_path,
    help="Write the FROC curve with the published methods' points (.png, .svg or .pdf).",
)
@overwrite_option
def detection(
    predictions: Path,
    annotations: Path,
    split: str,
    iou: float,
    extrapolate: bool,
    by: tuple[str, ...],
    coco_images: Path | None,
    strict: bool,
    as_json: bool,
    plot_path: Path | None,
    overwrite: bool,
) -> None:
    """Key-slice FROC: sensitivity at 0.5, 1, 2, 4, 8, 16 FPs per image."""
    with fail_cleanly():
        if plot_path is not None:
            check_new_output(plot_path, overwrite=overwrite)
        table = load_table(annotations)
        gt = ground_truth(table, split)
        dets = read_predictions(predictions, gt, strict=strict, coco_images=coco_images)
        result = evaluate_detection(gt, dets, iou=iou, extrapolate=extrapolate, by=by)
        if plot_path is not None:
            plot_froc(
                {f"{predictions.name} ({split})": result.curve}, plot_path, extrapolate=extrapolate
            )
    if result.coverage < froc_mod.MIN_COVERAGE:
        warn(
            f"the predictions cover {result.n_images_predicted} of the {result.n_images} "
            f"evaluated images ({result.coverage:.0%}); images without a prediction count as "
            "finding nothing (wrong --split, or predictions for part of it?)"
        )
    print_skipped(dets.problems)
    if as_json:
        out = result.to_json()
        out["problems"] = [str(p) for p in dets.problems[:100]]
        print_json(out)
        return

    def row(name: str, sensitivity: dict, average: float | None) -> list[str]:
        rates = (percent(sensitivity[froc_mod.rate_key(r)]) for r in FP_RATES)
        return [name, *rates, percent(average)]

    print_table(
        [("lesions", {"no_wrap": True}), *(f"{rate:g} FP" for rate in FP_RATES), "avg 0.5-4"],
        [
            row("all", result.sensitivity, result.average),
            *(
                row(f"{name} {s.name} (n={s.n_lesions})", s.sensitivity, s.average)
                for name, strata in result.strata.items()
                for s in strata
            ),
        ],
        title=f"FROC on {split}: {result.n_images} images, {result.n_lesions} lesions, "
        f"{result.n_detections} detections",
        right_from=1,
    )
    console.print(
        f"sensitivity in %; ignored rows for images not evaluated (other splits, "
        f"or only noisy lesions): {result.ignored_outside}; skipped bad rows: "
        f"{result.skipped_rows}"
    )
    if plot_path is not None:
        console.print(f"wrote {plot_path}")


@click.command()
@predictions_argument
@click.option(
    "--ground-truth",
    "gt_path",
    required=True,
    type=EXISTING_FILE,
    help="CSV volume,x1,y1,z1,x2,y2,z2 of the manually labelled 3-D boxes.",
)
@click.option(
    "--volumes",
    "volumes_path",
    type=EXISTING_FILE,
    help="Case list of the evaluated sub-volumes (column Nifti_ct_name); "
    "default: the volumes with ground truth.",
)
@click.option("--iobb", type=click.FloatRange(0, 1, min_open=True), default=0.3)
@strict_option
@json_option()
def detection3d(
    predictions: Path,
    gt_path: Path,
    volumes_path: Path | None,
    iobb: float,
    strict: bool,
    as_json: bool,
) -> None:
    """3-D FROC on the 1K set (LENS): IoBB >= 0.3, mean sensitivity at 0.125-8 FPs/volume."""
    with fail_cleanly():
        gt = read_boxes_3d(gt_path, scored=False, strict=True)
        preds = read_boxes_3d(predictions, scored=True, strict=strict)
        volumes = read_volume_list(volumes_path) if volumes_path else None
        result = evaluate_detection_3d(gt, preds, volumes, iobb=iobb)
    print_skipped(preds.problems)
    if as_json:
        print_json(result.to_json())
        return
    print_table(
        [*(f"{key} FP" for key in result.sensitivity), "mean"],
        [[*(percent(v) for v in result.sensitivity.values()), percent(result.mean_sensitivity)]],
        title=f"3-D FROC: {result.n_volumes} sub-volumes, {result.n_lesions} lesions",
        right_from=0,
    )
