"""``deeplesion train-classifier`` and ``classify`` (lesion types or LesaNet tags).

torch is imported only inside the commands (the ``[torch]`` extra).
"""

from __future__ import annotations

from pathlib import Path

import click

from deeplesion.cli._common import console, err_console, fail_cleanly, find_csv, progress_bar
from deeplesion.cli.train import _STORE, _check_device, _need_torch, _split
from deeplesion.training.presets import PREPROCESSING_PRESETS

_POSITIVE = click.IntRange(min=1)


def _tag_targets(csv_path: Path, lesanet: Path | None, override: bool):
    from deeplesion.data.tags import check_official, lesanet_dir, load_text_mined
    from deeplesion.training.classifier import TagTargets

    official = check_official(csv_path, override_fingerprint=override)
    if not official:
        err_console.print(
            f"[yellow]warning:[/yellow] {csv_path} is not the official DL_info.csv; "
            "tags joined by row index at your request",
            highlight=False,
        )
    folder = lesanet_dir(lesanet)
    return TagTargets.from_lesanet(load_text_mined(folder / "text_mined_labels_171_and_split.json"))


@click.command("train-classifier")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (checkpoints, history.json, split.json). A run with last.pt "
    "resumes with its own settings (only --epochs can extend it).",
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv).",
)
@click.option(
    "--target",
    type=click.Choice(["type", "tags"]),
    default="type",
    show_default=True,
    help="8 coarse types (val/test rows, patient-level split) or 171 LesaNet tags.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PREPROCESSING_PRESETS), case_sensitive=False),
    default="lesanet",
    show_default=True,
    help="Preprocessing preset (context slices become the channels).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a preprocessing field (repeatable).",
)
@click.option(
    "--arch", type=click.Choice(["resnet18", "tiny"]), default="resnet18", show_default=True
)
@click.option(
    "--pretrained", is_flag=True, help="Start from ImageNet ResNet-18 weights (downloads them)."
)
@click.option("--patch-px", type=click.IntRange(min=8), default=64, show_default=True)
@click.option(
    "--padding-px",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Context around the lesion box (prepared-image pixels) before resizing.",
)
@click.option(
    "--epochs", type=_POSITIVE, help="Epochs [default: 10]; on resume, extends the run if larger."
)
@click.option("--batch-size", type=_POSITIVE, default=16, show_default=True)
@click.option("--iterations-per-epoch", type=_POSITIVE, help="Default: one pass over the lesions.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="--target type: share of labelled patients held out for validation.",
)
@click.option("--no-augment", is_flag=True, help="Switch off the preset's augmentation.")
@click.option("--shuffle-labels", is_flag=True, help="Sanity check: train on permuted labels.")
@click.option("--cache", is_flag=True, help="Keep un-augmented patches in memory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50, show_default=True)
@click.option(
    "--lesanet",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="--target tags: LesaNet program_data folder (default: $DEEPLESION_LESANET).",
)
@click.option(
    "--override-fingerprint",
    is_flag=True,
    help="--target tags: accept a DL_info.csv that is not the official file.",
)
@_STORE
def train_classifier_cmd(
    root: Path,
    out_dir: Path,
    annotations: Path | None,
    target: str,
    preset: str,
    sets: tuple[str, ...],
    arch: str,
    pretrained: bool,
    patch_px: int,
    padding_px: int,
    epochs: int | None,
    batch_size: int,
    iterations_per_epoch: int | None,
    lr: float,
    val_fraction: float,
    no_augment: bool,
    shuffle_labels: bool,
    cache: bool,
    seed: int,
    workers: int,
    device: str,
    checkpoint_every: int,
    lesanet: Path | None,
    override_fingerprint: bool,
    store: Path | None,
) -> None:
    """Train a lesion classifier (ResNet-18) on patches of ROOT; validation each epoch."""
    _need_torch()
    from deeplesion.training.classifier import ClassifierConfig, train_classifier
    from deeplesion.training.presets import preset as get_preset
    from deeplesion.training.settings import PreprocessError, parse_override

    csv_path = find_csv(annotations if annotations is not None else root)
    with fail_cleanly():
        try:
            overrides = dict(parse_override(s) for s in sets)
            get_preset(preset, **overrides)
        except PreprocessError as exc:
            raise click.BadParameter(str(exc), param_hint="'--set'") from None
        _check_device(device)
        config: ClassifierConfig | None = ClassifierConfig(
            target=target,
            preset=preset,
            overrides=overrides,
            arch=arch,
            pretrained=pretrained,
            patch_px=patch_px,
            padding_px=padding_px,
            epochs=epochs if epochs is not None else 10,
            batch_size=batch_size,
            iterations_per_epoch=iterations_per_epoch,
            lr=lr,
            val_fraction=val_fraction,
            augment=not no_augment,
            shuffle_labels=shuffle_labels,
            cache=cache,
            seed=seed,
            num_workers=workers,
            device=device,
            checkpoint_every=checkpoint_every,
        )
        if (out_dir / "last.pt").is_file():
            err_console.print(
                f"resuming from {out_dir / 'last.pt'} with its saved settings "
                "(only --epochs can extend it; use a new --out to change them)"
            )
            config = ClassifierConfig(epochs=epochs) if epochs is not None else None
        tags = None
        if target == "tags" or (config is None and _saved_target(out_dir) == "tags"):
            tags = _tag_targets(csv_path, lesanet, override_fingerprint)
        with progress_bar("training", lazy=True) as update:

            def progress(done: int, total: int, info: dict) -> None:
                update(done, total)
                if "val" in info:
                    val = info["val"]
                    what = (
                        f"balanced accuracy {100 * val['balanced_accuracy']:.1f}%, "
                        f"accuracy {100 * val['accuracy']:.1f}%"
                        if "balanced_accuracy" in val
                        else f"mean AUC {val['mean_auc']:.3f}"
                    )
                    err_console.print(
                        f"epoch {info['epoch'] + 1}: val {what} ({val['n_lesions']} lesions)"
                    )

            result = train_classifier(
                root, out_dir, config, lesions=csv_path, tags=tags, store=store, progress=progress
            )
    console.print(result.split)
    console.print(f"done: {len(result.history)} epochs; best checkpoint {result.best_checkpoint}")


def _saved_target(out_dir: Path) -> str | None:
    from deeplesion.training.classifier import saved_config

    saved = saved_config(out_dir)
    return None if saved is None else saved.target


@click.command("classify")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions CSV: row_index,file_name,predicted_type,... (types) or "
    "lesion_idx,<terms> (tags).",
)
@click.option(
    "--split", type=click.Choice(["train", "val", "test", "all"]), default="all", show_default=True
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv).",
)
@click.option("--batch-size", type=_POSITIVE, default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@_STORE
def classify_cmd(
    root: Path,
    checkpoint: Path,
    out: Path,
    split: str,
    annotations: Path | None,
    batch_size: int,
    device: str,
    store: Path | None,
) -> None:
    """Predict the type (or tags) of every lesion of a split with a trained classifier."""
    _need_torch()
    from deeplesion.training.classifier import classify

    _check_device(device)
    csv_path = find_csv(annotations if annotations is not None else root)
    with fail_cleanly(), progress_bar("classifying", lazy=True) as update:
        path = classify(
            root,
            checkpoint,
            out,
            split=_split(split),
            lesions=csv_path,
            batch_size=batch_size,
            device=device,
            store=store,
            progress=update,
        )
    console.print(f"wrote {path}")
