"""The coordinate-conventions figure of the data-model page: ``python conventions.py OUT``.

A lesion of the synthetic sample with its DL_info box and RECIST end points, on axes that
show both conventions: 1-based DL_info pixels (x = column, y = row) and 0-based array
indices ``[row, col]``.
"""

import sys
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from deeplesion.data.annotations import load_lesions, px1_to_index
from deeplesion.data.sample import write_sample
from deeplesion.data.slices import read_hu
from deeplesion.data.windowing import Window, apply_window

out = Path(sys.argv[1] if len(sys.argv) > 1 else "conventions")
out.mkdir(parents=True, exist_ok=True)
root = write_sample(out / "sample", seed=0)
lungs = [l for l in load_lesions(root / "DL_info.csv").lesions if l.type_name == "lung"]
lesion = min(lungs, key=lambda l: l.diameters_px[0])
hu = read_hu(root / lesion.png_relpath)
image = apply_window(hu, Window(*lesion.dicom_window_hu))

x1, y1, x2, y2 = lesion.box_px1
pad = 6
col0, row0 = int(x1) - 1 - pad, int(y1) - 1 - pad  # 0-based window corner
col1, row1 = int(x2) - 1 + pad, int(y2) - 1 + pad
fig = Figure(figsize=(7.5, 6.2), dpi=110)
ax = fig.add_subplot()
# Each array element [r, c] is drawn as the unit square centred on (c, r): index space.
ax.imshow(
    image[row0 : row1 + 1, col0 : col1 + 1],
    cmap="gray",
    extent=(col0 - 0.5, col1 + 0.5, row1 + 0.5, row0 - 0.5),
    interpolation="nearest",
)
bx = px1_to_index((x1, y1))
ex = px1_to_index((x2, y2))
ax.add_patch(
    Rectangle(
        (bx[0] - 0.5, bx[1] - 0.5),
        ex[0] - bx[0] + 1,
        ex[1] - bx[1] + 1,
        fill=False,
        edgecolor="gold",
        linewidth=1.5,
        label="Bounding_boxes (inclusive pixels)",
    )
)
r = lesion.recist_px1
points = [px1_to_index(r[i : i + 2]) for i in range(0, 8, 2)]
axes = ((points[:2], "red", "long axis"), (points[2:], "deepskyblue", "short axis"))
for (a, b), colour, name in axes:
    ax.plot([a[0], b[0]], [a[1], b[1]], color=colour, linewidth=1.5, label=name)
first = r[:2]
ax.annotate(
    f"DL_info (x, y) = ({first[0]:g}, {first[1]:g})\narray [row, col] = "
    f"[{first[1] - 1:g}, {first[0] - 1:g}]",
    xy=tuple(points[0]),
    xytext=(12, -28),
    textcoords="offset points",
    color="black",
    fontsize=8,
    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
    arrowprops={"arrowstyle": "->", "color": "black"},
)
ax.set_xlabel("column index c (0-based)  =  DL_info x − 1  →")
ax.set_ylabel("↓  row index r (0-based)  =  DL_info y − 1")
top = ax.secondary_xaxis("top", functions=(lambda c: c + 1, lambda x: x - 1))
top.set_xlabel("DL_info x (1-based pixel column)")
right = ax.secondary_yaxis("right", functions=(lambda r: r + 1, lambda y: y - 1))
right.set_ylabel("DL_info y (1-based pixel row)")
ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
ax.set_title(f"{lesion.file_name}: pixel conventions", fontsize=10)
fig.savefig(out / "conventions.png", bbox_inches="tight")
