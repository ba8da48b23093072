"""The shared CSV reader (data/table.py) and the vectorised DL_info loader built on it.

Oracles: the standard library's csv module read line by line, and the per-row parser and
checks (parse_row, check_lesion) applied to every row one at a time.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from deeplesion.data.annotations import COLUMNS, load_lesions
from deeplesion.data.checks import check_lesion
from deeplesion.data.parse import parse_row
from deeplesion.data.table import read_table
from deeplesion.data.validation import Problem
from deeplesion.errors import AnnotationError, CellError

# ------------------------------------------------------------------ the reader


@pytest.mark.parametrize(
    "text, lines",
    [
        ("a,b\n1,2\n3,4\n", [2, 3]),
        ("a,b\n1,2\n\n3,4\n\n", [2, 4]),  # blank lines skipped, numbering kept
        ("a,b\r\n1,2\r\n \r\n3,4\r\n", [2, 4]),  # CRLF, a whitespace-only line
        ('a,b\n"1\n1",2\n3,4\n', [2, 4]),  # a quoted cell spanning two lines
        ("a,b\n1,2\n3,4", [2, 3]),  # no final newline
        ("\ufeffa,b\n1,2\n", [2]),  # BOM
    ],
)
def test_line_numbers_and_cells_match_the_csv_module(tmp_path, text, lines):
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("utf-8"))
    table = read_table(path, ["a", "b"], numbers=["b"])
    assert table.lines.tolist() == lines
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))[1:]
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    assert [table.cells(i) for i in range(len(table))] == [{"a": r[0], "b": r[1]} for r in rows]
    assert table.numbers("b").tolist() == [float(r[1]) for r in rows]


def test_header_names_are_stripped_and_found_by_name(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("extra, b ,a\nx,2, 1 \n")
    table = read_table(path, ["a", "b"])
    assert table.cells(0) == {"a": "1", "b": "2"}
    assert table.text("a").tolist() == [" 1 "]  # as written; cells() strips


def test_short_and_long_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2\n1,2,3,4\n5,6,7\n")
    table = read_table(path, ["a", "c"])
    assert table.cells(0) == {"a": "1", "c": None}
    assert [(w.line, w.cells) for w in table.width_problems] == [(3, 4)]
    assert table.lines.tolist() == [2, 3, 4]


@pytest.mark.parametrize(
    "text, message",
    [("", "empty file"), ("\n\n", "empty file"), ("a,c\n1,2\n", "missing columns \\['b'\\]")],
)
def test_header_errors_name_file_and_line_1(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as info:
        read_table(path, ["a", "b"], error=AnnotationError)
    assert (info.value.file, info.value.line) == (str(path), 1)


def test_non_utf8_is_a_located_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n3,\xff\n")
    with pytest.raises(CellError) as info:
        read_table(path, ["a", "b"])
    assert info.value.line == 3


# ------------------------------------------------------------------ DL_info: fast == exact


def _one_by_one(path) -> tuple[list, list[Problem]]:
    """The per-row oracle: csv module, parse_row and check_lesion on each row in turn."""
    lesions, problems = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        line = reader.line_num
        for row in reader:
            line, end = line + 1, reader.line_num
            if not row or not any(c.strip() for c in row):
                line = end
                continue
            cells = {
                c: (row[header.index(c)].strip() if header.index(c) < len(row) else None)
                for c in COLUMNS
            }
            try:
                lesion = parse_row(cells, line - 2, file=str(path))
            except AnnotationError as exc:
                problems.append(Problem.from_error(exc))
            else:
                checked = check_lesion(lesion, file=str(path))
                problems.extend(checked)
                if not any(p.fatal for p in checked):  # load_lesions leaves such rows out
                    lesions.append(lesion)
            line = end
    return lesions, problems


def test_real_val_split_loads_exactly_like_the_row_parser(real_val_csv):
    table = load_lesions(real_val_csv)
    lesions, problems = _one_by_one(real_val_csv)
    assert table.lesions == lesions
    assert table.problems == problems


CORRUPTIONS = {
    "File_name": [" 000002_01_01_162.png", "000002_01_01_0162.png", "2_1_1_162.png", ""],
    "Patient_index": ["2.0", " 2 ", "2.5", "x", "", "1e0"],
    "Key_slice_index": ["163", "nan", "inf"],
    "Measurement_coordinates": ["1, 2, 3", "1e400, 2, 3, 4, 5, 6, 7, 8", '1"2', "a,b,c,d,e,f,g,h"],
    "Bounding_boxes": ["0, 0, 600, 600", "229.222, 256.228, 245.36, 273.594,", " 1, 2, 3, 4 "],
    "Lesion_diameters_Pixel_": ["7.76388, 9", "7.76388;6.77335", "NaN, 1"],
    "Normalized_lesion_location": ["1.5, 0.5, 0.5", "-0, 0, 0"],
    "Coarse_lesion_type": ["9", "-1", "2.0", "two"],
    "Possibly_noisy": ["1", "2", "0.0"],
    "Slice_range": ["156.5, 168", "170, 180", "156,168"],
    "Spacing_mm_px_": ["0, 0.8, 5", "0.8, 0.8, -5", "0.8,0.8,5,"],
    "Image_size": ["512", "512, 512.0", "0, 512"],
    "DICOM_windows": ["275, -175", "-175 , 275"],
    "Patient_gender": ["f", " F", "X", ""],
    "Patient_age": ["NaN", "", " nan ", "51.5", "old", "inf"],
    "Train_Val_Test": ["1", "4", " 2"],
}


def test_corrupted_rows_load_exactly_like_the_row_parser(real_val_csv, tmp_path):
    with open(real_val_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))[:400]
    rng = np.random.default_rng(7)
    columns = list(CORRUPTIONS)
    for i in range(0, len(rows), 2):  # every other row: one or two cells corrupted
        for column in rng.choice(columns, size=rng.integers(1, 3), replace=False):
            options = CORRUPTIONS[column]
            rows[i][column] = options[rng.integers(len(options))]
    path = tmp_path / "DL_info.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    table = load_lesions(path)
    lesions, problems = _one_by_one(path)
    assert len(problems) > 100 and len(lesions) > 200  # the corruptions did bite
    assert table.lesions == lesions
    assert table.problems == problems


# ------------------------------------------------------------------ predictions: fast == exact


def test_corrupted_predictions_read_exactly_like_the_row_collector(real_val_csv, tmp_path):
    from deeplesion.evaluation.froc import ground_truth
    from deeplesion.evaluation.predictions import _Collector, read_predictions

    table = load_lesions(real_val_csv)
    gt = ground_truth(table, "val")
    noisy = sorted(gt.other_file_names)[0]  # a key slice with only noisy lesions
    rng = np.random.default_rng(3)
    names = [*gt.file_names[:300], noisy, "000001_01_01_001.png", "x.png", " " + gt.file_names[0]]
    lines = ["file_name,x1,y1,x2,y2,score"]
    for _ in range(3000):
        x1, y1 = rng.uniform(1, 400, 2).round(2)
        cells = [str(rng.choice(names)), x1, y1, x1 + 20, y1 + 30, round(rng.random(), 4)]
        if rng.random() < 0.1:
            k = int(rng.integers(1, 6))
            cells[k] = str(rng.choice(["nan", "inf", "abc", "", " 5 ", "1e2", "-1"]))
        if rng.random() < 0.02:
            cells = cells[:5]
        lines.append(",".join(map(str, cells)))
    lines[40] += ",7"  # a row longer than the header
    path = tmp_path / "p.csv"
    path.write_text("\n".join(lines) + "\n")
    got = read_predictions(path, gt)

    oracle = _Collector(gt, str(path), strict=False)
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if line == 1:
                continue
            if len(row) > 6:
                oracle.problem(f"expected 6 cells, found {len(row)}", line, "", ",".join(row))
            elif len(row) < 6:
                oracle.problem("missing cell", line, "score", None)
            else:
                oracle.add(
                    row[0].strip(),
                    [c.strip() for c in row[1:]],
                    ["x1", "y1", "x2", "y2", "score"],
                    line,
                )
    want = oracle.result()
    assert len(want.problems) > 100 and len(want) > 1000
    assert [str(p) for p in got.problems] == [str(p) for p in want.problems]
    assert got.ignored_outside == want.ignored_outside > 0
    np.testing.assert_array_equal(got.image_index, want.image_index)
    np.testing.assert_array_equal(got.boxes_px1, want.boxes_px1)
    np.testing.assert_array_equal(got.scores, want.scores)


# ------------------------------------------------------------------ duplicates, comma counts


def test_duplicate_rows_are_found_like_a_pairwise_comparison(real_val_csv, tmp_path):
    """Oracle: every pair of rows compared cell for cell (stripped), in file order."""
    with open(real_val_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))[:60]
    rng = np.random.default_rng(3)
    extra = []
    for i in rng.choice(len(rows), size=30).tolist():
        row = dict(rows[i])
        change = rng.integers(4)
        if change == 1:  # the same lesion, another cell differs: not a duplicate
            row[str(rng.choice(["Patient_age", "Coarse_lesion_type", "Possibly_noisy"]))] = "1"
        elif change == 2:
            row["Patient_gender"] = f" {row['Patient_gender']} "  # equal once stripped
        extra.append(row)
    rows += extra
    path = tmp_path / "DL_info.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    expected = []
    for j, row in enumerate(rows):
        cells = [row[c].strip() for c in COLUMNS]
        first = next(i for i in range(j + 1) if [rows[i][c].strip() for c in COLUMNS] == cells)
        if first < j:
            expected.append((j + 2, f"duplicate of line {first + 2}"))
    found = [(p.line, p.message) for p in load_lesions(path).problems if "duplicate" in p.message]
    assert len(expected) > 10 and found == expected


def test_comma_counts_match_str_count():
    from deeplesion.data.parse import _comma_counts

    rng = np.random.default_rng(5)
    alphabet = list("0123456789., -é") + [","] * 4
    cells = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(500)]
    for sample in (cells, [], [""], ["a\nb,c", ",d"], [",", ",,"]):
        assert _comma_counts(sample).tolist() == [c.count(",") for c in sample]


def test_gc_paused_restores_the_collector_state():
    import gc

    from deeplesion.data.table import gc_paused

    assert gc.isenabled()
    with pytest.raises(KeyError), gc_paused():
        assert not gc.isenabled()
        raise KeyError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector the caller turned off stays off
    finally:
        gc.enable()
