"""Gallery, body map, HTML report, the review CLI and the demo step."""

import base64
import csv
import io
import re
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deeplesion.cli import main
from deeplesion.data.annotations import load_lesions
from deeplesion.demo import review_step as demo
from deeplesion.review.bodymap import body_map_figure, sample_lesions, write_body_map
from deeplesion.review.gallery import GalleryError, make_gallery, tile_letter, write_gallery
from deeplesion.review.render import LONG_AXIS_RGB
from deeplesion.review.report import build_report, write_report

LIVER_CSV = "NNProject_liver_image_dataset_info.csv"
TYPES = {
    "1": "bone",
    "2": "abdomen",
    "3": "mediastinum",
    "4": "liver",
    "5": "lung",
    "6": "kidney",
    "7": "soft tissue",
    "8": "pelvis",
}


def csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def locations_by_type(path):
    """Type name -> array of (x, z) straight from Normalized_lesion_location."""
    out = {}
    for row in csv_rows(path):
        x, _, z = (float(v) for v in row["Normalized_lesion_location"].split(","))
        name = TYPES.get(row["Coarse_lesion_type"].strip(), "unlabelled")
        out.setdefault(name, []).append((x, z))
    return {k: np.array(v) for k, v in out.items()}


def plotted_points(fig):
    """Legend label (without the count) -> plotted (x, z) offsets."""
    ax = fig.axes[0]
    return {
        c.get_label().rsplit(" (", 1)[0]: np.asarray(c.get_offsets())
        for c in ax.collections
        if not c.get_label().startswith("_")
    }


# --------------------------------------------------------------------------- body map


def test_body_map_of_real_val_is_anatomically_sensible(real_val_csv, tmp_path):
    table = load_lesions(real_val_csv)
    fig = body_map_figure(table)
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    assert top < bottom  # z grows toward the feet; the head (small z) is at the top
    points = plotted_points(fig)
    truth = locations_by_type(real_val_csv)
    assert set(points) == set(truth) == set(TYPES.values())
    for name, xz in truth.items():  # every lesion plotted where its row says
        got = points[name]
        assert len(got) == len(xz)
        order = lambda a: a[np.lexsort((a[:, 1], a[:, 0]))]  # noqa: E731
        assert np.allclose(order(got), order(xz))
    z = {name: np.median(xz[:, 1]) for name, xz in points.items()}
    x = {name: np.median(xz[:, 0]) for name, xz in points.items()}
    assert z["mediastinum"] < z["liver"] < z["pelvis"]
    assert z["lung"] < z["liver"] < z["kidney"] < z["pelvis"]
    assert z["lung"] < z["abdomen"] < z["pelvis"]
    assert max(z.values()) == z["pelvis"]
    assert x["liver"] < 0.5  # patient's right is the image's left
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"lung ({len(truth['lung'])})" in legend
    out = write_body_map(tmp_path / "map.png", table)
    assert Image.open(out).format == "PNG"
    write_body_map(tmp_path / "map.svg", table, fraction=0.15)
    assert b"<svg" in (tmp_path / "map.svg").read_bytes()[:1000]
    write_body_map(tmp_path / "map.pdf", table, fraction=0.15)
    assert (tmp_path / "map.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.pdf", "map.png", "map.svg"]
    with pytest.raises(ValueError, match="jpg"):
        write_body_map(tmp_path / "map.jpg", table)


def test_fraction_sampling_is_seeded(real_val_csv):
    table = load_lesions(real_val_csv)
    a = sample_lesions(table.lesions, 0.15, seed=3)
    b = sample_lesions(table.lesions, 0.15, seed=3)
    c = sample_lesions(table.lesions, 0.15, seed=4)
    assert len(a) == round(0.15 * 4889) and a == b and a != c
    assert len(set(id(l) for l in a)) == len(a)
    points = plotted_points(body_map_figure(table, fraction=0.15, seed=3))
    assert sum(len(v) for v in points.values()) == len(a)


