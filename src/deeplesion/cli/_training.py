"""Options and helpers shared by the training commands (``train-detector``, ``detect``,
``train-classifier``, ``classify``): the options both trainers take, building a run's
config from them, resume notices that name each ignored option, progress with the
validation of each epoch, and printing from rank 0 alone under ``torchrun``.

torch is imported only when a command runs (the ``[torch]`` extra).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from deeplesion.cli._common import console, err_console, fail_cleanly, find_csv, progress_bar
from deeplesion.training.presets import PREPROCESSING_PRESETS

SPLITS = click.Choice(["train", "val", "test", "all"])
POSITIVE = click.IntRange(min=1)


def _stack(*decorators: Callable) -> Callable:
    """One decorator applying ``decorators`` so that the options list in their order."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


store_option = click.option(
    "--store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Read the slices from this training store (built by `deeplesion store ROOT OUT`) "
    "instead of ROOT's PNGs: same samples, no PNG decoding.",
)
annotations_option = click.option(
    "--annotations",
    type=click.Path(exists=True, path_type=Path),
    help="DL_info.csv (default: ROOT/DL_info.csv).",
)
device_option = click.option(
    "--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps."
)


def start_options(*, files: str, preset: str, preset_help: str) -> Callable:
    """``--out RUN`` (the run folder holding ``files``), ``--annotations``, ``--preset``
    (default ``preset``) and the repeatable ``--set KEY=VALUE``."""
    return _stack(
        click.option(
            "--out",
            "out_dir",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help=f"Run folder ({files}). A run with last.pt resumes with its own settings "
            "(only --epochs can extend it).",
        ),
        annotations_option,
        click.option(
            "--preset",
            type=click.Choice(list(PREPROCESSING_PRESETS), case_sensitive=False),
            default=preset,
            show_default=True,
            help=preset_help,
        ),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a preprocessing field, e.g. --set n_slices=27, --set "
            "body_crop=no, --set window_hu=-1024,3071 (repeatable).",
        ),
    )


def schedule_options(
    *, epochs: int, batch_size: int, lr: float, items: str, cached: str
) -> Callable:
    """``--epochs``, ``--batch-size``, ``--iterations-per-epoch``, ``--lr``,
    ``--no-augment``, ``--cache``, ``--seed``, ``--workers``, ``--device``,
    ``--checkpoint-every`` and ``--store``; ``items``: what an epoch goes over, ``cached``:
    what ``--cache`` keeps."""
    return _stack(
        click.option(
            "--epochs",
            type=POSITIVE,
            help=f"Epochs [default: {epochs}]; on resume, extends the run if larger.",
        ),
        click.option("--batch-size", type=POSITIVE, default=batch_size, show_default=True),
        click.option(
            "--iterations-per-epoch", type=POSITIVE, help=f"Default: one pass over the {items}."
        ),
        click.option(
            "--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True
        ),
        click.option("--no-augment", is_flag=True, help="Switch off the preset's augmentation."),
        click.option("--cache", is_flag=True, help=f"Keep un-augmented {cached} in memory."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True),
        device_option,
        click.option(
            "--checkpoint-every",
            type=click.IntRange(min=0),
            default=50,
            show_default=True,
            help="Iterations between checkpoints (0: per epoch only).",
        ),
        store_option,
    )


def prediction_options(*, split: str, out_help: str, batch_size: int) -> Callable:
    """``--checkpoint``, ``--split``, ``--out`` (a CSV), ``--annotations``,
    ``--batch-size``, ``--device`` and ``--store`` of ``detect`` and ``classify``."""
    return _stack(
        click.option(
            "--checkpoint",
            required=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
        ),
        click.option("--split", type=SPLITS, default=split, show_default=True),
        click.option(
            "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help=out_help
        ),
        annotations_option,
        click.option("--batch-size", type=POSITIVE, default=batch_size, show_default=True),
        device_option,
        store_option,
    )


def predict(function: Callable, description: str, root: Path, options: Mapping[str, Any]):
    """Call ``detect`` or ``classify`` with the :func:`prediction_options`, with progress;
    print the file written."""
    need_torch()
    check_device(options["device"])
    with fail_cleanly(), progress_bar(description, lazy=True) as update:
        path = function(
            root,
            options["checkpoint"],
            options["out"],
            split=split_value(options["split"]),
            lesions=annotations_csv(root, options["annotations"]),
            batch_size=options["batch_size"],
            device=options["device"],
            store=options["store"],
            progress=update,
        )
    console.print(f"wrote {path}")


