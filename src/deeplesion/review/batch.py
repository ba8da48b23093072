"""Rendering a whole table: every key slice with its lesions drawn (and, optionally, each
lesion's zoomed crop with its context slices), written to a folder, resumable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.data.annotations import Lesion
from deeplesion.data.paths import key_slice_path
from deeplesion.data.slices import read_hu
from deeplesion.data.windowing import Window
from deeplesion.review.crops import annotated_crop
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
    result = RenderResult()
    for done, (name, group) in enumerate(group_by_key_slice(lesions).items(), start=1):
        target = out_dir / name
        if target.is_file() and not overwrite:
            result.skipped.append(target)
        else:
            try:
                hu = read_hu(key_slice_path(root, group[0].file_name))
                result.written.append(
                    write_png(
                        target, render_key_slice(root, group, window=window, style=style, hu=hu)
                    )
                )
            except (OSError, ValueError) as exc:
                result.failed.append((name, str(exc)))
        if crops:
            for lesion in group:
                crop_path = out_dir / "crops" / f"{Path(name).stem}_{lesion.row_index}.png"
                if crop_path.is_file() and not overwrite:
                    result.crops_skipped.append(crop_path)
                    continue
                try:
                    result.crops_written.append(
                        write_png(
                            crop_path,
                            annotated_crop(
                                root,
                                lesion,
                                window=window,
                                context_slices=context_slices,
                                step_mm=step_mm,
                            ),
                        )
                    )
                except (OSError, ValueError) as exc:
                    result.failed.append((f"{name} (crop of row {lesion.row_index})", str(exc)))
        if progress:
            progress(done)
    return result
