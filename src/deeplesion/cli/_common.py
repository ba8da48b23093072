"""Helpers shared by the CLI command modules (printing, progress, error handling)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from ..errors import DeepLesionError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator:
    """A rich progress bar; yields ``advance(n)``-style callback ``update(completed)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                  transient=False) as progress:
        task = progress.add_task(description, total=total)

        def update(completed: int) -> None:
            progress.update(task, completed=completed)

        yield update


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """Turn the package's typed errors into a one-line message and exit status 1."""
    try:
        yield
    except (DeepLesionError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc


def print_problems(problems: list, max_shown: int) -> None:
    """Print up to ``max_shown`` problems, one a line, then how many were left out."""
    for problem in problems[:max_shown]:
        console.print(str(problem), markup=False, highlight=False)
    if len(problems) > max_shown:
        console.print(f"... and {len(problems) - max_shown} more")


def find_csv(root_or_csv: Path) -> Path:
    """A DL_info.csv path, or a dataset root holding one."""
    if root_or_csv.is_dir():
        candidate = root_or_csv / "DL_info.csv"
        if not candidate.is_file():
            raise click.ClickException(f"{root_or_csv}: no DL_info.csv in this folder")
        return candidate
    return root_or_csv
