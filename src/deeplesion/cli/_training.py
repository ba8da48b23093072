"""Options and helpers shared by the training commands (``train-detector``, ``detect``,
``train-classifier``, ``classify``): the options both trainers take, building a run's
config from them, resume notices that name each ignored option, progress with the
validation of each epoch, and printing from rank 0 alone under ``torchrun``.

torch is imported only when a command runs (the ``[torch]`` extra).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from deeplesion.cli._common import (
    bad_parameter,
    console,
    err_console,
    fail_cleanly,
    find_csv,
    need_extra,
    overwrite_option,
    progress_bar,
    warn,
)
from deeplesion.cli._options import (
    EXISTING_FILE,
    NEW_DIR,
    NEW_FILE,
    SPLIT_OR_ALL,
    annotations_option,
    options,
    seed_option,
    store_option,
)
from deeplesion.data.io import check_new_output
from deeplesion.training.presets import PREPROCESSING_PRESETS

POSITIVE = click.IntRange(min=1)

_store = store_option(
    "Read the slices from this training store (built by `deeplesion store ROOT OUT`) "
    "instead of ROOT's PNGs: same samples, no PNG decoding."
)
device_option = click.option("--device", default="cpu", help="cpu, cuda, cuda:N or mps.")


def start_options(*, files: str, preset: str, preset_help: str) -> Callable:
    """``--out RUN`` (the run folder holding ``files``), ``--annotations``, ``--preset``
    (default ``preset``) and the repeatable ``--set KEY=VALUE``."""
    return options(
        click.option(
            "--out",
            "out_dir",
            required=True,
            type=NEW_DIR,
            help=f"Run folder ({files}). A run with last.pt resumes with its own settings "
            "(only --epochs can extend it).",
        ),
        annotations_option(),
        click.option(
            "--preset",
            type=click.Choice(list(PREPROCESSING_PRESETS), case_sensitive=False),
            default=preset,
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
    return options(
        click.option(
            "--epochs",
            type=POSITIVE,
            help=f"Epochs [default: {epochs}]; on resume, extends the run if larger.",
        ),
        click.option("--batch-size", type=POSITIVE, default=batch_size),
        click.option(
            "--iterations-per-epoch", type=POSITIVE, help=f"Default: one pass over the {items}."
        ),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr),
        click.option("--no-augment", is_flag=True, help="Switch off the preset's augmentation."),
        click.option("--cache", is_flag=True, help=f"Keep un-augmented {cached} in memory."),
        seed_option(),
        click.option("--workers", type=click.IntRange(min=0), default=0),
        device_option,
        click.option(
            "--checkpoint-every",
            type=click.IntRange(min=0),
            default=50,
            help="Iterations between checkpoints (0: per epoch only).",
        ),
        _store,
    )


def prediction_options(*, split: str, out_help: str, batch_size: int) -> Callable:
    """``--checkpoint``, ``--split``, ``--out`` (a CSV), ``--annotations``,
    ``--batch-size``, ``--device``, ``--store`` and ``--overwrite`` of ``detect`` and
    ``classify``."""
    return options(
        click.option("--checkpoint", required=True, type=EXISTING_FILE),
        click.option("--split", type=SPLIT_OR_ALL, default=split),
        click.option("--out", required=True, type=NEW_FILE, help=out_help),
        annotations_option(),
        click.option("--batch-size", type=POSITIVE, default=batch_size),
        device_option,
        _store,
        overwrite_option,
    )


def predict(function: Callable, description: str, root: Path, options: Mapping[str, Any]):
    """Call ``detect`` or ``classify`` with the :func:`prediction_options`, with progress;
    print the file written. An existing ``--out`` is kept unless ``--overwrite``."""
    with fail_cleanly():
        check_new_output(options["out"], overwrite=options["overwrite"])
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
    need_extra(("torch", "torchvision"), "torch", "PyTorch")


def split_value(value: str | None) -> str | None:
    """A ``--split`` as the library takes it (``None``: every row)."""
    return None if value in (None, "all", "none") else value


def annotations_csv(root: Path, annotations: Path | None) -> Path:
    return find_csv(annotations) if annotations is not None else find_csv(root)


def check_device(device: str) -> None:
    from deeplesion.training.detector_model import DetectorError
    from deeplesion.training.detector_model import check_device as check

    with bad_parameter("'--device'", DetectorError):
        check(device)


def main_process() -> bool:
    """False in the other processes of a ``torchrun`` launch (rank 0 alone prints)."""
    return os.environ.get("RANK", "0") in ("", "0")


def parse_sets(preset: str, sets: tuple[str, ...]) -> dict[str, object]:
    """The ``--set`` overrides, checked against ``preset``."""
    from deeplesion.training.presets import preset as get_preset
    from deeplesion.training.settings import PreprocessError, parse_override

    with bad_parameter("'--set'", PreprocessError):
        overrides = dict(parse_override(s) for s in sets)
        get_preset(preset, **overrides)
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
    warn(
        f"the run in {out_dir} resumes with its saved settings (only --epochs can extend "
        "it; use a new --out to change them); ignored:"
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
