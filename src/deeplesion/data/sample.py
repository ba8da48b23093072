"""A synthetic DeepLesion sample in the exact release layout.

``write_sample(out, seed)`` writes ``Images_png/<folder>/<NNN>.png`` (16-bit, HU + 32768),
a mutually consistent 18-column ``DL_info.csv`` and ``sample_truth.csv`` (the ground-truth
``track_id`` of each row: the same physical lesion seen again in follow-up studies).
Images are simple CT-like phantoms (air, body outline, subcutaneous fat, muscle, lungs,
heart, liver, spleen, kidneys, aorta, spine, pelvis, noise) with the lesions drawn where
the annotations say. ``sample_masks/`` holds every lesion's exact mask on every slice it
reaches, as a masks folder (:mod:`deeplesion.data.maskfiles`): the painted ellipsoid
section, soft rim included. Same seed, same bytes.

The body phantom itself is drawn by :mod:`deeplesion.data.phantom`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import BOX_PADDING_PX, Lesion, RecistPx1, write_dl_info
from deeplesion.data.io import atomic_path
from deeplesion.data.maskfiles import (
    MASKS_CSV,
    MaskRecord,
    mask_png_path,
    read_label_png,
    series_labels,
    slice_ranks,
    write_label_png,
    write_masks_csv,
    write_settings,
)
from deeplesion.data.paths import series_folder, slice_path
from deeplesion.data.phantom import body_phantom
from deeplesion.data.slices import write_hu_png

BODY_HEIGHT_MM = 1700.0  #: head-to-feet length used to turn mm into normalised z
TRUTH_FILE = "sample_truth.csv"
SAMPLE_MASKS = "sample_masks"  #: folder of the lesions' exact masks (a masks folder)

# Per lesion type: centre (mm from the body centre; +x = image right = patient left,
# +y = posterior) and lesion HU.
_TEMPLATES: dict[int, tuple[tuple[float, float], float]] = {
    1: ((0.0, 72.0), 950.0),  # bone: vertebral body
    2: ((25.0, 5.0), 75.0),  # abdomen
    3: ((0.0, -40.0), 55.0),  # mediastinum: anterior, between the lungs
    4: ((-55.0, -5.0), 10.0),  # liver (patient right = image left)
    5: ((62.0, 0.0), 25.0),  # lung
    6: ((62.0, 48.0), 25.0),  # kidney
    7: ((-118.0, 60.0), 70.0),  # soft tissue: subcutaneous
    8: ((35.0, 15.0), 70.0),  # pelvis
}


@dataclass
class _LesionSpec:
    key_slice: int
    type_code: int  # true type; written as -1 in train rows
    long_mm: float
    short_over_long: float
    angle_deg: float
    track_id: int
    offset_mm: tuple[float, float] = (0.0, 0.0)
    noisy: bool = False


@dataclass
class _SeriesSpec:
    patient: int
    study: int
    series: int
    split_code: int
    sex: str
    age_years: float | None
    n_slices: int  # slices 1..n_slices exist in the scanner volume
    interval_mm: float
    spacing_xy_mm: float
    size: int
    z_top_norm: float  # body z of slice 1
    window_hu: tuple[float, float]
    lesions: list[_LesionSpec] = field(default_factory=list)

    def having(self, *lesions: _LesionSpec) -> _SeriesSpec:
        return replace(self, lesions=list(lesions))


def _specs() -> list[_SeriesSpec]:
    """The sample's patients: all splits, 1/2/5 mm intervals, follow-ups with known tracks."""
    soft, lung = (-175.0, 275.0), (-1350.0, 150.0)
    S, L = _SeriesSpec, _LesionSpec
    return [
        # Patient 1 (val): three studies; liver and lung lesions tracked, new kidney lesion.
        S(1, 1, 1, 2, "F", 51, 40, 5.0, 0.78125, 512, 0.36, soft).having(
            L(10, 5, 18.0, 0.7, 20, 2), L(32, 4, 34.0, 0.75, 35, 1)
        ),
        S(1, 2, 1, 2, "F", 51, 40, 5.0, 0.78125, 512, 0.36, soft).having(
            L(11, 5, 21.0, 0.7, 30, 2, (1.5, -1.0)), L(32, 4, 24.0, 0.8, 40, 1, (-2.0, 1.0))
        ),
        S(1, 3, 2, 2, "F", 52, 44, 5.0, 0.8125, 512, 0.355, soft).having(
            L(13, 5, 26.0, 0.65, 25, 2, (1.0, 1.0)),
            L(34, 4, 20.0, 0.8, 45, 1, (-1.0, 2.0)),
            L(38, 6, 16.0, 0.8, 0, 3),
        ),
        # Patient 2 (test): 1 mm series; two lesions on one key slice, both grow.
        S(2, 1, 1, 3, "M", 63, 24, 1.0, 0.703125, 512, 0.31, lung).having(
            L(12, 3, 22.0, 0.6, 10, 4), L(12, 5, 12.0, 0.8, 70, 5, (-20.0, -25.0))
        ),
        S(2, 2, 3, 3, "M", 64, 24, 1.0, 0.703125, 512, 0.31, lung).having(
            L(13, 3, 27.0, 0.6, 15, 4, (1.0, 1.0)), L(13, 5, 15.0, 0.8, 75, 5, (-19.0, -24.0))
        ),
        # Patient 3 (train): 2 mm series, two blocks far apart (a gap), one noisy row.
        S(3, 1, 1, 1, "M", 45, 90, 2.0, 0.859375, 512, 0.50, soft).having(
            L(16, 2, 30.0, 0.7, 60, 6), L(72, 7, 20.0, 0.6, 0, 7, noisy=True)
        ),
        # Patient 4 (train): a 768 x 768 image.
        S(4, 1, 2, 1, "F", 70, 9, 5.0, 0.65, 768, 0.76, soft).having(L(5, 8, 28.0, 0.8, 120, 8)),
        # Patient 5 (val): unknown age (the release has a literal NaN), bone lesion.
        S(5, 1, 1, 2, "F", None, 15, 5.0, 0.9, 512, 0.55, (-450.0, 1050.0)).having(
            L(8, 1, 15.0, 0.8, 90, 9)
        ),
        # Patient 6 (test): kidney and subcutaneous lesions on neighbouring key slices.
        S(6, 1, 1, 3, "M", 38, 20, 5.0, 0.8, 512, 0.55, soft).having(
            L(9, 6, 22.0, 0.8, 80, 10), L(11, 7, 18.0, 0.55, 100, 11)
        ),
        # Patient 7 (train): lung and liver lesions whose context ranges merge.
        S(7, 1, 1, 1, "M", 57, 30, 5.0, 0.74, 512, 0.40, soft).having(
            L(12, 5, 14.0, 0.8, 0, 12, (-120.0, 0.0)), L(20, 4, 25.0, 0.7, 150, 13)
        ),
        # Patient 8 (test): 2 mm pelvis and abdomen lesions on one key slice.
        S(8, 1, 1, 3, "F", 66, 16, 2.0, 0.82, 512, 0.74, soft).having(
            L(8, 8, 24.0, 0.75, 30, 14), L(8, 2, 20.0, 0.7, 160, 15, (-55.0, -15.0))
        ),
    ]


