"""What the converters (NIfTI export, training store) share: shards, where tasks run
(this process, a process pool, a Dask cluster), decoding a run's slices, splitting a run at
unreadable slices, sorted CSV reports, stale temporaries.

A task is a picklable record handled by a module-level function returning a result; the
caller collects results in ``on_result`` (called in this process, in completion order).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from deeplesion.data.io import write_bytes_atomic
from deeplesion.data.slices import SliceFailure
from deeplesion.data.volumes import SubVolume, VolumeProblem
from deeplesion.errors import DeepLesionError

T = TypeVar("T")

PROBLEM_COLUMNS = ("kind", "folder", "slice_number", "row_index", "detail")


class ConvertError(DeepLesionError, ValueError):
    """Bad conversion options (shard, workers, scheduler)."""


def parse_shard(spec: str, error: type[Exception] = ConvertError) -> tuple[int, int]:
    """``'2/4'`` -> ``(2, 4)``: shard 2 of 4 (1-based)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise error(f"bad shard {spec!r}: expected i/N with 1 <= i <= N, e.g. '1/4'")
    return int(m.group(1)), int(m.group(2))


def check_parallel(
    workers: int, shard: tuple[int, int] | str | None, error: type[Exception] = ConvertError
) -> tuple[int, int] | None:
    """The shard as ``(i, N)`` (parsed from ``'i/N'``), after checking ``workers >= 1``."""
    if workers < 1:
        raise error(f"workers must be >= 1, got {workers}")
    return parse_shard(shard, error) if isinstance(shard, str) else shard


def in_shard(subvolume: SubVolume, shard: tuple[int, int] | None) -> bool:
    """Deterministic: a run belongs to shard ``crc32(name) % N + 1``, on every machine."""
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(subvolume.name.encode()) % count == index - 1


def shard_suffix(shard: tuple[int, int] | None) -> str:
    """``''`` or ``'.shard-i-of-N'`` (inserted before a report's extension)."""
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    on_result: Callable[[Any], None],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    error: type[Exception] = ConvertError,
) -> None:
    """``on_result(fn(task))`` for every task: here, in ``workers`` processes, or on the
    Dask scheduler at ``scheduler`` (extra ``[dask]``)."""
    if scheduler:
        _run_dask(fn, tasks, scheduler, on_result, error)
    elif workers > 1 and len(tasks) > 1:
        _run_pool(fn, tasks, workers, on_result)
    else:
        for task in tasks:
            on_result(fn(task))


def run_counted(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    total: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    error: type[Exception] = ConvertError,
) -> list[Any]:
    """The results of :func:`run_tasks`, in completion order; ``progress(done, total)`` is
    called first and after each result, ``done`` summing the results' ``n_slices``."""
    results: list[Any] = []
    done = 0

    def on_result(result: Any) -> None:
        nonlocal done
        results.append(result)
        done += result.n_slices
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    run_tasks(fn, tasks, on_result, workers=workers, scheduler=scheduler, error=error)
    return results


def run_runs(
    fn: Callable[[Any], RunResult[T]],
    tasks: Sequence[RunTask],
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    error: type[Exception] = ConvertError,
) -> list[RunResult[T]]:
    """:func:`run_counted` for run tasks, the longest runs first (so that no long run
    starts last), ``done`` and ``total`` counted in slices."""
    return run_counted(
        fn,
        sorted(tasks, key=lambda t: -t.subvolume.n_slices),
        sum(t.subvolume.n_slices for t in tasks),
        progress=progress,
        workers=workers,
        scheduler=scheduler,
        error=error,
    )