def need_torch() -> None:
    try:
        for module in ("torch", "torchvision"):
            importlib.import_module(module)
    except ImportError as exc:
        raise click.ClickException(
            f"this command needs PyTorch: pip install 'deeplesion[torch]' ({exc})"
        ) from exc


def split_value(value: str | None) -> str | None:
    """A ``--split`` as the library takes it (``None``: every row)."""
    return None if value in (None, "all", "none") else value


def annotations_csv(root: Path, annotations: Path | None) -> Path:
    return find_csv(annotations) if annotations is not None else find_csv(root)


def check_device(device: str) -> None:
    from deeplesion.training.detector_model import DetectorError
    from deeplesion.training.detector_model import check_device as check

    try:
        check(device)
    except DetectorError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None


def main_process() -> bool:
    """False in the other processes of a ``torchrun`` launch (rank 0 alone prints)."""
    return os.environ.get("RANK", "0") in ("", "0")


def parse_sets(preset: str, sets: tuple[str, ...]) -> dict[str, object]:
    """The ``--set`` overrides, checked against ``preset``."""
    from deeplesion.training.presets import preset as get_preset
    from deeplesion.training.settings import PreprocessError, parse_override

    try:
        overrides = dict(parse_override(s) for s in sets)
        get_preset(preset, **overrides)
    except PreprocessError as exc:
        raise click.BadParameter(str(exc), param_hint="'--set'") from None
    return overrides


def start_run(
    config_type: type,
    options: Mapping[str, Any],
    field_of: Mapping[str, str],
    sets: tuple[str, ...],
    out_dir: Path,
    saved: tuple[Any, Any] | None,
) -> tuple[Any, Any | None]:
    """``(requested, config)``: the config the options ask for (``field_of`` maps each
    option's parameter name to its config field; ``no_augment`` sets ``augment`` to the
    opposite; ``--epochs`` left out keeps the config's default) and the config to train
    with (see :func:`resumed`; ``saved``: the settings of the run in ``out_dir``)."""
    overrides = parse_sets(options["preset"], sets)
    check_device(options["device"])
    values = {field: options[name] for name, field in field_of.items()}
    values["augment"] = not options["no_augment"]
    if options["epochs"] is None:
        del values["epochs"]
    requested = config_type(**values, overrides=overrides)
    return requested, resumed(out_dir, saved, requested, field_of)


def resumed(
    out_dir: Path,
    saved: tuple[Any, Any] | None,
    config: Any,
    field_of: Mapping[str, str],
) -> Any | None:
    """The config to train with: ``config`` for a new run; for a run with ``last.pt``
    (``saved`` settings) only the given ``--epochs``, after naming each given option that
    the resumed run ignores."""
    if saved is None:
        return config
    from deeplesion.training.runs import resume_differences

    ctx = click.get_current_context()
    given = [
        field
        for name, field in field_of.items()
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    ]
    if main_process():
        err_console.print(f"resuming from {out_dir / 'last.pt'} with its settings")
        option_of = {field: "--" + name.replace("_", "-") for name, field in field_of.items()}
        _warn_ignored(out_dir, resume_differences(*saved, config, given), option_of)
    epochs = ctx.params.get("epochs")
    return type(config)(epochs=epochs) if epochs is not None else None


def _shown(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value) or "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _warn_ignored(
    out_dir: Path, differences: list[tuple[str, object, object]], option_of: Mapping[str, str]
) -> None:
    """Name each option a resumed run ignores, with the value it keeps."""
    if not differences:
        return
    err_console.print(
        f"[yellow]warning[/yellow]: the run in {out_dir} resumes with its saved "
        "settings (only --epochs can extend it; use a new --out to change "
        "them); ignored:",
        highlight=False,
    )
    for field, given, kept in differences:
        if field.startswith("overrides."):
            option = f"--set {field.split('.', 1)[1]}={_shown(given)}"
        elif isinstance(given, bool):  # a flag: --no-augment, --cache, --pretrained, ...
            option = option_of[field]
        else:
            option = f"{option_of[field]} {_shown(given)}"
        err_console.print(
            f"  {option} (saved {field.split('.')[-1]}: {_shown(kept)})",
            highlight=False,
            markup=False,
        )


@contextlib.contextmanager
def training_progress(validation: Callable[[dict], str]) -> Iterator[Callable]:
    """A progress bar for ``progress(done, total, info)``, with a line per validation:
    ``epoch N: val <validation(record)> (K lesions)``."""
    with progress_bar("training", lazy=True) as update:

        def progress(done: int, total: int, info: dict) -> None:
            update(done, total)
            if "val" in info:
                val = info["val"]
                err_console.print(
                    f"epoch {info['epoch'] + 1}: val {validation(val)} ({val['n_lesions']} lesions)"
                )

        yield progress
