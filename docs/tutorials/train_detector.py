# %% [markdown]
# # Training and evaluating a detector on the CPU
#
# This tutorial trains the baseline lesion detector for one short epoch on the synthetic
# sample, writes its predictions on the test split and scores them with the published
# FROC protocol. It is sized for a laptop CPU (about a minute): a small backbone, small
# images, few iterations. The numbers it reaches say that the pipeline works end to end,
# not how well a detector can do; for that, train the full model on the real data on a GPU
# (`deeplesion train-detector ROOT --preset mulan --device cuda --out runs/mulan`).
#
# It needs the `[torch]` extra: `pip install "deeplesion[torch]"`. Run it yourself with
# `python train_detector.py OUT_DIR`.

# %%
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deeplesion.data.annotations import load_lesions
from deeplesion.data.sample import write_sample
from deeplesion.evaluation.froc import (
    Detections,
    evaluate_detection,
    ground_truth,
)
from deeplesion.evaluation.plot import plot_froc
from deeplesion.evaluation.predictions import read_predictions
from deeplesion.review.batch import group_by_key_slice
from deeplesion.review.render import render_key_slice
from deeplesion.training.detector import TrainConfig, detect, train_detector

out = Path(sys.argv[1] if len(sys.argv) > 1 else "detector-tutorial")
out.mkdir(parents=True, exist_ok=True)
root = write_sample(out / "sample", seed=0)

# %% [markdown]
# ## 1. The run's settings
#
# A run is described by a `TrainConfig` (stored in every checkpoint) and a preprocessing
# preset with overrides. Here: the `3dce` preset (context slices, body crop, 0.8 mm pixels)
# cut to 3 slices and images of at most 128 px, a soft-tissue window so that the sample's
# lesions stand out, the `tiny` backbone (a small CNN with the same detection heads as the
# full Faster R-CNN), anchors scaled to the small images, one epoch of 30 iterations.
# Training uses the train split; the val split is scored after the epoch (`best.pt` keeps
# the best epoch); the test split is held out for the end.

# %%
config = TrainConfig(
    preset="3dce",
    overrides={"n_slices": 3, "max_size_px": 128, "window_hu": (-175.0, 275.0)},
    arch="tiny",
    anchor_sizes=(6, 9, 12, 18, 24),
    epochs=1,
    iterations_per_epoch=30,
    batch_size=2,
    optimizer="adamw",
    lr=2e-3,
    warmup_iterations=5,
    augment=False,
    cache=True,
    train_split="train",
    val_split="val",
)

# %% [markdown]
# ## 2. Train
#
# `train_detector` writes `last.pt` (atomically, every `checkpoint_every` iterations and at
# each epoch's end), `best.pt` and `history.json` into the run folder. Run it again with the
# same folder and it resumes where it stopped; with a larger `epochs` it trains on. The CLI
# equivalent:
# `deeplesion train-detector ROOT --arch tiny --epochs 1 --iterations-per-epoch 30 --out RUN`.

# %%
run = train_detector(root, out / "run", config)
val = run.history[-1]["val"]
line = (
    f"{len(run.history)} epoch, {run.history[-1]['step']} iterations; "
    f"val split ({val['n_images']} images, {val['n_lesions']} lesions): "
    f"average sensitivity {val['average']:.3f}"
)
(out / "training.txt").write_text(line + "\n")
print(line)

# %% [markdown]
# <!-- output: training.txt -->
#
# ## 3. Detect and evaluate on the held-out test split
#
# `detect` writes the evaluator's CSV (`file_name,x1,y1,x2,y2,score` in 1-based DL_info
# pixels), so the [FROC tutorial](froc_curve.md)'s evaluation applies unchanged
# (`deeplesion detect ROOT --checkpoint RUN/last.pt --split test --out pred.csv`, then
# `deeplesion evaluate detection pred.csv --annotations ROOT/DL_info.csv`).

# %%
predictions = detect(root, run.last_checkpoint, out / "predictions.csv", split="test")
gt = ground_truth(load_lesions(root / "DL_info.csv"), "test")
result = evaluate_detection(gt, read_predictions(predictions, gt))


# The floor a detector must beat: random lesion-sized boxes with random scores.
def chance(seed: int = 0, per_image: int = 10):
    rng = np.random.default_rng(seed)
    n = gt.n_images * per_image
    corner = rng.uniform(1, 480, size=(n, 2))
    boxes = np.hstack([corner, corner + rng.uniform(15, 40, size=(n, 2))])
    dets = Detections.from_arrays(
        np.repeat(np.arange(gt.n_images), per_image), boxes, rng.random(n)
    )
    return evaluate_detection(gt, dets)


floor = chance()
rows = ["| | " + " | ".join(result.sensitivity) + " | average (0.5–4) |", "|---" * 8 + "|"]
for name, r in (("tiny detector, 30 iterations", result), ("random boxes", floor)):
    cells = " | ".join(f"{v:.3f}" for v in r.sensitivity.values())
    rows.append(f"| {name} | {cells} | **{r.average:.3f}** |")
(out / "froc_table.md").write_text("\n".join(rows) + "\n")
plot_froc(
    {"tiny detector (sample, test)": result.curve, "random boxes": floor.curve},
    out / "froc.png",
    published=False,
)
print(rows[2])

# %% [markdown]
# <!-- output: froc_table.md -->
#
# <!-- output: froc.png -->
#
# ## 4. Look at the detections
#
# A test key slice with its annotated lesions (red and blue RECIST axes, yellow box) and the
# detector's three best boxes on it in green.

# %%
by_slice = group_by_key_slice(gt.lesions)
name = gt.file_names[0]
image = Image.fromarray(render_key_slice(root, by_slice[name]))
draw = ImageDraw.Draw(image)
with open(predictions) as fh:
    next(fh)
    boxes = [line.strip().split(",") for line in fh if line.startswith(name)]
for _, x1, y1, x2, y2, score in sorted(boxes, key=lambda b: -float(b[5]))[:3]:
    # 1-based DL_info pixels -> 0-based image indices for drawing.
    draw.rectangle([float(x1) - 1, float(y1) - 1, float(x2) - 1, float(y2) - 1], outline="lime")
    draw.text((float(x1) - 1, float(y2) + 1), f"{float(score):.2f}", fill="lime")
image.save(out / "detections.png")

# %% [markdown]
# <!-- output: detections.png -->
#
# To go further: the presets and every option are on the
# [training page](../guide/training.md); the published numbers the protocol reproduces are
# in its FROC section.
