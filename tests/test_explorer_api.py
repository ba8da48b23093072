"""The explorer's HTTP API (Starlette TestClient): answers checked against pandas, Pillow and
numpy computations made here, bad parameters, path traversal, nothing written."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient

from deeplesion.explorer.server import open_explorer

TYPE_NAMES = {
    -1: "unlabelled",
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}


def _frame(csv: Path) -> pd.DataFrame:
    """The CSV read with pandas alone: long/short diameters in mm, slice interval."""
    df = pd.read_csv(csv)
    diam = df["Lesion_diameters_Pixel_"].str.split(",", expand=True).astype(float)
    spacing = df["Spacing_mm_px_"].str.split(",", expand=True).astype(float)
    df["long_mm"] = diam[0] * spacing[0]
    df["short_mm"] = diam[1] * spacing[0]
    df["interval_mm"] = spacing[2]
    df["type"] = df["Coarse_lesion_type"].map(TYPE_NAMES)
    df["split"] = df["Train_Val_Test"].map({1: "train", 2: "val", 3: "test"})
    df["row_index"] = np.arange(len(df))
    return df


def _window(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """The Key_slices formula written out here: min(255, max(0, (HU - A) / (B - A) * 255))."""
    hu = raw.astype(np.int64) - 32768
    return np.floor(np.clip((hu - low) / (high - low) * 255.0, 0, 255)).astype(np.uint8)


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


@pytest.fixture(scope="module")
def client(sample_root):
    return TestClient(open_explorer(sample_root).app())


@pytest.fixture(scope="module")
def frame(sample_root):
    return _frame(sample_root / "DL_info.csv")


# ----------------------------------------------------------------------------- list


@pytest.mark.parametrize("type_name", list(TYPE_NAMES.values()))
def test_type_filter_counts_match_pandas(client, frame, type_name):
    body = client.get("/api/lesions", params={"type": type_name}).json()
    expected = frame[frame["type"] == type_name]
    assert body["total"] == len(expected)
    assert [i["row_index"] for i in body["items"]] == list(expected["row_index"])
    assert all(i["type"] == type_name for i in body["items"])


def test_combined_filters_match_pandas(client, frame):
    cases = [
        ({"split": "test"}, frame["split"] == "test"),
        ({"min_long_mm": "20", "max_long_mm": "26"}, frame["long_mm"].between(20, 26)),
        ({"min_interval_mm": "2", "max_interval_mm": "2"}, frame["interval_mm"] == 2),
        ({"patient": "1"}, frame["Patient_index"] == 1),
        ({"noisy": "1"}, frame["Possibly_noisy"] == 1),
        ({"q": "_02_0"}, frame["File_name"].str.contains("_02_0")),
        (
            {"split": "val", "min_long_mm": "18"},
            (frame["split"] == "val") & (frame["long_mm"] >= 18),
        ),
    ]
    for params, mask in cases:
        body = client.get("/api/lesions", params=params).json()
        assert body["total"] == int(mask.sum()), params
        assert [i["row_index"] for i in body["items"]] == list(frame.loc[mask, "row_index"])
        assert body["counts"]["patients"] == frame.loc[mask, "Patient_index"].nunique()


def test_item_fields(client, frame):
    item = client.get("/api/lesions", params={"limit": 1, "offset": 7}).json()["items"][0]
    row = frame.iloc[7]
    assert item["file_name"] == row["File_name"]
    assert (item["patient"], item["study"], item["series"], item["key_slice"]) == (
        row["Patient_index"],
        row["Study_index"],
        row["Series_ID"],
        row["Key_slice_index"],
    )
    assert item["type"] == row["type"] and item["split"] == row["split"]
    assert item["long_mm"] == pytest.approx(row["long_mm"], abs=0.01)
    assert item["short_mm"] == pytest.approx(row["short_mm"], abs=0.01)
    assert item["noisy"] is bool(row["Possibly_noisy"])


def test_sort_and_paging(client, frame):
    full = client.get("/api/lesions", params={"sort": "-long_mm"}).json()["items"]
    expected = frame.sort_values(["long_mm", "row_index"], ascending=[False, True], kind="stable")
    # equal diameters keep row order; pandas cannot mix directions in one stable pass, so
    # compare the diameters and the set of rows
    assert [round(i["long_mm"], 2) for i in full] == list(expected["long_mm"].round(2))
    pages = []
    for offset in range(0, len(frame), 5):
        pages += client.get(
            "/api/lesions", params={"sort": "-long_mm", "offset": offset, "limit": 5}
        ).json()["items"]
    assert pages == full
    by_name = client.get("/api/lesions", params={"sort": "file_name"}).json()["items"]
    assert [i["file_name"] for i in by_name] == sorted(frame["File_name"])


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("split=validation", "split"),
        ("type=tumour", "type"),
        ("min_long_mm=abc", "min_long_mm"),
        ("max_long_mm=-3", "max_long_mm"),
        ("min_long_mm=30&max_long_mm=10", "min_long_mm"),
        ("min_interval_mm=nan", "min_interval_mm"),
        ("patient=x", "patient"),
        ("noisy=2", "noisy"),
        ("offset=-1", "offset"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("sort=age", "sort"),
        ("colour=red", "colour"),
        ("tag=liver", "tag"),  # no LesaNet files given
    ],
)
def test_bad_list_parameters_are_400_naming_them(client, query, parameter):
    r = client.get(f"/api/lesions?{query}")
    assert r.status_code == 400
    assert r.json()["parameter"] == parameter
    assert parameter in r.json()["error"]


# ----------------------------------------------------------------------------- slices


def test_slice_png_equals_windowed_real_slice(real_liver_dir):
    csv = real_liver_dir / "NNProject_liver_image_dataset_info.csv"
    client = TestClient(open_explorer(real_liver_dir, csv_path=csv).app())
    rows = pd.read_csv(csv)
    for _, row in rows.head(3).iterrows():
        name = row["File_name"]
        raw = np.asarray(Image.open(real_liver_dir / "Images_png" / name))
        low, high = (float(v) for v in row["DICOM_windows"].split(","))
        got = _png(client.get(f"/api/slice/{name}", params={"window": "dicom"}))
        assert got.shape == raw.shape
        np.testing.assert_array_equal(got, _window(raw, low, high))
        # lung: width 1500, level -600
        lung = _png(client.get(f"/api/slice/{name}", params={"window": "lung"}))
        np.testing.assert_array_equal(lung, _window(raw, -1350, 150))
        custom = _png(client.get(f"/api/slice/{name}", params={"window": "-100,300"}))
        np.testing.assert_array_equal(custom, _window(raw, -100, 300))


def test_overlay_draws_like_render(real_liver_dir):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.review.render import render_key_slice

    csv = real_liver_dir / "NNProject_liver_image_dataset_info.csv"
    client = TestClient(open_explorer(real_liver_dir, csv_path=csv).app())
    lesion = load_lesions(csv).lesions[0]
    got = _png(client.get(f"/api/slice/{lesion.file_name}", params={"overlay": "1"}))
    np.testing.assert_array_equal(got, render_key_slice(real_liver_dir, [lesion]))
    # RECIST end point (x, y) 1-based -> array [y - 1, x - 1], drawn in the long-axis red
    x, y = lesion.recist_px1[0], lesion.recist_px1[1]
    assert tuple(got[int(np.floor(y - 0.5)), int(np.floor(x - 0.5))]) == (255, 48, 48)
    plain = _png(client.get(f"/api/slice/{lesion.file_name}", params={"overlay": "0"}))
    assert plain.ndim == 2  # grey: no marks


def test_any_slice_of_a_series_and_hu(sample_root, client):
    from deeplesion.data.annotations import load_lesions

    lesion = load_lesions(sample_root / "DL_info.csv").lesions[1]
    first = lesion.slice_range[0]
    name = f"{lesion.series_folder}_{first:03d}.png"
    raw = np.asarray(
        Image.open(sample_root / "Images_png" / lesion.series_folder / f"{first:03d}.png")
    )
    low, high = lesion.dicom_window_hu
    np.testing.assert_array_equal(_png(client.get(f"/api/slice/{name}")), _window(raw, low, high))
    r = client.get(f"/api/hu/{name}")
    assert r.status_code == 200
    hu = np.frombuffer(r.content, dtype="<i2").reshape(int(r.headers["x-rows"]), -1)
    np.testing.assert_array_equal(hu, raw.astype(np.int64) - 32768)


def test_slice_parameters(client):
    name = "000001_01_01_010.png"
    for query, parameter in [
        ("window=sunset", "window"),
        ("window=300,100", "window"),
        ("overlay=yes", "overlay"),
        ("zoom=2", "zoom"),
    ]:
        r = client.get(f"/api/slice/{name}?{query}")
        assert r.status_code == 400, query
        assert r.json()["parameter"] == parameter


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2FDL_info.csv",
        "000001_01_01_010.png%2F..%2F..%2FDL_info.csv",
        "..%5C..%5CDL_info.csv",
        "000001_01_01_..png",
        "000001_01_01_010.png%00",
        "DL_info.csv",
        "000001_01_01_010.PNG.txt",
        "%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_is_refused(client, name):
    for endpoint in ("slice", "hu"):
        r = client.get(f"/api/{endpoint}/{name}")
        assert r.status_code in (400, 404), (endpoint, name, r.status_code)
        assert r.headers["content-type"] != "image/png"
        assert b"File_name" not in r.content and b"root:" not in r.content


def test_name_pattern_is_checked_before_the_disk():
    from deeplesion.explorer.catalog import ParameterError
    from deeplesion.explorer.images import check_name

    for bad in ["../000001_01_01_010.png", "a/000001_01_01_010.png", "x\\y.png", "1_1_1_1.png"]:
        with pytest.raises(ParameterError):
            check_name(bad)
    assert check_name("000089_01_01_037.png").slice_number == 37


def test_links_out_of_root_are_not_followed(tmp_path, sample_root):
    root = tmp_path / "root"
    folder = root / "Images_png" / "000001_01_01"
    folder.mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes((sample_root / "Images_png/000001_01_01/010.png").read_bytes())
    os.symlink(outside, folder / "010.png")
    (root / "DL_info.csv").write_bytes((sample_root / "DL_info.csv").read_bytes())
    client = TestClient(open_explorer(root).app())
    assert client.get("/api/slice/000001_01_01_010.png").status_code == 404
    assert client.get("/api/hu/000001_01_01_010.png").status_code == 404


def test_unknown_things_are_404(client):
    assert client.get("/api/slice/000001_01_01_999.png").status_code == 404
    assert client.get("/api/slice/999999_01_01_001.png").status_code == 404
    assert client.get("/api/lesion/100000").status_code == 404
    assert client.get("/api/patient/4242").status_code == 404
    assert client.get("/api/similar/100000").status_code == 404
    assert client.get("/api/crop/100000").status_code == 404
    r = client.get("/api/lesion/abc")
    assert r.status_code == 400 and r.json()["parameter"] == "row_index"


def test_only_get(client):
    assert client.post("/api/lesions").status_code == 405
    assert client.delete("/api/slice/000001_01_01_010.png").status_code == 405


# ----------------------------------------------------------------------------- lesion


def test_lesion_detail(client, sample_root, frame):
    from deeplesion.analysis.tracks import link_patient
    from deeplesion.data.annotations import load_lesions

    table = load_lesions(sample_root / "DL_info.csv")
    row = 7  # 000002_01_01_012.png carries two lesions
    body = client.get(f"/api/lesion/{row}").json()
    lesion = table.lesions[row]
    assert body["lesion"]["file_name"] == frame.loc[row, "File_name"]
    first, last = (int(v) for v in frame.loc[row, "Slice_range"].split(","))
    key = frame.loc[row, "Key_slice_index"]
    interval = frame.loc[row, "interval_mm"]
    assert [s["number"] for s in body["slices"]] == list(range(first, last + 1))
    for s in body["slices"]:
        path = sample_root / "Images_png" / lesion.series_folder / f"{s['number']:03d}.png"
        assert s["present"] == path.is_file()
        assert s["offset_mm"] == pytest.approx((s["number"] - key) * interval)
        assert s["key"] == (s["number"] == key)
    others = frame[(frame["File_name"] == frame.loc[row, "File_name"]) & (frame.index != row)]
    assert [o["row_index"] for o in body["same_slice"]] == list(others["row_index"])
    tracks = link_patient([l for l in table.lesions if l.patient_index == lesion.patient_index])
    mine = next(t for t in tracks if row in t.row_indexes)
    assert [o["row_index"] for o in body["track"]["observations"]] == mine.row_indexes
    m = body["lesion"]["measurement"]
    x11, y11, x12, y12 = (
        float(v) for v in frame.loc[row, "Measurement_coordinates"].split(",")[:4]
    )
    sx = float(frame.loc[row, "Spacing_mm_px_"].split(",")[0])
    assert m["long_px"] == pytest.approx(np.hypot(x12 - x11, y12 - y11))
    assert m["long_mm"] == pytest.approx(np.hypot(x12 - x11, y12 - y11) * sx)


def test_patient_view(client, sample_root, frame):
    from deeplesion.analysis.growth import recist_responses
    from deeplesion.analysis.tracks import link_patient
    from deeplesion.data.annotations import load_lesions

    body = client.get("/api/patient/1").json()
    mine = frame[frame["Patient_index"] == 1]
    assert [s["study"] for s in body["studies"]] == sorted(mine["Study_index"].unique())
    for s in body["studies"]:
        assert {i["row_index"] for i in s["lesions"]} == set(
            mine.loc[mine["Study_index"] == s["study"], "row_index"]
        )
    lesions = [l for l in load_lesions(sample_root / "DL_info.csv") if l.patient_index == 1]
    tracks = link_patient(lesions)
    assert [[o["row_index"] for o in t["observations"]] for t in body["tracks"]] == [
        t.row_indexes for t in tracks
    ]
    assert [(r["study"], r["category"]) for r in body["responses"]] == [
        (r.study_index, r.category) for r in recist_responses(tracks)
    ]


def test_similar_lesions(client, sample_root):
    from deeplesion.analysis.retrieval import LesionIndex
    from deeplesion.data.annotations import load_lesions

    table = load_lesions(sample_root / "DL_info.csv")
    body = client.get("/api/similar/1", params={"k": 4}).json()
    expected = LesionIndex.build(table.lesions).similar(1, 4)
    assert [i["row_index"] for i in body["items"]] == [n.lesion.row_index for n in expected]
    assert all(i["patient"] != 1 for i in body["items"])
    assert client.get("/api/similar/1", params={"k": 0}).status_code == 400


def test_crop(client):
    tile = _png(client.get("/api/crop/1", params={"tile": 96}))
    assert tile.shape == (96, 96, 3)
    # the long axis is drawn in red somewhere in the tile
    assert np.all(tile == (255, 48, 48), axis=2).any()
    assert client.get("/api/crop/1", params={"tile": 5000}).status_code == 400


def test_bodymap_points(client, frame):
    body = client.get("/api/bodymap", params={"split": "val"}).json()
    val = frame[frame["split"] == "val"]
    assert body["total"] == len(val)
    loc = val["Normalized_lesion_location"].str.split(",", expand=True).astype(float)
    assert [p[0] for p in body["points"]] == list(val["row_index"])
    np.testing.assert_allclose([p[1] for p in body["points"]], loc[0])
    np.testing.assert_allclose([p[2] for p in body["points"]], loc[2])
    assert set(body["colours"]) >= set(TYPE_NAMES.values())


def test_meta_and_page(client):
    meta = client.get("/api/meta").json()
    assert meta["rows"] == 21 and meta["images"] is True
    assert meta["windows"]["lung"] == [-1350.0, 150.0]
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


# ----------------------------------------------------------------------------- no images


def test_table_without_images(tmp_path, real_val_csv):
    root = tmp_path / "empty"
    root.mkdir()
    explorer = open_explorer(root, csv_path=real_val_csv)
    assert any("no images" in note for note in explorer.notes)
    client = TestClient(explorer.app())
    assert client.get("/api/meta").json()["images"] is False
    frame = _frame(real_val_csv)
    body = client.get("/api/lesions", params={"type": "liver"}).json()
    assert body["total"] == int((frame["type"] == "liver").sum())
    detail = client.get("/api/lesion/0").json()
    assert detail["key_present"] is False
    assert not any(s["present"] for s in detail["slices"])
    assert client.get(f"/api/slice/{frame.loc[0, 'File_name']}").status_code == 404
    similar = client.get("/api/similar/0").json()["items"]
    assert similar and not any(i["image"] for i in similar)


def test_nothing_is_written(tmp_path, sample_root):
    root = tmp_path / "root"
    import shutil

    shutil.copytree(sample_root, root)

    def snapshot():
        return sorted(
            (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")
        )

    before = snapshot()
    client = TestClient(open_explorer(root).app())
    for url in (
        "/api/meta",
        "/api/lesions?sort=-long_mm",
        "/api/lesion/3",
        "/api/patient/2",
        "/api/similar/3",
        "/api/bodymap",
        "/api/slice/000001_01_01_010.png?overlay=1",
        "/api/hu/000001_01_01_010.png",
        "/api/crop/3",
        "/api/slice/..%2F..%2Fx.png",
    ):
        client.get(url)
    assert snapshot() == before


def test_dicom_window_of_a_series_without_rows(tmp_path, real_series_dir):
    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / "000062_01_01").symlink_to(real_series_dir)
    csv = tmp_path / "empty.csv"
    import csv as csv_module

    from deeplesion.data.annotations import COLUMNS

    with open(csv, "w", newline="") as fh:
        csv_module.writer(fh).writerow(COLUMNS)
    client = TestClient(open_explorer(root, csv_path=csv).app())
    # the folder is a link to a folder outside ROOT: Images_png itself is inside, the
    # folder's files are not, so they are refused
    assert client.get("/api/slice/000062_01_01_060.png?window=-160,240").status_code == 404
    # with ROOT/Images_png itself a link, the release layout is served
    root2 = tmp_path / "root2"
    root2.mkdir()
    (root2 / "Images_png").symlink_to(real_series_dir.parent)
    client = TestClient(open_explorer(root2, csv_path=csv).app())
    raw = np.asarray(Image.open(real_series_dir / "060.png"))
    got = _png(client.get("/api/slice/000062_01_01_060.png?window=-160,240"))
    np.testing.assert_array_equal(got, _window(raw, -160, 240))
    r = client.get("/api/slice/000062_01_01_060.png")
    assert r.status_code == 400 and r.json()["parameter"] == "window"


# ----------------------------------------------------------------------------- tags


def test_tag_filter(tmp_path, real_val_csv, real_data):
    """With --override-fingerprint the val split's rows get the tags of the same row
    numbers (wrong lesions, right mechanics): the filter must match the JSON."""
    import json

    from deeplesion.data.tags import load_lesanet

    lesanet = real_data / "rsummers11__CADLab" / "LesaNet" / "program_data"
    root = tmp_path / "root"
    root.mkdir()
    refused = open_explorer(root, csv_path=real_val_csv, lesanet=lesanet)
    assert refused.catalog.tagged is None and "not the official" in refused.notes[0]
    explorer = open_explorer(
        root, csv_path=real_val_csv, lesanet=lesanet, override_fingerprint=True
    )
    client = TestClient(explorer.app())
    assert client.get("/api/meta").json()["tags"] is True
    data = json.loads((lesanet / "text_mined_labels_171_and_split.json").read_text())
    terms = data["term_list"]
    relevant: dict[int, set[str]] = {}
    for split in ("train", "val", "test"):
        for row, labels in zip(data[f"{split}_lesion_idxs"], data[f"{split}_relevant_labels"]):
            relevant[row] = {terms[i] for i in labels}
    rows = len(pd.read_csv(real_val_csv))
    lesa = load_lesanet(lesanet)
    for query in (["liver"], ["lung", "nodule"], ["kidney"]):
        wanted = [lesa.expand(q) for q in query]
        expected = [
            r for r in range(rows) if r in relevant and all(relevant[r] & w for w in wanted)
        ]
        body = client.get("/api/lesions", params=[("tag", q) for q in query] + [("limit", 1000)])
        assert body.json()["total"] == len(expected) > 0, query
        assert [i["row_index"] for i in body.json()["items"]] == expected[:1000]
    r = client.get("/api/lesions", params={"tag": "no such term"})
    assert r.status_code == 400 and r.json()["parameter"] == "tag"
    assert len(client.get("/api/tags").json()["terms"]) == 171
    assert client.get("/api/lesion/0").json()["lesion"]["tags"] == sorted(relevant.get(0, ()))


# ----------------------------------------------------------------------------- store


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_slices_from_a_store(tmp_path, sample_root, fmt):
    """With a store, slices are served from it: identical PNGs, even with no PNG under ROOT."""
    pytest.importorskip("zarr")
    from deeplesion.convert.store import build_store
    from deeplesion.data.store import open_store

    out = tmp_path / "store"
    build_store(sample_root, out, fmt=fmt)
    empty = tmp_path / "empty"
    empty.mkdir()
    from_store = TestClient(
        open_explorer(empty, csv_path=sample_root / "DL_info.csv", source=open_store(out)).app()
    )
    from_png = TestClient(open_explorer(sample_root).app())
    assert from_store.get("/api/meta").json()["source"] == "store"
    for name in ("000001_01_01_032.png", "000001_01_01_026.png", "000002_01_01_012.png"):
        for query in ("", "?window=lung&overlay=1"):
            a = from_store.get(f"/api/slice/{name}{query}")
            b = from_png.get(f"/api/slice/{name}{query}")
            assert a.status_code == 200, a.text
            np.testing.assert_array_equal(_png(a), _png(b))
    detail = from_store.get("/api/lesion/1").json()
    assert detail["key_present"] and all(s["present"] for s in detail["slices"])
    # a slice outside every stored Slice_range (and no PNG under the empty ROOT): missing
    assert from_store.get("/api/slice/000001_01_01_001.png").status_code == 404
