"""Benchmark: reading one slice from the PNGs vs from the store (npy and Zarr v3 formats).

Side by side in one process, on the 29 real slices of series 000062_01_01 (a DL_info row
is made up for them; only its Slice_range and spacing matter here). For each format it
builds a store, then reads every slice ``--repeat`` times in a random order through the
same call the training pipeline makes (``source.read_raw(folder, n)``: uint16 PNG values)
and prints CPU time (time.process_time) and wall time per slice, min and median over the
passes, with the ratio to PNG decoding; the bytes per slice; and the build time per slice.

    PYTHONPATH=src python benchmarks/store.py
    PYTHONPATH=src python benchmarks/store.py --repeat 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deeplesion.convert.store import build_store
from deeplesion.data.annotations import Lesion, write_dl_info
from deeplesion.data.sources import PngSource
from deeplesion.data.store import open_store

REAL = Path(
    os.environ.get(
        "DEEPLESION_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/deeplesion-real"
    )
)
REAL_SERIES = REAL / "aholovenko__sa-21-deep-lesion" / "data" / "000062_01_01"
FOLDER = "000062_01_01"


def make_root(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / FOLDER).symlink_to(REAL_SERIES)
    row = Lesion(
        0, f"{FOLDER}_070.png", 62, 1, 1, 70, (210, 246, 230, 246, 220, 235, 220, 257),
        (200, 230, 240, 262), (30, 22), (0.5, 0.5, 0.5), -1, False, (56, 84),
        (0.7, 0.7, 2.0), (512, 512), (-175, 275), "F", 50.0, 1,
    )  # fmt: skip
    write_dl_info([row], root / "DL_info.csv")
    return root


def time_reads(source, numbers: list[int], repeat: int, seed: int) -> tuple[list, list]:
    """Per-pass mean CPU and wall seconds per slice."""
    rng = np.random.default_rng(seed)
    cpu, wall = [], []
    for _ in range(repeat):
        order = rng.permutation(numbers)
        c0, w0 = time.process_time(), time.perf_counter()
        for n in order:
            source.read_raw(FOLDER, int(n))
        cpu.append((time.process_time() - c0) / len(order))
        wall.append((time.perf_counter() - w0) / len(order))
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    numbers = list(range(56, 85))
    png_bytes = sum(p.stat().st_size for p in REAL_SERIES.glob("*.png")) / len(numbers)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_root(Path(tmp))
        sources = {"png (Pillow)": (PngSource(root), png_bytes, float("nan"))}
        for fmt in ("npy", "zarr"):
            out = Path(tmp) / fmt
            c0 = time.process_time()
            report = build_store(root, out, fmt=fmt)
            build = (time.process_time() - c0) / report.n_slices
            sources[f"store {fmt}"] = (open_store(out), report.size_bytes / report.n_slices, build)
        results = {
            name: time_reads(src, numbers, args.repeat, seed=1)
            for name, (src, _, _) in sources.items()
        }
    base = statistics.median(results["png (Pillow)"][0])
    print(f"{len(numbers)} real 512x512 slices, {args.repeat} passes; per slice:")
    print(
        f"{'source':14} {'cpu min ms':>10} {'cpu med ms':>10} {'wall min ms':>11} "
        f"{'wall med ms':>11} {'x faster':>9} {'KiB':>7} {'x PNG size':>10} {'build cpu ms':>12}"
    )
    for name, (cpu, wall) in results.items():
        _, size, build = sources[name]
        print(
            f"{name:14} {min(cpu) * 1e3:10.3f} {statistics.median(cpu) * 1e3:10.3f} "
            f"{min(wall) * 1e3:11.3f} {statistics.median(wall) * 1e3:11.3f} "
            f"{base / statistics.median(cpu):9.1f} {size / 1024:7.0f} "
            f"{size / png_bytes:10.2f} {build * 1e3:12.2f}"
        )


if __name__ == "__main__":
    main()
