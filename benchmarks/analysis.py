"""Retrieval index vs a plain Python scan, on 32,735 lesions (the val split tiled).

Run: DEEPLESION_REAL_DATA=... PYTHONPATH=src python benchmarks/analysis.py [DL_info_val.csv]
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from deeplesion.analysis.retrieval import LesionIndex
from deeplesion.data.annotations import OFFICIAL_ROWS, load_lesions

REAL = Path(
    os.environ.get(
        "DEEPLESION_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/deeplesion-real"
    )
)
DEFAULT = REAL / "fsafe__Capstone" / "annotation_info" / "DL_info_val.csv"


def main() -> None:
    src = load_lesions(sys.argv[1] if len(sys.argv) > 1 else DEFAULT).lesions
    lesions = [
        replace(
            src[i % len(src)],
            row_index=i,
            patient_index=src[i % len(src)].patient_index + 10000 * (i // len(src)),
        )
        for i in range(OFFICIAL_ROWS)
    ]
    t = time.perf_counter()
    index = LesionIndex.build(lesions)
    build = time.perf_counter() - t
    queries = list(range(0, OFFICIAL_ROWS, OFFICIAL_ROWS // 100))[:100]
    t = time.perf_counter()
    found = index.search(queries, 10)
    fast = time.perf_counter() - t
    vectors = index.vectors.tolist()
    patients = [l.patient_index for l in lesions]
    t = time.perf_counter()
    slow_found = []
    for q in queries:
        scored = [
            (-sum(a * b for a, b in zip(vectors[q], v)), j)
            for j, v in enumerate(vectors)
            if j != q and patients[j] != patients[q]
        ]
        slow_found.append([j for _, j in sorted(scored)[:10]])
    slow = time.perf_counter() - t
    sims = index.vectors[queries[0]] @ index.vectors.T
    assert math.isclose(float(sims[found[0]].sum()), float(sims[slow_found[0]].sum()), rel_tol=1e-5)
    print(f"{OFFICIAL_ROWS} lesions, {index.vectors.shape[1]} features; build {build:.2f} s")
    print(
        f"100 queries, k=10: index {fast * 1000:.1f} ms, python scan {slow * 1000:.0f} ms, "
        f"ratio {slow / fast:.0f}x"
    )


if __name__ == "__main__":
    main()
