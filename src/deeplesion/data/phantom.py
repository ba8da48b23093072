"""A CT-like body phantom for the synthetic sample: one axial slice in HU at a given body
height (air, body outline, subcutaneous fat, muscle, lungs, heart, liver, spleen, kidneys,
bowel, aorta, spine, pelvis, noise). Sizes and centres are in mm from the image centre.
"""

from __future__ import annotations

import numpy as np


def _ellipse(
    X: np.ndarray, Y: np.ndarray, cx: float, cy: float, ax: float, ay: float
) -> np.ndarray:
    return ((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2 <= 1.0


def body_phantom(
    size: int, spacing_mm: float, z_norm: float, rng: np.random.Generator
) -> np.ndarray:
    """One axial slice of a CT-like body phantom, float32 HU, at body height ``z_norm``."""
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing_mm
    X, Y = np.meshgrid(coords, coords)  # mm from the image centre
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    ax, ay = 160.0, 115.0
    if z_norm > 0.72:  # pelvis: wider, flatter
        ax, ay = 170.0, 110.0
    hu[_ellipse(X, Y, 0, 0, ax, ay)] = -100.0  # subcutaneous fat
    hu[_ellipse(X, Y, 0, 0, ax - 14, ay - 14)] = 45.0  # muscle wall
    inner = _ellipse(X, Y, 0, 0, ax - 24, ay - 24)
    hu[inner] = -85.0  # visceral fat
    if 0.25 <= z_norm < 0.44:  # chest
        for side in (-1, 1):
            hu[_ellipse(X, Y, side * 62, 0, 48, 72) & inner] = -860.0
        if z_norm > 0.33:
            hu[_ellipse(X, Y, 15, -28, 45, 38)] = 40.0  # heart
    elif 0.44 <= z_norm < 0.72:  # abdomen
        for bx, by in ((20, -40), (-10, 10), (40, 20), (5, -65)):
            hu[_ellipse(X, Y, bx, by, 22, 16)] = 30.0  # bowel loops
        if z_norm < 0.58:
            hu[_ellipse(X, Y, -55, -5, 75, 62) & inner] = 60.0  # liver
            hu[_ellipse(X, Y, 85, 25, 30, 42) & inner] = 50.0  # spleen
        if 0.46 <= z_norm < 0.66:
            for side in (-1, 1):
                hu[_ellipse(X, Y, side * 62, 48, 24, 34)] = 150.0  # kidneys
    else:  # pelvis
        for side in (-1, 1):
            hu[_ellipse(X, Y, side * 90, 35, 22, 45)] = 650.0  # iliac bones
        hu[_ellipse(X, Y, 0, -25, 42, 35)] = 12.0  # bladder
    if z_norm < 0.72:
        hu[_ellipse(X, Y, 10, 45, 11, 11)] = 170.0  # aorta
    hu[_ellipse(X, Y, 0, 72, 19, 17)] = 900.0  # vertebral cortex
    hu[_ellipse(X, Y, 0, 72, 16, 14)] = 280.0  # cancellous bone
    hu[_ellipse(X, Y, 0, 98, 7, 7)] = 20.0  # spinal canal
    hu += rng.normal(0.0, 7.0, size=hu.shape).astype(np.float32)
    return hu
