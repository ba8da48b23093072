"""Preprocessing throughput: ``prepare_key_slice`` (3dce, 9 slices) against a plain
per-row ``np.interp`` implementation of the same rules (as a reader would write it).

Usage: ``PYTHONPATH=src python benchmarks/training.py [ROOT]`` (default: a fresh sample).
Prints seconds per key slice for both and the ratio.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deeplesion.data.annotations import load_lesions
from deeplesion.data.slices import read_png_raw
from deeplesion.training.pipeline import prepare_lesion_image
from deeplesion.training.presets import preset


def plain(root: Path, lesion, params) -> np.ndarray:
    """Straightforward version: per-slice reads, scipy-free opening, per-row interpolation."""
    from numpy.lib.stride_tricks import sliding_window_view as win

    from deeplesion.data.context import context_offsets_mm, plan_context
    from deeplesion.data.paths import slice_path

    folder, key = lesion.series_folder, lesion.key_slice_index
    plan = plan_context(
        key,
        lesion.slice_interval_mm,
        context_offsets_mm(params.n_slices),
        lambda n: slice_path(root, folder, n).is_file(),
        weights="3dce",
    )
    chans = [
        sum(w * read_png_raw(slice_path(root, folder, n)).astype(np.float64) for n, w in blend)
        - 32768
        for blend in plan
    ]
    lo, hi = params.window_hu
    img = np.clip((np.stack(chans) - lo) / (hi - lo), 0, 1) * 255 - params.offset
    raw = read_png_raw(slice_path(root, folder, key))
    mask = np.pad(raw > 32000, 3)
    mask = np.pad(win(mask, (7, 7)).all(axis=(-1, -2)), 3)
    mask = win(mask, (7, 7)).any(axis=(-1, -2))
    ys, xs = np.nonzero(mask)
    img = img[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    s = lesion.spacing_mm[0] / 0.8
    s = min(s, 512 / max(img.shape[1:]))
    rows, cols = img.shape[1:]
    sc = (np.arange(round(cols * s)) + 0.5) / s - 0.5
    sr = (np.arange(round(rows * s)) + 0.5) / s - 0.5
    out = []
    for c in img:
        tmp = np.stack([np.interp(sc, np.arange(cols), r) for r in c])
        out.append(np.stack([np.interp(sr, np.arange(rows), k) for k in tmp.T]).T)
    return np.stack(out)


def main() -> None:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    else:
        from deeplesion.data.sample import write_sample

        root = write_sample(Path(tempfile.mkdtemp()) / "sample", seed=0)
    lesions = load_lesions(root / "DL_info.csv").lesions[:8]
    params = preset("3dce")
    t = time.perf_counter()
    for l in lesions:
        prepare_lesion_image(root, l, params)
    ours = (time.perf_counter() - t) / len(lesions)
    t = time.perf_counter()
    for l in lesions:
        plain(root, l, params)
    base = (time.perf_counter() - t) / len(lesions)
    print(
        f"prepare_key_slice: {ours * 1000:.1f} ms/key slice; plain numpy: "
        f"{base * 1000:.1f} ms/key slice; speed-up x{base / ours:.1f}"
    )


if __name__ == "__main__":
    main()
