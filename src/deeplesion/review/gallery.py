"""Example galleries: lesion crops grouped by coarse lesion type, labelled a., b., c. ..."""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deeplesion.data.annotations import LESION_TYPES, Lesion
from deeplesion.data.paths import key_slice_path
from deeplesion.data.slices import check_png_header, read_png_header
from deeplesion.data.windowing import Window
from deeplesion.errors import DeepLesionError, ImageReadError
from deeplesion.review.crops import ContextCrop, context_crop
from deeplesion.review.render import _font, lesion_label, write_png

HEADER_WIDTH_PX = 118
CAPTION_HEIGHT_PX = 30
GAP_PX = 4
BACKGROUND_RGB = (24, 24, 24)
TEXT_RGB = (235, 235, 235)


class GalleryError(DeepLesionError, ValueError):
    """Nothing to show (no lesion whose key slice image exists)."""


@dataclass(frozen=True, slots=True)
class GalleryEntry:
    """One tile: its letter, the lesion, where it sits (0-based grid row, column) and how
    many slices it shows (1 when context slices were asked for but not found)."""

    letter: str
    lesion: Lesion
    grid_row: int
    grid_col: int
    n_slices: int = 1
    missing_mm: tuple[float, ...] = ()  #: context offsets shown as missing tiles


def tile_letter(i: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', ..."""
    letters = string.ascii_lowercase
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = letters[r] + out
    return out


def choose_examples(
    root: str | Path,
    lesions: Iterable[Lesion],
    *,
    per_type: int = 4,
    seed: int = 0,
    include_unlabelled: bool = False,
    on_skip: Callable[[Lesion, str], None] | None = None,
) -> dict[str, list[Lesion]]:
    """Type name -> up to ``per_type`` lesions whose key slice exists under ``root``.

    Seeded random choice per type, types in code order (bone ... pelvis, unlabelled last).
    A key slice that is there but unusable (its PNG header is not a 16-bit slice of
    DL_info's size) is passed over and reported to ``on_skip(lesion, reason)``.
    """

    def usable(lesion: Lesion) -> bool:
        path = key_slice_path(root, lesion.file_name)
        if not path.is_file():
            return False
        try:
            check_png_header(read_png_header(path), path, lesion.image_size)
        except ImageReadError as exc:
            if on_skip:
                on_skip(lesion, str(exc))
            return False
        return True

    rng = random.Random(seed)
    by_type: dict[int, list[Lesion]] = {}
    for lesion in lesions:
        if lesion.coarse_type == -1 and not include_unlabelled:
            continue
        by_type.setdefault(lesion.coarse_type, []).append(lesion)
    chosen: dict[str, list[Lesion]] = {}
    for code in sorted(by_type, key=lambda c: (c == -1, c)):
        pool = sorted(by_type[code], key=lambda l: l.row_index)
        rng.shuffle(pool)
        picks = list(itertools.islice(filter(usable, pool), per_type))
        if picks:
            chosen[LESION_TYPES[code]] = sorted(picks, key=lambda l: l.row_index)
    return chosen


def make_gallery(
    root: str | Path,
    lesions: Iterable[Lesion],
    *,
    per_type: int = 4,
    seed: int = 0,
    tile_px: int = 128,
    context_slices: int = 1,
    window: str | Window = "dicom",
    include_unlabelled: bool = False,
    progress: Callable[[int], None] | None = None,
    on_skip: Callable[[Lesion, str], None] | None = None,
) -> tuple[np.ndarray, list[GalleryEntry]]:
    """A montage (RGB uint8): one row per lesion type, a header cell, then labelled crops.

    Each caption reads ``'a. 15.2x10.5 mm'`` with the key slice's File_name below it.
    Context slices need the release layout; where they are missing (a flat folder of key
    slices) a tile shows the key slice alone (``entry.n_slices``) and the cells narrow to
    fit. A neighbour missing in the release layout is a marked blank tile
    (``entry.missing_mm``). Lesions whose key slice cannot be used are left out and
    reported to ``on_skip(lesion, reason)``. Raises :class:`GalleryError` when no lesion
    has an image.
    """
    chosen = choose_examples(
        root,
        lesions,
        per_type=per_type,
        seed=seed,
        include_unlabelled=include_unlabelled,
        on_skip=on_skip,
    )
    crops: dict[int, ContextCrop] = {}
    for picks in chosen.values():
        for l in list(picks):
            try:
                crops[id(l)] = context_crop(
                    root, l, window=window, context_slices=context_slices, tile_px=tile_px
                )
            except ImageReadError as exc:
                picks.remove(l)
                if on_skip:
                    on_skip(l, str(exc))
    chosen = {name: picks for name, picks in chosen.items() if picks}
    if not chosen:
        raise GalleryError(f"no lesion with a usable key slice image under {root}")
    tile_w = max(crop.image.shape[1] for crop in crops.values())
    cell_w, cell_h = tile_w + GAP_PX, tile_px + CAPTION_HEIGHT_PX + GAP_PX
    n_cols = max(len(v) for v in chosen.values())
    canvas = Image.new(
        "RGB",
        (HEADER_WIDTH_PX + n_cols * cell_w + GAP_PX, len(chosen) * cell_h + GAP_PX),
        BACKGROUND_RGB,
    )
    draw = ImageDraw.Draw(canvas)
    big, small = _font(14), _font(10)
    entries: list[GalleryEntry] = []
    for row, (type_name, picks) in enumerate(chosen.items()):
        y = GAP_PX + row * cell_h
        draw.text((8, y + tile_px // 2 - 8), type_name, font=big, fill=TEXT_RGB)
        for col, lesion in enumerate(picks):
            x = HEADER_WIDTH_PX + col * cell_w
            crop = crops[id(lesion)]
            canvas.paste(Image.fromarray(crop.image), (x, y))
            letter = tile_letter(len(entries))
            size = lesion_label(lesion).removeprefix(lesion.type_name + " ")
            draw.text((x + 2, y + tile_px + 2), f"{letter}. {size}", font=big, fill=TEXT_RGB)
            draw.text((x + 2, y + tile_px + 17), lesion.file_name, font=small, fill=(170, 170, 170))
            entries.append(
                GalleryEntry(
                    letter,
                    lesion,
                    row,
                    col,
                    n_slices=crop.image.shape[1] // tile_px,
                    missing_mm=crop.missing_mm,
                )
            )
            if progress:
                progress(len(entries))
    return np.asarray(canvas), entries


def write_gallery(
    path: str | Path, root: str | Path, lesions: Iterable[Lesion], **kwargs
) -> list[GalleryEntry]:
    """:func:`make_gallery` written to ``path`` (PNG, atomic); returns the entries."""
    image, entries = make_gallery(root, lesions, **kwargs)
    write_png(path, image)
    return entries