# --------------------------------------------------------------------------- annotations


def _lesion_geometry(
    series: _SeriesSpec, spec: _LesionSpec, size: int
) -> tuple[RecistPx1, float, float]:
    """RECIST end points (1-based pixels, rounded to 3 decimals), centre (x, y) in px1."""
    (tx, ty), _ = _TEMPLATES[spec.type_code]
    px_per_mm = 1.0 / series.spacing_xy_mm
    centre_index = (size - 1) / 2
    cx = centre_index + (tx + spec.offset_mm[0]) * px_per_mm + 1.0  # -> 1-based
    cy = centre_index + (ty + spec.offset_mm[1]) * px_per_mm + 1.0
    half_long = spec.long_mm * px_per_mm / 2
    half_short = half_long * spec.short_over_long
    t = math.radians(spec.angle_deg)
    ux, uy = math.cos(t), math.sin(t)
    pts = (
        cx + half_long * ux,
        cy + half_long * uy,
        cx - half_long * ux,
        cy - half_long * uy,
        cx - half_short * uy,
        cy + half_short * ux,
        cx + half_short * uy,
        cy - half_short * ux,
    )
    x11, y11, x12, y12, x21, y21, x22, y22 = (round(p, 3) for p in pts)
    return (x11, y11, x12, y12, x21, y21, x22, y22), cx, cy


