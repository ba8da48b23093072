"""FROC plots (matplotlib, Agg backend), with the published methods drawn for comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from deeplesion.data.io import save_figure
from deeplesion.evaluation.sweep import FrocCurve, read_curve

#: Published sensitivities (%) on the official key-slice test set at 0.5, 1, 2, 4, 8, 16
#: FPs per image (docs/evaluation-protocol.md); None where not reported.
PUBLISHED_FROC: dict[str, tuple[float | None, ...]] = {
    "Faster R-CNN, 3 slices": (56.90, 67.26, 75.57, 81.62, 85.83, 88.74),
    "3DCE, 27 slices": (62.48, 73.37, 80.70, 85.65, 89.09, 91.06),
    "MVP-Net, 9 slices": (73.83, 81.82, 87.60, 91.30, None, None),
    "MULAN": (76.12, 83.69, 88.76, 92.30, 94.71, 95.64),
    "A3D": (79.24, None, None, None, None, None),
    "SATr": (81.03, None, None, None, None, None),
}
PUBLISHED_FP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def plot_froc(
    curves: Mapping[str, FrocCurve],
    path: str | Path,
    *,
    fp_rates: Sequence[float] = PUBLISHED_FP_RATES,
    extrapolate: bool = False,
    published: bool = True,
    title: str = "FROC, key-slice lesion detection",
) -> Path:
    """Write the FROC curve(s) to ``path`` (format from the suffix), atomically."""
    fig = froc_figure(
        curves, fp_rates=fp_rates, extrapolate=extrapolate, published=published, title=title
    )
    return save_figure(fig, path, bbox_inches="tight")


def froc_figure(
    curves: Mapping[str, FrocCurve],
    *,
    fp_rates: Sequence[float] = PUBLISHED_FP_RATES,
    extrapolate: bool = False,
    published: bool = True,
    title: str = "FROC, key-slice lesion detection",
):
    """The FROC plot as a matplotlib Figure (no pyplot state); the legend sits outside the
    axes, right of them, so it never covers a curve."""
    from matplotlib.figure import Figure

    lo, hi = min(fp_rates) / 2, max(fp_rates) * 2
    fig = Figure(figsize=(7, 5), dpi=110)
    ax = fig.add_subplot()
    if published:
        for name, values in PUBLISHED_FROC.items():
            pts = [(r, v / 100) for r, v in zip(PUBLISHED_FP_RATES, values) if v is not None]
            xs, ys = zip(*pts)
            ax.plot(
                xs,
                ys,
                linestyle="--",
                marker="o",
                markersize=3,
                linewidth=0.8,
                alpha=0.6,
                label=f"{name} (published, test split)",
            )
    for label, curve in curves.items():
        # each curve ends at its last operating point (or, extrapolated, at the axis end)
        last = hi if extrapolate or not len(curve.fp_per_image) else curve.fp_per_image[-1]
        grid = np.geomspace(lo, hi, 200)
        grid = np.append(grid[grid < last], last) if last < hi else grid
        ax.plot(grid, read_curve(curve, grid, extrapolate=extrapolate), linewidth=2, label=label)
        rates = [r for r in fp_rates if r <= last]
        ax.plot(rates, read_curve(curve, rates, extrapolate=extrapolate), "ks", markersize=4)
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1)
    ax.set_xticks(list(fp_rates))
    ax.set_xticklabels([f"{r:g}" for r in fp_rates])
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity (per lesion)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False
    )
    return fig
