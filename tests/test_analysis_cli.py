"""The analysis commands' handling of missing extras, bad options, flat key-slice folders,
their summaries and labels."""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.errors import DeepLesionError


@pytest.fixture()
def lesanet(real_data: Path) -> Path:
    return real_data / "rsummers11__CADLab" / "LesaNet" / "program_data"


@pytest.fixture()
def no_openpyxl(monkeypatch):
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # any import of it now fails


def _clean_failure(result, code: int) -> None:
    """Exit status ``code`` through click, not an uncaught exception with a traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_ontology_without_openpyxl_is_a_typed_error(lesanet, no_openpyxl):
    from deeplesion.data.ontology import ONTOLOGY_FILE, MissingExtraError, load_ontology

    with pytest.raises(MissingExtraError) as info:
        load_ontology(lesanet / ONTOLOGY_FILE)
    assert isinstance(info.value, DeepLesionError) and isinstance(info.value, ImportError)
    assert 'pip install "deeplesion[tags]"' in str(info.value)


def test_lesions_without_openpyxl(sample_root, lesanet, no_openpyxl):
    args = [
        "lesions",
        str(sample_root / "DL_info.csv"),
        "--tag",
        "liver",
        "--lesanet",
        str(lesanet),
    ]
    # the fingerprint is checked first: a non-official file is refused as such
    result = CliRunner().invoke(main, args)
    _clean_failure(result, 1)
    assert "not the official DL_info.csv" in result.output
    result = CliRunner().invoke(main, args + ["--override-fingerprint"])
    _clean_failure(result, 1)
    assert "deeplesion[tags]" in result.output and "openpyxl" in result.output


def test_similar_tags_needs_no_ontology(sample_root, lesanet, no_openpyxl):
    result = CliRunner().invoke(
        main,
        [
            "similar",
            str(sample_root / "DL_info.csv"),
            "000001_01_01_032.png",
            "--k",
            "2",
            "--tags",
            "--lesanet",
            str(lesanet),
            "--override-fingerprint",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tags" in result.output.split("features:")[1]


def test_similar_unknown_weight_block(sample_root):
    result = CliRunner().invoke(
        main,
        ["similar", str(sample_root / "DL_info.csv"), "000001_01_01_032.png", "--weight", "foo=2"],
    )
    _clean_failure(result, 2)
    assert "foo" in result.output
    for block in ("location", "size", "type", "tags", "image"):
        assert block in result.output


def _liver_csv(real_liver_dir: Path) -> Path:
    return real_liver_dir / "NNProject_liver_image_dataset_info.csv"


def _first_file_name(csv_path: Path) -> str:
    with open(csv_path, newline="") as fh:
        return next(csv.DictReader(fh))["File_name"]


def test_similar_strip_from_flat_liver_folder(real_liver_dir, tmp_path):
    from deeplesion.analysis.figures import similar_strip
    from deeplesion.analysis.retrieval import LesionIndex
    from deeplesion.data.annotations import load_lesions

    lesions = load_lesions(_liver_csv(real_liver_dir)).lesions
    found = LesionIndex.build(lesions).similar(lesions[0], 4)
    strip = similar_strip(real_liver_dir, lesions[0], found, tmp_path / "s.png")
    assert (strip.tiles, strip.missing) == (5, 0)

    out = tmp_path / "cli.png"
    result = CliRunner().invoke(
        main,
        [
            "similar",
            str(_liver_csv(real_liver_dir)),
            lesions[0].file_name,
            "--k",
            "3",
            "--root",
            str(real_liver_dir),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0 and "no image" not in result.output


def test_missing_tiles_are_warned(real_liver_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    name = _first_file_name(_liver_csv(real_liver_dir))
    result = CliRunner().invoke(
        main,
        [
            "similar",
            str(_liver_csv(real_liver_dir)),
            name,
            "--k",
            "3",
            "--root",
            str(empty),
            "--out",
            str(tmp_path / "s.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 of 4 crop tiles have no image" in result.output  # query + 3 neighbours


def test_growth_strips_from_flat_folder_and_one_summary(real_liver_dir, tmp_path):
    out = tmp_path / "g"
    result = CliRunner().invoke(
        main,
        [
            "growth",
            str(_liver_csv(real_liver_dir)),
            "--root",
            str(real_liver_dir),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "strips" for p in files)
    wrote = [line for line in result.output.splitlines() if "wrote" in line]
    assert len(wrote) == 1 and f"wrote {len(files)} files under {out}" in wrote[0]
    assert "no image" not in result.output


def test_measure_names_rows_and_reports_skipped_pairs(sample_root):
    csv_path = sample_root / "DL_info.csv"
    with open(csv_path, newline="") as fh:
        records = list(csv.DictReader(fh))  # records[i] sits on CSV line i + 2
    patients = sorted({r["Patient_index"] for r in records}, key=int)[:2]
    first = [i for i, r in enumerate(records) if r["Patient_index"] == patients[0]]
    other = next(i for i, r in enumerate(records) if r["Patient_index"] == patients[1])
    names = {records[i]["File_name"] for i in first[:2] + [other]}
    result = CliRunner().invoke(main, ["measure", str(csv_path), *sorted(names)])
    assert result.exit_code == 0, result.output
    assert "row_index" in result.output and "(0-based)" in result.output
    assert "CSV line" in result.output
    a, b = first[:2]
    assert f"row_index {a} (CSV line {a + 2}) - row_index {b} (CSV line {b + 2})" in result.output
    chosen = [r for r in records if r["File_name"] in names]  # every lesion of those slices
    skipped = sum(
        x["Patient_index"] != y["Patient_index"] for x, y in itertools.combinations(chosen, 2)
    )
    assert skipped > 0
    assert f"{skipped} pair(s) of lesions of different patients left out" in result.output
