"""Benchmark: start-up and table reading, each against its baseline in the same run.

- ``deeplesion --help`` (a fresh process) against ``python -c pass``; target <= 0.25 s CPU.
- ``load_lesions`` on a 32,735-row DL_info.csv (the real val split tiled, patients
  renumbered, in a temporary folder) against pandas.read_csv plus splitting the four list
  columns the release's own loaders split; target <= 1.5x.
- ``read_predictions`` of 240,000 rows (50 boxes on each val key slice) against
  pandas.read_csv of the same file; target <= 2x.
- ``deeplesion evaluate detection`` on those predictions (a fresh process, end to end);
  target <= 1.5 s CPU.

CPU time (``time.process_time``, or the children's rusage for processes) and wall time;
min and median of the repeats, baseline and ours alternating.

    PYTHONPATH=src DEEPLESION_REAL_DATA=... python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deeplesion.data.annotations import load_lesions
from deeplesion.evaluation.froc import ground_truth, write_predictions_csv
from deeplesion.evaluation.predictions import read_predictions

VAL_CSV = "fsafe__Capstone/annotation_info/DL_info_val.csv"
ROWS = 32735
BOXES_PER_IMAGE = 50
LIST_COLUMNS = (
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
)


def tiled_dl_info(val_csv: Path, out: Path) -> Path:
    """ROWS rows: the val split repeated, each copy's patients renumbered (+10000 * k)."""
    with open(val_csv, newline="") as fh:
        reader = csv.reader(fh)
        header, rows = next(reader), list(reader)
    out_rows = []
    copy = 0
    while len(out_rows) < ROWS:
        for row in rows[: ROWS - len(out_rows)]:
            patient = int(row[1]) + 10000 * copy
            out_rows.append([f"{patient:06d}{row[0][6:]}", str(patient), *row[2:]])
        copy += 1
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(out_rows)
    return out


def predictions(val_csv: Path, out: Path):
    gt = ground_truth(load_lesions(val_csv), "val")
    rng = np.random.default_rng(0)
    names = np.repeat(np.array(gt.file_names), BOXES_PER_IMAGE)
    low = rng.uniform(1, 400, (len(names), 2))
    boxes = np.hstack([low, low + rng.uniform(5, 60, (len(names), 2))])
    write_predictions_csv(out, list(names), boxes, rng.random(len(names)))
    return gt, len(names)


def in_process(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def in_child(argv: list[str]):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, time.perf_counter() - w0


def side_by_side(name: str, baseline, ours, repeats: int, target: str) -> None:
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "ours": []}
    for _ in range(repeats):
        runs["baseline"].append(baseline())
        runs["ours"].append(ours())
    stats = {}
    for key, values in runs.items():
        cpu = [v[0] for v in values]
        wall = [v[1] for v in values]
        stats[key] = (min(cpu), statistics.median(cpu), min(wall), statistics.median(wall))
    b, o = stats["baseline"], stats["ours"]
    print(f"{name}  [{target}]")
    for key, (cmin, cmed, wmin, wmed) in stats.items():
        print(
            f"  {key:9s} CPU min {cmin:.3f} s  median {cmed:.3f} s   "
            f"wall min {wmin:.3f} s  median {wmed:.3f} s"
        )
    print(f"  ratio ours/baseline: CPU min {o[0] / b[0]:.2f}x  median {o[1] / b[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    real = os.environ.get("DEEPLESION_REAL_DATA")
    if not real:
        sys.exit("set DEEPLESION_REAL_DATA to the folder holding " + VAL_CSV)
    val_csv = Path(real) / VAL_CSV
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        big = tiled_dl_info(val_csv, Path(tmp) / "DL_info.csv")
        preds = Path(tmp) / "predictions.csv"
        gt, n_boxes = predictions(val_csv, preds)
        print(f"{ROWS} DL_info rows; {n_boxes} prediction rows on {gt.n_images} val key slices")

        side_by_side(
            "deeplesion --help (process)",
            lambda: in_child([python, "-c", "pass"]),
            lambda: in_child([python, "-m", "deeplesion", "--help"]),
            args.repeats,
            "ours <= 0.25 s CPU",
        )

        def pandas_lists():
            frame = pd.read_csv(big)
            for column in LIST_COLUMNS:
                frame[column].str.split(",", expand=True).astype(float)

        side_by_side(
            f"load_lesions, {ROWS} rows",
            lambda: in_process(pandas_lists),
            lambda: in_process(lambda: load_lesions(big)),
            args.repeats,
            "<= 1.5x pandas.read_csv + four list columns split",
        )
        side_by_side(
            f"read_predictions, {n_boxes} rows",
            lambda: in_process(lambda: pd.read_csv(preds)),
            lambda: in_process(lambda: read_predictions(preds, gt)),
            args.repeats,
            "<= 2x pandas.read_csv",
        )
        side_by_side(
            "deeplesion evaluate detection, val split (process)",
            lambda: in_child([python, "-c", "pass"]),
            lambda: in_child(
                [python, "-m", "deeplesion", "evaluate", "detection", str(preds)]
                + ["--annotations", str(val_csv), "--split", "val"]
            ),
            args.repeats,
            "ours <= 1.5 s CPU",
        )


if __name__ == "__main__":
    main()
