"""LesaNet tags: complete loading, fingerprint-guarded join on row indexes, ontology queries."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from deeplesion.data.annotations import OFFICIAL_ROWS, load_lesions, write_dl_info
from deeplesion.data.ontology import UnknownTagError
from deeplesion.data.sample import sample_lesions
from deeplesion.data.tags import (
    LesionTags,
    TaggedTable,
    join_tags,
    load_lesanet,
    tag_label,
    tags_for_lesion,
)
from deeplesion.errors import DeepLesionError, FingerprintError

pytest.importorskip("openpyxl")


@pytest.fixture(scope="module")
def lesanet_dir(real_data: Path) -> Path:
    return real_data / "rsummers11__CADLab" / "LesaNet" / "program_data"


@pytest.fixture(scope="module")
def raw_json(lesanet_dir: Path) -> dict:
    return json.loads((lesanet_dir / "text_mined_labels_171_and_split.json").read_text())


@pytest.fixture(scope="module")
def lesanet(lesanet_dir: Path):
    return load_lesanet(lesanet_dir)


def test_files_load_completely(lesanet, raw_json):
    labels = lesanet.labels
    assert len(labels.terms) == 171
    assert labels.counts() == {"train": 20266, "val": 1976, "test": 1879}
    assert len(lesanet.hand_labeled) == 500
    assert all(0 <= h.row_index < OFFICIAL_ROWS for h in lesanet.hand_labeled)
    assert max(labels.by_row) < OFFICIAL_ROWS  # 0-based row indexes of the full file
    # every term of the 171 is in the ontology, which knows its relations
    assert set(labels.terms) <= set(lesanet.ontology.terms)
    # independent recount from the raw JSON: lesions with 'liver' relevant in train
    liver = raw_json["term_list"].index("liver")
    expected = sum(liver in entry for entry in raw_json["train_relevant_labels"])
    got = sum("liver" in t.relevant for t in labels.by_row.values() if t.split == "train")
    assert got == expected > 0


def test_join_refuses_val_split(real_val_csv, lesanet):
    with pytest.raises(FingerprintError) as info:
        join_tags(real_val_csv, lesanet)
    assert isinstance(info.value, DeepLesionError) and isinstance(info.value, ValueError)
    assert str(real_val_csv) in str(info.value) and "official" in str(info.value)


def _full_format_table(path: Path, corrupt_row: int) -> None:
    """32,735 rows; row i belongs to patient i + 1, so each row says its own index."""
    template = sample_lesions()[0][0]
    rows = [
        replace(
            template,
            row_index=i,
            patient_index=i + 1,
            study_index=1,
            series_id=1,
            file_name=f"{i + 1:06d}_01_01_{template.key_slice_index:03d}.png",
        )
        for i in range(OFFICIAL_ROWS)
    ]
    write_dl_info(rows, path)
    lines = path.read_text().splitlines(keepends=True)
    # Break one row (line = row + 2): it fails to parse, and nothing after it may shift.
    lines[corrupt_row + 1] = lines[corrupt_row + 1].replace(",F,", ",X,").replace(",M,", ",X,")
    path.write_text("".join(lines))


def test_join_puts_each_tag_on_its_row(tmp_path, lesanet, raw_json):
    csv_path = tmp_path / "DL_info.csv"
    corrupt = raw_json["train_lesion_idxs"][5]
    _full_format_table(csv_path, corrupt)
    with pytest.raises(FingerprintError):
        join_tags(csv_path, lesanet)  # not the official file: refused without override
    tagged = join_tags(csv_path, lesanet, override_fingerprint=True)
    assert not tagged.official
    assert len(tagged.table) == OFFICIAL_ROWS - 1
    assert tagged.unjoined_rows == [corrupt]
    by_row = {l.row_index: l for l in tagged.table}
    terms = raw_json["term_list"]
    checked = 0
    for split in ("train", "val", "test"):
        idxs = raw_json[f"{split}_lesion_idxs"]
        picks = list(range(0, len(idxs), max(1, len(idxs) // 40))) + [len(idxs) - 1]
        for pos in picks:
            row = idxs[pos]
            if row == corrupt:
                continue
            lesion = by_row[row]
            assert lesion.patient_index == row + 1  # the row we planted at that index
            expected = {terms[t] for t in raw_json[f"{split}_relevant_labels"][pos]}
            assert set(tags_for_lesion(tagged, lesion)) == expected
            uncertain = {terms[t] for t in raw_json[f"{split}_uncertain_labels"][pos]}
            assert tagged.tags_of(lesion).uncertain == uncertain
            checked += 1
    assert checked > 100
    for h in lesanet.hand_labeled[:20]:
        if h.row_index != corrupt:
            assert tags_for_lesion(tagged, by_row[h.row_index], source="hand") == tuple(
                sorted(set(h.terms))
            )
    # Filter: 'liver' lesions are exactly the tagged rows whose relevant list holds
    # 'liver' or a term below it ('liver mass', ...), read straight from the JSON.
    query = lesanet.expand("liver")
    assert "liver mass" in query
    wanted = {terms.index(t) for t in query if t in terms}
    expected_rows = {
        r
        for s in ("train", "val", "test")
        for r, labels in zip(raw_json[f"{s}_lesion_idxs"], raw_json[f"{s}_relevant_labels"])
        if wanted & set(labels) and r != corrupt
    }
    found = {l.row_index for l in tagged.filter([lesanet.expand("liver")])}
    assert found == expected_rows


def test_parent_query_finds_children(lesanet):
    onto = lesanet.ontology
    lung = lesanet.expand("lung")
    assert {"lung", "right lower lobe", "left lung", "lung nodule"} <= lung
    assert "liver" not in lung
    assert lesanet.expand("hepatic") >= {"liver"}  # synonym
    with pytest.raises(UnknownTagError):
        lesanet.expand("no such tag")
    template = sample_lesions()[0][0]
    a = replace(template, row_index=0)
    b = replace(template, row_index=1)
    table = type("T", (), {"lesions": [a, b]})()
    tagged = TaggedTable(
        table,
        {
            0: LesionTags(0, "train", frozenset({"right lower lobe"})),
            1: LesionTags(1, "train", frozenset({"liver"})),
        },
        {},
        False,
        [],
    )
    assert tagged.filter([lung]) == [a]
    assert tagged.filter([lung, lesanet.expand("liver")]) == []
    label = tag_label({"chest", "lung", "right lower lobe", "nodule"}, onto)
    assert "right lower lobe" in label and "lung," not in label and "chest" not in label


def test_load_lesions_of_corrupted_table_keeps_indexes(tmp_path):
    """The join relies on load_lesions never renumbering rows after a bad one."""
    template = sample_lesions()[0][0]
    rows = [
        replace(
            template,
            row_index=i,
            patient_index=i + 1,
            file_name=f"{i + 1:06d}_01_01_{template.key_slice_index:03d}.png",
        )
        for i in range(5)
    ]
    path = tmp_path / "DL_info.csv"
    write_dl_info(rows, path)
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",F,", ",X,").replace(",M,", ",X,")
    path.write_text("".join(lines))
    table = load_lesions(path)
    assert [(l.row_index, l.patient_index) for l in table] == [(0, 1), (1, 2), (3, 4), (4, 5)]
