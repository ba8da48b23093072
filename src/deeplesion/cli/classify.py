"""``deeplesion train-classifier`` and ``classify`` (lesion types or LesaNet tags).

torch is imported only inside the commands (the ``[torch]`` extra).
"""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli import _training as shared
from deeplesion.cli._common import console, fail_cleanly, find_csv
from deeplesion.cli._options import choice_option, lesanet_options, root_argument
from deeplesion.cli._tags import check_tag_join

#: click parameter name -> ClassifierConfig field.
_FIELD_OF = {
    "target": "target",
    "preset": "preset",
    "arch": "arch",
    "pretrained": "pretrained",
    "patch_px": "patch_px",
    "padding_px": "padding_px",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "iterations_per_epoch": "iterations_per_epoch",
    "lr": "lr",
    "val_fraction": "val_fraction",
    "no_augment": "augment",
    "shuffle_labels": "shuffle_labels",
    "cache": "cache",
    "seed": "seed",
    "workers": "num_workers",
    "device": "device",
    "checkpoint_every": "checkpoint_every",
}


def _tag_targets(csv_path: Path, lesanet: Path | None, override: bool):
    from deeplesion.data.tags import lesanet_dir, load_text_mined
    from deeplesion.errors import MissingDataError
    from deeplesion.training.classifier import TagTargets

    check_tag_join(csv_path, override, quiet=not shared.main_process())
    try:
        folder = lesanet_dir(lesanet)
    except MissingDataError as exc:
        raise click.ClickException(f"{exc} Option: --lesanet DIR.") from None
    return TagTargets.from_lesanet(load_text_mined(folder / "text_mined_labels_171_and_split.json"))


@click.command("train-classifier")
@root_argument
@shared.start_options(
    files="checkpoints, history.json, split.json",
    preset="lesanet",
    preset_help="Preprocessing preset (context slices become the channels).",
)
@choice_option(
    "--target",
    ["type", "tags"],
    "type",
    "8 coarse types (val/test rows, patient-level split) or 171 LesaNet tags.",
)
@choice_option("--arch", ["resnet18", "tiny"], "resnet18", "Network (tiny: three conv layers).")
@click.option(
    "--pretrained", is_flag=True, help="Start from ImageNet ResNet-18 weights (downloads them)."
)
@click.option("--patch-px", type=click.IntRange(min=8), default=64)
@click.option(
    "--padding-px",
    type=click.IntRange(min=0),
    default=16,
    help="Context around the lesion box (prepared-image pixels) before resizing.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    help="--target type: share of labelled patients held out for validation.",
)
@click.option("--shuffle-labels", is_flag=True, help="Sanity check: train on permuted labels.")
@lesanet_options(
    "--target tags: LesaNet program_data folder (default: $DEEPLESION_LESANET).",
    "--target tags: accept a DL_info.csv that is not the official file.",
)
@shared.schedule_options(epochs=10, batch_size=16, lr=1e-3, items="lesions", cached="patches")
def train_classifier_cmd(
    root: Path, out_dir: Path, annotations: Path | None, sets: tuple[str, ...], **options
) -> None:
    """Train a lesion classifier (ResNet-18) on patches of ROOT; validation each epoch."""
    shared.need_torch()
    from deeplesion.training.classifier import ClassifierConfig, saved_run, train_classifier

    csv_path = find_csv(annotations if annotations is not None else root)
    with fail_cleanly():
        saved = saved_run(out_dir)
        requested, config = shared.start_run(
            ClassifierConfig, options, _FIELD_OF, sets, out_dir, saved
        )
        tags = None
        if (saved[0] if saved is not None else requested).target == "tags":
            tags = _tag_targets(csv_path, options["lesanet"], options["override_fingerprint"])
        with shared.training_progress(_validation) as progress:
            result = train_classifier(
                root,
                out_dir,
                config,
                lesions=csv_path,
                tags=tags,
                store=options["store"],
                progress=progress,
            )
    if shared.main_process():
        console.print(result.split)
        console.print(
            f"done: {len(result.history)} epochs; best checkpoint {result.best_checkpoint}"
        )


def _validation(val: dict) -> str:
    if "balanced_accuracy" in val:
        accuracy = 100 * val["accuracy"]
        return f"balanced accuracy {100 * val['balanced_accuracy']:.1f}%, accuracy {accuracy:.1f}%"
    return f"mean AUC {val['mean_auc']:.3f}"


@click.command("classify")
@root_argument
@shared.prediction_options(
    split="all",
    out_help="Predictions CSV: row_index,file_name,predicted_type,... (types) or "
    "lesion_idx,<terms> (tags).",
    batch_size=16,
)
def classify_cmd(root: Path, **options) -> None:
    """Predict the type (or tags) of every lesion of a split with a trained classifier."""
    shared.need_torch()
    from deeplesion.training.classifier import classify

    shared.predict(classify, "classifying", root, options)
