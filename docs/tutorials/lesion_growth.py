# %% [markdown]
# # A patient's lesions over time
#
# DeepLesion holds follow-up studies: the same patient scanned again weeks or months later,
# with the lesions measured again. Nothing in `DL_info.csv` says which lesion of a follow-up
# is which lesion of the first study; `deeplesion.analysis.tracks` links them into
# *tracks* and `deeplesion.analysis.growth` assesses each follow-up the RECIST 1.1 way.
# This tutorial does that on the synthetic sample, whose true tracks are known
# (`sample_truth.csv`), shows one patient in the lesion explorer, then runs on the real
# val split.
#
# Run it yourself with `python lesion_growth.py OUT_DIR`; the CLI equivalent is
# `deeplesion growth ROOT/DL_info.csv --out OUT_DIR --root ROOT`.

# %%
import json
import os
import shutil
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import uvicorn

from deeplesion.analysis.figures import plot_patient, track_strip
from deeplesion.analysis.growth import recist_responses
from deeplesion.analysis.tracks import MatchRule, link_all, pair_agreement, track_labels
from deeplesion.data.annotations import load_lesions
from deeplesion.data.sample import read_truth, write_sample
from deeplesion.explorer.server import open_explorer

out = Path(sys.argv[1] if len(sys.argv) > 1 else "growth-tutorial")
out.mkdir(parents=True, exist_ok=True)
root = write_sample(out / "sample", seed=0)
table = load_lesions(root / "DL_info.csv")

# %% [markdown]
# ## 1. Link lesions across studies
#
# For each follow-up study the lesions are assigned to the patient's tracks by a
# minimum-cost matching. The cost adds the distance between normalised locations (0.05 of
# the body costs 1), half the log size ratio per doubling, 3 for a different lesion type and
# 0.25 per skipped study; links costing more than `max_cost` (2) are refused, and an
# unmatched lesion starts a new track (a *new lesion*, which RECIST counts as progression).

# %%
rule = MatchRule(max_cost=2.0)
tracks = link_all(table.lesions, rule)
predicted = track_labels(tracks)
agree, total = pair_agreement(predicted, read_truth(root))
linked = sum(len(t.observations) > 1 for ts in tracks.values() for t in ts)
summary = (
    f"{sum(len(ts) for ts in tracks.values())} tracks for {len(tracks)} patients, "
    f"{linked} seen in more than one study; against sample_truth.csv: "
    f"{agree} of {total} row pairs agree"
)
(out / "linking.txt").write_text(summary + "\n")
print(summary)

# %% [markdown]
# <!-- output: linking.txt -->
#
# ## 2. One patient, study by study
#
# Pick the patient with the most studies. Each track's long diameter is measured in mm
# from its RECIST end points (x and y spacing applied).

# %%
patient = max(tracks, key=lambda p: len({o.study_index for t in tracks[p] for o in t.observations}))
rows = ["| track | study | type | long (mm) | short (mm) | link confidence |", "|---" * 6 + "|"]
for t in tracks[patient]:
    for o in t.observations:
        confidence = "first" if o.confidence is None else f"{o.confidence:.2f}"
        rows.append(
            f"| {t.track_id}{' (new)' if t.is_new else ''} | {o.study_index} | "
            f"{o.lesion.type_name} | {o.long_mm:.1f} | {o.short_mm:.1f} | {confidence} |"
        )
(out / "patient_tracks.md").write_text("\n".join(rows) + "\n")

# %% [markdown]
# <!-- output: patient_tracks.md -->
#
# ## 3. RECIST 1.1 responses
#
# Targets are the lesions of the first study; the sum of their long diameters (SLD) is
# compared with the baseline (a 30 % drop is a partial response, PR) and with the smallest
# sum so far, the nadir (+20 % and +5 mm is progression, PD); a new lesion is PD too. A
# target missing from a follow-up keeps its last value (`missing="ne"` makes the follow-up
# not evaluable instead).