def _ranges(series: _SeriesSpec) -> dict[int, tuple[int, int]]:
    """Key slice -> provided Slice_range: key +-30 mm, clipped, overlapping ranges merged."""
    half = math.ceil(30.0 / series.interval_mm)
    spans = sorted(
        (max(1, l.key_slice - half), min(series.n_slices, l.key_slice + half))
        for l in series.lesions
    )
    merged: list[list[int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return {
        l.key_slice: next((a, b) for a, b in merged if a <= l.key_slice <= b)
        for l in series.lesions
    }


def _z_norm(series: _SeriesSpec, slice_number: float) -> float:
    return series.z_top_norm + (slice_number - 1) * series.interval_mm / BODY_HEIGHT_MM


def sample_lesions() -> tuple[list[Lesion], list[int]]:
    """The sample's DL_info rows (sorted like the release) and each row's track id."""
    rows: list[tuple[Lesion, int]] = []
    for s in _specs():
        ranges = _ranges(s)
        for spec in s.lesions:
            pts, cx, cy = _lesion_geometry(s, spec, s.size)
            xs, ys = pts[0::2], pts[1::2]
            box = (
                min(xs) - BOX_PADDING_PX,
                min(ys) - BOX_PADDING_PX,
                max(xs) + BOX_PADDING_PX,
                max(ys) + BOX_PADDING_PX,
            )
            diam = (
                round(math.dist(pts[0:2], pts[2:4]), 4),
                round(math.dist(pts[4:6], pts[6:8]), 4),
            )
            loc = (
                round(cx / s.size, 4),
                round(cy / s.size, 4),
                round(_z_norm(s, spec.key_slice), 4),
            )
            folder = series_folder(s.patient, s.study, s.series)
            lesion = Lesion(
                row_index=0,
                file_name=f"{folder}_{spec.key_slice:03d}.png",
                patient_index=s.patient,
                study_index=s.study,
                series_id=s.series,
                key_slice_index=spec.key_slice,
                recist_px1=pts,
                box_px1=box,
                diameters_px=diam,
                location_norm=loc,
                coarse_type=-1 if s.split_code == 1 else spec.type_code,
                possibly_noisy=spec.noisy,
                slice_range=ranges[spec.key_slice],
                spacing_mm=(s.spacing_xy_mm, s.spacing_xy_mm, s.interval_mm),
                image_size=(s.size, s.size),
                dicom_window_hu=s.window_hu,
                sex=s.sex,
                age_years=s.age_years,
                split_code=s.split_code,
            )
            rows.append((lesion, spec.track_id))
    rows.sort(key=lambda r: r[0].file_name)
    lesions = [replace(lesion, row_index=i) for i, (lesion, _) in enumerate(rows)]
    return lesions, [track for _, track in rows]


# --------------------------------------------------------------------------- images


def _lesion_r2(
    series: _SeriesSpec, spec: _LesionSpec, slice_number: int, x_px1: np.ndarray, y_px1: np.ndarray
) -> np.ndarray | None:
    """Normalised squared radius of the lesion's ellipsoid section (None off the lesion)."""
    pts, cx, cy = _lesion_geometry(series, spec, series.size)
    half_long = math.dist(pts[0:2], pts[2:4]) / 2
    half_short = math.dist(pts[4:6], pts[6:8]) / 2
    half_z_mm = spec.long_mm * spec.short_over_long / 2
    dz_mm = (slice_number - spec.key_slice) * series.interval_mm
    if abs(dz_mm) >= half_z_mm:
        return None
    shrink = math.sqrt(1 - (dz_mm / half_z_mm) ** 2)
    t = math.radians(spec.angle_deg)
    u = (x_px1 - cx) * math.cos(t) + (y_px1 - cy) * math.sin(t)
    v = -(x_px1 - cx) * math.sin(t) + (y_px1 - cy) * math.cos(t)
    return (u / (half_long * shrink + 1e-6)) ** 2 + (v / (half_short * shrink + 1e-6)) ** 2


def _draw_lesions(
    hu: np.ndarray,
    series: _SeriesSpec,
    slice_number: int,
    rng: np.random.Generator,
    labels: list[int],
) -> np.ndarray:
    """Paint every lesion of the series that reaches this slice (ellipsoids).

    Returns the slice's exact label image: ``labels[i]`` where lesion ``i`` was painted
    (its ellipsoid section, soft rim included; a pixel two lesions claim keeps the lower
    label).
    """
    size = series.size
    rows_i, cols_i = np.mgrid[0:size, 0:size].astype(np.float32)
    x_px1, y_px1 = cols_i + 1.0, rows_i + 1.0
    label_image = np.zeros((size, size), dtype=np.uint8)
    for spec, label in zip(series.lesions, labels):
        r2 = _lesion_r2(series, spec, slice_number, x_px1, y_px1)
        if r2 is None:
            continue
        inside = r2 <= 1.0
        lesion_hu = _TEMPLATES[spec.type_code][1]
        edge = np.clip((1.0 - r2[inside]) * 4.0, 0.0, 1.0)  # soft 25 % rim
        hu[inside] = (
            hu[inside] * (1 - edge)
            + (lesion_hu + rng.normal(0.0, 6.0, size=int(inside.sum()))) * edge
        )
        claim = inside & ((label_image == 0) | (label_image > label))
        label_image[claim] = label
    return label_image


def write_sample(out: str | Path, seed: int = 0, *, progress=None) -> Path:
    """Write the synthetic dataset under ``out``; returns ``out`` as a Path.

    ``progress(done, total)`` is called after each slice written.
    """
    out = Path(out)
    rng_root = np.random.SeedSequence(seed)
    specs = _specs()
    lesions, tracks = sample_lesions()
    row_of = {(l.file_name, l.recist_px1): l.row_index for l in lesions}
    label_of = series_labels(lesions)
    spec_labels: dict[int, list[int]] = {}  # id(series spec) -> label of each lesion spec
    jobs: list[tuple[_SeriesSpec, int]] = []
    for s in specs:
        folder = series_folder(s.patient, s.study, s.series)
        spec_labels[id(s)] = [
            label_of[row_of[(f"{folder}_{l.key_slice:03d}.png", _lesion_geometry(s, l, s.size)[0])]]
            for l in s.lesions
        ]
        for first, last in sorted(set(_ranges(s).values())):
            jobs.extend((s, n) for n in range(first, last + 1))
    extents: dict[tuple[str, int], list[int]] = {}  # (folder, label) -> slices holding it
    for done, ((s, n), child) in enumerate(zip(jobs, rng_root.spawn(len(jobs))), start=1):
        rng = np.random.default_rng(child)
        hu = body_phantom(s.size, s.spacing_xy_mm, _z_norm(s, n), rng)
        label_image = _draw_lesions(hu, s, n, rng, spec_labels[id(s)])
        folder = series_folder(s.patient, s.study, s.series)
        if label_image.any():
            write_label_png(mask_png_path(out / SAMPLE_MASKS, folder, n), label_image)
            for label in np.unique(label_image[label_image > 0]):
                extents.setdefault((folder, int(label)), []).append(n)
        hu_int = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        write_hu_png(
            slice_path(out, series_folder(s.patient, s.study, s.series), n),
            hu_int,
            compress_level=1,
        )
        if progress:
            progress(done, len(jobs))
    write_dl_info(lesions, out / "DL_info.csv")
    with atomic_path(out / TRUTH_FILE) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["row_index", "File_name", "track_id"])
        for lesion, track in zip(lesions, tracks):
            writer.writerow([lesion.row_index, lesion.file_name, track])
    _write_truth_masks_csv(out / SAMPLE_MASKS, lesions, label_of, extents)
    return out


def _write_truth_masks_csv(
    masks_dir: Path,
    lesions: list[Lesion],
    label_of: dict[int, int],
    extents: dict[tuple[str, int], list[int]],
) -> None:
    """``masks.csv`` of the exact masks (key-slice area counted from its label PNG)."""
    records = []
    ranks = slice_ranks(lesions)
    for l in lesions:
        label = label_of[l.row_index]
        slices = extents[(l.series_folder, label)]
        key = read_label_png(mask_png_path(masks_dir, l.series_folder, l.key_slice_index))
        records.append(
            MaskRecord(
                l.row_index,
                l.file_name,
                ranks[l.row_index],
                label,
                "truth",
                "ok",
                min(slices),
                max(slices),
                int((key == label).sum()),
                l.long_diameter_mm,
                l.short_diameter_mm,
            )
        )
    write_masks_csv(masks_dir / MASKS_CSV, records)
    write_settings(masks_dir, {"method": "truth", "3d": True})


def read_truth(root: str | Path) -> dict[int, int]:
    """``sample_truth.csv`` -> {DL_info row index: track id}."""
    with open(Path(root) / TRUTH_FILE, newline="") as fh:
        return {int(r["row_index"]): int(r["track_id"]) for r in csv.DictReader(fh)}
