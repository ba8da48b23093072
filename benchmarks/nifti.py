"""Benchmark: PNG slices -> .nii.gz, the project's export vs a plain per-slice loop.

The plain loop works the way the official DL_save_nifti script does: read each PNG,
subtract 32768 through int32, stack to (rows, cols, slices), hand the array to nibabel
(float64 for runs of 300+ slices, as that script does) and let nibabel write the .nii.gz
(gzip level 1, nibabel's default). Both convert the same runs of the same slices.

    PYTHONPATH=src python benchmarks/nifti.py                # 29 real slices x 4 copies
    PYTHONPATH=src python benchmarks/nifti.py --copies 8 --workers 1 2
    PYTHONPATH=src python benchmarks/nifti.py --root SOME_DATASET_ROOT

Prints seconds (best of --repeat), slices/s and the ratio to the plain loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from deeplesion.convert.nifti import export_nifti, resolve_compression
from deeplesion.data.volumes import index_volumes

REAL = Path(
    os.environ.get(
        "DEEPLESION_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/deeplesion-real"
    )
)
REAL_SERIES = REAL / "aholovenko__sa-21-deep-lesion" / "data" / "000062_01_01"
SPACING = (0.7, 0.7, 5.0)  # that series has no DL_info row here; any spacing will do


def plain_loop(root: Path, out: Path, runs) -> None:
    """The official script's way, slice by slice."""
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        images = []
        for n in run.slice_numbers:
            png = np.array(Image.open(root / "Images_png" / run.folder / f"{n:03d}.png"))
            images.append((png.astype(np.int32) - 32768).astype(np.int16))
        if len(images) < 300:
            volume = np.stack(images, axis=-1)
        else:
            volume = np.empty(images[0].shape + (len(images),))  # float64, as upstream
            for k, image in enumerate(images):
                volume[:, :, k] = image
        sx, sy, sz = run.spacing_mm
        affine = np.array([[0, -sy, 0, 0], [-sx, 0, 0, 0], [0, 0, -sz, 0], [0, 0, 0, 1]])
        nib.save(nib.Nifti1Image(volume, affine), out / f"{run.name}.nii.gz")


def build_root(tmp: Path, copies: int) -> Path:
    """A dataset root of ``copies`` series folders, each symlinking the 29 real slices."""
    root = tmp / "root"
    for c in range(copies):
        folder = root / "Images_png" / f"{900000 + c:06d}_01_01"
        folder.mkdir(parents=True)
        for png in sorted(REAL_SERIES.glob("*.png")):
            (folder / png.name).symlink_to(png)
    return root


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="dataset root (default: real slices)")
    parser.add_argument("--copies", type=int, default=4, help="copies of the real series")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--layout", default="project", choices=["project", "official"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.root is not None:
            root, spacing = args.root, None
        elif REAL_SERIES.is_dir():
            root, spacing = build_root(tmp, args.copies), SPACING
        else:
            from deeplesion.data.sample import write_sample

            root, spacing = write_sample(tmp / "sample"), None
        index = index_volumes(root, default_spacing_mm=spacing)
        index.volumes = [v for v in index.volumes if v.spacing_mm is not None]
        runs = index.volumes
        n_slices = sum(v.n_slices for v in runs)
        print(
            f"data: {root} ({len(runs)} runs, {n_slices} slices); "
            f"cores available: {len(os.sched_getaffinity(0))}"
        )

        def fresh(name: str) -> Path:
            path = tmp / name
            shutil.rmtree(path, ignore_errors=True)
            return path

        def ours(backend: str, workers: int):
            def run() -> None:
                export_nifti(
                    root,
                    fresh("ours"),
                    index=index,
                    layout=args.layout,
                    workers=workers,
                    compression=backend,
                )

            return run

        plain_loop(root, fresh("warm"), runs)  # warm the page cache
        rows = [
            (
                "plain loop (official way, nibabel gzip 1)",
                best_of(args.repeat, lambda: plain_loop(root, fresh("plain"), runs)),
                tmp / "plain",
            )
        ]
        backends = ["zlib"]
        if resolve_compression("auto").backend == "isal":
            backends.append("isal")
        for backend in backends:
            codec = resolve_compression(backend)
            for workers in args.workers:
                seconds = best_of(args.repeat, ours(backend, workers))
                rows.append(
                    (
                        f"deeplesion nifti ({codec.backend} {codec.level}, "
                        f"{workers} worker{'s' if workers > 1 else ''})",
                        seconds,
                        tmp / "ours",
                    )
                )
        base = rows[0][1]
        print(f"{'method':<48} {'seconds':>8} {'slices/s':>9} {'ratio':>6}")
        for name, seconds, _ in rows:
            print(f"{name:<48} {seconds:8.3f} {n_slices / seconds:9.1f} {base / seconds:5.2f}x")
        plain_mb = sum(p.stat().st_size for p in (tmp / "plain").glob("*.nii.gz")) / 1e6
        print(
            f"plain loop output: {plain_mb:.1f} MB (last project run: "
            f"{sum(p.stat().st_size for p in (tmp / 'ours').glob('*.nii.gz')) / 1e6:.1f} MB)"
        )


if __name__ == "__main__":
    main()
