"""``deeplesion export-coco``, ``train-detector`` and ``detect``.

torch is imported only inside the training commands (the ``[torch]`` extra).
"""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli import _training as shared
from deeplesion.cli._common import console, fail_cleanly, load_table, overwrite_option
from deeplesion.cli._options import (
    EXISTING_DIR,
    NEW_FILE,
    SPLIT_OR_ALL,
    choice_option,
    csv_argument,
    out_option,
    root_argument,
)
from deeplesion.data.io import check_new_output

#: click parameter name -> TrainConfig field.
_FIELD_OF = {
    "preset": "preset",
    "arch": "arch",
    "anchors": "anchor_sizes",
    "pretrained_backbone": "pretrained_backbone",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "iterations_per_epoch": "iterations_per_epoch",
    "optimizer": "optimizer",
    "lr": "lr",
    "warmup": "warmup_iterations",
    "lr_drop": "lr_drop_epochs",
    "train_split": "train_split",
    "val_split": "val_split",
    "no_augment": "augment",
    "cache": "cache",
    "seed": "seed",
    "workers": "num_workers",
    "device": "device",
    "checkpoint_every": "checkpoint_every",
}


@click.command("export-coco")
@csv_argument
@click.option("--split", type=SPLIT_OR_ALL, default="all")
@out_option("out", NEW_FILE, "COCO JSON to write.", required=True)
@click.option("--include-noisy", is_flag=True, help="Keep lesions marked Possibly_noisy.")
@click.option(
    "--masks",
    "masks_dir",
    type=EXISTING_DIR,
    help="Masks folder from `deeplesion masks`: adds each key-slice mask as RLE.",
)
@overwrite_option
def export_coco_cmd(
    csv_path: Path,
    split: str,
    out: Path,
    include_noisy: bool,
    masks_dir: Path | None,
    overwrite: bool,
) -> None:
    """Write key slices and lesions of DL_info.csv as COCO JSON (bbox 0-based x, y, w, h)."""
    from deeplesion.training.coco import CocoError, write_coco

    with fail_cleanly():
        check_new_output(out, overwrite=overwrite)
        table = load_table(csv_path)
        try:
            coco = write_coco(
                out,
                table.lesions,
                shared.split_value(split),
                include_noisy=include_noisy,
                masks_dir=masks_dir,
            )
        except CocoError as exc:
            raise click.ClickException(f"{csv_path}: {exc}; {out} not written") from None
    with_masks = sum("segmentation" in a for a in coco["annotations"])
    console.print(
        f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} lesions"
        + (f", {with_masks} with masks" if masks_dir is not None else "")
    )


@click.command("train-detector")
@root_argument
@shared.start_options(
    files="checkpoints, history.json", preset="mulan", preset_help="Preprocessing preset."
)
@choice_option(
    "--arch",
    ["fasterrcnn_resnet50_fpn_v2", "tiny"],
    "fasterrcnn_resnet50_fpn_v2",
    "Network (tiny: a small CNN for CPU smoke runs).",
)
@click.option(
    "--anchors",
    default="16,24,32,48,96",
    help="Anchor sizes in px (5 for the FPN backbone).",
)
@click.option(
    "--pretrained-backbone",
    is_flag=True,
    help="Start from ImageNet ResNet-50 weights (downloads them).",
)
@choice_option("--optimizer", ["sgd", "adamw"], "sgd", "SGD (momentum 0.9) or AdamW.")
@click.option(
    "--warmup",
    "warmup",
    type=click.IntRange(min=0),
    default=100,
    help="Linear warm-up iterations.",
)
@click.option(
    "--lr-drop",
    "lr_drop",
    multiple=True,
    type=shared.POSITIVE,
    help="Epoch at which the learning rate is divided by 10 (repeatable).",
)
@click.option("--train-split", type=SPLIT_OR_ALL, default="train")
@click.option(
    "--val-split",
    type=click.Choice(["train", "val", "test", "all", "none"]),
    default="val",
)
@shared.schedule_options(epochs=8, batch_size=2, lr=0.01, items="images", cached="images")
def train_detector_cmd(
    root: Path, out_dir: Path, annotations: Path | None, sets: tuple[str, ...], **options
) -> None:
    """Train the baseline Faster R-CNN on ROOT; validation FROC after each epoch."""
    shared.need_torch()
    from deeplesion.training.detector import TrainConfig, saved_run, train_detector

    with fail_cleanly():
        anchors = options["anchors"]
        try:
            options["anchors"] = tuple(float(a) for a in anchors.split(","))
        except ValueError:
            raise click.BadParameter(
                f"{anchors!r}: expected sizes in px separated by commas, e.g. 16,24,32,48,96",
                param_hint="'--anchors'",
            ) from None
        for name in ("train_split", "val_split"):
            options[name] = shared.split_value(options[name])
        saved = saved_run(out_dir)
        _, config = shared.start_run(TrainConfig, options, _FIELD_OF, sets, out_dir, saved)
        with shared.training_progress(
            lambda val: f"average sensitivity {100 * val['average']:.2f}%"
        ) as progress:
            result = train_detector(
                root,
                out_dir,
                config,
                lesions=shared.annotations_csv(root, annotations),
                progress=progress,
                store=options["store"],
            )
    if shared.main_process():
        console.print(
            f"done: {len(result.history)} epochs; best checkpoint {result.best_checkpoint}"
        )


@click.command("detect")
@root_argument
@shared.prediction_options(
    split="test",
    out_help="Predictions CSV (file_name,x1,y1,x2,y2,score; 1-based DL_info pixels).",
    batch_size=2,
)
def detect_cmd(root: Path, **options) -> None:
    """Run a trained detector on a split's key slices and write its predictions."""
    shared.need_torch()
    from deeplesion.training.detector import detect

    shared.predict(detect, "detecting", root, options)
