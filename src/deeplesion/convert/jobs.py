"""What the converters (NIfTI export, training store) share: shards, where tasks run
(this process, a process pool, a Dask cluster), sorted CSV reports, stale temporaries.

A task is a picklable record handled by a module-level function returning a result; the
caller collects results in ``on_result`` (called in this process, in completion order).
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from deeplesion.data.volumes import SubVolume, VolumeProblem
from deeplesion.errors import DeepLesionError

PROBLEM_COLUMNS = ("kind", "folder", "slice_number", "row_index", "detail")


class ConvertError(DeepLesionError, ValueError):
    """Bad conversion options (shard, workers, scheduler)."""


def parse_shard(spec: str, error: type[Exception] = ConvertError) -> tuple[int, int]:
    """``'2/4'`` -> ``(2, 4)``: shard 2 of 4 (1-based)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise error(f"bad shard {spec!r}: expected i/N with 1 <= i <= N, e.g. '1/4'")
    return int(m.group(1)), int(m.group(2))


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


def prefetch(pool: ThreadPoolExecutor, fn, items) -> Iterator[Future]:
    """``pool.submit(fn, item)`` for each item, one item ahead of the consumer."""
    items = iter(items)
    pending = [pool.submit(fn, item) for item in itertools.islice(items, 1)]
    for item in items:
        pending.append(pool.submit(fn, item))
        yield pending.pop(0)
    yield from pending


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
