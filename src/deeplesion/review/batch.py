"""Rendering a whole table: every key slice with its lesions drawn (and, optionally, each
lesion's zoomed crop with its context slices), written to a folder, resumable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import Lesion
from deeplesion.data.io import output_lock
from deeplesion.data.paths import key_slice_path
from deeplesion.data.slices import read_hu
from deeplesion.data.windowing import Window
from deeplesion.review.crops import context_crop
from deeplesion.review.render import DrawStyle, RenderError, render_key_slice, write_png


@dataclass
class RenderResult:
    """What :func:`render_key_slices` did: key slices and crops written, kept (already
    there), and what failed."""

    written: list[Path] = field(default_factory=list)  #: key slices
    skipped: list[Path] = field(default_factory=list)  #: key slices already there
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (what, reason)
    crops_written: list[Path] = field(default_factory=list)
    crops_skipped: list[Path] = field(default_factory=list)
    #: key slices whose PNG is not under the root (a partial download): not failures
    absent: list[str] = field(default_factory=list)
    #: crops with context tiles shown as missing (neighbour absent or unreadable)
    crops_with_missing: list[Path] = field(default_factory=list)


def group_by_key_slice(lesions: Iterable[Lesion]) -> dict[str, list[Lesion]]:
    """File_name -> its lesions, in input order."""
    groups: dict[str, list[Lesion]] = {}
    for lesion in lesions:
        groups.setdefault(lesion.file_name, []).append(lesion)
    return groups


def render_key_slices(
    root: str | Path,
    lesions: Iterable[Lesion],
    out_dir: str | Path,
    *,
    window: str | Window = "dicom",
    style: DrawStyle = DrawStyle(),
    overwrite: bool = False,
    crops: bool = False,
    context_slices: int = 3,
    step_mm: float = 2.0,
    progress: Callable[[int], None] | None = None,
) -> RenderResult:
    """Write ``out_dir/<File_name>`` for every key slice (all its lesions drawn).

    Resumable: existing outputs are kept unless ``overwrite``. A slice that cannot be read
    is recorded in ``result.failed`` and the rest go on. With ``crops``, also writes
    ``out_dir/crops/<File_name stem>_<row>.png``: each lesion zoomed, with its context
    slices side by side. ``progress`` gets the number of key slices done.
    """
    if crops and (context_slices < 1 or context_slices % 2 == 0):
        raise RenderError(f"context_slices must be an odd number >= 1, got {context_slices}")
    out_dir = Path(out_dir)
    with output_lock(out_dir, command="render"):
        return _render_all(
            root,
            lesions,
            out_dir,
            window,
            style,
            overwrite,
            crops,
            context_slices,
            step_mm,
            progress,
        )


def _render_all(
    root: str | Path,
    lesions: Iterable[Lesion],
    out_dir: Path,
    window: str | Window,
    style: DrawStyle,
    overwrite: bool,
    crops: bool,
    context_slices: int,
    step_mm: float,
    progress: Callable[[int], None] | None,
) -> RenderResult:
    result = RenderResult()
    for done, (name, group) in enumerate(group_by_key_slice(lesions).items(), start=1):
        target = out_dir / name
        present = key_slice_path(root, name).is_file()
        if not present:
            result.absent.append(name)
        elif target.is_file() and not overwrite:
            result.skipped.append(target)
        else:
            try:
                hu = read_hu(key_slice_path(root, group[0].file_name), group[0].image_size)
                result.written.append(
                    write_png(
                        target, render_key_slice(root, group, window=window, style=style, hu=hu)
                    )
                )
            except (OSError, ValueError) as exc:
                result.failed.append((name, str(exc)))
        if crops and present:
            for lesion in group:
                crop_path = out_dir / "crops" / f"{Path(name).stem}_{lesion.row_index}.png"
                if crop_path.is_file() and not overwrite:
                    result.crops_skipped.append(crop_path)
                    continue
                try:
                    crop = context_crop(
                        root, lesion, window=window, context_slices=context_slices, step_mm=step_mm
                    )
                    result.crops_written.append(write_png(crop_path, crop.image))
                    if crop.missing_mm:
                        result.crops_with_missing.append(crop_path)
                except (OSError, ValueError) as exc:
                    result.failed.append((f"{name} (crop of row {lesion.row_index})", str(exc)))
        if progress:
            progress(done)
    return result
