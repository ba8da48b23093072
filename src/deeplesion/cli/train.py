"""``deeplesion export-coco``, ``train-detector`` and ``detect``.

torch is imported only inside the training commands (the ``[torch]`` extra).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click
from click.core import ParameterSource

from deeplesion.cli._common import (
    console,
    err_console,
    fail_cleanly,
    find_csv,
    load_table,
    overwrite_option,
    progress_bar,
)
from deeplesion.data.io import check_new_output
from deeplesion.training.presets import PREPROCESSING_PRESETS

_SPLITS = click.Choice(["train", "val", "test", "all"])
_POSITIVE = click.IntRange(min=1)

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
#: TrainConfig field -> the train-detector option that sets it (for resume warnings).
_OPTION_OF = {field: "--" + name.replace("_", "-") for name, field in _FIELD_OF.items()}


_STORE = click.option(
    "--store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Read the slices from this training store (built by `deeplesion store ROOT OUT`) "
    "instead of ROOT's PNGs: same samples, no PNG decoding.",
)


def _split(value: str | None) -> str | None:
    return None if value in (None, "all", "none") else value


def _annotations(root: Path, annotations: Path | None) -> Path:
    return find_csv(annotations) if annotations is not None else find_csv(root)


def _need_torch() -> None:
    try:
        for module in ("torch", "torchvision"):
            importlib.import_module(module)
    except ImportError as exc:
        raise click.ClickException(
            f"this command needs PyTorch: pip install 'deeplesion[torch]' ({exc})"
        ) from exc


@click.command("export-coco")
@click.argument("csv_path", metavar="CSV", type=click.Path(exists=True, path_type=Path))
@click.option("--split", type=_SPLITS, default="all", show_default=True)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="COCO JSON to write.",
)
@click.option("--include-noisy", is_flag=True, help="Keep lesions marked Possibly_noisy.")
@click.option(
    "--masks",
    "masks_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
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
                _split(split),
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
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (checkpoints, history.json). A run with last.pt resumes with "
    "its own settings (only --epochs can extend it).",
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv).",
)
@click.option(
    "--preset",
    type=click.Choice(list(PREPROCESSING_PRESETS), case_sensitive=False),
    default="mulan",
    show_default=True,
    help="Preprocessing preset.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a preprocessing field, e.g. --set n_slices=27, --set "
    "body_crop=no, --set window_hu=-1024,3071 (repeatable).",
)
@click.option(
    "--arch",
    type=click.Choice(["fasterrcnn_resnet50_fpn_v2", "tiny"]),
    default="fasterrcnn_resnet50_fpn_v2",
    show_default=True,
)
@click.option(
    "--anchors",
    default="16,24,32,48,96",
    show_default=True,
    help="Anchor sizes in px (5 for the FPN backbone).",
)
@click.option(
    "--pretrained-backbone",
    is_flag=True,
    help="Start from ImageNet ResNet-50 weights (downloads them).",
)
@click.option(
    "--epochs", type=_POSITIVE, help="Epochs [default: 8]; on resume, extends the run if larger."
)
@click.option("--batch-size", type=_POSITIVE, default=2, show_default=True)
@click.option("--iterations-per-epoch", type=_POSITIVE, help="Default: one pass over the images.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True)
@click.option(
    "--warmup",
    "warmup",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Linear warm-up iterations.",
)
@click.option(
    "--lr-drop",
    "lr_drop",
    multiple=True,
    type=_POSITIVE,
    help="Epoch at which the learning rate is divided by 10 (repeatable).",
)
@click.option("--train-split", type=_SPLITS, default="train", show_default=True)
@click.option(
    "--val-split",
    type=click.Choice(["train", "val", "test", "all", "none"]),
    default="val",
    show_default=True,
)
@click.option("--no-augment", is_flag=True, help="Switch off the preset's augmentation.")
@click.option("--cache", is_flag=True, help="Keep un-augmented images in memory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Iterations between checkpoints (0: per epoch only).",
)
@_STORE
def train_detector_cmd(
    root: Path,
    out_dir: Path,
    annotations: Path | None,
    preset: str,
    sets: tuple[str, ...],
    arch: str,
    anchors: str,
    pretrained_backbone: bool,
    epochs: int | None,
    batch_size: int,
    iterations_per_epoch: int | None,
    optimizer: str,
    lr: float,
    warmup: int,
    lr_drop: tuple[int, ...],
    train_split: str,
    val_split: str,
    no_augment: bool,
    cache: bool,
    seed: int,
    workers: int,
    device: str,
    checkpoint_every: int,
    store: Path | None,
) -> None:
    """Train the baseline Faster R-CNN on ROOT; validation FROC after each epoch."""
    _need_torch()
    from deeplesion.training.detector import (
        TrainConfig,
        resume_differences,
        saved_run,
        train_detector,
    )
    from deeplesion.training.presets import preset as get_preset
    from deeplesion.training.settings import PreprocessError, parse_override

    ctx = click.get_current_context()
    with fail_cleanly():
        try:
            overrides = dict(parse_override(s) for s in sets)
            get_preset(preset, **overrides)
        except PreprocessError as exc:
            raise click.BadParameter(str(exc), param_hint="'--set'") from None
        try:
            anchor_sizes = tuple(float(a) for a in anchors.split(","))
        except ValueError:
            raise click.BadParameter(
                f"{anchors!r}: expected sizes in px separated by commas, e.g. 16,24,32,48,96",
                param_hint="'--anchors'",
            ) from None
        _check_device(device)
        config = TrainConfig(
            preset=preset,
            overrides=overrides,
            arch=arch,
            anchor_sizes=anchor_sizes,
            pretrained_backbone=pretrained_backbone,
            epochs=epochs if epochs is not None else 8,
            batch_size=batch_size,
            iterations_per_epoch=iterations_per_epoch,
            optimizer=optimizer,
            lr=lr,
            warmup_iterations=warmup,
            lr_drop_epochs=lr_drop,
            train_split=_split(train_split),
            val_split=_split(val_split),
            augment=not no_augment,
            cache=cache,
            seed=seed,
            num_workers=workers,
            device=device,
            checkpoint_every=checkpoint_every,
        )
        saved = saved_run(out_dir)
        run_config: TrainConfig | None = config
        if saved is not None:
            given = [
                field
                for name, field in _FIELD_OF.items()
                if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
            ]
            if _main_process():
                err_console.print(f"resuming from {out_dir / 'last.pt'} with its settings")
                _warn_ignored(out_dir, resume_differences(*saved, config, given))
            run_config = TrainConfig(epochs=epochs) if epochs is not None else None
        with progress_bar("training", lazy=True) as update:

            def progress(done: int, total: int, info: dict) -> None:
                update(done, total)
                if "val" in info:
                    val = info["val"]
                    err_console.print(
                        f"epoch {info['epoch'] + 1}: val average sensitivity "
                        f"{100 * val['average']:.2f}% ({val['n_lesions']} lesions)"
                    )

            result = train_detector(
                root,
                out_dir,
                run_config,
                lesions=_annotations(root, annotations),
                progress=progress,
                store=store,
            )
    if _main_process():
        console.print(
            f"done: {len(result.history)} epochs; best checkpoint {result.best_checkpoint}"
        )


def _main_process() -> bool:
    """False in the other processes of a ``torchrun`` launch (rank 0 alone prints)."""
    return os.environ.get("RANK", "0") in ("", "0")


def _check_device(device: str) -> None:
    from deeplesion.training.detector import DetectorError, check_device

    try:
        check_device(device)
    except DetectorError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None


def _warn_ignored(out_dir: Path, differences: list[tuple[str, object, object]]) -> None:
    """Name each option a resumed run ignores, with the value it keeps."""
    if not differences:
        return

    def shown(value: object) -> str:
        if isinstance(value, (tuple, list)):
            return ",".join(shown(v) for v in value) or "(none)"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:g}"
        return "none" if value is None else str(value)

    err_console.print(
        f"[yellow]warning[/yellow]: the run in {out_dir} resumes with its saved "
        "settings (only --epochs can extend it; use a new --out to change "
        "them); ignored:",
        highlight=False,
    )
    for field, given, kept in differences:
        if field.startswith("overrides."):
            key = field.split(".", 1)[1]
            option = f"--set {key}={shown(given)}"
        elif field == "augment":
            option = "--no-augment"
        elif field in ("pretrained_backbone", "cache"):
            option = _OPTION_OF[field]
        else:
            option = f"{_OPTION_OF[field]} {shown(given)}"
        err_console.print(
            f"  {option} (saved {field.split('.')[-1]}: {shown(kept)})",
            highlight=False,
            markup=False,
        )


@click.command("detect")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--split", type=_SPLITS, default="test", show_default=True)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions CSV (file_name,x1,y1,x2,y2,score; 1-based DL_info pixels).",
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv).",
)
@click.option("--batch-size", type=_POSITIVE, default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@_STORE
@overwrite_option
def detect_cmd(
    root: Path,
    checkpoint: Path,
    split: str,
    out: Path,
    annotations: Path | None,
    batch_size: int,
    device: str,
    store: Path | None,
    overwrite: bool,
) -> None:
    """Run a trained detector on a split's key slices and write its predictions."""
    with fail_cleanly():
        check_new_output(out, overwrite=overwrite)
    _need_torch()
    from deeplesion.training.detector import detect

    _check_device(device)
    with fail_cleanly(), progress_bar("detecting", lazy=True) as update:
        path = detect(
            root,
            checkpoint,
            out,
            split=_split(split),
            lesions=_annotations(root, annotations),
            batch_size=batch_size,
            device=device,
            progress=update,
            store=store,
        )
    console.print(f"wrote {path}")
