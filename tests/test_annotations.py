import csv
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deeplesion.data.annotations import (
    COLUMNS,
    LESION_TYPES,
    git_blob_id,
    index_to_px1,
    is_official,
    load_lesions,
    px1_to_index,
    write_dl_info,
)
from deeplesion.data.stats import dataset_stats
from deeplesion.data.validation import validate
from deeplesion.errors import AnnotationError, CellError


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_real_val_split_counts(real_val_csv):
    stats = dataset_stats(load_lesions(real_val_csv, strict=True))
    # Figures stated for the official val split (dataset-facts.md).
    assert stats["lesions"] == 4889
    assert stats["key_slices"] == 4793
    assert stats["series"] == 2193
    assert stats["studies"] == 1599
    assert stats["patients"] == 703
    assert stats["noisy"] == 2
    assert stats["by_split"] == {"train": 0, "val": 4889, "test": 0}
    assert sum(stats["by_type"].values()) == 4889
    assert stats["by_type"]["unlabelled"] == 0


def test_real_files_have_no_fatal_problem(real_val_csv, real_excerpt_csv):
    for path in (real_val_csv, real_excerpt_csv):
        report = validate(path)
        assert report.rows == len(_rows(path))
        assert report.fatal == [], [str(p) for p in report.fatal[:5]]


def test_every_cell_parsed_like_an_independent_reader(real_excerpt_csv):
    table = load_lesions(real_excerpt_csv)
    raw = _rows(real_excerpt_csv)
    assert len(table) == len(raw) == 158
    assert {l.split for l in table} == {"train", "val", "test"}
    for lesion, row in zip(table, raw):
        nums = lambda col: [float(v) for v in row[col].split(",")]  # noqa: E731
        assert lesion.file_name == row["File_name"]
        assert list(lesion.recist_px1) == nums("Measurement_coordinates")
        assert list(lesion.box_px1) == nums("Bounding_boxes")
        assert list(lesion.diameters_px) == nums("Lesion_diameters_Pixel_")
        assert list(lesion.spacing_mm) == nums("Spacing_mm_px_")
        assert list(lesion.slice_range) == nums("Slice_range")
        assert lesion.coarse_type == int(row["Coarse_lesion_type"])
        assert lesion.type_name == LESION_TYPES[int(row["Coarse_lesion_type"])]
        assert lesion.possibly_noisy == (row["Possibly_noisy"] == "1")
        assert lesion.split == {"1": "train", "2": "val", "3": "test"}[row["Train_Val_Test"]]
        name = row["File_name"]
        cut = name.rfind("_")
        assert lesion.png_relpath == f"Images_png/{name[:cut]}/{name[cut + 1 :]}"
        assert lesion.series_folder == name[:cut]
        first, _last = nums("Slice_range")
        assert lesion.key_slice_position == int(row["Key_slice_index"]) - first
        if lesion.split == "train":
            assert lesion.type_name == "unlabelled"


def test_diameters_in_mm_are_pixels_times_spacing(real_val_csv):
    frame = load_lesions(real_val_csv).frame()
    raw = _rows(real_val_csv)
    for i in range(0, len(raw), 97):
        long_px, short_px = (float(v) for v in raw[i]["Lesion_diameters_Pixel_"].split(","))
        sx = float(raw[i]["Spacing_mm_px_"].split(",")[0])
        assert frame.long_diameter_mm.iloc[i] == pytest.approx(long_px * sx, rel=1e-12)
        assert frame.short_diameter_mm.iloc[i] == pytest.approx(short_px * sx, rel=1e-12)


def test_literal_nan_age_is_tolerated(real_val_csv):
    table = load_lesions(real_val_csv, strict=True)
    row = next(l for l in table if l.file_name == "000014_01_01_104.png")
    assert row.age_years is None
    assert math.isnan(table.frame().set_index("file_name").loc["000014_01_01_104.png", "age_years"])


def test_official_fingerprint_matches_git(real_val_csv, tmp_path):
    try:
        expected = subprocess.run(
            ["git", "hash-object", str(real_val_csv)], check=True, capture_output=True, text=True
        ).stdout.strip()
    except FileNotFoundError:
        pytest.skip("git not installed")
    assert git_blob_id(real_val_csv) == expected
    assert not is_official(real_val_csv)


def test_index_conversion_is_minus_one():
    assert px1_to_index([1.0, 1.0]).tolist() == [0.0, 0.0]
    assert index_to_px1(px1_to_index([10.5, 3.0])).tolist() == [10.5, 3.0]


def test_write_round_trip(real_excerpt_csv, tmp_path):
    table = load_lesions(real_excerpt_csv)
    out = tmp_path / "copy.csv"
    write_dl_info(table, out)
    again = load_lesions(out, strict=True)
    assert again.lesions == table.lesions


# ------------------------------------------------------------------ bad input

GOOD = {
    "File_name": "000089_01_01_037.png",
    "Patient_index": "89",
    "Study_index": "1",
    "Series_ID": "1",
    "Key_slice_index": "37",
    "Measurement_coordinates": "154.273, 176.808, 143.903, 209.029, 160.939, 200.511, "
    "137.977, 191.252",
    "Bounding_boxes": "132.977, 171.808, 165.939, 214.029",
    "Lesion_diameters_Pixel_": "33.8477, 24.7578",
    "Normalized_lesion_location": "0.282373, 0.333694, 0.546692",
    "Coarse_lesion_type": "-1",
    "Possibly_noisy": "0",
    "Slice_range": "31, 43",
    "Spacing_mm_px_": "0.859375, 0.859375, 5",
    "Image_size": "512, 512",
    "DICOM_windows": "-175, 275",
    "Patient_gender": "F",
    "Patient_age": "71",
    "Train_Val_Test": "1",
}


