"""Outputs of the lesion-analysis layer: growth tables, diameter plots, crop strips, demo."""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deeplesion.analysis.growth import NEW_LESION_RULES, GrowthAnalysis, Response, analyse_growth
from deeplesion.analysis.tracks import MatchRule, Track
from deeplesion.data.annotations import Lesion
from deeplesion.data.io import atomic_path, save_figure
from deeplesion.review.crops import try_crop, write_strip

TRACK_COLUMNS = (
    "patient_index",
    "track_id",
    "new_lesion",
    "study_index",
    "age_years",
    "row_index",
    "file_name",
    "coarse_type",
    "long_mm",
    "short_mm",
    "change_from_first_mm",
    "link_cost",
    "link_confidence",
)
RESPONSE_COLUMNS = (
    "patient_index",
    "study_index",
    "sld_mm",
    "baseline_mm",
    "nadir_mm",
    "change_from_baseline_pct",
    "change_from_nadir_pct",
    "new_lesions",
    "missing_targets",
    "response",
    "reason",
)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def track_rows(tracks: dict[int, list[Track]]) -> list[dict[str, object]]:
    """One row per observation of every track (the CSV written by :func:`write_growth`)."""
    rows = []
    for patient in sorted(tracks):
        for t in tracks[patient]:
            first = t.observations[0].long_mm
            for o in t.observations:
                rows.append(
                    {
                        "patient_index": patient,
                        "track_id": t.track_id,
                        "new_lesion": int(t.is_new),
                        "study_index": o.study_index,
                        "age_years": _fmt(o.lesion.age_years, 0),
                        "row_index": o.lesion.row_index,
                        "file_name": o.lesion.file_name,
                        "coarse_type": o.lesion.coarse_type,
                        "long_mm": _fmt(o.long_mm),
                        "short_mm": _fmt(o.short_mm),
                        "change_from_first_mm": _fmt(o.long_mm - first),
                        "link_cost": _fmt(o.link_cost, 3),
                        "link_confidence": _fmt(o.confidence, 3),
                    }
                )
    return rows


def response_rows(responses: dict[int, list[Response]]) -> list[dict[str, object]]:
    return [
        {
            "patient_index": r.patient_index,
            "study_index": r.study_index,
            "sld_mm": _fmt(r.sld_mm),
            "baseline_mm": _fmt(r.baseline_mm),
            "nadir_mm": _fmt(r.nadir_mm),
            "change_from_baseline_pct": _fmt(r.change_from_baseline_pct, 1),
            "change_from_nadir_pct": _fmt(r.change_from_nadir_pct, 1),
            "new_lesions": r.new_lesions,
            "missing_targets": r.missing_targets,
            "response": r.category,
            "reason": r.reason,
        }
        for p in sorted(responses)
        for r in responses[p]
    ]


def write_rows_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


#: Tick colours of the RECIST categories on the plot's top axis.
RESPONSE_COLOURS = {"PD": "tab:red", "PR": "tab:green", "CR": "tab:blue", "SD": "0.3", "NE": "0.55"}
_MARKERS = "os^DvPX*"
#: Plot geometry in inches: space per study on the x axis, axes height, fixed margins.
STUDY_WIDTH_IN = 0.42
AXES_HEIGHT_IN = 3.0
_LEFT_IN, _RIGHT_IN, _BOTTOM_IN, _TOP_IN, _GAP_IN = 0.7, 0.15, 0.8, 0.65, 0.12


