"""The tables and the heat map of a relations result (:mod:`deeplesion.analysis.relations`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from deeplesion.analysis.relations import (
    CORRECTIONS,
    GROUP_NOUNS,
    PAIR_COLUMNS,
    SUBSET_NOTE,
    Relations,
)
from deeplesion.data.io import atomic_path, save_figure


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if value == math.inf else f"{value:.6g}"
    return str(value)


def write_relations(result: Relations, out_dir: str | Path, *, top: int = 30) -> list[Path]:
    """``pairs.csv``, ``labels.csv``, ``followup.csv`` and ``heatmap.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    tables = {
        "pairs.csv": (PAIR_COLUMNS, [asdict(p) for p in result.pairs]),
        "labels.csv": (
            ("label", "n_lesions", "n_groups", "n_groups_repeated"),
            [asdict(c) for c in result.labels],
        ),
        "followup.csv": (
            ("label", "n_with_next", "n_again", "rate"),
            [asdict(f) for f in result.followup],
        ),
    }
    for name, (columns, rows) in tables.items():
        path = out_dir / name
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_fmt(row[c]) for c in columns])
        written.append(path)
    written.append(save_figure(heatmap_figure(result, top=top), out_dir / "heatmap.png", dpi=120))
    return written


def lift_matrix(
    result: Relations, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lift, n_both, p_adjusted)`` as square matrices over ``names`` (diagonal NaN)."""
    index = {x: i for i, x in enumerate(names)}
    k = len(names)
    lift, both, padj = (np.full((k, k), np.nan) for _ in range(3))
    for p in result.pairs:
        if p.label_a in index and p.label_b in index:
            i, j = index[p.label_a], index[p.label_b]
            for u, v in ((i, j), (j, i)):
                lift[u, v], both[u, v], padj[u, v] = p.lift, p.n_both, p.p_adjusted
    return lift, both, padj


def heatmap_figure(result: Relations, *, top: int = 30, alpha: float = 0.05):
    """log2(lift) of each pair of the ``top`` most frequent labels (colours clipped at
    ±2, i.e. 4x or 1/4): red above independence, blue below; each cell shows the groups
    with both and the lift, ``*`` when the adjusted p-value is below ``alpha``."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    ranked = sorted(result.labels, key=lambda c: -c.n_groups)[:top]
    keep = {c.label for c in ranked}
    names = [c.label for c in result.labels if c.label in keep]
    lift, both, padj = lift_matrix(result, names)
    k = len(names)
    noun = GROUP_NOUNS[result.within]
    with np.errstate(divide="ignore"):
        shown = np.log2(lift)
    shown = np.clip(shown, -2, 2)
    size = max(5.0, 0.45 * k + 2.5)
    fig = Figure(figsize=(size + 1.2, size), dpi=110)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(shown)
    cmap = _cmap()
    image = ax.imshow(masked, cmap=cmap, norm=TwoSlopeNorm(0.0, -2.0, 2.0))
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8 if k > 12 else 10)
    ax.set_yticks(range(k), names, fontsize=8 if k > 12 else 10)
    written = k <= 15  # counts and lifts fit in the cells
    for i in range(k):
        for j in range(k):
            if i == j or np.isnan(both[i, j]):
                continue
            star = "*" if padj[i, j] < alpha else ""
            if written:
                ax.text(
                    j,
                    i,
                    f"{int(both[i, j])}\n×{lift[i, j]:.2f}{star}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black",
                )
            elif star:
                ax.plot(j, i, marker="o", markersize=2.5, color="black")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("log2 lift (observed / expected groups)")
    legend = (
        f"cell: {noun} with both, lift; * {CORRECTIONS[result.correction]}-adjusted p < {alpha:g}"
        if written
        else f"dot: {CORRECTIONS[result.correction]}-adjusted p < {alpha:g} "
        f"(counts in pairs.csv); the {k} most frequent {result.by}s"
    )
    ax.set_title(
        f"Co-occurrence of lesion {result.by}s within one {result.within} "
        f"({result.n_groups} {noun}, {result.n_lesions} annotated lesions)\n"
        f"{legend}; grey: same label",
        fontsize=9,
    )
    ax.set_facecolor("#d9d9d9")
    import textwrap

    note = textwrap.fill(SUBSET_NOTE, width=int(size * 15))
    fig.text(0.01, 0.005, note, fontsize=7, style="italic", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _cmap():
    from matplotlib import colormaps

    return colormaps["RdBu_r"]
