"""3-D context around a key slice, sampled at a fixed step in mm.

Rules (the published 3DCE / MULAN preprocessing):
- the neighbour at ``k * step_mm`` lies at slice offset ``k * step_mm / interval_mm``;
- a fractional offset is linearly interpolated between the two nearest slices;
- an unknown interval (NaN or <= 0) repeats the key slice;
- a slice that does not exist (edge of the provided range) is replaced by the nearest one
  that exists, stepping back toward the key slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deeplesion.data.paths import slice_path
from deeplesion.data.slices import read_hu
from deeplesion.errors import InvalidArgumentError

#: One output slice: (slice number, weight) pairs whose weighted sum is the slice.
Blend = tuple[tuple[int, float], ...]


def context_offsets_mm(n_slices: int, step_mm: float = 2.0) -> list[float]:
    """Symmetric offsets around the key slice, in mm.

    Example:

        >>> context_offsets_mm(3)
        [-2.0, 0.0, 2.0]
        >>> context_offsets_mm(5, step_mm=1.5)
        [-3.0, -1.5, 0.0, 1.5, 3.0]
    """
    if n_slices < 1 or n_slices % 2 == 0:
        raise InvalidArgumentError(f"n_slices must be odd and positive, got {n_slices}")
    half = n_slices // 2
    return [k * step_mm for k in range(-half, half + 1)]


def _nearest_existing(key_slice: int, delta: int, exists: Callable[[int], bool]) -> int:
    while delta != 0 and not exists(key_slice + delta):
        delta -= 1 if delta > 0 else -1
    return key_slice + delta


def plan_context(
    key_slice: int,
    interval_mm: float,
    offsets_mm: list[float],
    exists: Callable[[int], bool],
    *,
    weights: str = "linear",
) -> list[Blend]:
    """Which slices (and weights) make each context slice.

    ``weights='linear'`` interpolates each fractional offset exactly. ``weights='3dce'``
    reproduces the 3DCE code, which reuses the first neighbour's fractional weights for
    every further neighbour (identical whenever ``step_mm / interval_mm`` is an integer).
    """
    if weights not in ("linear", "3dce"):
        raise InvalidArgumentError(f"weights must be 'linear' or '3dce', got {weights!r}")
    if not (interval_mm > 0) or math.isnan(interval_mm):
        return [((key_slice, 1.0),) for _ in offsets_mm]
    unit = min((abs(o) for o in offsets_mm if o != 0), default=0.0) / interval_mm
    plan: list[Blend] = []
    for offset in offsets_mm:
        pos = offset / interval_mm
        lo, hi = math.floor(pos), math.ceil(pos)
        if lo == hi:
            plan.append(((_nearest_existing(key_slice, lo, exists), 1.0),))
            continue
        if weights == "linear":
            w_hi = pos - lo
        else:  # 3DCE: the weight of the slice farther from the key is frac(unit)
            frac = unit - math.floor(unit)
            w_hi = frac if pos > 0 else 1.0 - frac
        plan.append(
            (
                (_nearest_existing(key_slice, lo, exists), 1.0 - w_hi),
                (_nearest_existing(key_slice, hi, exists), w_hi),
            )
        )
    return plan


def load_context(
    root: str | Path,
    folder: str,
    key_slice: int,
    interval_mm: float,
    *,
    n_slices: int = 3,
    step_mm: float = 2.0,
    weights: str = "linear",
    reader: Callable[[Path], np.ndarray] = read_hu,
) -> np.ndarray:
    """Context slices around a key slice as float32 HU, shape ``(n_slices, rows, cols)``.

    The key slice itself must exist; neighbours that do not are replaced as the module
    docstring says.
    """

    def path(n: int) -> Path:
        return slice_path(root, folder, n)

    plan = plan_context(
        key_slice,
        interval_mm,
        context_offsets_mm(n_slices, step_mm),
        lambda n: path(n).is_file(),
        weights=weights,
    )
    cache: dict[int, np.ndarray] = {}
    blended: list[np.ndarray] = []
    for blend in plan:
        acc: np.ndarray = np.zeros((), dtype=np.float32)
        for number, weight in blend:
            if number not in cache:
                cache[number] = reader(path(number)).astype(np.float32)
            acc = acc + cache[number] * np.float32(weight)
        blended.append(acc)
    return np.stack(blended)
