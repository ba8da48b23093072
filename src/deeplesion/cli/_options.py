"""Click arguments and options that several commands share, and the path types behind them.

Defaults are shown in ``--help`` without ``show_default=True`` on each option: the
``deeplesion`` group sets it on the options of each command it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

#: An existing folder, an existing file, or either.
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING = click.Path(exists=True, path_type=Path)
#: A folder, a file or either that a command writes (it may not exist yet).
NEW_DIR = click.Path(file_okay=False, path_type=Path)
NEW_FILE = click.Path(dir_okay=False, path_type=Path)
NEW_PATH = click.Path(path_type=Path)

SPLITS = ("train", "val", "test")
#: A split, or ``all`` of them.
SPLIT_OR_ALL = click.Choice([*SPLITS, "all"])

#: ``ROOT``: a dataset root (Images_png/ and DL_info.csv), or a flat folder of key slices.
root_argument = click.argument("root", type=EXISTING_DIR)
#: ``OUT``: the folder a converter or exporter writes.
out_argument = click.argument("out", type=NEW_DIR)
#: ``CSV``: a DL_info.csv, or a dataset root holding one.
csv_argument = click.argument("csv_path", metavar="CSV", type=EXISTING)


#: The file types a figure is written as.
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def figure_path(ctx: click.Context, param: click.Parameter, path: Path | None) -> Path | None:
    """Click callback: a figure's file name must end in .png, .svg or .pdf."""
    if path is not None and path.suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{path}: use a .png, .svg or .pdf file name")
    return path


def options(*decorators: Callable) -> Callable:
    """Several decorators as one; they apply in the order written (the first on top)."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def out_option(dest: str, path_type: click.Path, help: str, **settings) -> Callable:
    """``--out`` into the parameter ``dest`` (``settings``: more click option settings)."""
    return click.option("--out", dest, type=path_type, help=help, **settings)


def csv_option(help: str = "Annotation file (default: ROOT/DL_info.csv).") -> Callable:
    """``--csv``: the annotation file of a command that reads a ROOT."""
    return click.option("--csv", "csv_path", type=EXISTING_FILE, help=help)


def annotations_option(
    help: str = "DL_info.csv (default: ROOT/DL_info.csv).", *, required: bool = False
) -> Callable:
    """``--annotations``: a DL_info.csv (or a split of it, or a root holding it)."""
    return click.option("--annotations", required=required, type=EXISTING, help=help)


def splits_option(help: str = "Only these splits (repeatable).") -> Callable:
    """``--split`` (repeatable) into the parameter ``splits``."""
    return click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS), help=help)


def json_option(help: str = "Print one JSON object.") -> Callable:
    """``--json`` into the parameter ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def seed_option(help: str | None = None) -> Callable:
    """``--seed``, 0 by default."""
    return click.option("--seed", default=0, help=help)


def workers_option(help: str | None = None) -> Callable:
    """``--workers``: processes on this machine, at least 1."""
    return click.option("--workers", default=1, type=click.IntRange(min=1), help=help)


def store_option(help: str) -> Callable:
    """``--store``: a training store (``deeplesion store ROOT OUT``) read before the PNGs."""
    return click.option("--store", type=EXISTING_DIR, help=help)


def lesanet_options(
    lesanet_help: str = "LesaNet program_data folder (default: $DEEPLESION_LESANET).",
    fingerprint_help: str = "Join tags to a file that is not the official DL_info.csv "
    "(only if it keeps the official row order).",
) -> Callable:
    """``--lesanet DIR`` and ``--override-fingerprint``, of the commands that join tags."""
    return options(
        click.option("--lesanet", type=EXISTING_DIR, help=lesanet_help),
        click.option("--override-fingerprint", is_flag=True, help=fingerprint_help),
    )


def choice_option(name: str, choices: Sequence[str], default: str | None, help: str) -> Callable:
    """An option taking one of ``choices``."""
    return click.option(name, type=click.Choice(choices), default=default, help=help)


def _shard(ctx: click.Context, param: click.Parameter, value: str | None):
    """Click callback: ``'2/4'`` -> ``(2, 4)``, shard 2 of 4."""
    from deeplesion.convert.jobs import ConvertError, parse_shard

    if value is None:
        return None
    try:
        return parse_shard(value)
    except ConvertError as exc:
        raise click.BadParameter(str(exc)) from None


def parallel_options(command: Callable) -> Callable:
    """``--workers``, ``--shard`` (parsed: ``(i, N)`` or None) and ``--scheduler`` of the
    converters (nifti, store)."""
    return options(
        workers_option("Processes on this machine."),
        click.option(
            "--shard",
            callback=_shard,
            help="Only shard i of N (e.g. 2/4): deterministic split across machines.",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="Run the tasks on this Dask distributed scheduler (extra [dask]).",
        ),
    )(command)
