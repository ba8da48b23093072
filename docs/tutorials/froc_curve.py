# %% [markdown]
# # From zero to a FROC curve
#
# This tutorial goes from nothing to the headline DeepLesion number: the sensitivity of a
# detector at 0.5, 1, 2 and 4 false positives per image on the key slices of a split (the
# key-slice FROC of the published papers). It needs only the core package; the data
# is the synthetic sample that the package writes, so it runs anywhere in a few seconds.
#
# Run it yourself with `python froc_curve.py OUT_DIR`. Every command-line step has a Python
# twin; both are shown.

# %%
import json
import os
import sys
from pathlib import Path

from deeplesion.data.annotations import load_lesions
from deeplesion.data.sample import write_sample
from deeplesion.data.stats import dataset_stats
from deeplesion.data.validation import validate
from deeplesion.evaluation.froc import (
    evaluate_detection,
    ground_truth,
    write_predictions_csv,
)
from deeplesion.evaluation.plot import plot_froc
from deeplesion.evaluation.predictions import read_predictions
from deeplesion.evaluation.synthetic import noisy_predictions
from deeplesion.review.batch import group_by_key_slice
from deeplesion.review.render import render_key_slice, write_png

out = Path(sys.argv[1] if len(sys.argv) > 1 else "froc-tutorial")
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A dataset
#
# `deeplesion sample OUT` (or `write_sample`) writes a small dataset in the layout of the
# real release: `OUT/DL_info.csv` and `OUT/Images_png/<series>/<slice>.png`, 16-bit PNGs
# with HU + 32768. With the real data, point the same code at the folder where
# `deeplesion extract` put it.

# %%
root = write_sample(out / "sample", seed=0)
table = load_lesions(root / "DL_info.csv")
stats = dataset_stats(table)
report = validate(root / "DL_info.csv", images_root=root)
summary = (
    f"{stats['lesions']} lesions on {stats['key_slices']} key slices of "
    f"{stats['patients']} patients; validation: {len(report.fatal)} errors, "
    f"{len(report.warnings)} warnings"
)
(out / "dataset.txt").write_text(summary + "\n")
print(summary)

# %% [markdown]
# <!-- output: dataset.txt -->
#
# ## 2. Look before you measure
#
# One key slice with its lesions drawn the way the release's `Key_slices.zip` draws them
# (long axis red, short axis blue, box yellow), windowed with the row's `DICOM_windows`.
# The CLI equivalent is `deeplesion render ROOT --out key_slices/`.

# %%
by_slice = group_by_key_slice(table.lesions)
file_name = max(by_slice, key=lambda name: len(by_slice[name]))  # the busiest key slice
write_png(out / "key_slice.png", render_key_slice(root, by_slice[file_name]))

# %% [markdown]
# <!-- output: key_slice.png -->
#
# ## 3. Ground truth by the protocol
#
# The published protocol scores the test split (`Train_Val_Test == 3`), leaves out lesions
# marked `Possibly_noisy` and treats every key slice as one image.

# %%
gt = ground_truth(table, "test")
print(
    f"test split: {gt.n_images} images, {gt.n_lesions} lesions "
    f"({gt.n_images_unfiltered} images, {gt.n_lesions_unfiltered} lesions before the filter)"
)

# %% [markdown]
# ## 4. Predictions
#
# A detector's output is a CSV with one row per box: `file_name,x1,y1,x2,y2,score`, in the
# 1-based pixels of DL_info's `Bounding_boxes`. Here the boxes come from
# `noisy_predictions`, which perturbs the true boxes, misses some and adds random false
# positives: a stand-in for a detector. The [detector tutorial](train_detector.md)
# trains a real one.

# %%
dets = noisy_predictions(gt, seed=0)
predictions = out / "predictions.csv"
write_predictions_csv(
    predictions, [gt.file_names[i] for i in dets.image_index], dets.boxes_px1, dets.scores
)
print(predictions.read_text().splitlines()[:3])

# %% [markdown]
# ## 5. The FROC
#
# `deeplesion evaluate detection predictions.csv --annotations ROOT/DL_info.csv --split test
# --by type --plot froc.png` does the same as these lines: read the CSV (bad rows are
# reported with their line), sweep every detection in score order, and read the curve at
# the published false-positive rates.

# %%
result = evaluate_detection(gt, read_predictions(predictions, gt, strict=True), by=("type",))
rows = ["| FPs per image | " + " | ".join(result.sensitivity) + " | average (0.5–4) |"]
rows.append("|---" * (len(result.sensitivity) + 2) + "|")
values = [f"{v:.3f}" for v in result.sensitivity.values()]
rows.append("| sensitivity | " + " | ".join(values) + f" | **{result.average:.3f}** |")
(out / "froc_table.md").write_text("\n".join(rows) + "\n")
(out / "evaluation.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
plot_froc({"noisy ground truth (sample, test)": result.curve}, out / "froc.png")
print(f"average sensitivity at 0.5, 1, 2, 4 FPs per image: {result.average:.3f}")

# %% [markdown]
# <!-- output: froc_table.md -->
#
# The curve, with the published methods' points for scale (their numbers are on the real
# test split; these are a stand-in detector on eight synthetic patients):
#
# <!-- output: froc.png -->
#
# Per lesion type (`--by type`): only the lesions counted change, the false positives and
# the number of images stay the same.

# %%
strata = ["| type | lesions | average sensitivity |", "|---|---|---|"]
for stratum in result.strata["type"]:
    average = "–" if stratum.average is None else f"{stratum.average:.3f}"
    strata.append(f"| {stratum.name} | {stratum.n_lesions} | {average} |")
(out / "by_type.md").write_text("\n".join(strata) + "\n")

# %% [markdown]
# <!-- output: by_type.md -->
#
# ## 6. The same protocol on the real annotations
#
# With the real `DL_info.csv` the same two calls give the official image and lesion counts
# (4,791 images and 4,887 lesions on val, 4,817 and 4,912 on test). The test suite runs
# this step on the real val split (`DEEPLESION_REAL_DATA`); without it the step is skipped.

# %%
real = Path(os.environ.get("DEEPLESION_REAL_DATA", "/nonexistent"))
val_csv = real / "fsafe__Capstone" / "annotation_info" / "DL_info_val.csv"
if val_csv.is_file():
    val = ground_truth(load_lesions(val_csv), "val")
    real_result = evaluate_detection(val, noisy_predictions(val, seed=0))
    line = (
        f"real val split: {val.n_images} images, {val.n_lesions} lesions "
        f"({val.n_images_unfiltered} images, {val.n_lesions_unfiltered} lesions before "
        f"dropping noisy ones); stand-in detector average sensitivity {real_result.average:.3f}"
    )
else:
    line = "real val split: not found (set DEEPLESION_REAL_DATA); step skipped"
(out / "real_val.txt").write_text(line + "\n")
print(line)

# %% [markdown]
# <!-- output: real_val.txt -->
#
# Next: [train a detector on the CPU](train_detector.md) and score it the same way.
