"""Relationship mining: checked against pandas on the real val split, planted associations."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from deeplesion.analysis.relations import RelationsError, adjust_p, relations
from deeplesion.analysis.relations_output import write_relations
from deeplesion.cli import main
from deeplesion.data.annotations import load_lesions

TYPE_NAMES = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}
KEYS = {
    "patient": ["Patient_index"],
    "study": ["Patient_index", "Study_index"],
    "slice": ["File_name"],
}


def _pandas_frame(csv_path: Path) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    df = df[df["Coarse_lesion_type"] > 0].copy()
    df["label"] = df["Coarse_lesion_type"].map(TYPE_NAMES)
    xyz = df["Normalized_lesion_location"].str.split(",", expand=True).astype(float)
    df[["lx", "ly", "lz"]] = xyz.to_numpy()
    return df


@pytest.mark.parametrize("within", ["patient", "study", "slice"])
def test_counts_and_lift_equal_pandas_on_real_val(real_val_csv, within):
    table = load_lesions(real_val_csv)
    result = relations(table.lesions, within=within)
    df = _pandas_frame(real_val_csv)
    key = df[KEYS[within]].astype(str).agg("/".join, axis=1)
    presence = (pd.crosstab(key, df["label"]) > 0).astype(int)
    n = len(presence)
    together = presence.T @ presence
    assert result.n_groups == n == df.groupby(KEYS[within]).ngroups
    assert result.n_lesions == len(df) == 4889
    assert len(result.pairs) == math.comb(8, 2)
    for p in result.pairs:
        n_a, n_b = presence[p.label_a].sum(), presence[p.label_b].sum()
        assert (p.n_a, p.n_b, p.n_both) == (n_a, n_b, together.loc[p.label_a, p.label_b])
        assert p.expected == pytest.approx(n_a * n_b / n)
        assert p.lift == pytest.approx(together.loc[p.label_a, p.label_b] * n / (n_a * n_b))
    by_label = {c.label: c for c in result.labels}
    per_group = df.groupby([key, "label"]).size()
    for label in TYPE_NAMES.values():
        assert by_label[label].n_lesions == (df["label"] == label).sum()
        assert by_label[label].n_groups == presence[label].sum()
        assert by_label[label].n_groups_repeated == (per_group.xs(label, level=1) >= 2).sum()


def test_distances_and_followup_equal_pandas_on_real_val(real_val_csv):
    result = relations(load_lesions(real_val_csv).lesions, within="study")
    df = _pandas_frame(real_val_csv).reset_index(drop=True)
    df["lesion"] = np.arange(len(df))
    pairs = df.merge(df, on=["Patient_index", "Study_index"], suffixes=("_a", "_b"))
    pairs = pairs[pairs["lesion_a"] != pairs["lesion_b"]]
    for p in result.pairs[:6]:
        sel = pairs[(pairs["label_a"] == p.label_a) & (pairs["label_b"] == p.label_b)]
        d = np.sqrt(
            (sel["lx_a"] - sel["lx_b"]) ** 2
            + (sel["ly_a"] - sel["ly_b"]) ** 2
            + (sel["lz_a"] - sel["lz_b"]) ** 2
        )
        assert p.n_distance_pairs == len(sel) > 0
        assert p.median_distance_norm == pytest.approx(float(np.median(d)))
    # follow-up: the next study of the same patient (Study_index order)
    studies = (
        df.groupby(["Patient_index", "Study_index"])["label"].agg(set).reset_index()
    ).sort_values(["Patient_index", "Study_index"])
    studies["next"] = studies.groupby("Patient_index")["label"].shift(-1)
    studies = studies[studies["next"].notna()]
    for rate in result.followup:
        has = studies[studies["label"].map(lambda s, x=rate.label: x in s)]
        again = has["next"].map(lambda s, x=rate.label: x in s).sum()
        assert (rate.n_with_next, rate.n_again) == (len(has), again)


def test_fisher_p_value_is_the_hypergeometric_tail(real_val_csv):
    result = relations(load_lesions(real_val_csv).lesions, within="patient")
    for p in result.pairs[:3] + result.pairs[-2:]:
        n, a, b, k = p.n_groups, p.n_a, p.n_b, p.n_both

        def prob(x, n=n, a=a, b=b):
            return math.comb(a, x) * math.comb(n - a, b - x) / math.comb(n, b)

        lo, hi = max(0, a + b - n), min(a, b)
        observed = prob(k)
        tail = sum(prob(x) for x in range(lo, hi + 1) if prob(x) <= observed * (1 + 1e-7))
        assert p.p_value == pytest.approx(min(tail, 1.0), rel=1e-6)
    # strongest first: adjusted p never decreases down the list
    adjusted = [p.p_adjusted for p in result.pairs]
    assert adjusted == sorted(adjusted)


def test_corrections_match_hand_computation():
    p = [0.01, 0.04, 0.03, 0.20]
    # BH: sorted 0.01, 0.03, 0.04, 0.20 -> 0.04, 0.0533, 0.0533, 0.20 (monotone from the top)
    assert adjust_p(p, "bh") == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])
    # Holm: 4*0.01, 3*0.03, max(2*0.04, prev), max(0.20, prev)
    assert adjust_p(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.20])
    with pytest.raises(RelationsError):
        adjust_p(p, "bonferroni")


def _synthetic(real_val_csv, plant: bool, seed: int = 0):
    """400 patients, each type present independently with probability 0.3; with ``plant``,
    a patient with a liver lesion gets a kidney lesion in 80 % of cases."""
    template = load_lesions(real_val_csv).lesions[0]
    rng = np.random.default_rng(seed)
    lesions, row = [], 0
    for patient in range(1, 401):
        types = [t for t in range(1, 9) if rng.random() < 0.3]
        if plant and 4 in types and 6 not in types and rng.random() < 0.8:
            types.append(6)
        for i, t in enumerate(types):
            lesions.append(
                dataclasses.replace(
                    template,
                    row_index=row,
                    file_name=f"{patient:06d}_01_01_{i + 1:03d}.png",
                    patient_index=patient,
                    study_index=1,
                    coarse_type=int(t),
                    location_norm=tuple(rng.random(3)),
                )
            )
            row += 1
    return lesions


def test_planted_association_is_recovered(real_val_csv):
    result = relations(_synthetic(real_val_csv, plant=True), within="patient")
    top = result.pairs[0]
    assert {top.label_a, top.label_b} == {"liver", "kidney"}
    assert top.p_adjusted < 1e-6 and top.lift > 1.3
    assert sum(p.p_adjusted < 0.05 for p in result.pairs[1:]) <= 1
    # without the plant, nothing survives the correction
    null = relations(_synthetic(real_val_csv, plant=False), within="patient")
    assert sum(p.p_adjusted < 0.05 for p in null.pairs) <= 1


def test_planted_tag_association_is_recovered(real_val_csv):
    lesions = _synthetic(real_val_csv, plant=False, seed=1)
    rng = np.random.default_rng(2)
    labels = {}
    for l in lesions:
        tags = {t for t in ("nodule", "cyst", "calcified", "enhancing") if rng.random() < 0.3}
        if "nodule" in tags and rng.random() < 0.9:
            tags.add("spiculated")  # planted on the same lesion
        labels[l.row_index] = frozenset(tags)
    result = relations(lesions, labels, by="tag", within="slice")
    top = result.pairs[0]
    assert {top.label_a, top.label_b} == {"nodule", "spiculated"}
    assert top.p_adjusted < 1e-6
    assert top.n_distance_pairs == 0  # one lesion carrying both: no pair of lesions


def test_no_labels_is_a_typed_error(real_excerpt_csv):
    train = [l for l in load_lesions(real_excerpt_csv).lesions if l.split == "train"]
    with pytest.raises(RelationsError, match="val and test"):
        relations(train)
    with pytest.raises(RelationsError):
        relations(load_lesions(real_excerpt_csv).lesions, within="series")


def test_cli_relations_on_real_val(real_val_csv, tmp_path):
    runner = CliRunner()
    out = tmp_path / "rel"
    result = runner.invoke(
        main, ["relations", str(real_val_csv), "--within", "study", "--out", str(out), "--top", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "subset of the lesions" in result.output and "1599 studies" in result.output
    assert {p.name for p in out.iterdir()} == {
        "pairs.csv",
        "labels.csv",
        "followup.csv",
        "heatmap.png",
    }
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 28 and pairs["p_adjusted"].is_monotonic_increasing
    result = runner.invoke(main, ["relations", str(real_val_csv), "--json", "--correction", "holm"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["correction"] == "Holm" and data["n_groups"] == 703 and data["n_pairs"] == 28
    assert "subset" in data["note"]
    result = runner.invoke(main, ["relations", str(real_val_csv), "--split", "train"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "val and test" in result.output


def test_heatmap_has_every_type(real_val_csv, tmp_path):
    from PIL import Image

    result = relations(load_lesions(real_val_csv).lesions)
    paths = write_relations(result, tmp_path)
    png = Image.open(paths[-1])
    assert png.size[0] > 500 and png.size[1] > 500
    # not a blank picture: red and blue cells are both present
    rgb = np.asarray(png.convert("RGB")).astype(int)
    reddish = ((rgb[..., 0] - rgb[..., 2]) > 60).sum()
    bluish = ((rgb[..., 2] - rgb[..., 0]) > 60).sum()
    assert reddish > 1000 and bluish > 1000


def test_cli_tag_relations_with_lesanet_files(real_data, real_excerpt_csv, tmp_path):
    """--by tag joins LesaNet labels by row index (here a hand-made label file over the
    excerpt, with the fingerprint check overridden) and recovers a planted pair."""
    real = json.loads(
        (
            real_data
            / "rsummers11__CADLab/LesaNet/program_data/text_mined_labels_171_and_split.json"
        ).read_text()
    )
    terms = real["term_list"]
    a, b, c = terms.index("liver"), terms.index("lung"), terms.index("nodule")
    lesions = load_lesions(real_excerpt_csv).lesions
    rng = np.random.default_rng(0)
    data: dict = {"term_list": terms}
    for split in ("train", "val", "test"):
        data.update({f"{split}_lesion_idxs": [], f"{split}_relevant_labels": []})
        data[f"{split}_uncertain_labels"] = []
    for l in lesions:
        tags = [t for t in (a, b) if rng.random() < 0.4]
        if b in tags and rng.random() < 0.9:
            tags.append(c)  # planted: lung lesions are nodules
        data["train_lesion_idxs"].append(l.row_index)
        data["train_relevant_labels"].append(tags)
        data["train_uncertain_labels"].append([c] if not tags else [])
    folder = tmp_path / "lesanet"
    folder.mkdir()
    (folder / "text_mined_labels_171_and_split.json").write_text(json.dumps(data))
    runner = CliRunner()
    args = ["relations", str(real_excerpt_csv), "--by", "tag", "--lesanet", str(folder)]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1 and "not the official DL_info.csv" in refused.output
    result = runner.invoke(main, [*args, "--override-fingerprint", "--within", "slice", "--json"])
    assert result.exit_code == 0, result.output
    assert "not the official" in result.stderr
    out = json.loads(result.stdout)
    top = out["pairs"][0]
    assert {top["label_a"], top["label_b"]} == {"lung", "nodule"}
    assert top["p_adjusted"] < 1e-3 and out["by"] == "tag"
    tagged_rows = sum(1 for tags in data["train_relevant_labels"] if tags)
    assert out["n_lesions"] == tagged_rows
