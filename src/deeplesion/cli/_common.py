"""Helpers shared by the CLI command modules (printing, progress, error handling)."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
from rich.table import Table

from deeplesion.errors import DeepLesionError

# Piped output gets wide lines, so tables are not cut at 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
# Messages on stderr are plain text; colours only where their markup says.
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


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


@contextlib.contextmanager
def bad_parameter(hint: str, *errors: type[Exception]) -> Iterator[None]:
    """Report ``errors`` (default: the package's typed errors) raised inside as a bad value
    of the option ``hint``."""
    caught = errors or (DeepLesionError,)
    try:
        yield
    except caught as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def need_extra(modules: Iterable[str], extra: str, what: str | None = None) -> None:
    """Exit with the install line of ``extra`` unless every module imports; ``what`` names
    the missing dependency (default: the module)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise click.ClickException(
                f"this command needs {what or name}: pip install 'deeplesion[{extra}]' ({exc})"
            ) from None


def warn(message: str) -> None:
    """A one-line warning on stderr (``message`` may hold rich markup)."""
    err_console.print(f"[yellow]warning[/yellow]: {message}")


def percent(fraction: float | None) -> str:
    """A fraction as a percentage with two decimals; ``-`` where there is none."""
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def print_json(value: object, indent: int = 2) -> None:
    """``value`` as one JSON document on stdout."""
    click.echo(json.dumps(value, indent=indent))


Column = str | tuple[str, dict]


def print_table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[str]],
    *,
    title: str | None = None,
    right_from: int | None = None,
    **table_options,
) -> None:
    """A table on stdout. A column is a heading or (heading, rich column options); from
    column ``right_from`` on, cells are right-aligned (numbers)."""
    table = Table(title=title, **table_options)
    for i, column in enumerate(columns):
        heading, column_options = (column, {}) if isinstance(column, str) else column
        if right_from is not None and i >= right_from:
            column_options = {"justify": "right", **column_options}
        table.add_column(heading, **column_options)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_values(title: str, values: Mapping[str, object], digits: int) -> None:
    """Name-value rows (a metric's name with spaces for underscores; floats to ``digits``)."""
    print_table(
        ("", ""),
        (
            (key.replace("_", " "), f"{v:.{digits}f}" if isinstance(v, float) else str(v))
            for key, v in values.items()
        ),
        title=title,
        show_header=False,
    )


def print_skipped(problems: Sequence, max_shown: int = 10) -> None:
    """The first ``max_shown`` input rows left out, on stderr, then how many more."""
    for problem in problems[:max_shown]:
        err_console.print(f"skipped: {problem}", markup=False)
    if len(problems) > max_shown:
        err_console.print(f"... {len(problems) - max_shown} more rows skipped")


def print_unconverted(unreadable: Sequence, without_spacing: Sequence, reason: str) -> None:
    """A converter's unreadable slices and the runs it left out (``reason``), on stderr."""
    for problem in unreadable:
        err_console.print(f"[yellow]warning[/yellow] {escape(str(problem))}")
    for run in without_spacing:
        err_console.print(f"[yellow]skipped[/yellow] {run.name}: {reason}")


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
        warn(
            f"{len(dropped)} rows of {table.source} left out (errors on lines {shown}; first: "
            f"{escape(fatal[0].message)}); run `deeplesion validate` for the list"
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
