"""The body map (README Fig. 1): lesions' normalised x against z, coloured by type.

x is ``Normalized_lesion_location[0]`` (0 = image left = patient right), z is
``Normalized_lesion_location[2]`` (from a body-part regressor: small z = toward the head).
The map is drawn with the head at the top.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from deeplesion.data.annotations import LESION_TYPES, Lesion
from deeplesion.data.io import save_figure
from deeplesion.errors import InvalidArgumentError
from deeplesion.review.colours import TYPE_COLOURS

FORMATS = ("png", "svg", "pdf")


def sample_lesions(
    lesions: Sequence[Lesion], fraction: float | None, seed: int = 0
) -> list[Lesion]:
    """A seeded random subset of ``round(fraction * n)`` lesions, in input order."""
    lesions = list(lesions)
    if fraction is None or fraction >= 1:
        return lesions
    if not fraction > 0:
        raise InvalidArgumentError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, round(fraction * len(lesions))) if lesions else 0
    picks = np.random.default_rng(seed).choice(len(lesions), size=n, replace=False)
    return [lesions[i] for i in sorted(picks)]


def plotted_lesions(
    lesions: Iterable[Lesion],
    *,
    fraction: float | None = None,
    seed: int = 0,
    include_unlabelled: bool = True,
) -> tuple[list[Lesion], list[Lesion]]:
    """(lesions the map plots, lesions it could plot): unlabelled ones dropped unless
    ``include_unlabelled``, then :func:`sample_lesions`."""
    eligible = [l for l in lesions if include_unlabelled or l.coarse_type != -1]
    return sample_lesions(eligible, fraction, seed), eligible


def _thumbnail_lesions(
    root: Path, lesions: Sequence[Lesion], count: int, seed: int
) -> list[Lesion]:
    from deeplesion.review.gallery import choose_examples

    chosen = choose_examples(root, lesions, per_type=1, seed=seed)
    return [picks[0] for picks in chosen.values()][:count]


def _add_thumbnails(
    fig: Figure, ax, root: Path, lesions: Sequence[Lesion], seed: int, count: int, tile_px: int
) -> list[Lesion]:
    """Crops beside the map (left or right by their x), leader lines to their points."""
    from deeplesion.review.crops import annotated_crop

    shown = _thumbnail_lesions(root, lesions, count, seed)
    sides = {
        "left": [l for l in shown if l.location_norm[0] < 0.5],
        "right": [l for l in shown if l.location_norm[0] >= 0.5],
    }
    for side, group in sides.items():
        group.sort(key=lambda l: l.location_norm[2])
        for i, lesion in enumerate(group):
            crop = annotated_crop(root, lesion, context_slices=1, tile_px=tile_px)
            box_x = -0.32 if side == "left" else 1.32
            box_z = (i + 0.5) / len(group)
            colour = TYPE_COLOURS[lesion.type_name]
            ab = AnnotationBbox(
                OffsetImage(crop, zoom=72 / fig.dpi),
                (lesion.location_norm[0], lesion.location_norm[2]),
                xybox=(box_x, box_z),
                xycoords="data",
                boxcoords="data",
                bboxprops={"edgecolor": colour, "linewidth": 1.5},
                arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.8},
                annotation_clip=False,
                pad=0.15,
            )
            ax.add_artist(ab)
            ax.annotate(
                lesion.type_name,
                (box_x, box_z),
                xytext=(0, -44),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=7,
                color=colour,
                annotation_clip=False,
            )
    return shown


def body_map_figure(
    lesions: Iterable[Lesion],
    *,
    fraction: float | None = None,
    seed: int = 0,
    include_unlabelled: bool = True,
    root: str | Path | None = None,
    thumbnails: int = 8,
    title: str | None = None,
) -> Figure:
    """A matplotlib Figure of the body map (head at the top, legend with counts).

    ``fraction`` plots a seeded random subset. With ``root``, up to ``thumbnails`` lesions
    (one per type, with images under ``root``) are shown as crops with leader lines.
    """
    plotted, lesions = plotted_lesions(
        lesions, fraction=fraction, seed=seed, include_unlabelled=include_unlabelled
    )
    with_thumbs = root is not None and thumbnails > 0
    fig = Figure(figsize=(9.5 if with_thumbs else 7.0, 8.5), dpi=100)
    ax = fig.add_axes((0.26, 0.16, 0.48, 0.78) if with_thumbs else (0.1, 0.07, 0.6, 0.87))
    order = [c for c in LESION_TYPES if c != -1] + [-1]  # grey first, drawn beneath
    by_code = {c: [l for l in plotted if l.coarse_type == c] for c in order}
    for code in [-1] + order[:-1]:
        group = by_code[code]
        if not group:
            continue
        name = LESION_TYPES[code]
        xz = np.array([(l.location_norm[0], l.location_norm[2]) for l in group])
        ax.scatter(
            xz[:, 0],
            xz[:, 1],
            s=6 if code == -1 else 9,
            c=TYPE_COLOURS[name],
            alpha=0.45 if code == -1 else 0.75,
            linewidths=0,
            label=f"{name} ({len(group)})",
            zorder=1 if code == -1 else 2,
            rasterized=len(plotted) > 2000,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # z grows toward the feet: head at the top
    ax.set_xlabel("normalised x  (image left = patient right)")
    ax.set_ylabel("normalised z  (head at top, feet at bottom)")
    ax.set_aspect("auto")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    handles, labels = ax.get_legend_handles_labels()
    pairs = sorted(zip(labels, handles), key=lambda p: p[0].startswith("unlabelled"))
    if pairs:
        where = (
            {"loc": "upper center", "bbox_to_anchor": (0.5, -0.07), "ncol": 3}
            if with_thumbs
            else {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)}
        )
        ax.legend(
            [h for _, h in pairs],
            [lab for lab, _ in pairs],
            fontsize=8,
            markerscale=2,
            frameon=False,
            **where,
        )
    shown_total = (
        f"{len(plotted)} of {len(lesions)} lesions"
        if len(plotted) != len(lesions)
        else f"{len(lesions)} lesions"
    )
    ax.set_title(title or f"Lesion locations ({shown_total})", fontsize=10)
    if root is not None and thumbnails > 0:
        _add_thumbnails(fig, ax, Path(root), lesions, seed, thumbnails, tile_px=96)
    return fig


def write_body_map(path: str | Path, lesions: Iterable[Lesion], **kwargs) -> Path:
    """:func:`body_map_figure` saved to ``path``; the format (png, svg, pdf) is its suffix."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"{path}: unsupported format {fmt!r}; use one of {FORMATS}")
    return save_figure(body_map_figure(lesions, **kwargs), path, dpi=150)


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (for embedding)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
