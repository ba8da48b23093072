"""Key-slice masks on real DeepLesion slices: diameter agreement with RECIST, and time.

For each method (ellipse, grabcut, best) the mask's long and short axes, measured as RECIST
measures them, are compared with the annotated diameters (MULAN's diameter error: the mean
of the absolute long and short errors, mm). On the synthetic sample the Dice against its
exact masks is printed too. Time per lesion (CPU and wall, min and median of repeats) is
given as a ratio to the ellipse. ``--overlays DIR`` writes one PNG per real lesion: the
slice around the lesion (DICOM window, 4x) with the RECIST axes (green), the ellipse
(blue), GrabCut (yellow) and best (red) outlines.

Usage: ``PYTHONPATH=src python benchmarks/segmentation.py [--overlays /tmp/overlays]``
(real data from ``DEEPLESION_REAL_DATA``, default ``../shared/data/deeplesion-real``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import load_lesions
from deeplesion.data.maskfiles import lesion_mask_slices, match_records, read_masks_csv
from deeplesion.data.masks import dice, mask_axes
from deeplesion.data.paths import key_slice_path
from deeplesion.data.sample import SAMPLE_MASKS, write_sample
from deeplesion.data.slices import read_hu
from deeplesion.segmentation.keyslice import METHODS, key_slice_mask, window_uint8

REAL = Path(
    os.environ.get(
        "DEEPLESION_REAL_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "deeplesion-real",
    )
)
LIVER = REAL / "ragram88__DeepLesionClassifiers" / "Data" / "Raghav"
COLOURS = {"ellipse": (60, 120, 255), "grabcut": (255, 220, 0), "best": (255, 40, 40)}


def run(root: Path, lesions, repeat: int):
    """{method: [(lesion, KeySliceMask)]} and {method: [(cpu_s, wall_s) per repeat]}."""
    slices = {l.row_index: read_hu(key_slice_path(root, l.file_name)) for l in lesions}
    results, times = {}, {}
    for method in METHODS:
        times[method] = []
        for _ in range(repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            masks = [(l, key_slice_mask(slices[l.row_index], l, method)) for l in lesions]
            times[method].append((time.process_time() - c0, time.perf_counter() - w0))
        results[method] = masks
    return slices, results, times


def diameter_table(results) -> list[str]:
    lines = [
        f"{'method':8} {'n':>3} {'diam. err mm':>12} {'median':>7} {'long err':>9} "
        f"{'short err':>9} {'long bias':>9} {'chosen'}"
    ]
    for method, pairs in results.items():
        errs, longs, shorts, bias, chosen = [], [], [], [], {}
        for l, result in pairs:
            sx, sy = l.spacing_mm[0], l.spacing_mm[1]
            axes = mask_axes(result.mask, (sy, sx))
            dl, ds = axes.long_mm - l.long_diameter_mm, axes.short_mm - l.short_diameter_mm
            longs.append(abs(dl))
            shorts.append(abs(ds))
            bias.append(dl)
            errs.append((abs(dl) + abs(ds)) / 2)
            chosen[result.method] = chosen.get(result.method, 0) + 1
        lines.append(
            f"{method:8} {len(errs):3d} {np.mean(errs):12.2f} {np.median(errs):7.2f} "
            f"{np.mean(longs):9.2f} {np.mean(shorts):9.2f} {np.mean(bias):+9.2f} "
            + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items()))
        )
    return lines


def timing_table(times, n: int) -> list[str]:
    base_cpu = min(c for c, _ in times["ellipse"])
    base_wall = min(w for _, w in times["ellipse"])
    lines = [f"{'method':8} {'cpu ms/lesion min':>18} {'median':>7} {'x ellipse':>9} {'wall x':>7}"]
    for method, values in times.items():
        cpu = [c for c, _ in values]
        wall = [w for _, w in values]
        lines.append(
            f"{method:8} {1000 * min(cpu) / n:18.1f} {1000 * statistics.median(cpu) / n:7.1f} "
            f"{min(cpu) / base_cpu:9.1f} {min(wall) / base_wall:7.1f}"
        )
    return lines


def overlays(slices, results, out: Path) -> None:
    import cv2
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for i, (l, _) in enumerate(results["ellipse"]):
        hu = slices[l.row_index]
        x1, y1, x2, y2 = (round(v) - 1 for v in l.box_px1)
        m = max(x2 - x1, y2 - y1)
        r0, r1 = max(0, y1 - m), min(hu.shape[0], y2 + m + 1)
        c0, c1 = max(0, x1 - m), min(hu.shape[1], x2 + m + 1)
        scale = 4
        grey = window_uint8(hu[r0:r1, c0:c1], l.dicom_window_hu)
        rgb = cv2.resize(
            np.repeat(grey[..., None], 3, 2),
            None,
            fx=scale,
            fy=scale,
            interpolation=cv2.INTER_NEAREST,
        )
        for method, colour in COLOURS.items():
            mask = results[method][i][1].mask[r0:r1, c0:c1].astype(np.uint8)
            big = cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, contours, -1, colour, 1)
        p = (np.asarray(l.recist_px1).reshape(4, 2) - 1 - [c0, r0] + 0.5) * scale
        for a, b in ((0, 1), (2, 3)):
            cv2.line(
                rgb,
                tuple(np.rint(p[a]).astype(int)),
                tuple(np.rint(p[b]).astype(int)),
                (0, 220, 0),
                1,
            )
        best = results["best"][i][1].method
        Image.fromarray(rgb).save(out / f"{l.file_name[:-4]}_{best.replace(':', '-')}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--overlays", type=Path, help="Write overlay PNGs of the real lesions here."
    )
    args = parser.parse_args()
    csv = LIVER / "NNProject_liver_image_dataset_info.csv"
    if csv.is_file():
        lesions = load_lesions(csv).lesions
        slices, results, times = run(LIVER, lesions, args.repeat)
        print(f"real liver key slices ({len(lesions)} lesions, {LIVER})")
        print("\n".join(diameter_table(results)))
        print("\n".join(timing_table(times, len(lesions))))
        if args.overlays:
            overlays(slices, results, args.overlays)
            print(f"overlays in {args.overlays}")
    else:
        print(f"no real data at {LIVER}; synthetic sample only")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_sample(Path(tmp) / "sample")
        lesions = load_lesions(root / "DL_info.csv").lesions
        truth = match_records(read_masks_csv(root / SAMPLE_MASKS), lesions)
        _, results, times = run(root, lesions, 1)
        print(f"\nsynthetic sample ({len(lesions)} lesions): Dice against the exact masks")
        for method, pairs in results.items():
            scores = [
                dice(
                    r.mask,
                    lesion_mask_slices(root / SAMPLE_MASKS, truth[l.row_index])[l.key_slice_index],
                )
                for l, r in pairs
            ]
            print(f"{method:8} mean {np.mean(scores):.3f}  min {np.min(scores):.3f}")
        print("\n".join(diameter_table(results)))


if __name__ == "__main__":
    main()
