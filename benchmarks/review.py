"""Rendering speed: ``render_key_slices`` against a plain Pillow baseline.

The baseline reads each key slice, windows it with the same formula and draws the axes
and box with ``PIL.ImageDraw`` (no pixel-exact end points, no label, no atomic write).
Usage: ``PYTHONPATH=src python benchmarks/review.py [ROOT CSV] [--repeat N]``
(default: the 23 real liver key slices, else a fresh synthetic sample).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deeplesion.data.annotations import load_lesions
from deeplesion.data.paths import key_slice_path
from deeplesion.review.batch import render_key_slices

REAL = Path(
    os.environ.get(
        "DEEPLESION_REAL_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "deeplesion-real",
    )
)
LIVER = REAL / "ragram88__DeepLesionClassifiers" / "Data" / "Raghav"


def baseline(root: Path, lesions, out_dir: Path) -> None:
    groups: dict[str, list] = {}
    for lesion in lesions:
        groups.setdefault(lesion.file_name, []).append(lesion)
    for name, group in groups.items():
        raw = (
            np.asarray(Image.open(key_slice_path(root, group[0].file_name))).astype(np.int32)
            - 32768
        )
        low, high = group[0].dicom_window_hu
        grey = np.clip((raw - low) / (high - low) * 255, 0, 255).astype(np.uint8)
        img = Image.fromarray(grey).convert("RGB")
        draw = ImageDraw.Draw(img)
        for l in group:
            m = [v - 1 for v in l.recist_px1]
            draw.line(m[:4], fill=(255, 0, 0))
            draw.line(m[4:], fill=(0, 0, 255))
            draw.rectangle([v - 1 for v in l.box_px1], outline=(255, 255, 0))
        img.save(out_dir / name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", type=Path)
    parser.add_argument("csv", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.root:
            root, csv_path = args.root, args.csv or args.root / "DL_info.csv"
        elif LIVER.is_dir():
            root, csv_path = LIVER, LIVER / "NNProject_liver_image_dataset_info.csv"
        else:
            from deeplesion.data.sample import write_sample

            root = write_sample(tmp / "sample", seed=0)
            csv_path = root / "DL_info.csv"
        lesions = load_lesions(csv_path).lesions
        n = len({l.file_name for l in lesions})
        times = {"deeplesion render": [], "Pillow baseline": []}
        for i in range(args.repeat):
            t = time.perf_counter()
            render_key_slices(root, lesions, tmp / f"ours{i}")
            times["deeplesion render"].append(time.perf_counter() - t)
            (tmp / f"base{i}").mkdir()
            t = time.perf_counter()
            baseline(root, lesions, tmp / f"base{i}")
            times["Pillow baseline"].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    print(f"{n} key slices from {csv_path}")
    for name, seconds in best.items():
        print(
            f"  {name:18s} {seconds:7.3f} s  ({n / seconds:6.1f} slices/s, best of {args.repeat})"
        )
    print(f"  ratio (ours / baseline): {best['deeplesion render'] / best['Pillow baseline']:.2f}")


if __name__ == "__main__":
    main()
