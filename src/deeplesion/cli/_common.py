"""Helpers shared by the CLI command modules (printing, progress, error handling)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from deeplesion.errors import DeepLesionError

# Piped output gets wide lines, so tables are not cut at 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)


def progress_display(*, in_bytes: bool = False) -> Progress:
    """The CLI's progress display on stderr, for one bar or several: counts (done of total,
    elapsed, remaining) or, ``in_bytes``, sizes (bytes done, speed, remaining)."""
    columns = (
        (DownloadColumn(), TransferSpeedColumn())
        if in_bytes
        else (MofNCompleteColumn(), TimeElapsedColumn())
    )
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *columns,
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, *, lazy: bool = False) -> Iterator:
    """One bar; yields ``update(completed, new_total=None)``. ``lazy``: the bar appears at the
    first update, so an error before any work prints no empty bar."""
    with contextlib.ExitStack() as stack:
        shown: dict = {}

        def show() -> None:
            display = stack.enter_context(progress_display())
            shown["display"], shown["task"] = display, display.add_task(description, total=total)

        def update(completed: int, new_total: int | None = None) -> None:
            if not shown:
                show()
            if new_total is not None:
                shown["display"].update(shown["task"], total=new_total)
            shown["display"].update(shown["task"], completed=completed)

        if not lazy:
            show()
        yield update


def parallel_options(command: Callable) -> Callable:
    """``--workers``, ``--shard`` and ``--scheduler`` of the converters (nifti, store)."""
    for option in reversed(
        (
            click.option(
                "--workers",
                default=1,
                show_default=True,
                type=click.IntRange(min=1),
                help="Processes on this machine.",
            ),
            click.option(
                "--shard", help="Only shard i of N (e.g. 2/4): deterministic split across machines."
            ),
            click.option(
                "--scheduler",
                metavar="ADDRESS",
                help="Run the tasks on this Dask distributed scheduler (extra [dask]).",
            ),
        )
    ):
        command = option(command)
    return command


#: ``--overwrite`` of every command that writes a file: existing outputs are otherwise kept.
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace an existing output (otherwise: exit 1, keep it)."
)


class KeyedBars:
    """Bars on one display, one per key (a file, an archive), added at its first update."""

    def __init__(self, display: Progress) -> None:
        self.display = display
        self.tasks: dict[str, TaskID] = {}

    def update(self, key: str, done: int, total: int | None, *, remove_when_done: bool = False):
        if key not in self.tasks:
            self.tasks[key] = self.display.add_task(key, total=total)
        self.display.update(self.tasks[key], completed=done)
        if remove_when_done and total is not None and done >= total:
            self.display.remove_task(self.tasks.pop(key))


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
    dropped = table.dropped_lines
    if dropped:
        fatal = table.fatal_problems
        shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
        err_console.print(
            f"[yellow]warning[/yellow]: {len(dropped)} rows of {table.source} left out "
            f"(errors on lines {shown}; first: {escape(fatal[0].message)}); run `deeplesion "
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
