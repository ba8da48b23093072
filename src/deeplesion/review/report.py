"""A one-page HTML report of a DL_info.csv (and its images): counts, distributions, the body
map and a gallery. The page is self-contained: every image is an embedded PNG data URI.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from deeplesion import __version__
from deeplesion.data.annotations import (
    LESION_TYPES,
    SPLITS,
    LesionTable,
    git_blob_id,
    is_official,
    load_lesions,
)
from deeplesion.data.io import write_text_atomic
from deeplesion.data.stats import dataset_stats
from deeplesion.review.bodymap import TYPE_COLOURS, body_map_figure, figure_png_bytes

REPORT_FILE = "report.html"
#: The sections ``build_report`` reports to ``progress``, in order (the gallery needs a root).
REPORT_SECTIONS = ("counts", "distributions", "body map", "gallery")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555}img{max-width:100%}
.muted{color:#777;font-size:.9em}.grid{display:flex;flex-wrap:wrap}
"""


def png_data_uri(png: bytes) -> str:
    """PNG bytes -> ``data:image/png;base64,...``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _array_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _img(png: bytes, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{png_data_uri(png)}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(frame: pd.DataFrame) -> str:
    head = "".join(
        f"<th>{html.escape(str(c))}</th>" for c in [frame.index.name or ""] + list(frame.columns)
    )
    rows = "".join(
        "<tr>"
        + f"<td>{html.escape(str(idx))}</td>"
        + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        + "</tr>"
        for idx, row in zip(frame.index, frame.itertuples(index=False))
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.1f}" if v != int(v) else f"{int(v)}"
    return str(v)


def _small_figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(4.6, 3.1), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _hist(values, xlabel: str, *, bins=40, log_y: bool = False) -> bytes:
    """A histogram; ``log_y`` applies only when there are enough values to need it."""
    fig, ax = _small_figure()
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size:
        ax.hist(values, bins=bins, color="#4c72b0")
    if log_y and values.size > 200:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return figure_png_bytes(fig)


def _bars(counts: pd.Series, xlabel: str, colours=None) -> bytes:
    fig, ax = _small_figure()
    labels = [str(i) for i in counts.index]
    ax.bar(labels, counts.to_numpy(), color=colours or "#4c72b0")
    for i, v in enumerate(counts.to_numpy()):
        ax.annotate(str(int(v)), (i, v), ha="center", va="bottom", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.tick_params(axis="x", labelsize=7, rotation=30 if len(labels) > 6 else 0)
    return figure_png_bytes(fig)


def _type_by_split(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.crosstab(frame["type_name"], frame["split"])
    table = table.reindex(
        index=[n for n in LESION_TYPES.values() if n in table.index],
        columns=[s for s in SPLITS.values() if s in table.columns],
    )
    table.index.name = "type"
    table["all"] = table.sum(axis=1)
    return table


def _type_by_split_figure(table: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(5.2, 3.1), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    splits = [c for c in table.columns if c != "all"]
    bottom = np.zeros(len(splits))
    for name, row in table[splits].iterrows():
        ax.bar(splits, row.to_numpy(), bottom=bottom, color=TYPE_COLOURS[str(name)], label=name)
        bottom += row.to_numpy()
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylabel("lesions")
    return figure_png_bytes(fig)


def build_report(
    table: LesionTable,
    *,
    root: str | Path | None = None,
    fraction: float | None = None,
    seed: int = 0,
    per_type: int = 4,
    progress: Callable[[str], None] | None = None,
) -> str:
    """The report page as an HTML string. ``progress`` gets each section's name."""

    def step(name: str) -> None:
        if progress:
            progress(name)

    source = Path(table.source)
    frame = table.frame()
    stats = dataset_stats(table)
    parts: list[str] = []
    step("counts")
    official = source.is_file() and is_official(source)
    blob = git_blob_id(source) if source.is_file() else "n/a"
    fatal = len(table.dropped_lines)
    parts.append(
        f"<h1>DeepLesion dataset report</h1><p><b>{html.escape(str(source))}</b><br>"
        f"git blob id <code>{blob}</code>: "
        + ("the official DL_info.csv" if official else "not the official DL_info.csv")
        + f"<br>{fatal} rows left out (errors), "
        f"{sum(not p.fatal for p in table.problems)} warnings "
        "(see <code>deeplesion validate</code>)</p>"
    )
    counts = pd.DataFrame(
        {
            "count": [
                stats[k]
                for k in ("lesions", "key_slices", "series", "studies", "patients", "noisy")
            ]
        },
        index=pd.Index(
            ["lesions", "key slices", "series", "studies", "patients", "possibly noisy"],
            name="counts",
        ),
    )
    parts.append("<h2>Counts</h2><div class=grid>" + _table(counts))
    if len(frame):
        by_split = _type_by_split(frame)
        parts.append(
            _table(by_split)
            + _img(_type_by_split_figure(by_split), "Lesion type by split", "type by split")
        )
    parts.append("</div>")
    if len(frame):
        step("distributions")
        parts.append("<h2>Distributions</h2>")
        sizes = (
            frame[["long_diameter_mm", "short_diameter_mm"]]
            .describe(percentiles=[0.05, 0.5, 0.95])
            .T
        )
        sizes.index.name = "diameter (mm)"
        parts.append(_table(sizes.drop(columns=["count"])))
        per_slice = frame.groupby("file_name").size().value_counts().sort_index()
        per_study = frame.groupby(["patient_index", "study_index"]).size()
        interval = frame["slice_interval_mm"].round(2).value_counts().sort_index()
        patients = frame.drop_duplicates("patient_index")
        sex = patients["sex"].value_counts().reindex(["F", "M"], fill_value=0)
        ages = frame.drop_duplicates(["patient_index", "study_index"])["age_years"]
        parts.append(
            "<div class=grid>"
            + "".join(
                [
                    _img(
                        _hist(frame["long_diameter_mm"], "long diameter (mm)", log_y=True),
                        "Lesion size: long RECIST diameter",
                        "long diameter histogram",
                    ),
                    _img(
                        _hist(frame["short_diameter_mm"], "short diameter (mm)", log_y=True),
                        "Lesion size: short RECIST diameter",
                        "short diameter histogram",
                    ),
                    _img(
                        _bars(interval, "slice interval (mm)"),
                        "Slice interval (z spacing)",
                        "slice interval counts",
                    ),
                    _img(
                        _hist(ages, "age at study (years)", bins=30),
                        "Patient age (one value per study)",
                        "age histogram",
                    ),
                    _img(
                        _bars(sex, "sex", ["#dd8452", "#4c72b0"]),
                        "Patient sex (one per patient)",
                        "sex counts",
                    ),
                    _img(
                        _bars(per_slice, "lesions on one key slice"),
                        "Lesions per key slice",
                        "lesions per key slice",
                    ),
                    _img(
                        _bars(per_study.value_counts().sort_index(), "lesions in one study"),
                        "Lesions per study",
                        "lesions per study",
                    ),
                ]
            )
            + "</div>"
        )
        step("body map")
        parts.append(
            "<h2>Body map</h2>"
            + _img(
                figure_png_bytes(
                    body_map_figure(table, fraction=fraction, seed=seed, root=root), dpi=90
                ),
                "Normalised x against z, coloured by coarse lesion type (head at the top)"
                + (f"; a random {fraction:.0%} of lesions" if fraction else ""),
                "body map",
            )
        )
    if root is not None and len(frame):
        step("gallery")
        from deeplesion.review.gallery import GalleryError, make_gallery

        try:
            image, entries = make_gallery(
                root, table, per_type=per_type, seed=seed, context_slices=3
            )
        except GalleryError:
            parts.append(
                "<h2>Gallery</h2><p class=muted>No key slice images found under "
                f"{html.escape(str(root))}.</p>"
            )
        else:
            missing = sum(len(e.missing_mm) for e in entries)
            shown = (
                "context slices at -2, 0, +2 mm, key slice annotated"
                if all(e.n_slices == 3 for e in entries)
                else "key slices annotated (context slices not found under the root)"
            )
            if missing:
                shown += (
                    f"; {missing} context slices missing or unreadable under the root, "
                    "shown as blank tiles marked 'missing'"
                )
            parts.append(
                "<h2>Gallery</h2>"
                + _img(
                    _array_png(image),
                    f"{len(entries)} lesions by type: {shown} (long axis "
                    "red, short axis blue, box yellow)",
                    "gallery",
                )
            )
            parts.append(_key_slice_section(root, table, entries, limit=3))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class=muted>deeplesion {__version__}, {stamp}</p>")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>DeepLesion report: {html.escape(source.name)}</title>"
        f"<style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n"
    )


