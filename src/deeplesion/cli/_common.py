"""Helpers shared by the CLI command modules (printing, progress, error handling)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deeplesion.errors import DeepLesionError

# Piped output gets wide lines, so tables are not cut at 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator:
    """A rich progress bar; yields a callback ``update(completed, total=None)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(completed: int, total: int | None = None) -> None:
            if total is not None:
                progress.update(task, total=total)
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


def warn_unusable(table) -> None:
    """Say on stderr when a table's loading met errors (rows left out or flagged)."""
    fatal = [p for p in table.problems if p.fatal]
    if fatal:
        err_console.print(
            f"[yellow]warning[/yellow]: {len(fatal)} error(s) in {table.source} "
            "(rows that cannot be parsed are left out); run `deeplesion "
            "validate` for the list",
            highlight=False,
        )


def load_table(root_or_csv: Path):
    """Load a DL_info.csv (or a root's), warning on stderr about rows it cannot use."""
    from deeplesion.data.annotations import load_lesions

    table = load_lesions(find_csv(root_or_csv))
    warn_unusable(table)
    return table


def find_csv(root_or_csv: Path) -> Path:
    """A DL_info.csv path, or a dataset root holding one."""
    if root_or_csv.is_dir():
        candidate = root_or_csv / "DL_info.csv"
        if not candidate.is_file():
            raise click.ClickException(f"{root_or_csv}: no DL_info.csv in this folder")
        return candidate
    return root_or_csv
