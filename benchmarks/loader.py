"""Benchmark: the training input pipeline, CPU time per sample, side by side in one process.

Columns: ``baseline`` (a frozen copy of the PNG path as it was before the OpenCV rewrite,
kept below and clearly labelled; it is the yardstick and is not used anywhere else), ``png``
(today's pipeline reading the PNGs), ``store`` (today's pipeline reading a store built by
``deeplesion.convert.store`` in a temporary folder; skipped with a note when that module is
not installed). Rows: the ``mulan`` preset with ``train=True`` (augmentation on) and
``3dce``, on the 29 real slices of series 000062_01_01 (made-up lesion rows at key slices
62..78, 0.7 mm pixels, 2.5 mm slices: 9 distinct slices per sample) and on the synthetic
sample (``deeplesion.data.sample``). Each repeat prepares every sample once per column,
columns interleaved; printed are CPU seconds (time.process_time) and wall seconds per
sample, min and median over repeats, and samples per core-second relative to the baseline.

Then a DataLoader (batch 2, ``KeySliceDetectionDataset``, mulan, train=True) with 0, 1 and
2 workers: samples/s (wall), counted from the first batch to the end of the pass so worker
start-up is left out.

    PYTHONPATH=src python benchmarks/loader.py
    PYTHONPATH=src python benchmarks/loader.py --repeat 7 --loader-samples 64
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from deeplesion.data.annotations import Lesion, load_lesions, write_dl_info
from deeplesion.data.context import context_offsets_mm, plan_context
from deeplesion.data.paths import slice_path
from deeplesion.data.sample import write_sample
from deeplesion.data.slices import HU_OFFSET, read_png_raw
from deeplesion.data.sources import PngSource
from deeplesion.training.datasets import KeySliceDetectionDataset, collate_detection
from deeplesion.training.pipeline import prepare_lesion_image
from deeplesion.training.settings import Augmentation, Preprocessing

REAL = Path(
    os.environ.get(
        "DEEPLESION_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/deeplesion-real"
    )
)
REAL_SERIES = REAL / "aholovenko__sa-21-deep-lesion" / "data" / "000062_01_01"
FOLDER = "000062_01_01"

# =========================================================================================
# BASELINE: a frozen copy of the PNG path before the OpenCV rewrite (training/preprocess.py
# at commit 615ca08): Pillow decoding, numpy cumulative-sum opening, numpy bilinear resize
# and warp, full-slice blending and windowing before the crop. Do not "fix" or speed up.
# =========================================================================================


def _old_run_any(mask: np.ndarray, size: int, axis: int) -> np.ndarray:
    half = size // 2
    m = np.moveaxis(mask, axis, 0).astype(np.int32)
    padded = np.concatenate(
        [
            np.zeros((half + 1,) + m.shape[1:], np.int32),
            m,
            np.zeros((size - 1 - half,) + m.shape[1:], np.int32),
        ]
    )
    csum = np.cumsum(padded, axis=0)
    counts = csum[size:] - csum[:-size]
    return np.moveaxis(counts > 0, 0, axis)


def _old_erode(mask: np.ndarray, size: int) -> np.ndarray:
    out = mask
    for axis in (0, 1):
        half = size // 2
        m = np.moveaxis(out, axis, 0).astype(np.int32)
        padded = np.concatenate(
            [
                np.zeros((half + 1,) + m.shape[1:], np.int32),
                m,
                np.zeros((size - 1 - half,) + m.shape[1:], np.int32),
            ]
        )
        csum = np.cumsum(padded, axis=0)
        out = np.moveaxis((csum[size:] - csum[:-size]) == size, 0, axis)
    return out


def _old_body_bbox(raw_png: np.ndarray, threshold: int, opening_px: int):
    mask = np.asarray(raw_png) > threshold
    if opening_px > 1:
        eroded = _old_erode(mask, opening_px)
        mask = _old_run_any(_old_run_any(eroded, opening_px, 0), opening_px, 1)
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _old_resize(image: np.ndarray, scale: float) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape[-2:]
    out_r, out_c = max(1, int(np.rint(rows * scale))), max(1, int(np.rint(cols * scale)))

    def axis(n_in: int, n_out: int):
        src = (np.arange(n_out, dtype=np.float64) + 0.5) / scale - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    r0, r1, wr = axis(rows, out_r)
    c0, c1, wc = axis(cols, out_c)
    top = image[..., r0, :] * (1 - wr)[:, None] + image[..., r1, :] * wr[:, None]
    return top[..., c0] * (1 - wc) + top[..., c1] * wc


def _old_warp(image: np.ndarray, matrix: np.ndarray, size, fill: float) -> np.ndarray:
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    inv = np.linalg.inv(m)
    rows, cols = size
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float64)
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    in_r, in_c = image.shape[-2:]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    wx, wy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    out = np.zeros(image.shape[:-2] + (rows, cols), dtype=np.float32)
    for dy, fy in ((0, 1 - wy), (1, wy)):
        for dx, fx in ((0, 1 - wx), (1, wx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < in_r) & (xx >= 0) & (xx < in_c)
            vals = image[..., np.clip(yy, 0, in_r - 1), np.clip(xx, 0, in_c - 1)]
            out += np.where(ok, vals, np.float32(fill)) * (fx * fy)
    return out


def _old_window(hu: np.ndarray, window_hu, offset: float) -> np.ndarray:
    low, high = window_hu
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    np.clip(out, 0, 1, out=out)
    out *= np.float32(255.0)
    if offset:
        out -= np.float32(offset)
    return out


def baseline_prepare(root: Path, lesion: Lesion, params: Preprocessing, rng) -> np.ndarray:
    """BASELINE (frozen): the old prepare_key_slice for one lesion; returns the image."""
    folder, centre = lesion.series_folder, lesion.key_slice_index
    interval_mm, short_mm = lesion.slice_interval_mm, lesion.short_diameter_mm
    aug = params.augmentation if rng is not None else Augmentation()

    def exists(n: int) -> bool:
        return slice_path(root, folder, n).is_file()

    if aug.centre_shift and short_mm and interval_mm > 0 and math.isfinite(interval_mm):
        reach = int(math.floor(short_mm / 2.0 / interval_mm))
        if reach > 0:
            delta = int(rng.integers(-reach, reach + 1))
            if delta and exists(centre + delta):
                centre += delta
    blends = plan_context(
        centre,
        interval_mm,
        context_offsets_mm(params.n_slices, params.step_mm),
        exists,
        weights=params.interpolation,
    )
    cache: dict[int, np.ndarray] = {}

    def raw(n: int) -> np.ndarray:
        if n not in cache:
            cache[n] = np.asarray(read_png_raw(slice_path(root, folder, n)))
        return cache[n]

    key_raw = raw(centre)
    rows, cols = key_raw.shape
    hu = np.empty((len(blends), rows, cols), dtype=np.float32)
    for i, blend in enumerate(blends):
        acc = np.zeros((rows, cols), dtype=np.float32)
        for number, weight in blend:
            acc += raw(number).astype(np.float32) * np.float32(weight)
        hu[i] = acc - np.float32(HU_OFFSET)
    image = _old_window(hu, params.window_hu, params.offset)
    x0, y0, x1, y1 = 0, 0, cols - 1, rows - 1
    if params.body_crop:
        found = _old_body_bbox(key_raw, params.body_threshold_png, params.opening_px)
        if found is not None:
            x0, y0, x1, y1 = found
    if aug.crop_jitter_px is not None:
        lo, hi = aug.crop_jitter_px
        jx0, jy0, jx1, jy1 = (int(v) for v in rng.integers(lo, hi + 1, size=4))
        x0, x1 = sorted((min(max(x0 + jx0, 0), cols - 1), min(max(x1 + jx1, 0), cols - 1)))
        y0, y1 = sorted((min(max(y0 + jy0, 0), rows - 1), min(max(y1 + jy1, 0), rows - 1)))
    image = image[:, y0 : y1 + 1, x0 : x1 + 1]
    scale = 1.0
    if params.target_spacing_mm is not None and lesion.spacing_mm[0] > 0:
        scale = float(lesion.spacing_mm[0]) / params.target_spacing_mm
    longest = max(image.shape[1:]) * scale
    if params.max_size_px is not None and longest > params.max_size_px:
        scale *= params.max_size_px / longest
    if aug.rescale_range is not None:
        scale *= float(rng.uniform(*aug.rescale_range))
    if scale != 1.0:
        image = _old_resize(image, scale)
    out_rows, out_cols = image.shape[1:]
    fill = float(_old_window(np.array([-32768.0]), params.window_hu, params.offset)[0])
    if aug.affine_prob > 0 and float(rng.uniform()) < aug.affine_prob:
        angle = math.radians(float(rng.uniform(-aug.rotate_deg, aug.rotate_deg)))
        zoom = 1.0 + float(rng.uniform(-aug.scale_frac, aug.scale_frac))
        tx, ty = rng.uniform(-aug.shift_frac, aug.shift_frac, size=2) * (out_cols, out_rows)
        cx, cy = (out_cols - 1) / 2.0, (out_rows - 1) / 2.0
        c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
        a = np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty]])
        image = _old_warp(image, a, (out_rows, out_cols), fill)
    if aug.hflip_prob > 0 and float(rng.uniform()) < aug.hflip_prob:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image, dtype=np.float32)


# ================================================================== end of the BASELINE copy


def real_root(tmp: Path) -> Path:
    """The real block as a dataset root, with made-up rows at key slices 62..78."""
    root = tmp / "real"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / FOLDER).symlink_to(REAL_SERIES)
    rows = []
    for i, key in enumerate(range(62, 79)):
        rows.append(
            Lesion(
                i, f"{FOLDER}_{key:03d}.png", 62, 1, 1, key,
                (210, 246, 230, 246, 220, 235, 220, 257), (200, 230, 240, 262), (20, 22),
                (0.5, 0.5, 0.5), -1, False, (56, 84), (0.7, 0.7, 2.5), (512, 512),
                (-175, 275), "F", 50.0, 1,
            )
        )  # fmt: skip
    write_dl_info(rows, root / "DL_info.csv")
    return root


def build_store_or_none(root: Path, out: Path):
    """A store of ``root`` at ``out`` (the path given to ``store=``), or None with a note."""
    try:
        from deeplesion.convert.store import build_store
    except ImportError:
        print("  store: deeplesion.convert.store is not installed here; column skipped")
        return None
    build_store(root, out)
    return out


def dataset(root: Path, preset: str, train: bool, store: Path | None = None):
    kwargs = {} if store is None else {"store": store}
    return KeySliceDetectionDataset(root, None, preset=preset, train=train, **kwargs)


def time_column(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """CPU and wall seconds per sample for one pass over ``n`` samples."""
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n


def per_sample(root: Path, store: Path | None, preset: str, train: bool, repeat: int) -> dict:
    png_ds = dataset(root, preset, train)
    params, lesions = png_ds.params, [g[0] for g in png_ds.groups]

    def rng(i: int) -> np.random.Generator | None:  # the datasets' draws for seed 0, epoch 0
        return np.random.default_rng((0, 0, i)) if train else None

    columns: dict[str, Callable[[int], object]] = {
        "baseline": lambda i: baseline_prepare(root, lesions[i], params, rng(i)),
        "png": lambda i: prepare_lesion_image(PngSource(root), lesions[i], params, rng=rng(i)),
    }
    if store is not None:
        source = dataset(root, preset, train, store).source
        columns["store"] = lambda i: prepare_lesion_image(source, lesions[i], params, rng=rng(i))
    for fn in columns.values():  # warm-up: imports, file cache
        fn(0)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in columns}
    for _ in range(repeat):
        for name, fn in columns.items():
            times[name].append(time_column(fn, len(lesions)))
    return times


def loader_rate(ds, workers: int, samples: int) -> float:
    """Samples/s (wall) of a DataLoader pass over ``samples`` items, after the first batch."""
    indices = [i % len(ds) for i in range(samples)]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, indices),
        batch_size=2,
        num_workers=workers,
        collate_fn=collate_detection,
    )
    seen, start = 0, None
    for images, _ in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += len(images)
    return seen / (time.perf_counter() - start) if start and seen else float("nan")


def report(title: str, times: dict) -> None:
    base = statistics.median(c for c, _ in times["baseline"])
    print(f"\n{title}: seconds per sample ({len(times['baseline'])} repeats)")
    print(
        f"  {'column':9} {'cpu min ms':>10} {'cpu med ms':>10} {'wall min ms':>11} "
        f"{'wall med ms':>11} {'samples/core-s':>14} {'x baseline':>10}"
    )
    for name, pairs in times.items():
        cpu, wall = [c for c, _ in pairs], [w for _, w in pairs]
        med = statistics.median(cpu)
        print(
            f"  {name:9} {min(cpu) * 1e3:10.1f} {med * 1e3:10.1f} {min(wall) * 1e3:11.1f} "
            f"{statistics.median(wall) * 1e3:11.1f} {1 / med:14.1f} {base / med:10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes per column")
    parser.add_argument("--loader-samples", type=int, default=48, help="items per DataLoader")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--only", choices=["real", "sample"], help="one data set only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one core per process, as in DataLoader workers
    print(f"CPU cores: {os.cpu_count()}; torch and OpenCV threads: 1 in this process")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        roots = {}
        if args.only in (None, "real"):
            if REAL_SERIES.is_dir():
                roots["real"] = real_root(tmp)
            else:
                print(f"real block not found at {REAL_SERIES} (set DEEPLESION_REAL_DATA)")
        if args.only in (None, "sample"):
            roots["sample"] = write_sample(tmp / "sample", seed=0)
        for name, root in roots.items():
            n = len(load_lesions(root / "DL_info.csv").lesions)
            print(f"\n== {name}: {root} ({n} lesion rows)")
            store = build_store_or_none(root, tmp / f"{name}-store")
            for preset, train in (("mulan", True), ("3dce", False)):
                times = per_sample(root, store, preset, train, args.repeat)
                report(f"{name} / {preset} train={train}", times)
            print(f"\n{name} / mulan train=True: DataLoader samples/s (wall, batch 2)")
            for label, store_arg in (("png", None), ("store", store)):
                if label == "store" and store is None:
                    continue
                rates = [
                    loader_rate(dataset(root, "mulan", True, store_arg), w, args.loader_samples)
                    for w in args.workers
                ]
                cells = "  ".join(f"{w} workers: {r:6.1f}" for w, r in zip(args.workers, rates))
                print(f"  {label:6} {cells}")


if __name__ == "__main__":
    main()
