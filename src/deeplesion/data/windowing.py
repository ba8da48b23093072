"""Intensity windowing of HU images.

The official Key_slices formula: ``I = min(255, max(0, (HU - A) / (B - A) * 255))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplesion.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class Window:
    """An HU interval [low_hu, high_hu] mapped to 0..255 (or 0..1)."""

    low_hu: float
    high_hu: float

    def __post_init__(self) -> None:
        if not self.high_hu > self.low_hu:
            raise InvalidArgumentError(
                f"window max ({self.high_hu}) must exceed min ({self.low_hu})"
            )

    @classmethod
    def from_width_level(cls, width: float, level: float) -> Window:
        return cls(level - width / 2, level + width / 2)


#: Named presets: the common radiology windows (from width/level), the NIH detectors'
#: full range (-1024..3071 HU) and the A3D / AlignShift range (-1024..2050 HU).
WINDOW_PRESETS: dict[str, Window] = {
    "lung": Window.from_width_level(1500, -600),
    "mediastinum": Window.from_width_level(350, 50),
    "soft-tissue": Window.from_width_level(400, 50),
    "liver": Window.from_width_level(150, 30),
    "bone": Window.from_width_level(1800, 400),
    "full": Window(-1024, 3071),
    "a3d": Window(-1024, 2050),
}


def parse_window(spec: str, dicom_window_hu: tuple[float, float] | None = None) -> Window:
    """``'lung'``, ``'soft tissue'``, ``'dicom'`` (needs the row's window) or ``'MIN,MAX'``."""
    key = spec.strip().lower().replace(" ", "-").replace("_", "-")
    if key == "dicom":
        if dicom_window_hu is None:
            raise InvalidArgumentError("window 'dicom' needs the row's DICOM_windows")
        return Window(*dicom_window_hu)
    if key in WINDOW_PRESETS:
        return WINDOW_PRESETS[key]
    parts = spec.split(",")
    if len(parts) == 2:
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            return Window(low, high)  # raises when MIN >= MAX
    raise InvalidArgumentError(
        f"unknown window {spec!r}; use 'dicom', one of {sorted(WINDOW_PRESETS)}, or 'MIN,MAX' in HU"
    )


def apply_window(hu: np.ndarray, window: Window, *, dtype: str = "uint8") -> np.ndarray:
    """Map HU through ``window``.

    ``dtype='uint8'``: the Key_slices formula, truncated to 0..255 (as the release images).
    ``dtype='float32'``: the same ramp as float in 0..255 without quantising.
    ``dtype='unit'``: float32 in 0..1.

    Example:

        >>> import numpy as np
        >>> window = Window(-160, 240)  # (HU + 160) / 400 * 255, clipped and truncated
        >>> apply_window(np.array([[-1024, 0, 40, 3071]]), window).tolist()
        [[0, 102, 127, 255]]
    """
    scaled = (
        (np.asarray(hu, dtype=np.float64) - window.low_hu)
        / (window.high_hu - window.low_hu)
        * 255.0
    )
    np.clip(scaled, 0, 255, out=scaled)
    if dtype == "uint8":
        return scaled.astype(np.uint8)
    if dtype == "float32":
        return scaled.astype(np.float32)
    if dtype == "unit":
        return (scaled / 255.0).astype(np.float32)
    raise InvalidArgumentError(f"unknown dtype {dtype!r}; allowed: 'uint8', 'float32', 'unit'")