def test_unlabelled_lesions_are_grey_and_optional(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    n_unlabelled = sum(
        r["Coarse_lesion_type"].strip() == "-1" for r in csv_rows(sample_root / "DL_info.csv")
    )
    assert n_unlabelled > 0
    fig = body_map_figure(table)
    grey = [c for c in fig.axes[0].collections if c.get_label().startswith("unlabelled")]
    assert len(grey) == 1 and len(grey[0].get_offsets()) == n_unlabelled
    r, g, b, _ = grey[0].get_facecolor()[0]
    assert r == g == b
    assert "unlabelled" not in plotted_points(body_map_figure(table, include_unlabelled=False))


def test_body_map_thumbnails(sample_root):
    from matplotlib.offsetbox import AnnotationBbox

    table = load_lesions(sample_root / "DL_info.csv")
    fig = body_map_figure(table, root=sample_root, thumbnails=5)
    boxes = [a for a in fig.axes[0].artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 5
    lesion_points = {(l.location_norm[0], l.location_norm[2]) for l in table}
    for box in boxes:
        assert tuple(box.xy) in lesion_points  # each leader line ends on a lesion
        assert box.xybox[0] < 0 or box.xybox[0] > 1  # thumbnail outside the map


# --------------------------------------------------------------------------- gallery


def test_tile_letters():
    assert [tile_letter(i) for i in (0, 1, 21, 25, 26, 27)] == ["a", "b", "v", "z", "aa", "ab"]


def test_gallery_groups_by_type(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    counts = Counter(
        TYPES[r["Coarse_lesion_type"].strip()]
        for r in csv_rows(sample_root / "DL_info.csv")
        if r["Coarse_lesion_type"].strip() != "-1"
    )
    image, entries = make_gallery(sample_root, table, per_type=2, seed=1, tile_px=64)
    got = Counter(e.lesion.type_name for e in entries)
    assert got == {name: min(2, n) for name, n in counts.items()}
    assert [e.letter for e in entries] == [tile_letter(i) for i in range(len(entries))]
    rows = [e.grid_row for e in entries]
    assert rows == sorted(rows) and len(set(rows)) == len(counts)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert (image == LONG_AXIS_RGB).all(axis=2).sum() >= len(entries)
    again, _ = make_gallery(sample_root, table, per_type=2, seed=1, tile_px=64)
    assert (again == image).all()


def test_gallery_without_images_is_an_error(sample_root, tmp_path):
    table = load_lesions(sample_root / "DL_info.csv")
    with pytest.raises(GalleryError):
        make_gallery(tmp_path, table)
    with pytest.raises(ValueError):  # GalleryError is also a ValueError
        write_gallery(tmp_path / "g.png", tmp_path, table)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- report


def images_in(html):
    srcs = re.findall(r'<img src="([^"]+)"', html)
    out = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        img.load()
        out.append(img)
    return out


def test_report_of_real_val(real_val_csv, tmp_path):
    path = write_report(real_val_csv, tmp_path)
    text = path.read_text()
    assert path.name == "report.html" and text.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing outside the page
    assert "<script" not in text and "<link" not in text
    images = images_in(text)
    assert len(images) >= 8  # type by split, 7 distributions, body map
    assert all(min(im.size) > 100 for im in images)
    cells = re.findall(r"<td>([^<]*)</td><td>([^<]*)</td>", text)
    counts = dict(cells)
    # facts of the val split (docs/dataset-facts.md)
    assert (
        counts["lesions"],
        counts["key slices"],
        counts["series"],
        counts["studies"],
        counts["patients"],
        counts["possibly noisy"],
    ) == ("4889", "4793", "2193", "1599", "703", "2")
    assert "Gallery" not in text


def test_report_with_images_has_a_gallery(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    text = build_report(table, root=sample_root)
    images = images_in(text)
    assert "<h2>Gallery</h2>" in text and "<h2>Key slices</h2>" in text
    rendered = [im for im in images if im.size == (512, 512) or im.size == (768, 768)]
    assert rendered  # annotated key slices at their own size
    n_rows = len(csv_rows(sample_root / "DL_info.csv"))
    assert f"<td>lesions</td><td>{n_rows}</td>" in text


# --------------------------------------------------------------------------- CLI, demo


def test_cli_render_flat_folder(real_liver_dir, tmp_path):
    names = ["002648_01_01_061.png", "003663_01_03_190.png"]
    result = CliRunner().invoke(
        main,
        [
            "render",
            str(real_liver_dir),
            "--csv",
            str(real_liver_dir / LIVER_CSV),
            "--out",
            str(tmp_path / "out"),
            "--files",
            ",".join(names),
            "--crops",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == names
    assert len(list((tmp_path / "out" / "crops").glob("*.png"))) == 2
    bad = CliRunner().invoke(
        main,
        [
            "render",
            str(real_liver_dir),
            "--csv",
            str(real_liver_dir / LIVER_CSV),
            "--out",
            str(tmp_path / "x"),
            "--files",
            "999999_01_01_001.png",
        ],
    )
    assert bad.exit_code == 2 and "999999_01_01_001.png" in bad.output
    bad = CliRunner().invoke(
        main,
        [
            "render",
            str(real_liver_dir),
            "--csv",
            str(real_liver_dir / LIVER_CSV),
            "--out",
            str(tmp_path / "x"),
            "--type",
            "brain",
        ],
    )
    assert bad.exit_code == 2 and "brain" in bad.output
    assert not (tmp_path / "x").exists()


def test_cli_render_filters_on_sample(sample_root, tmp_path):
    rows = csv_rows(sample_root / "DL_info.csv")
    want = {
        r["File_name"]
        for r in rows
        if r["Train_Val_Test"].strip() == "3" and r["Coarse_lesion_type"].strip() == "5"
    }
    result = CliRunner().invoke(
        main,
        [
            "render",
            str(sample_root),
            "--out",
            str(tmp_path),
            "--split",
            "test",
            "--type",
            "lung",
            "--window",
            "lung",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == want


def test_cli_gallery_bodymap_report(sample_root, tmp_path):
    run = CliRunner().invoke
    r = run(
        main,
        [
            "gallery",
            str(sample_root),
            "--out",
            str(tmp_path / "g.png"),
            "--per-type",
            "1",
            "--context",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "key slice only" not in r.output  # the release layout has context slices
    assert Image.open(tmp_path / "g.png").mode == "RGB"
    r = run(
        main,
        [
            "bodymap",
            str(sample_root / "DL_info.csv"),
            "--out",
            str(tmp_path / "m.svg"),
            "--root",
            str(sample_root),
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(main, ["bodymap", str(sample_root), "--out", str(tmp_path / "m.gif")])
    assert r.exit_code == 2 and "m.gif" in r.output
    r = run(
        main,
        ["report", str(sample_root), "--root", str(sample_root), "--out", str(tmp_path / "rep")],
    )
    assert r.exit_code == 0, r.output
    assert len(images_in((tmp_path / "rep" / "report.html").read_text())) >= 10


def test_demo_step(sample_root, tmp_path):
    paths = demo(sample_root, sample_root / "DL_info.csv", tmp_path)
    assert all(p.is_file() for p in paths)
    names = {p.name for p in paths}
    assert {"gallery.png", "bodymap.png", "report.html"} <= names
    key_slices = {r["File_name"] for r in csv_rows(sample_root / "DL_info.csv")}
    assert key_slices <= names
    assert not list(tmp_path.rglob("*.incomplete"))


# --------------------------------------------------------------------------- CLI checks


@pytest.mark.parametrize(
    "command,value", [("render", "4"), ("render", "0"), ("gallery", "2"), ("gallery", "-1")]
)
def test_cli_even_context_is_rejected_before_any_work(sample_root, tmp_path, command, value):
    out = tmp_path / ("k2" if command == "render" else "g.png")
    args = [command, str(sample_root), "--out", str(out), "--context", value]
    r = CliRunner().invoke(main, args + (["--crops"] if command == "render" else []))
    assert r.exit_code == 2, r.output
    assert "--context" in r.output and "odd" in r.output and value in r.output
    assert not out.exists()


def test_cli_render_help_lists_every_window_preset():
    from deeplesion.data.windowing import WINDOW_PRESETS

    r = CliRunner().invoke(main, ["render", "--help"], terminal_width=200, max_content_width=200)
    assert r.exit_code == 0, r.output
    words = set(re.findall(r"[\w-]+", r.output))
    assert {"dicom", *WINDOW_PRESETS} <= words


def test_cli_render_counts_key_slices_and_crops_and_hints_overwrite(sample_root, tmp_path):
    rows = csv_rows(sample_root / "DL_info.csv")
    names = sorted({r["File_name"] for r in rows})[:2]
    n_crops = sum(r["File_name"] in names for r in rows)  # one crop per lesion row
    out = tmp_path / "k"
    args = ["render", str(sample_root), "--out", str(out), "--files", ",".join(names), "--crops"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    assert "2 key slices written, 0 already there" in text
    assert f"{n_crops} crops written, 0 already there" in text
    assert "--overwrite" not in text
    assert len(list((out / "crops").glob("*.png"))) == n_crops
    before = np.asarray(Image.open(out / names[0]))
    again = CliRunner().invoke(main, args + ["--window", "lung"])
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "0 key slices written, 2 already there" in text
    assert f"0 crops written, {n_crops} already there" in text
    assert f"{2 + n_crops} kept; pass --overwrite to redraw them" in text
    assert (np.asarray(Image.open(out / names[0])) == before).all()  # kept as it was
    redraw = CliRunner().invoke(main, args + ["--window", "lung", "--overwrite"])
    assert redraw.exit_code == 0, redraw.output
    assert "2 key slices written" in redraw.output and "kept" not in redraw.output
    assert (np.asarray(Image.open(out / names[0])) != before).any()


def test_cli_bodymap_says_how_many_lesions_are_plotted(real_val_csv, tmp_path):
    n_rows = len(csv_rows(real_val_csv))
    expected = round(0.15 * n_rows)  # sample_lesions draws round(fraction * n)
    r = CliRunner().invoke(
        main,
        ["bodymap", str(real_val_csv), "--out", str(tmp_path / "bm.svg"), "--fraction", "0.15"],
    )
    assert r.exit_code == 0, r.output
    assert f"{expected} of {n_rows} lesions plotted" in " ".join(r.output.split())
    svg = (tmp_path / "bm.svg").read_text()
    assert f"{expected} of {n_rows} lesions" in svg  # the figure's title says the same
    r = CliRunner().invoke(main, ["bodymap", str(real_val_csv), "--out", str(tmp_path / "all.png")])
    assert r.exit_code == 0, r.output
    assert f"{n_rows} lesions plotted" in r.output and " of " not in r.output


def test_gallery_of_a_flat_folder_uses_single_slice_tiles(real_liver_dir, tmp_path):
    """A flat folder holds key slices only: --context 3 cannot show neighbours, so the
    tiles (and the whole montage) are those of --context 1, and the CLI says so once."""
    run = CliRunner().invoke
    base = [
        "gallery",
        str(real_liver_dir),
        "--csv",
        str(real_liver_dir / LIVER_CSV),
        "--per-type",
        "3",
        "--tile",
        "64",
    ]
    one = run(main, base + ["--out", str(tmp_path / "one.png")])
    assert one.exit_code == 0, one.output
    assert "key slice only" not in one.output
    three = run(main, base + ["--out", str(tmp_path / "three.png"), "--context", "3"])
    assert three.exit_code == 0, three.output
    assert " ".join(three.output.split()).count("3 of 3 tiles show the key slice only") == 1
    a = np.asarray(Image.open(tmp_path / "one.png"))
    b = np.asarray(Image.open(tmp_path / "three.png"))
    assert a.shape == b.shape and (a == b).all()
    _, entries = make_gallery(
        real_liver_dir,
        load_lesions(real_liver_dir / LIVER_CSV),
        per_type=3,
        tile_px=64,
        context_slices=3,
    )
    assert [e.n_slices for e in entries] == [1, 1, 1]
    text = build_report(load_lesions(real_liver_dir / LIVER_CSV), root=real_liver_dir)
    assert "context slices not found" in text and "-2, 0, +2 mm" not in text


def test_gallery_with_context_in_the_release_layout(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    image, entries = make_gallery(sample_root, table, per_type=1, tile_px=32, context_slices=3)
    assert entries and all(e.n_slices == 3 for e in entries)
    single, _ = make_gallery(sample_root, table, per_type=1, tile_px=32)
    assert image.shape[0] == single.shape[0] and image.shape[1] > single.shape[1]