# %%
responses = recist_responses(tracks[patient])
rows = ["| study | SLD (mm) | vs baseline | vs nadir | response | why |", "|---" * 6 + "|"]
for r in responses:
    rows.append(
        f"| {r.study_index} | {r.sld_mm:.1f} | {r.change_from_baseline_pct:+.0f} % | "
        f"{r.change_from_nadir_pct:+.0f} % | **{r.category}** | {r.reason} |"
    )
(out / "responses.md").write_text("\n".join(rows) + "\n")
plot_patient(tracks[patient], out / "growth.png", responses)

# %% [markdown]
# <!-- output: responses.md -->
#
# The same history as a plot (new lesions dashed, the response above each follow-up):
#
# <!-- output: growth.png -->
#
# And the longest track's key-slice crops side by side, one per study, at one field of
# view so that growth shows as growth:

# %%
longest = max(tracks[patient], key=lambda t: len(t.observations))
track_strip(root, longest, out / "track_strip.png")

# %% [markdown]
# <!-- output: track_strip.png -->
#
# ## 4. The same patient in the explorer
#
# `deeplesion serve ROOT --open` starts the lesion explorer, a web page over the same
# records (it needs the `[serve]` extra). Its patient view, `#/patient/N`, shows the studies,
# the tracks and the responses computed above. Here the explorer runs in this process on a
# free local port; the tutorial asks its JSON API for the patient and checks that the tracks
# are the ones linked above, then takes a screenshot of the page with Chromium when
# Playwright and a Chromium are installed (the test suite has both).

# %%
app = open_explorer(root).app()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
url = f"http://127.0.0.1:{port}"
with urllib.request.urlopen(f"{url}/api/patient/{patient}") as answer:
    shown = json.load(answer)
same = sorted(tuple(o["row_index"] for o in t["observations"]) for t in shown["tracks"]) == sorted(
    tuple(t.row_indexes) for t in tracks[patient]
)
line = f"explorer, patient view #/patient/{patient}: {len(shown['tracks'])} tracks, " + (
    "the same as linked above" if same else "DIFFERENT from the tracks linked above"
)
chromium = shutil.which("chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
if sync_playwright is not None and chromium is not None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(f"{url}/#/patient/{patient}")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=out / "explorer_patient.png")
        browser.close()
else:
    line += " (no Playwright or Chromium: no screenshot)"
server.should_exit = True
(out / "explorer.txt").write_text(line + "\n")
print(line)

# %% [markdown]
# <!-- output: explorer.txt -->
#
# <!-- output: explorer_patient.png -->
#
# ## 5. The real val split
#
# On the 4,889 real val lesions the same rule links the follow-ups of 703 patients. Real
# data has no true tracks, so the figures below are what the rule finds, not an accuracy.

# %%
real = Path(os.environ.get("DEEPLESION_REAL_DATA", "/nonexistent"))
val_csv = real / "fsafe__Capstone" / "annotation_info" / "DL_info_val.csv"
if val_csv.is_file():
    val_tracks = link_all(load_lesions(val_csv).lesions, rule)
    val_responses = {p: recist_responses(ts) for p, ts in val_tracks.items()}
    categories = Counter(r.category for rs in val_responses.values() for r in rs)
    line = (
        f"real val split: {len(val_tracks)} patients, "
        f"{sum(len(ts) for ts in val_tracks.values())} tracks; "
        f"{sum(bool(rs) for rs in val_responses.values())} patients have follow-up studies, "
        f"{sum(categories.values())} follow-ups assessed: "
        + ", ".join(f"{k} {v}" for k, v in sorted(categories.items()))
    )
else:
    line = "real val split: not found (set DEEPLESION_REAL_DATA); step skipped"
(out / "real_val.txt").write_text(line + "\n")
print(line)

# %% [markdown]
# <!-- output: real_val.txt -->
#
# The assumptions behind these numbers (every first-study lesion is a target, no lymph-node
# rule, an approximate body height for distances) are listed on the
# [analysis page](../guide/analysis.md).