def _run_dask(fn, tasks, address: str, on_result, error: type[Exception]) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise error(
            "--scheduler needs the optional extra: pip install 'deeplesion[dask]'"
        ) from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise error(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        futures = client.map(fn, tasks, pure=False)
        try:
            for future in dask_completed(futures):
                on_result(future.result())
        finally:
            client.cancel(futures)


def _run_pool(fn, tasks, workers: int, on_result) -> None:
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(fn, t) for t in tasks]
        for future in as_completed(futures):
            on_result(future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class RunTask:
    """One contiguous run to convert (picklable: runs in a worker process or on Dask)."""

    root: str
    out_dir: str
    subvolume: SubVolume


@dataclass(frozen=True)
class RunResult(Generic[T]):
    """What one task made of its run: an item per piece written or kept."""

    items: tuple[T, ...]
    problems: tuple[VolumeProblem, ...]
    written: int
    skipped: int
    n_slices: int  #: of the whole run, for progress


def convert_run(
    subvolume: SubVolume, convert: Callable[[SubVolume], tuple[T, bool]]
) -> RunResult[T]:
    """``convert(piece) -> (item, written)`` for the run; where it raises
    :class:`SliceFailure`, the slice is reported (``unreadable-slice``) and the pieces
    on either side of it are converted instead."""
    items: list[T] = []
    problems: list[VolumeProblem] = []
    written = skipped = 0
    pending = [subvolume]
    while pending:
        sub = pending.pop(0)
        try:
            item, was_written = convert(sub)
        except SliceFailure as exc:
            problems.append(
                VolumeProblem("unreadable-slice", sub.folder, exc.slice_number, detail=exc.reason)
            )
            pending = sub.without(exc.slice_number) + pending
            continue
        items.append(item)
        written, skipped = written + was_written, skipped + (not was_written)
    return RunResult(tuple(items), tuple(problems), written, skipped, subvolume.n_slices)


@dataclass
class RunsReport:
    """What a conversion wrote, kept and found."""

    out_dir: Path
    problems: list[VolumeProblem]  #: index problems + unreadable slices met
    written: int
    skipped: int
    problems_path: Path | None = None

    @property
    def unreadable(self) -> list[VolumeProblem]:
        return [p for p in self.problems if p.kind == "unreadable-slice"]


def by_folder(known: dict[str, T]) -> dict[str, tuple[tuple[str, T], ...]]:
    """``{name: value}`` of earlier reports grouped by the names' series folder (the
    first 12 characters), so each task carries only its own folder's."""
    grouped: dict[str, list[tuple[str, T]]] = {}
    for name, value in sorted(known.items()):
        grouped.setdefault(name[:12], []).append((name, value))
    return {folder: tuple(pairs) for folder, pairs in grouped.items()}


def csv_bytes(header: Iterable[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A CSV file's bytes (``\\n`` line ends, UTF-8)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def problem_row(p: VolumeProblem) -> list[str]:
    """A :data:`PROBLEM_COLUMNS` row."""
    return [
        p.kind,
        p.folder,
        "" if p.slice_number is None else str(p.slice_number),
        "" if p.row_index is None else str(p.row_index),
        p.detail,
    ]


def write_problems(
    out_dir: Path,
    shard: tuple[int, int] | None,
    found: Iterable[VolumeProblem],
    results: Sequence[RunResult[Any]],
) -> RunsReport:
    """Sort ``found`` and the results' problems into ``problems[.shard-i-of-N].csv``
    (atomically); returns them with the results' counts."""
    problems = sorted(
        [*found, *(p for r in results for p in r.problems)], key=VolumeProblem.sort_key
    )
    path = out_dir / f"problems{shard_suffix(shard)}.csv"
    write_bytes_atomic(path, csv_bytes(PROBLEM_COLUMNS, map(problem_row, problems)))
    written = sum(r.written for r in results)
    return RunsReport(out_dir, problems, written, sum(r.skipped for r in results), path)


def remove_stale_temps(out_dir: Path, sub: SubVolume, extension: str) -> None:
    """Remove what a killed run left for this run's slices (``.{name}{extension}.*
    .incomplete`` files or folders written by :func:`~deeplesion.data.io.atomic_path` or
    alike); no other run owns them."""
    if not out_dir.is_dir():
        return
    ext = re.escape(extension)
    pattern = re.compile(rf"^\.(\d{{6}}_\d{{2}}_\d{{2}})_(\d+)-(\d+){ext}\..*\.incomplete$")
    for tmp in out_dir.glob(f".{sub.folder}_*.incomplete"):
        m = pattern.match(tmp.name)
        if (
            m
            and m.group(1) == sub.folder
            and sub.contains(int(m.group(2)))
            and sub.contains(int(m.group(3)))
        ):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
