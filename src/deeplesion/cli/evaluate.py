"""``deeplesion evaluate``: detection FROC (2-D and 3-D), tagging and measurement metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    load_table,
    overwrite_option,
)
from deeplesion.data.io import check_new_output
from deeplesion.evaluation import froc as froc_mod
from deeplesion.evaluation.froc import (
    FP_RATES,
    STRATA,
    evaluate_detection,
    ground_truth,
)
from deeplesion.evaluation.froc3d import evaluate_detection_3d, read_boxes_3d, read_volume_list
from deeplesion.evaluation.measurement import evaluate_measurements, read_measurements
from deeplesion.evaluation.plot import plot_froc
from deeplesion.evaluation.predictions import read_predictions
from deeplesion.evaluation.tagging import (
    align_scores,
    choose_thresholds,
    hand_labelled,
    lesanet_labels,
    read_tag_scores,
    tagging_metrics,
)

_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


@click.group()
def evaluate() -> None:
    """Evaluate predictions exactly as the published DeepLesion numbers were computed."""


def _plot_suffix(path: Path | None) -> Path | None:
    if path is not None and path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise click.BadParameter(f"{path}: use a .png, .svg or .pdf file name", param_hint="--plot")
    return path


@evaluate.command()
@click.argument("predictions", type=_EXISTING)
@click.option(
    "--annotations",
    "annotations",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (or a split of it, or a dataset root holding it).",
)
@click.option(
    "--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True
)
@click.option(
    "--iou",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
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
    "by",
    multiple=True,
    type=click.Choice(STRATA),
    help="Also report per stratum of lesions (repeatable).",
)
@click.option(
    "--coco-images",
    type=_EXISTING,
    help="COCO export giving images[].id -> file_name, for a COCO results JSON.",
)
@click.option("--strict", is_flag=True, help="Stop at the first bad prediction row.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=lambda ctx, param, value: _plot_suffix(value),
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
        err_console.print(
            f"[yellow]warning[/yellow]: the predictions cover {result.n_images_predicted} of "
            f"the {result.n_images} evaluated images ({result.coverage:.0%}); images without "
            "a prediction count as finding nothing (wrong --split, or predictions for part "
            "of it?)",
            highlight=False,
        )
    for problem in dets.problems[:10]:
        err_console.print(f"skipped: {problem}", markup=False, highlight=False)
    if len(dets.problems) > 10:
        err_console.print(f"... {len(dets.problems) - 10} more rows skipped")
    if as_json:
        out = result.to_json()
        out["problems"] = [str(p) for p in dets.problems[:100]]
        click.echo(json.dumps(out, indent=2))
        return
    t = Table(
        title=f"FROC on {split}: {result.n_images} images, {result.n_lesions} lesions, "
        f"{result.n_detections} detections"
    )
    t.add_column("lesions", no_wrap=True)
    for rate in FP_RATES:
        t.add_column(f"{rate:g} FP", justify="right")
    t.add_column("avg 0.5-4", justify="right")
    t.add_row(
        "all",
        *(_fmt(result.sensitivity[froc_mod.rate_key(r)]) for r in FP_RATES),
        _fmt(result.average),
    )
    for name, strata in result.strata.items():
        for s in strata:
            t.add_row(
                f"{name} {s.name} (n={s.n_lesions})",
                *(_fmt(s.sensitivity[froc_mod.rate_key(r)]) for r in FP_RATES),
                _fmt(s.average),
            )
    console.print(t)
    console.print(
        f"sensitivity in %; ignored rows for images not evaluated (other splits, "
        f"or only noisy lesions): {result.ignored_outside}; skipped bad rows: "
        f"{result.skipped_rows}"
    )
    if plot_path is not None:
        console.print(f"wrote {plot_path}")


@evaluate.command()
@click.argument("predictions", type=_EXISTING)
@click.option(
    "--ground-truth",
    "gt_path",
    required=True,
    type=_EXISTING,
    help="CSV volume,x1,y1,z1,x2,y2,z2 of the manually labelled 3-D boxes.",
)
@click.option(
    "--volumes",
    "volumes_path",
    type=_EXISTING,
    help="Case list of the evaluated sub-volumes (column Nifti_ct_name); "
    "default: the volumes with ground truth.",
)
@click.option("--iobb", type=click.FloatRange(0, 1, min_open=True), default=0.3, show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first bad prediction row.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
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
    for problem in preds.problems[:10]:
        err_console.print(f"skipped: {problem}", markup=False, highlight=False)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    t = Table(title=f"3-D FROC: {result.n_volumes} sub-volumes, {result.n_lesions} lesions")
    for key in result.sensitivity:
        t.add_column(f"{key} FP", justify="right")
    t.add_column("mean", justify="right")
    t.add_row(*(_fmt(v) for v in result.sensitivity.values()), _fmt(result.mean_sensitivity))
    console.print(t)


@evaluate.command()
@click.argument("scores", type=_EXISTING)
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=_EXISTING,
    help="LesaNet text_mined_labels_171_and_split.json.",
)
@click.option(
    "--hand-labelled",
    "hand_path",
    type=_EXISTING,
    help="Evaluate on LesaNet's hand_labeled_test_set.json instead of the text-mined test split.",
)
@click.option(
    "--val-scores",
    type=_EXISTING,
    help="Scores on the val split: per-tag thresholds maximising F1 are chosen there.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Single threshold for every tag when --val-scores is not given.",
)
@click.option("--per-tag", is_flag=True, help="Include per-tag metrics in the JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def tagging(
    scores: Path,
    labels_path: Path,
    hand_path: Path | None,
    val_scores: Path | None,
    threshold: float,
    per_tag: bool,
    as_json: bool,
) -> None:
    """Tag AUC / precision / recall / F1 (uncertain labels masked).

    SCORES is a CSV with header lesion_idx,<term>,... (all 171 terms), lesion_idx being the
    0-based row of the full DL_info.csv, as in LesaNet's files.
    """
    with fail_cleanly():
        test = lesanet_labels(labels_path, "test")
        labels = hand_labelled(hand_path, test.terms) if hand_path else test
        idxs, values = read_tag_scores(scores, labels.terms)
        test_scores = align_scores(labels, idxs, values, str(scores))
        thresholds: float | np.ndarray = threshold
        if val_scores is not None:
            val = lesanet_labels(labels_path, "val")
            v_idxs, v_values = read_tag_scores(val_scores, val.terms)
            thresholds = choose_thresholds(
                align_scores(val, v_idxs, v_values, str(val_scores)), val.relevant, val.mask
            )
        result = tagging_metrics(
            test_scores, labels.relevant, labels.mask, thresholds, labels.terms
        )
    out = result.to_json(per_tag=per_tag)
    out["set"] = "hand-labelled" if hand_path else "text-mined test"
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    t = Table(
        title=f"tagging on the {out['set']} set ({result.n_lesions} lesions)", show_header=False
    )
    for key, value in out.items():
        if key not in ("per_tag", "set"):
            t.add_row(
                key.replace("_", " "), f"{value:.4f}" if isinstance(value, float) else str(value)
            )
    console.print(t)


@evaluate.command()
@click.argument("predictions", type=_EXISTING)
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (or a split of it) the row_index values refer to.",
)
@click.option(
    "--nearest-vertex",
    is_flag=True,
    help="Distance to the nearest contour vertex instead of the nearest edge.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def measurement(predictions: Path, annotations: Path, nearest_vertex: bool, as_json: bool) -> None:
    """RECIST diameter error and end-point-to-contour distance, in mm.

    PREDICTIONS: CSV row_index,file_name,x11,y11,x12,y12,x21,y21,x22,y22[,contour].
    """
    with fail_cleanly():
        table = load_table(annotations)
        lesions, recist, contours = read_measurements(predictions, table.lesions)
        result = evaluate_measurements(lesions, recist, contours, vertices_only=nearest_vertex)
    out = result.to_json()
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    t = Table(title=f"measurement ({result.n_lesions} lesions)", show_header=False)
    for key, value in out.items():
        t.add_row(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(t)


@evaluate.command()
@click.argument("predictions", type=_EXISTING)
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (or a split of it, or a root holding it) the row_index values refer to.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the confusion matrix (.png, .svg or .pdf).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def classification(predictions: Path, annotations: Path, plot: Path | None, as_json: bool) -> None:
    """Lesion-type accuracy, balanced accuracy, per-type precision / recall / F1 and the
    confusion matrix.

    PREDICTIONS: CSV row_index,file_name,predicted_type[,...] (what `deeplesion classify`
    writes). Tag scores are scored by `deeplesion evaluate tagging`.
    """
    from deeplesion.evaluation.classification import (
        evaluate_types,
        plot_confusion,
        read_type_predictions,
    )

    plot = _plot_suffix(plot)
    with fail_cleanly():
        table = load_table(annotations)
        result = evaluate_types(read_type_predictions(predictions), table.lesions)
        if plot is not None:
            plot_confusion(result, plot)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    console.print(
        f"{result.n_lesions} lesions with a type: accuracy {_fmt(result.accuracy)}%, "
        f"balanced accuracy {_fmt(result.balanced_accuracy)}%, "
        f"macro F1 {_fmt(result.macro_f1)}%"
        + (
            f" ({result.unlabelled_rows} predictions for rows without a type not scored)"
            if result.unlabelled_rows
            else ""
        )
    )
    t = Table(title="per type (%)")
    for col in ("type", "lesions", "precision", "recall", "F1"):
        t.add_column(col, justify="left" if col == "type" else "right")
    for name, s, p, r, f in zip(
        result.labels, result.support, result.precision, result.recall, result.f1
    ):
        t.add_row(name, str(s), _fmt(p), _fmt(r), _fmt(f))
    console.print(t)
    c = Table(title="confusion matrix (rows: true type, columns: predicted)")
    c.add_column("true \\ predicted")
    for name in result.labels:
        c.add_column(name, justify="right")
    for name, row in zip(result.labels, result.confusion):
        c.add_row(name, *(str(v) for v in row))
    console.print(c)
    if plot is not None:
        err_console.print(f"wrote {plot}")


def _add_segmentation() -> None:
    from deeplesion.cli.segmentation import segmentation_cmd

    evaluate.add_command(segmentation_cmd, "segmentation")


_add_segmentation()
