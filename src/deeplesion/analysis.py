"""Outputs of the lesion-analysis layer: growth tables, diameter plots, crop strips, demo."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from .annotations import Lesion, load_lesions
from .crops import try_crop, write_strip
from .growth import MatchRule, Response, Track, link_all, recist_responses
from .io import atomic_path, save_figure

TRACK_COLUMNS = ("patient_index", "track_id", "new_lesion", "study_index", "age_years",
                 "row_index", "file_name", "coarse_type", "long_mm", "short_mm",
                 "change_from_first_mm", "link_cost", "link_confidence")
RESPONSE_COLUMNS = ("patient_index", "study_index", "sld_mm", "baseline_mm", "nadir_mm",
                    "change_from_baseline_pct", "change_from_nadir_pct", "new_lesions",
                    "missing_targets", "response", "reason")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def track_rows(tracks: dict[int, list[Track]]) -> list[dict[str, object]]:
    """One row per observation of every track (the CSV written by :func:`write_growth`)."""
    rows = []
    for patient in sorted(tracks):
        for t in tracks[patient]:
            first = t.observations[0].long_mm
            for o in t.observations:
                rows.append({
                    "patient_index": patient, "track_id": t.track_id,
                    "new_lesion": int(t.is_new), "study_index": o.study_index,
                    "age_years": _fmt(o.lesion.age_years, 0), "row_index": o.lesion.row_index,
                    "file_name": o.lesion.file_name, "coarse_type": o.lesion.coarse_type,
                    "long_mm": _fmt(o.long_mm), "short_mm": _fmt(o.short_mm),
                    "change_from_first_mm": _fmt(o.long_mm - first),
                    "link_cost": _fmt(o.link_cost, 3), "link_confidence": _fmt(o.confidence, 3),
                })
    return rows


def response_rows(responses: dict[int, list[Response]]) -> list[dict[str, object]]:
    return [{
        "patient_index": r.patient_index, "study_index": r.study_index,
        "sld_mm": _fmt(r.sld_mm), "baseline_mm": _fmt(r.baseline_mm),
        "nadir_mm": _fmt(r.nadir_mm), "change_from_baseline_pct":
        _fmt(r.change_from_baseline_pct, 1), "change_from_nadir_pct":
        _fmt(r.change_from_nadir_pct, 1), "new_lesions": r.new_lesions,
        "missing_targets": r.missing_targets, "response": r.category, "reason": r.reason,
    } for p in sorted(responses) for r in responses[p]]


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_patient(tracks: Sequence[Track], path: str | Path,
                 responses: Sequence[Response] = ()) -> Path:
    """Long diameter (mm) of each track against study; new lesions dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    studies = sorted({o.study_index for t in tracks for o in t.observations})
    ages = {}
    for t in tracks:
        for o in t.observations:
            ages.setdefault(o.study_index, o.lesion.age_years)
    for t in tracks:
        xs = [o.study_index for o in t.observations]
        ys = [o.long_mm for o in t.observations]
        ax.plot(xs, ys, "o--" if t.is_new else "o-",
                label=f"track {t.track_id} ({t.observations[0].lesion.type_name})"
                + (" new" if t.is_new else ""))
    for r in responses:
        ax.annotate(r.category, (r.study_index, 1.0), xycoords=("data", "axes fraction"),
                    ha="center", va="top", fontsize=8, fontweight="bold")
    ax.set_xticks(studies)
    ax.set_xticklabels([f"{s}\n({'?' if ages[s] is None else f'{ages[s]:.0f} y'})"
                        for s in studies])
    ax.set_xlabel("study (patient age)")
    ax.set_ylabel("long diameter (mm)")
    ax.set_title(f"patient {tracks[0].patient_index}" if tracks else "")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def track_strip(root: str | Path, track: Track, path: str | Path) -> Path:
    """The track's key-slice crops across studies, one panel per study."""
    side_mm = 2.5 * max(o.long_mm for o in track.observations)  # one field of view
    crops = [try_crop(root, o.lesion, side_mm=side_mm) for o in track.observations]
    titles = [f"study {o.study_index}\n{o.long_mm:.1f} mm" for o in track.observations]
    return write_strip(crops, titles, path, suptitle=f"patient {track.patient_index}, "
                       f"track {track.track_id}")


def write_growth(lesions: Sequence[Lesion], out_dir: str | Path, *,
                 rule: MatchRule = MatchRule(), root: str | Path | None = None,
                 missing: str = "carry", new_lesions: str = "pd", plots: bool = True,
                 progress: Callable[[int, int], None] | None = None
                 ) -> tuple[dict[int, list[Track]], dict[int, list[Response]], list[Path]]:
    """Link, assess and write ``tracks.csv``, ``responses.csv`` and, for patients with
    follow-ups, ``patient_<N>.png`` plots (and crop strips under ``strips/`` with ``root``).
    """
    out_dir = Path(out_dir)
    tracks = link_all(lesions, rule, progress=progress)
    responses = {p: recist_responses(ts, missing=missing, new_lesions=new_lesions)
                 for p, ts in tracks.items()}
    written = [_write_csv(out_dir / "tracks.csv", TRACK_COLUMNS, track_rows(tracks)),
               _write_csv(out_dir / "responses.csv", RESPONSE_COLUMNS,
                          response_rows(responses))]
    if plots:
        for patient, ts in tracks.items():
            if not responses[patient]:
                continue  # a single study: nothing to follow
            written.append(plot_patient(ts, out_dir / f"patient_{patient}.png",
                                        responses[patient]))
            if root is not None:
                for t in ts:
                    if len(t.observations) > 1:
                        written.append(track_strip(
                            root, t, out_dir / "strips" / f"patient_{patient}_track_{t.track_id}.png"))
    return tracks, responses, written


def similar_strip(root: str | Path, query: Lesion, neighbours, path: str | Path) -> Path:
    """Crops of the query and its neighbours, side by side."""
    lesions = [query] + [n.lesion for n in neighbours]
    titles = [f"query\n{query.file_name}"] + [
        f"{n.similarity:.2f} {n.lesion.type_name}\n{n.lesion.file_name}" for n in neighbours]
    return write_strip([try_crop(root, l) for l in lesions], titles, path)


def demo(root: Path, csv_path: Path, out_dir: Path) -> list[Path]:
    """Growth (table, plots, strips) and a similar-lesion query on a dataset root."""
    from .retrieval import LesionIndex

    out_dir = Path(out_dir)
    table = load_lesions(csv_path)
    _, _, written = write_growth(table.lesions, out_dir / "growth", root=root)
    if len(table.lesions) > 1:
        index = LesionIndex.build(table.lesions, root=root)
        query = table.lesions[0]
        neighbours = index.similar(query, k=min(5, len(table.lesions) - 1))
        rows = [{"rank": i, "row_index": n.lesion.row_index, "file_name": n.lesion.file_name,
                 "type": n.lesion.type_name, "similarity": f"{n.similarity:.4f}"}
                for i, n in enumerate(neighbours, start=1)]
        written.append(_write_csv(out_dir / "similar.csv",
                                  ("rank", "row_index", "file_name", "type", "similarity"),
                                  rows))
        written.append(similar_strip(root, query, neighbours, out_dir / "similar.png"))
    return written