def _key_slice_section(root, table: LesionTable, entries, limit: int) -> str:
    """Up to ``limit`` distinct key slices of the gallery, each drawn once with all its
    lesions; the caption names every gallery tile on it."""
    from deeplesion.review.render import render_key_slice

    groups = table.by_file_name()
    letters: dict[str, list[str]] = {}
    for entry in entries:
        letters.setdefault(entry.lesion.file_name, []).append(f"{entry.letter}.")
    figs: list[str] = []
    for name, tiles in letters.items():
        if len(figs) == limit:
            break
        try:
            rgb = render_key_slice(root, groups[name])
        except (OSError, ValueError):
            continue
        caption = f"{name} (gallery {', '.join(tiles)}; {len(groups[name])} lesions drawn)"
        figs.append(_img(_array_png(rgb), caption, name))
    if not figs:
        return ""
    return "<h2>Key slices</h2><div class=grid>" + "".join(figs) + "</div>"


def write_report(
    csv_path: str | Path,
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    table: LesionTable | None = None,
    **kwargs,
) -> Path:
    """Write ``out_dir/report.html`` (atomic) for a DL_info.csv (``table``: the file
    already loaded); returns its path."""
    if table is None:
        table = load_lesions(csv_path)
    path = Path(out_dir) / REPORT_FILE
    write_text_atomic(path, build_report(table, root=root, **kwargs))
    return path
