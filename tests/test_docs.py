"""The documentation: tutorials run and say what the code does, the site builds strictly."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, _real_root
from test_evaluation_froc import bf_froc, bf_read

DOCS = REPO / "docs"
TUTORIALS = sorted(p for p in (DOCS / "tutorials").glob("*.py"))
FIGURES = sorted(p for p in (DOCS / "figures").glob("*.py"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    env["NO_MKDOCS_2_WARNING"] = "1"
    env["DEEPLESION_REAL_DATA"] = str(_real_root())
    return env


@pytest.fixture(scope="session")
def doc_outputs(tmp_path_factory) -> Path:
    """Every tutorial and figure script run once, as the site build would run them."""
    out = tmp_path_factory.mktemp("doc-outputs")
    for kind, scripts in (("tutorials", TUTORIALS), ("figures", FIGURES)):
        for script in scripts:
            done = subprocess.run(
                [sys.executable, str(script), str(out / kind / script.stem)],
                cwd=REPO,
                env=_env(),
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, f"{script.name}:\n{done.stdout}\n{done.stderr}"
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_the_three_tutorials_exist():
    assert [p.stem for p in TUTORIALS] == ["froc_curve", "lesion_growth", "train_detector"]


def test_froc_tutorial_numbers_agree_with_a_brute_force_protocol(doc_outputs):
    out = doc_outputs / "tutorials" / "froc_curve"
    rows = _rows(out / "sample" / "DL_info.csv")
    assert (
        (out / "dataset.txt")
        .read_text()
        .startswith(
            f"{len(rows)} lesions on {len({r['File_name'] for r in rows})} key slices of "
            f"{len({r['Patient_index'] for r in rows})} patients"
        )
    )
    # Ground truth per the protocol document: test rows, noisy dropped, one image per name.
    test = [r for r in rows if r["Train_Val_Test"] == "3" and r["Possibly_noisy"] == "0"]
    names = list(dict.fromkeys(r["File_name"] for r in test))
    boxes = [[] for _ in names]
    for r in test:
        boxes[names.index(r["File_name"])].append(
            [float(v) for v in r["Bounding_boxes"].split(",")]
        )
    dets = []
    for p in _rows(out / "predictions.csv"):
        box = [float(p[k]) for k in ("x1", "y1", "x2", "y2")]
        dets.append((names.index(p["file_name"]), box, float(p["score"])))
    sens, fpi, _ = bf_froc(boxes, [[True] * len(b) for b in boxes], dets, len(names))
    expected = {r: bf_read(sens, fpi, r) for r in (0.5, 1, 2, 4, 8, 16)}
    result = json.loads((out / "evaluation.json").read_text())
    assert result["n_images"] == len(names) and result["n_lesions"] == len(test)
    for rate, value in expected.items():
        assert result["sensitivity"][f"{rate:g}"] == pytest.approx(value)
    average = np.mean([expected[r] for r in (0.5, 1, 2, 4)])
    assert f"**{average:.3f}**" in (out / "froc_table.md").read_text()
    # The rendered key slice is the slice's size, with the red long axis drawn on it.
    image = _png(out / "key_slice.png")
    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert image.shape[0] >= 512 and red.sum() > 5
    assert _png(out / "froc.png").shape[1] > 400


def test_froc_tutorial_reaches_the_official_val_counts(doc_outputs, real_data):
    text = (doc_outputs / "tutorials" / "froc_curve" / "real_val.txt").read_text()
    # Official counts of the protocol (val: 4,793 images / 4,889 lesions -> 4,791 / 4,887).
    assert text.startswith("real val split: 4791 images, 4887 lesions (4793 images, 4889")


def test_detector_tutorial_trains_detects_and_scores(doc_outputs):
    out = doc_outputs / "tutorials" / "train_detector"
    history = json.loads((out / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1] and history[0]["step"] == 30
    rows = _rows(out / "sample" / "DL_info.csv")
    test_names = {r["File_name"] for r in rows if r["Train_Val_Test"] == "3"}
    predicted = _rows(out / "predictions.csv")
    assert predicted and {p["file_name"] for p in predicted} <= test_names
    for p in predicted:
        x1, y1, x2, y2 = (float(p[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0.5 <= x1 <= x2 and 0.5 <= y1 <= y2 and 0.0 <= float(p["score"]) <= 1.0
    table = (out / "froc_table.md").read_text().splitlines()
    assert table[2].startswith("| tiny detector") and table[3].startswith("| random boxes")
    assert _png(out / "detections.png").shape[:2] == (512, 512)


def test_growth_tutorial_recovers_the_true_tracks(doc_outputs):
    out = doc_outputs / "tutorials" / "lesion_growth"
    text = (out / "linking.txt").read_text()
    agree, total = map(int, re.search(r"(\d+) of (\d+) row pairs agree", text).groups())
    assert total > 0 and agree == total  # sample_truth.csv is the oracle
    categories = re.findall(r"\*\*(\w+)\*\*", (out / "responses.md").read_text())
    assert categories and set(categories) <= {"CR", "PR", "SD", "PD", "NE"}
    assert _png(out / "growth.png").shape[1] > 400
    assert _png(out / "track_strip.png").size > 0
    explorer = (out / "explorer.txt").read_text()
    assert "the same as linked above" in explorer  # the explorer's API against link_all
    if "no screenshot" not in explorer:
        assert _png(out / "explorer_patient.png").shape[:2] == (800, 1200)


def test_growth_tutorial_runs_on_the_real_val_split(doc_outputs, real_data):
    text = (doc_outputs / "tutorials" / "lesion_growth" / "real_val.txt").read_text()
    assert text.startswith("real val split: 703 patients")  # the official val split's count


def _build(config: Path, site: Path, outputs: Path) -> subprocess.CompletedProcess:
    env = {**_env(), "DEEPLESION_DOCS_OUTPUTS": str(outputs)}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
    )


def test_site_builds_strictly_and_offline(doc_outputs, tmp_path):
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]'")
    site = tmp_path / "site"
    done = _build(REPO / "mkdocs.yml", site, doc_outputs)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in (
        "index.html",
        "getting-started.html",
        "guide/troubleshooting.html",
        "tutorials/froc_curve.html",
        "tutorials/train_detector.html",
        "tutorials/lesion_growth.html",
        "reference/data.html",
        "commands.html",
        "changelog.html",
    ):
        assert page in pages
    # The tutorial pages embed their run's outputs.
    froc = (site / "tutorials" / "froc_curve.html").read_text()
    assert (
        'src="froc_curve/froc.png"' in froc and (site / "tutorials/froc_curve/froc.png").is_file()
    )
    if _real_root().is_dir():
        assert "4791 images, 4887 lesions" in froc
    # Every command has its help on the commands page; API pages hold the docstrings.
    commands = (site / "commands.html").read_text()
    for name in ("evaluate detection", "train-detector", "nifti", "info"):
        assert f"deeplesion {name}" in commands
    assert "px1_to_index" in (site / "reference" / "data.html").read_text()
    assert "missing columns" in (site / "guide" / "troubleshooting.html").read_text()
    shot = _png(site / "figures" / "explorer" / "explorer_lesion.png")
    assert shot.shape[:2] == (760, 1200) or not shutil.which("chromium")
    # Nothing is fetched from the network when a page is opened.
    remote = re.compile(r"""(?:src|href)=["']https?://[^"']+\.(?:js|css|woff2?)["']""")
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text()), page


@pytest.mark.parametrize(
    "probe",
    ["[a broken link](guide/no-such-page.md)", "::: deeplesion.data.no_such_module"],
    ids=["broken-link", "missing-api-name"],
)
def test_strict_build_fails_on_a_broken_link_or_a_missing_name(doc_outputs, tmp_path, probe):
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]'")
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copy(REPO / "CHANGELOG.md", copy / "CHANGELOG.md")
    (copy / "src").symlink_to(REPO / "src")
    with open(copy / "docs" / "index.md", "a") as fh:
        fh.write(f"\n{probe}\n")
    done = _build(copy / "mkdocs.yml", tmp_path / "site", doc_outputs)
    assert done.returncode != 0
    assert "no-such-page" in done.stderr or "no_such_module" in done.stderr
