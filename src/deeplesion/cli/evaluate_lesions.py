"""``deeplesion evaluate tagging``, ``measurement`` and ``classification``: per-lesion
predictions scored against LesaNet's labels or DL_info.csv."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    load_table,
    percent,
    print_json,
    print_table,
    print_values,
)
from deeplesion.cli._options import (
    EXISTING_FILE,
    NEW_FILE,
    annotations_option,
    figure_path,
    json_option,
)
from deeplesion.cli.evaluate_detection import predictions_argument

if TYPE_CHECKING:
    import numpy as np


@click.command()
@click.argument("scores", type=EXISTING_FILE)
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=EXISTING_FILE,
    help="LesaNet text_mined_labels_171_and_split.json.",
)
@click.option(
    "--hand-labelled",
    "hand_path",
    type=EXISTING_FILE,
    help="Evaluate on LesaNet's hand_labeled_test_set.json instead of the text-mined test split.",
)
@click.option(
    "--val-scores",
    type=EXISTING_FILE,
    help="Scores on the val split: per-tag thresholds maximising F1 are chosen there.",
)
@click.option(
    "--threshold",
    default=0.5,
    help="Single threshold for every tag when --val-scores is not given.",
)
@click.option("--per-tag", is_flag=True, help="Include per-tag metrics in the JSON.")
@json_option()
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
    from deeplesion.evaluation.tagging import (
        align_scores,
        choose_thresholds,
        hand_labelled,
        lesanet_labels,
        read_tag_scores,
        tagging_metrics,
    )

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
        print_json(out)
        return
    print_values(
        f"tagging on the {out['set']} set ({result.n_lesions} lesions)",
        {key: value for key, value in out.items() if key not in ("per_tag", "set")},
        digits=4,
    )


@click.command()
@predictions_argument
@annotations_option("DL_info.csv (or a split of it) the row_index values refer to.", required=True)
@click.option(
    "--nearest-vertex",
    is_flag=True,
    help="Distance to the nearest contour vertex instead of the nearest edge.",
)
@json_option()
def measurement(predictions: Path, annotations: Path, nearest_vertex: bool, as_json: bool) -> None:
    """RECIST diameter error and end-point-to-contour distance, in mm.

    PREDICTIONS: CSV row_index,file_name,x11,y11,x12,y12,x21,y21,x22,y22[,contour].
    """
    from deeplesion.evaluation.measurement import evaluate_measurements, read_measurements

    with fail_cleanly():
        table = load_table(annotations)
        lesions, recist, contours = read_measurements(predictions, table.lesions)
        result = evaluate_measurements(lesions, recist, contours, vertices_only=nearest_vertex)
    if as_json:
        print_json(result.to_json())
        return
    print_values(f"measurement ({result.n_lesions} lesions)", result.to_json(), digits=3)


@click.command()
@predictions_argument
@annotations_option(
    "DL_info.csv (or a split of it, or a root holding it) the row_index values refer to.",
    required=True,
)
@click.option(
    "--plot",
    type=NEW_FILE,
    callback=figure_path,
    help="Draw the confusion matrix (.png, .svg or .pdf).",
)
@json_option()
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

    with fail_cleanly():
        table = load_table(annotations)
        result = evaluate_types(read_type_predictions(predictions), table.lesions)
        if plot is not None:
            plot_confusion(result, plot)
    if as_json:
        print_json(result.to_json())
        return
    console.print(
        f"{result.n_lesions} lesions with a type: accuracy {percent(result.accuracy)}%, "
        f"balanced accuracy {percent(result.balanced_accuracy)}%, "
        f"macro F1 {percent(result.macro_f1)}%"
        + (
            f" ({result.unlabelled_rows} predictions for rows without a type not scored)"
            if result.unlabelled_rows
            else ""
        )
    )
    print_table(
        ("type", "lesions", "precision", "recall", "F1"),
        (
            (name, str(s), percent(p), percent(r), percent(f))
            for name, s, p, r, f in zip(
                result.labels, result.support, result.precision, result.recall, result.f1
            )
        ),
        title="per type (%)",
        right_from=1,
    )
    print_table(
        ("true \\ predicted", *result.labels),
        ((name, *(str(v) for v in row)) for name, row in zip(result.labels, result.confusion)),
        title="confusion matrix (rows: true type, columns: predicted)",
        right_from=1,
    )
    if plot is not None:
        err_console.print(f"wrote {plot}")
