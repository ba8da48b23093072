"""The ``deeplesion`` command line. Thin: parses options, calls the library, prints."""

from __future__ import annotations

import click

from deeplesion import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deeplesion")
def main() -> None:
    """Tools for the NIH DeepLesion CT dataset."""


# Command modules register themselves on ``main`` when imported.
from deeplesion.cli import (  # noqa: E402,F401
    analysis,
    classify,
    core,
    download,
    evaluate,
    relations,
    review,
    sample,
    train,
    volumes,
)