def track_style(position: int) -> tuple[tuple[float, float, float], str]:
    """Colour and marker of the ``position``-th track (0-based) of a plot.

    The 20 tab20 colours, dark shades first, and a new marker every 10 tracks, so no two
    of the first 80 tracks look alike.
    """
    import matplotlib

    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    r, g, b, _ = matplotlib.colormaps["tab20"](order[position % 20])  # an int picks colour i
    return (r, g, b), _MARKERS[(position // 10) % len(_MARKERS)]


def _study_tick_labels(studies: Sequence[int], ages: dict[int, float | None]) -> list[str]:
    """Study index, with the patient's age below it where the age changes."""
    labels, shown = [], object()
    for s in studies:
        age = "?" if ages[s] is None else f"{ages[s]:.0f} y"
        labels.append(f"{s}\n{age}" if age != shown else str(s))
        shown = age
    return labels


def plot_patient(
    tracks: Sequence[Track],
    path: str | Path,
    responses: Sequence[Response] = (),
    *,
    new_lesions: str = "ignore",
) -> Path:
    """Long diameter (mm) of each track against study; new lesions (new annotations under
    the default rule) dashed.

    Studies are evenly spaced in ``Study_index`` order and the figure widens with their
    number; the RECIST response of each follow-up is written above the axes, the legend
    sits right of them; the new-lesion rule (:data:`NEW_LESION_RULES`) is stated below.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    studies = sorted({o.study_index for t in tracks for o in t.observations})
    x_of = {s: i for i, s in enumerate(studies)}
    ages: dict[int, float | None] = {}
    for t in tracks:
        for o in t.observations:
            ages.setdefault(o.study_index, o.lesion.age_years)
    axes_w = max(4.0, STUDY_WIDTH_IN * len(studies))
    fig = Figure(
        figsize=(axes_w + _LEFT_IN + _RIGHT_IN, AXES_HEIGHT_IN + _BOTTOM_IN + _TOP_IN), dpi=100
    )
    ax = fig.add_axes((0, 0, 1, 1))
    for i, t in enumerate(tracks):
        colour, marker = track_style(i)
        ax.plot(
            [x_of[o.study_index] for o in t.observations],
            [o.long_mm for o in t.observations],
            color=colour,
            marker=marker,
            markersize=4,
            linestyle="--" if t.is_new else "-",
            label=f"{t.track_id} {t.observations[0].lesion.type_name}"
            + ((" (new annotation)" if new_lesions == "ignore" else " (new)") if t.is_new else ""),
        )
    ax.set_xlim(-0.5, len(studies) - 0.5)
    ax.set_xticks(range(len(studies)), _study_tick_labels(studies, ages), fontsize=8)
    ax.set_xlabel("study (patient age where it changes)")
    ax.set_ylabel("long diameter (mm)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        [x_of[r.study_index] for r in responses],
        [r.category for r in responses],
        fontsize=7,
        fontweight="bold",
    )
    top.tick_params(length=0)
    for label, r in zip(top.get_xticklabels(), responses):
        label.set_color(RESPONSE_COLOURS.get(r.category, "black"))
    if responses:
        ax.annotate(
            "RECIST",
            (0, 1),
            xycoords="axes fraction",
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
        )
    ax.set_title(f"patient {tracks[0].patient_index}" if tracks else "", pad=14)
    legend_w = 0.0
    if tracks:
        rows = max(1, int(AXES_HEIGHT_IN / 0.16))  # legend rows that fit beside the axes
        legend = ax.legend(
            fontsize=7,
            title="track",
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            borderaxespad=0.0,
            ncol=-(-len(tracks) // rows),
            handlelength=2.5,
        )
        extent = legend.get_window_extent(FigureCanvasAgg(fig).get_renderer())
        legend_w = _GAP_IN + extent.width / fig.dpi
        legend.set_bbox_to_anchor((1.0 + _GAP_IN / axes_w, 1.0))
    width = _LEFT_IN + axes_w + legend_w + _RIGHT_IN
    note = textwrap.wrap(
        f"New-lesion rule: {NEW_LESION_RULES[new_lesions]}.", int(width * 100 / 4.2)
    )
    note_in = 0.05 + 0.11 * len(note)
    height = _BOTTOM_IN + note_in + AXES_HEIGHT_IN + _TOP_IN
    fig.set_size_inches(width, height)
    ax.set_position(
        (
            _LEFT_IN / width,
            (_BOTTOM_IN + note_in) / height,
            axes_w / width,
            AXES_HEIGHT_IN / height,
        )
    )
    fig.text(0.1 / width, 0.05 / height, "\n".join(note), fontsize=6, color="0.3", va="bottom")
    return save_figure(fig, path, dpi=100)


@dataclass(frozen=True, slots=True)
class StripFile:
    """A strip of crops written to ``path``."""

    path: Path
    tiles: int
    missing: int  #: tiles drawn as "no image" (key slice not found or unreadable)


def _strip(
    root: str | Path,
    lesions: Sequence[Lesion],
    titles: Sequence[str],
    path: str | Path,
    suptitle: str = "",
    **crop_kwargs,
) -> StripFile:
    crops = [try_crop(root, l, **crop_kwargs) for l in lesions]
    written = write_strip(crops, titles, path, suptitle=suptitle)
    return StripFile(written, len(crops), sum(c is None for c in crops))


def track_strip(root: str | Path, track: Track, path: str | Path) -> StripFile:
    """The track's key-slice crops across studies, one panel per study."""
    side_mm = 2.5 * max(o.long_mm for o in track.observations)  # one field of view
    titles = [f"study {o.study_index}\n{o.long_mm:.1f} mm" for o in track.observations]
    return _strip(
        root,
        [o.lesion for o in track.observations],
        titles,
        path,
        suptitle=f"patient {track.patient_index}, track {track.track_id}",
        side_mm=side_mm,
    )


@dataclass
class GrowthOutput:
    """What :func:`write_growth` linked, assessed and wrote."""

    tracks: dict[int, list[Track]]
    responses: dict[int, list[Response]]
    tables: list[Path]  #: tracks.csv, responses.csv
    plots: list[Path] = field(default_factory=list)  #: one per patient with follow-ups
    strips: list[Path] = field(default_factory=list)  #: crop strips (with a root)
    strip_tiles: int = 0
    missing_tiles: int = 0  #: strip tiles without an image

    @property
    def written(self) -> list[Path]:
        return self.tables + self.plots + self.strips


def write_growth(
    lesions: Sequence[Lesion],
    out_dir: str | Path,
    *,
    rule: MatchRule = MatchRule(),
    root: str | Path | None = None,
    missing: str = "carry",
    new_lesions: str = "ignore",
    plots: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> GrowthOutput:
    """Link, assess (:func:`.growth.analyse_growth`) and write the files of
    :func:`write_growth_files`."""
    analysis = analyse_growth(lesions, rule, missing=missing, new_lesions=new_lesions)
    return write_growth_files(analysis, out_dir, root=root, plots=plots, progress=progress)


def write_growth_files(
    analysis: GrowthAnalysis,
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    plots: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> GrowthOutput:
    """Write ``tracks.csv``, ``responses.csv`` and, for patients with follow-ups,
    ``patient_<N>.png`` plots (and crop strips under ``strips/`` with ``root``).

    ``progress(done, total)`` counts patients as their files are written.
    """
    out_dir = Path(out_dir)
    tracks, responses = analysis.tracks, analysis.responses
    out = GrowthOutput(
        tracks,
        responses,
        [
            write_rows_csv(out_dir / "tracks.csv", TRACK_COLUMNS, track_rows(tracks)),
            write_rows_csv(out_dir / "responses.csv", RESPONSE_COLUMNS, response_rows(responses)),
        ],
    )
    for done, (patient, ts) in enumerate(tracks.items(), start=1):
        if plots and responses[patient]:  # a single study has nothing to follow
            out.plots.append(
                plot_patient(
                    ts,
                    out_dir / f"patient_{patient}.png",
                    responses[patient],
                    new_lesions=analysis.new_lesions,
                )
            )
            for t in ts:
                if root is not None and len(t.observations) > 1:
                    strip = track_strip(
                        root, t, out_dir / "strips" / f"patient_{patient}_track_{t.track_id}.png"
                    )
                    out.strips.append(strip.path)
                    out.strip_tiles += strip.tiles
                    out.missing_tiles += strip.missing
        if progress:
            progress(done, len(tracks))
    return out


def similar_strip(root: str | Path, query: Lesion, neighbours, path: str | Path) -> StripFile:
    """Crops of the query and its neighbours, side by side."""
    lesions = [query] + [n.lesion for n in neighbours]
    titles = [f"query\n{query.file_name}"] + [
        f"{n.similarity:.2f} {n.lesion.type_name}\n{n.lesion.file_name}" for n in neighbours
    ]
    return _strip(root, lesions, titles, path)
