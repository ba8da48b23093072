"""Similar-lesion retrieval, the analysis CLI and the demo step."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from deeplesion.analysis.retrieval import (
    IMAGE_FEATURES,
    LesionIndex,
    RetrievalError,
    type_precision_at_k,
)
from deeplesion.cli import main
from deeplesion.data.annotations import load_lesions
from deeplesion.demo import analysis_step as demo


def test_type_precision_beats_random_on_real_val(real_val_csv):
    lesions = load_lesions(real_val_csv).lesions
    counts = Counter(l.coarse_type for l in lesions if l.coarse_type > 0)
    total = sum(counts.values())
    random_precision = sum((n / total) ** 2 for n in counts.values())
    # Type left out of the features: similarity comes from location and size alone.
    index = LesionIndex.build(lesions, weights={"type": 0})
    assert "type" not in index.blocks
    precision = type_precision_at_k(index, 10)
    print(f"val precision@10 (type): {precision:.3f} vs random {random_precision:.3f}")
    assert precision > random_precision + 0.15


def test_search_excludes_query_and_its_patient(real_val_csv):
    lesions = load_lesions(real_val_csv).lesions[:600]
    index = LesionIndex.build(lesions)
    found = index.search(np.arange(len(lesions)), 5)
    for q, row in enumerate(found):
        assert q not in row
        assert all(lesions[j].patient_index != lesions[q].patient_index for j in row if j >= 0)
    # brute-force check of the first query's neighbours
    sims = index.vectors @ index.vectors[0]
    allowed = [j for j, l in enumerate(lesions) if l.patient_index != lesions[0].patient_index]
    best = sorted(allowed, key=lambda j: -sims[j])[:5]
    assert np.allclose(sims[found[0]], sims[best], atol=1e-6)
    with pytest.raises(RetrievalError):
        index.similar(10**6)


def test_image_features_on_sample(sample_root):
    lesions = load_lesions(sample_root / "DL_info.csv").lesions
    index = LesionIndex.build(lesions, root=sample_root)
    assert index.blocks["image"].stop - index.blocks["image"].start == len(IMAGE_FEATURES)
    assert np.isfinite(index.vectors).all()
    # The patient-1 liver lesion in study 1 is most like itself in study 2 when the
    # patient's own lesions are allowed (same place, type and appearance).
    liver = [l for l in lesions if l.patient_index == 1 and l.coarse_type == 4]
    first = index.similar(liver[0], k=1, same_patient=True)[0]
    assert first.lesion.row_index == liver[1].row_index


def test_cli_growth_similar_measure(sample_root, tmp_path):
    runner = CliRunner()
    csv_path = str(sample_root / "DL_info.csv")
    out = tmp_path / "growth"
    result = runner.invoke(main, ["growth", csv_path, "--out", str(out), "--patient", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "tracks.csv").is_file() and (out / "patient_1.png").is_file()
    assert "PD" in (out / "responses.csv").read_text()  # the new kidney lesion
    png = tmp_path / "similar.png"
    result = runner.invoke(
        main,
        [
            "similar",
            csv_path,
            "000001_01_01_032.png",
            "--k",
            "3",
            "--root",
            str(sample_root),
            "--out",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 0
    result = runner.invoke(main, ["measure", csv_path])
    assert result.exit_code == 0 and "0 with end points" in result.output


def test_cli_lesions_refuses_non_official(sample_root, real_data):
    lesanet = real_data / "rsummers11__CADLab" / "LesaNet" / "program_data"
    result = CliRunner().invoke(
        main,
        ["lesions", str(sample_root / "DL_info.csv"), "--tag", "liver", "--lesanet", str(lesanet)],
    )
    assert result.exit_code == 1
    assert "not the official DL_info.csv" in result.output


def test_demo_step(sample_root, tmp_path):
    paths = demo(sample_root, sample_root / "DL_info.csv", tmp_path)
    names = {p.name for p in paths}
    assert {"tracks.csv", "responses.csv", "patient_1.png", "similar.png"} <= names
    assert all(p.is_file() for p in paths)


def test_parse_weights():
    from deeplesion.analysis.retrieval import parse_weights
    from deeplesion.errors import InvalidArgumentError

    assert parse_weights(["size=2", " image = 0"]) == {"size": 2.0, "image": 0.0}
    with pytest.raises(InvalidArgumentError, match="unknown feature block 'colour'"):
        parse_weights(["colour=1"])
    with pytest.raises(InvalidArgumentError, match="expected BLOCK=NUMBER"):
        parse_weights(["size=big"])


def test_cli_lesions_keeps_an_existing_out_unless_overwrite(sample_root, real_data, tmp_path):
    lesanet = real_data / "rsummers11__CADLab" / "LesaNet" / "program_data"
    args = ["lesions", str(sample_root / "DL_info.csv"), "--tag", "liver"]
    args += ["--lesanet", str(lesanet), "--override-fingerprint", "--out"]
    out = tmp_path / "found.csv"
    out.write_text("mine\n")
    refused = CliRunner().invoke(main, [*args, str(out)])
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    assert out.read_text() == "mine\n"
    replaced = CliRunner().invoke(main, [*args, str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert out.read_text().startswith("File_name,")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    failed = CliRunner().invoke(main, [*args, str(blocked / "found.csv")])
    assert failed.exit_code == 1 and isinstance(failed.exception, SystemExit)
    assert "Traceback" not in failed.output and str(blocked) in failed.output