def _write(tmp_path: Path, *changes: dict) -> Path:
    path = tmp_path / "DL_info.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerow(GOOD)
        for change in changes:
            writer.writerow({**GOOD, **change})
    return path


def test_the_good_row_is_clean(tmp_path):
    assert validate(_write(tmp_path)).ok


@pytest.mark.parametrize(
    "column, value, fatal",
    [
        ("Measurement_coordinates", "1, 2, 3", True),  # wrong value count
        ("Spacing_mm_px_", "0.8, abc, 5", True),  # malformed cell
        ("Slice_range", "38, 43", True),  # key slice 37 outside
        ("Spacing_mm_px_", "0, 0.859375, 5", True),  # non-positive spacing
        ("Spacing_mm_px_", "0.859375, 0.859375, -1", True),  # non-positive interval
        ("Bounding_boxes", "140, 171.808, 165.939, 214.029", True),  # box misses end points
        ("Bounding_boxes", "130, 171.808, 165.939, 214.029", False),  # encloses, not padded 5
        ("Lesion_diameters_Pixel_", "40, 24.7578", True),  # disagrees with end points
        ("Coarse_lesion_type", "9", True),  # unknown type code
        ("Train_Val_Test", "4", True),
        ("Patient_gender", "X", True),
        ("Key_slice_index", "38", True),  # disagrees with File_name
    ],
)
def test_each_problem_names_file_line_column_value(tmp_path, column, value, fatal):
    path = _write(tmp_path, {column: value})
    report = validate(path)
    assert len(report.problems) >= 1
    problem = report.problems[0]
    assert (problem.file, problem.line, problem.column) == (str(path), 3, column)
    assert str(problem.value).replace(" ", "") == value.replace(" ", "")
    assert problem.fatal is fatal
    assert str(path) in str(problem) and column in str(problem)
    if fatal:
        with pytest.raises(AnnotationError) as info:
            load_lesions(path, strict=True)
        assert (info.value.line, info.value.column) == (3, column)
        loose = load_lesions(path)
        assert len(loose.problems) >= 1
    else:
        assert len(load_lesions(path, strict=True)) == 2


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    path = _write(
        tmp_path, {"Coarse_lesion_type": "12"}, {"Slice_range": "1, 2"}, {"Image_size": "512"}
    )
    report = validate(path)
    assert sorted(p.line for p in report.fatal) == [3, 4, 5]


def test_missing_images_reported_with_root(tmp_path):
    path = _write(tmp_path)
    report = validate(path, images_root=tmp_path)
    assert [p.column for p in report.problems] == ["File_name"]
    assert "000089_01_01/037.png" in report.problems[0].message


def test_missing_column_is_an_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("File_name,Patient_index\n000089_01_01_037.png,89\n")
    with pytest.raises(AnnotationError, match="missing columns"):
        load_lesions(path)


def test_frame_columns(real_excerpt_csv):
    frame = load_lesions(real_excerpt_csv).frame()
    assert len(frame) == 158
    assert np.allclose(
        frame.box_x2 - frame.box_x1,
        [l.box_px1[2] - l.box_px1[0] for l in load_lesions(real_excerpt_csv)],
    )
    assert set(frame.split) == {"train", "val", "test"}


def test_non_utf8_file_names_the_line(tmp_path):
    path = _write(tmp_path, {})
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"F,71", b"F,7\xe91")  # a Latin-1 byte on line 3
    path.write_bytes(b"".join(lines))
    with pytest.raises(CellError) as info:
        validate(path)
    assert (info.value.file, info.value.line) == (str(path), 3)
    assert "UTF-8" in str(info.value)


def test_flat_key_slice_folder_counts_as_present(real_liver_dir):
    report = validate(
        real_liver_dir / "NNProject_liver_image_dataset_info.csv", images_root=real_liver_dir
    )
    assert report.rows == 23
    assert [p for p in report.problems if p.column == "File_name"] == []


def test_filters_find_and_problem_counts(real_excerpt_csv):
    from deeplesion.data.lesion import type_code
    from deeplesion.errors import InvalidArgumentError, NotFoundError

    table = load_lesions(real_excerpt_csv)
    assert type_code("Soft-Tissue") == type_code("soft tissue") == type_code(7) == 7
    with pytest.raises(InvalidArgumentError, match="unknown lesion type"):
        type_code("brain")
    chosen = table.filtered(splits=["val", "test"], types=["liver", "lung"])
    expected = [l for l in table if l.split in ("val", "test") and l.type_name in ("liver", "lung")]
    assert chosen.lesions == expected and expected
    name = expected[0].file_name
    assert table.filtered(file_names=[f" {name} "]).lesions == [
        l for l in table if l.file_name == name
    ]
    with pytest.raises(NotFoundError, match=r"999999_01_01_001\.png"):
        table.filtered(file_names=["999999_01_01_001.png"])
    assert table.find(name) is next(l for l in table if l.file_name == name)
    assert table.find(str(table.lesions[5].row_index)) is table.lesions[5]
    with pytest.raises(NotFoundError):
        table.find(name, which=99)
    assert len(table.fatal_problems) + len(table.warnings) == len(table.problems)
    assert all(p.fatal for p in table.fatal_problems)
    assert not any(p.fatal for p in table.warnings)
