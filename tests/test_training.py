"""Datasets, COCO export and the baseline detector.

Expected tensors are recomputed here from the rules in the preprocessing notes (window,
body crop, spacing scale, 2 mm context with linear interpolation and edge stepping),
with plain numpy, independently of ``deeplesion.training``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplesion.data.annotations import Lesion, load_lesions, write_dl_info
from deeplesion.training.coco import export_coco, read_coco, write_coco

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
torch.set_num_threads(1)

from click.testing import CliRunner  # noqa: E402

from deeplesion.cli import main  # noqa: E402
from deeplesion.training.datasets import (  # noqa: E402
    KeySliceDetectionDataset,
    LesionPatchDataset,
    collate_detection,
)
from deeplesion.training.presets import preset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- reference


def _raw(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img).astype(np.float64)


def _opening(mask: np.ndarray, k: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view as windows

    h = k // 2
    padded = np.pad(mask, h, constant_values=False)
    eroded = windows(padded, (k, k)).all(axis=(-1, -2))
    return windows(np.pad(eroded, h, constant_values=False), (k, k)).any(axis=(-1, -2))


def _resize(img: np.ndarray, s: float) -> np.ndarray:
    """Bilinear on OpenCV's grid: output u samples input (u + .5) / s - .5, edges clamped."""
    rows, cols = img.shape
    out_r, out_c = int(round(rows * s)), int(round(cols * s))
    src_c = (np.arange(out_c) + 0.5) / s - 0.5
    src_r = (np.arange(out_r) + 0.5) / s - 0.5
    tmp = np.stack([np.interp(src_c, np.arange(cols), row) for row in img])
    return np.stack([np.interp(src_r, np.arange(rows), col) for col in tmp.T]).T


def reference(
    series: dict[int, Path],
    key: int,
    interval: float,
    spacing: float,
    *,
    n_slices: int,
    window: tuple[float, float],
    offset: float,
    crop: bool,
    target_spacing: float | None,
    max_size: int | None,
):
    """(image, crop x0, y0, scale) by the published rules, linear interpolation."""
    half = n_slices // 2
    channels = []
    for k in range(-half, half + 1):
        pos = k * 2.0 / interval if interval > 0 else 0.0

        def existing(d: int) -> int:  # step back toward the key slice until it exists
            while d != 0 and key + d not in series:
                d -= 1 if d > 0 else -1
            return key + d

        lo, hi = math.floor(pos), math.ceil(pos)
        parts = (
            [(existing(lo), 1.0)]
            if lo == hi
            else [(existing(lo), hi - pos), (existing(hi), pos - lo)]
        )
        channels.append(sum(w * _raw(series[n]) for n, w in parts) - 32768)
    hu = np.stack(channels)
    img = np.clip((hu - window[0]) / (window[1] - window[0]), 0, 1) * 255 - offset
    x0 = y0 = 0
    if crop:
        mask = _opening(_raw(series[key]) > 32000, 7)
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        img = img[:, y0 : y1 + 1, x0 : x1 + 1]
    s = spacing / target_spacing if target_spacing else 1.0
    if max_size and max(img.shape[1:]) * s > max_size:
        s = max_size / max(img.shape[1:])
    if s != 1.0:
        img = np.stack([_resize(c, s) for c in img])
    return img, x0, y0, s


def _lesion(
    folder: str,
    key: int,
    *,
    spacing: float,
    interval: float,
    box=(200.0, 230.0, 240.0, 262.0),
    split: int = 1,
    row: int = 0,
) -> Lesion:
    p, st, se = (int(v) for v in folder.split("_"))
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    recist = (x1 + 5, cy, x2 - 5, cy, cx, y1 + 5, cx, y2 - 5)
    return Lesion(
        row,
        f"{folder}_{key:03d}.png",
        p,
        st,
        se,
        key,
        recist,
        box,
        (x2 - x1 - 10, y2 - y1 - 10),
        (0.5, 0.5, 0.5),
        -1,
        False,
        (56, 84),
        (spacing, spacing, interval),
        (512, 512),
        (-175.0, 275.0),
        "F",
        50.0,
        split,
    )


@pytest.fixture(scope="module")
def series_root(real_series_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("series")
    (root / "Images_png").mkdir()
    (root / "Images_png" / "000062_01_01").symlink_to(real_series_dir)
    return root


@pytest.fixture(scope="module")
def liver_root(real_liver_dir, tmp_path_factory) -> Path:
    """The 23 real liver key slices rearranged into the release layout."""
    root = tmp_path_factory.mktemp("liver")
    for png in sorted((real_liver_dir / "Images_png").glob("*.png")):
        folder, number = png.stem.rsplit("_", 1)
        (root / "Images_png" / folder).mkdir(parents=True, exist_ok=True)
        (root / "Images_png" / folder / f"{number}.png").symlink_to(png)
    (root / "DL_info.csv").symlink_to(real_liver_dir / "NNProject_liver_image_dataset_info.csv")
    return root


def _series_files(root: Path, folder: str) -> dict[int, Path]:
    return {int(p.stem): p for p in (root / "Images_png" / folder).glob("*.png")}


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize(
    "name,key,interval,overrides",
    [
        ("3dce", 70, 2.0, {}),  # 9 slices, whole offsets
        ("3dce", 70, 5.0, {"n_slices": 3}),  # the documented 0.4 / 0.6 case
        ("mulan", 70, 2.5, {"interpolation": "linear"}),  # 9 interpolated slices
        ("mulan", 82, 1.0, {"interpolation": "linear"}),  # edge: 86..90 missing
        ("a3d", 83, 0.0, {"max_size_px": 256}),  # unknown interval, capped
        ("native", 60, 1.25, {}),
    ],
)
def test_detection_tensors_on_real_series_match_the_rules(
    series_root, tmp_path, name, key, interval, overrides
):
    lesion = _lesion("000062_01_01", key, spacing=0.7, interval=interval)
    csv_path = tmp_path / "DL_info.csv"
    write_dl_info([lesion], csv_path)
    ds = KeySliceDetectionDataset(
        series_root, "train", preset=name, overrides=overrides, lesions=csv_path
    )
    image, target = ds[0]
    p = ds.params
    want, x0, y0, s = reference(
        _series_files(series_root, "000062_01_01"),
        key,
        interval,
        0.7,
        n_slices=p.n_slices,
        window=p.window_hu,
        offset=p.offset,
        crop=p.body_crop,
        target_spacing=p.target_spacing_mm,
        max_size=p.max_size_px,
    )
    assert image.dtype == torch.float32 and tuple(image.shape) == want.shape
    assert np.abs(image.numpy() - want).max() < 0.02
    assert target["crop_px0"][:2] == (x0, y0) and target["scale"] == pytest.approx(s)
    # boxes: 0-based pixel centres follow the resampling grid, and map back to DL_info
    box0 = np.array(lesion.box_px1) - 1 - [x0, y0, x0, y0]
    assert np.allclose(target["boxes"].numpy()[0], (box0 + 0.5) * s - 0.5, atol=1e-3)
    back = target["transform"].boxes_from_image(target["boxes"].numpy()) + 1
    assert np.abs(back - np.array(lesion.box_px1)).max() < 0.5
    assert target["spacing_mm"] == pytest.approx(0.7 / s)
    assert target["labels"].tolist() == [1] and target["lesion_ids"].tolist() == [0]


def test_liver_key_slices_match_the_rules(liver_root):
    ds = KeySliceDetectionDataset(
        liver_root, None, preset="mulan", overrides={"interpolation": "linear", "max_size_px": 192}
    )
    assert len(ds) == 23 and ds.in_channels == 9
    for i in (0, ds.file_names.index("003657_01_01_049.png")):
        lesion = ds.groups[i][0]
        image, target = ds[i]
        want, _x0, _y0, _s = reference(
            _series_files(liver_root, lesion.series_folder),
            lesion.key_slice_index,
            lesion.slice_interval_mm,
            lesion.spacing_mm[0],
            n_slices=9,
            window=(-1024, 3071),
            offset=50.0,
            crop=True,
            target_spacing=0.8,
            max_size=192,
        )
        assert tuple(image.shape) == want.shape
        assert np.abs(image.numpy() - want).max() < 0.02
        back = target["transform"].boxes_from_image(target["boxes"].numpy()) + 1
        assert np.abs(back - np.array(lesion.box_px1)).max() < 0.5
    # key slice 049 at 5 mm: +2 mm is 0.6 * s(49) + 0.4 * s(50), both real slices
    assert dict(ds.prepare(i).blends[5]) == pytest.approx({49: 0.6, 50: 0.4})


def test_presets_and_overrides():
    assert preset("3dce", images=9).n_slices == 27
    with pytest.raises(ValueError):
        preset("3dce", n_slices=5)
    with pytest.raises(ValueError, match="allowed"):
        preset("mulan", no_such_field=1)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("faster")
    m = preset("mulan")
    assert m.augmentation.rescale_range == (0.8, 1.2) and m.augmentation.hflip_prob == 0
    assert preset("a3d").window_hu == (-1024.0, 2050.0) and not preset("a3d").body_crop


def test_augmentation_is_seeded_and_works_in_workers(sample_root):
    def make(seed):
        return KeySliceDetectionDataset(
            sample_root, None, preset="mulan", train=True, overrides={"max_size_px": 96}, seed=seed
        )

    a, b = make(3), make(3)
    first = [a[i][0] for i in range(4)]
    assert all(torch.equal(x, b[i][0]) for i, x in enumerate(first))
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i][0]) for i, x in enumerate(first))
    a.set_epoch(0)
    loader = torch.utils.data.DataLoader(
        a, batch_size=2, num_workers=2, collate_fn=collate_detection
    )
    images, targets = next(iter(loader))
    assert torch.equal(images[0], first[0]) and torch.equal(images[1], first[1])
    for target in targets:  # augmented boxes still map back
        lesions = a.groups[target["image_id"]]
        rec = target["transform"].points_from_image(target["recist"].numpy().reshape(-1, 2))
        want = np.array([l.recist_px1 for l in lesions]).reshape(-1, 2) - 1
        assert np.abs(rec - want).max() < 1e-3


def test_a3d_flip_and_rotation_keep_lesions_on_their_pixels(sample_root):
    ds = KeySliceDetectionDataset(
        sample_root,
        None,
        preset="a3d",
        train=True,
        overrides={"affine_prob": 1.0, "hflip_prob": 1.0, "max_size_px": 128},
    )
    image, target = ds[0]
    assert target["transform"].flipped and target["transform"].rotated
    plain = KeySliceDetectionDataset(
        sample_root, None, preset="a3d", overrides={"max_size_px": 128}
    )
    base, base_t = plain[0]
    # the lesion centre's intensity is where the transform says it is
    centre0 = np.array(plain.groups[0][0].center_px1) - 1
    u, v = target["transform"].points_to_image(centre0)[0]
    bu, bv = base_t["transform"].points_to_image(centre0)[0]
    assert abs(image[1, round(v), round(u)] - base[1, round(bv), round(bu)]) < 30


def test_weak_masks_are_recist_ellipses(sample_root):
    ds = KeySliceDetectionDataset(sample_root, None, preset="native", masks=True)
    _image, target = ds[0]
    for mask, rec in zip(target["masks"].numpy(), target["recist"].numpy()):
        long = np.linalg.norm(rec[1] - rec[0])
        short = np.linalg.norm(rec[3] - rec[2])
        # area of the quarter-ellipse union ~ pi/4 * long * short (axes nearly bisect)
        assert mask.sum() == pytest.approx(math.pi / 4 * long * short, rel=0.25)
        for x, y in np.vstack([rec, rec.mean(0, keepdims=True)]):
            assert (
                mask[int(round(y)), int(round(x))]
                or mask[
                    int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2
                ].any()
            )


def test_patch_dataset(sample_root):
    table = load_lesions(sample_root / "DL_info.csv")
    labelled = [l for l in table.lesions if l.coarse_type > 0]
    tags = {labelled[0].row_index: [2, 4]}
    ds = LesionPatchDataset(sample_root, None, tags=tags, n_tags=6, patch_px=64, labelled_only=True)
    assert len(ds) == len([l for l in labelled if not l.possibly_noisy])
    patch, target = ds[0]
    assert tuple(patch.shape) == (3, 64, 64)
    assert target["coarse_type"] == labelled[0].coarse_type
    assert target["tags"].tolist() == [0, 0, 1, 0, 1, 0]
    assert 0 < int(target["mask"].sum()) < 64 * 64
    # the patch is centred on the lesion
    ys, xs = np.nonzero(target["mask"].numpy())
    assert abs(xs.mean() - 31.5) < 4 and abs(ys.mean() - 31.5) < 4


def test_core_import_does_not_need_torch():
    code = (
        "import sys, deeplesion, deeplesion.cli, deeplesion.training.settings,"
        " deeplesion.training.presets, deeplesion.training.imageops,"
        " deeplesion.training.transform, deeplesion.training.pipeline, deeplesion.training.coco;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_pixel_conversions_keep_the_shape_of_point_and_box_arrays():
    from deeplesion.data.annotations import index_to_px1, px1_to_index

    boxes_px1 = np.array([[1.0, 2.0, 10.0, 20.0], [3.5, 4.0, 5.0, 6.5]])
    got = px1_to_index(boxes_px1)
    assert got.shape == (2, 4) and got.tolist() == [[0, 1, 9, 19], [2.5, 3, 4, 5.5]]
    assert boxes_px1[0, 0] == 1.0  # the caller's array is left as it was
    assert index_to_px1(got).tolist() == boxes_px1.tolist()
    assert px1_to_index(np.zeros((0, 4))).shape == (0, 4)  # no boxes on an image
    assert index_to_px1(np.zeros((0, 2))).shape == (0, 2)
    assert px1_to_index(iter([2, 3])).tolist() == [1.0, 2.0]  # any iterable, as before


# --------------------------------------------------------------------------- COCO


def test_coco_round_trip(real_val_csv, tmp_path):
    table = load_lesions(real_val_csv)
    path = tmp_path / "val.json"
    result = CliRunner().invoke(
        main, ["export-coco", str(real_val_csv), "--split", "val", "--out", str(path)]
    )
    assert result.exit_code == 0, result.output
    coco = json.loads(path.read_text())
    clean = [l for l in table.lesions if not l.possibly_noisy]
    assert len(coco["annotations"]) == len(clean) == 4887
    assert len(coco["images"]) == 4791  # official val count after the noisy filter
    assert coco["categories"][0]["name"] == "lesion"
    back = read_coco(path)
    by_id = {l.row_index: l for l in clean}
    for item in back:
        lesion = by_id[item.lesion_id]
        assert item.file_name == lesion.file_name
        assert np.allclose(item.box_px1, lesion.box_px1, atol=1e-9)
        assert np.allclose(item.recist_px1, lesion.recist_px1, atol=1e-9)
    ann = coco["annotations"][0]
    lesion = by_id[ann["attributes"]["lesion_id"]]
    x1, y1, x2, y2 = lesion.box_px1
    assert ann["bbox"] == pytest.approx([x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1])
    img = coco["images"][0]
    assert {
        "file_name",
        "width",
        "height",
        "spacing_mm",
        "slice_interval_mm",
        "dicom_window_hu",
        "location_norm_z",
    } <= set(img)
    assert len(export_coco(table.lesions, "val", include_noisy=True)["annotations"]) == 4889


def test_coco_demo_step(sample_root, tmp_path):
    from deeplesion.demo import coco_step as demo

    paths = demo(sample_root, sample_root / "DL_info.csv", tmp_path)
    assert [p.name for p in paths] == ["coco_train.json", "coco_val.json", "coco_test.json"]
    assert all(read_coco(p) for p in paths)
    write_coco(tmp_path / "all.json", load_lesions(sample_root / "DL_info.csv").lesions)


# --------------------------------------------------------------------------- detector


def test_faster_rcnn_v2_for_ct():
    from deeplesion.training.detector import build_detector

    model = build_detector(9)
    assert model.backbone.body.conv1.in_channels == 9
    assert model.transform.image_mean == [0.0] * 9 and model.transform.image_std == [1.0] * 9
    assert [s[0] for s in model.rpn.anchor_generator.sizes] == [16, 24, 32, 48, 96]
    model.eval()
    with torch.no_grad():
        out = model([torch.zeros(9, 96, 80)])
    assert out[0]["boxes"].shape[1] == 4


# Small, fast settings for the CPU: the 'tiny' backbone (documented as the smoke-test
# architecture), 160 px images, anchors scaled with the image, a soft-tissue window so the
# liver lesions are visible after a few iterations, and a learning-rate drop at the end.
FAST = dict(
    arch="tiny",
    anchor_sizes=(6, 9, 12, 18, 24),
    batch_size=2,
    optimizer="adamw",
    lr=2e-3,
    warmup_iterations=10,
    augment=False,
    cache=True,
    checkpoint_every=10,
)
FAST_PRE = {"n_slices": 3, "max_size_px": 160, "window_hu": (-175.0, 275.0)}


def _chance(lesions, seed=0, per_image=10):
    """Sensitivity of random lesion-sized boxes (the floor a detector must beat)."""
    from deeplesion.training.detector import froc_of

    rng = np.random.default_rng(seed)
    names, boxes, scores = [], [], []
    for name in sorted({l.file_name for l in lesions}):
        for _ in range(per_image):
            x, y = rng.uniform(0, 480, 2)
            w, h = rng.uniform(15, 40, 2)
            names.append(name)
            boxes.append([x, y, x + w, y + h])
            scores.append(rng.uniform())
    return froc_of(lesions, names, np.array(boxes), np.array(scores)).average


def test_resume_after_kill_is_identical(sample_root, tmp_path):
    from deeplesion.training.detector import TrainConfig, train_detector

    cfg = TrainConfig(
        preset="native",
        overrides={"max_size_px": 64},
        epochs=2,
        iterations_per_epoch=3,
        train_split=None,
        val_split=None,
        **{**FAST, "checkpoint_every": 1},
    )
    whole = train_detector(sample_root, tmp_path / "whole", cfg)
    part = train_detector(sample_root, tmp_path / "part", cfg, stop_after=4)
    assert not part.finished and (tmp_path / "part" / "last.pt").is_file()
    rest = train_detector(sample_root, tmp_path / "part", cfg)
    assert rest.finished and len(rest.history) == 2
    a = torch.load(whole.last_checkpoint, weights_only=False)["model"]
    b = torch.load(rest.last_checkpoint, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "part").glob("*.incomplete"))


def test_train_resume_detect_evaluate_on_the_sample(sample_root, tmp_path):
    from deeplesion.training.detector import TrainConfig, train_detector

    run = tmp_path / "run"
    cfg = TrainConfig(
        preset="3dce",
        overrides=FAST_PRE,
        epochs=4,
        iterations_per_epoch=30,
        lr_drop_epochs=(3,),
        train_split=None,
        val_split="test",
        **FAST,
    )
    killed = train_detector(sample_root, run, cfg, stop_after=40)
    assert not killed.finished and len(killed.history) == 1
    runner = CliRunner()
    result = runner.invoke(main, ["train-detector", str(sample_root), "--out", str(run)])
    assert result.exit_code == 0, result.output
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and history[-1]["step"] == 120
    best = max(h["val"]["average"] for h in history)
    assert torch.load(run / "best.pt", weights_only=False)["val"]["average"] == best
    preds = tmp_path / "pred.csv"
    result = runner.invoke(
        main,
        [
            "detect",
            str(sample_root),
            "--checkpoint",
            str(run / "best.pt"),
            "--split",
            "test",
            "--out",
            str(preds),
        ],
    )
    assert result.exit_code == 0, result.output
    assert preds.read_text().splitlines()[0] == "file_name,x1,y1,x2,y2,score"
    result = runner.invoke(
        main,
        [
            "evaluate",
            "detection",
            str(preds),
            "--annotations",
            str(sample_root / "DL_info.csv"),
            "--split",
            "test",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["skipped_rows"] == 0
    test_lesions = [
        l
        for l in load_lesions(sample_root / "DL_info.csv").lesions
        if l.split == "test" and not l.possibly_noisy
    ]
    assert evaluated["average"] == pytest.approx(best)  # same images, same FROC
    assert evaluated["average"] >= 0.5 > _chance(test_lesions) + 0.3


def test_overfits_the_real_liver_key_slices(liver_root, tmp_path):
    from deeplesion.training.detector import (
        TrainConfig,
        froc_of,
        load_detector,
        predict,
        train_detector,
    )

    cfg = TrainConfig(
        preset="3dce",
        overrides=FAST_PRE,
        epochs=4,
        iterations_per_epoch=40,
        lr_drop_epochs=(3,),
        train_split=None,
        val_split=None,
        **FAST,
    )
    result = train_detector(liver_root, tmp_path / "run", cfg)
    model, _ = load_detector(result.best_checkpoint)
    ds = KeySliceDetectionDataset(liver_root, None, preset="3dce", overrides=FAST_PRE)
    names, boxes, scores = predict(model, ds)
    froc = froc_of(ds.lesions, names, boxes, scores)
    assert froc.n_lesions == 23
    assert froc.average >= 0.5 > _chance(ds.lesions) + 0.3
    assert froc.sensitivity["4"] >= 0.7


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text,expected",
    [("true", True), ("Yes", True), ("1", True), ("FALSE", False), ("no", False), ("0", False)],
)
def test_boolean_overrides_parse_by_field_type(text, expected):
    from deeplesion.training.settings import parse_override

    assert parse_override(f"body_crop={text}") == ("body_crop", expected)
    assert preset("3dce", body_crop=text).body_crop is expected  # library path, same rules


@pytest.mark.parametrize(
    "key,value",
    [
        ("body_crop", "maybe"),
        ("body_crop", 2),
        ("n_slices", "abc"),
        ("n_slices", 3.5),
        ("window_hu", "-1024"),
        ("window_hu", -1024),
        ("window_hu", "a,b"),
        ("max_size_px", "big"),
        ("augmentation", "foo"),
        ("hflip_prob", 1.5),
        ("crop_jitter_px", "1,2,3"),
        ("step_mm", "nan"),
    ],
)
def test_wrong_override_values_raise_naming_field_and_value(key, value, sample_root):
    from deeplesion.training.settings import PreprocessError, parse_override

    for call in (
        lambda: preset("mulan", **{key: value}),
        lambda: KeySliceDetectionDataset(sample_root, None, preset="mulan", overrides={key: value}),
        lambda: parse_override(f"{key}={value}"),
    ):
        with pytest.raises(PreprocessError) as info:
            call()
        assert key in str(info.value) and str(value) in str(info.value)


def test_override_values_are_converted():
    from deeplesion.training.settings import parse_override

    assert parse_override("window_hu=-1024,3071") == ("window_hu", (-1024.0, 3071.0))
    assert parse_override("max_size_px=none") == ("max_size_px", None)
    assert parse_override("crop_jitter_px=-4,4") == ("crop_jitter_px", (-4, 4))
    assert preset("native", window_hu=[-100, 200]).window_hu == (-100.0, 200.0)
    assert not preset("mulan", augmentation="none").augmentation.active


def _invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output
    )  # a clean message, never a traceback
    return result


@pytest.mark.parametrize(
    "args,words",
    [
        (["--set", "body_crop=maybe"], ["--set", "body_crop", "maybe", "true/false"]),
        (["--set", "n_slices=abc"], ["n_slices", "abc", "integer"]),
        (["--set", "window_hu=-1024"], ["window_hu", "-1024", "MIN,MAX"]),
        (["--set", "augmentation=foo"], ["augmentation", "foo"]),
        (["--set", "no_such=1"], ["no_such", "allowed"]),
        (["--epochs", "0"], ["--epochs"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--lr", "-1"], ["--lr"]),
        (["--device", "foo"], ["--device", "foo"]),
        (["--preset", "faster"], ["--preset", "faster"]),
    ],
)
def test_train_detector_rejects_bad_options_cleanly(args, words, sample_root, tmp_path):
    result = _invoke(["train-detector", sample_root, "--out", tmp_path / "run", *args])
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert not (tmp_path / "run").exists()


def test_cuda_without_gpu_is_refused_up_front(sample_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cmd in (
        ["train-detector", sample_root, "--out", tmp_path / "run"],
        [
            "detect",
            sample_root,
            "--checkpoint",
            sample_root / "DL_info.csv",
            "--out",
            tmp_path / "p.csv",
        ],
    ):
        result = _invoke([*cmd, "--device", "cuda"])
        assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert not (tmp_path / "run").exists()


def test_detect_rejects_bad_batch_size_and_non_checkpoints(sample_root, tmp_path):
    base = [
        "detect",
        sample_root,
        "--checkpoint",
        sample_root / "DL_info.csv",
        "--out",
        tmp_path / "p.csv",
    ]
    assert _invoke([*base, "--batch-size", "0"]).exit_code == 2
    result = _invoke(base)
    assert result.exit_code == 1 and "not a deeplesion checkpoint" in result.output
    assert "DL_info.csv" in result.output and not (tmp_path / "p.csv").exists()


def test_library_rejects_zero_epochs(sample_root, tmp_path):
    from deeplesion.training.detector import DetectorError, TrainConfig, train_detector

    with pytest.raises(DetectorError, match="epochs"):
        train_detector(sample_root, tmp_path, TrainConfig(epochs=0, **FAST))


def test_empty_split_errors_name_the_file_and_its_splits(sample_root, tmp_path):
    lesions = load_lesions(sample_root / "DL_info.csv").lesions
    csv = tmp_path / "val_only.csv"
    write_dl_info([l for l in lesions if l.split == "val"], csv)
    out = tmp_path / "t.json"
    result = _invoke(["export-coco", csv, "--split", "test", "--out", out])
    assert result.exit_code == 1 and not out.exists()
    assert "'test'" in result.output and "holds: val" in result.output
    result = _invoke(
        [
            "train-detector",
            sample_root,
            "--annotations",
            csv,
            "--out",
            tmp_path / "run",
            "--arch",
            "tiny",
        ]
    )
    assert result.exit_code == 1
    assert f"split 'train' of {csv}" in result.output.replace("\n", "")
    assert str(sample_root) + " " not in result.output


def test_help_lists_every_preset():
    from deeplesion.training.presets import PREPROCESSING_PRESETS as PRESETS

    text = _invoke(["train-detector", "--help"]).output
    assert set(PRESETS) >= {"lesanet", "a3d"}
    assert all(name in text for name in PRESETS)


def test_set_no_applies_and_resume_names_ignored_options(sample_root, tmp_path):
    run = tmp_path / "run"
    base = [
        "train-detector",
        sample_root,
        "--out",
        run,
        "--arch",
        "tiny",
        "--preset",
        "3dce",
        "--set",
        "max_size_px=64",
        "--iterations-per-epoch",
        "1",
        "--val-split",
        "none",
        "--train-split",
        "all",
        "--anchors",
        "6,9,12,18,24",
        "--checkpoint-every",
        "0",
    ]
    assert preset("3dce").body_crop  # the override below must switch it off
    result = _invoke([*base, "--epochs", "1", "--set", "body_crop=no"])
    assert result.exit_code == 0, result.output
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["preprocessing"]["body_crop"] is False
    result = _invoke(
        [*base, "--epochs", "2", "--lr", "0.05", "--set", "n_slices=3", "--set", "body_crop=no"]
    )
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", " ")
    assert "--lr 0.05 (saved lr: 0.01)" in text
    assert "--set n_slices=3 (saved n_slices: 9)" in text
    assert "--set body_crop" not in text  # same value as saved
    assert "--epochs 2" not in text  # a larger --epochs extends the run
    resumed = torch.load(run / "last.pt", weights_only=True)
    assert resumed["config"]["lr"] == 0.01 and resumed["in_channels"] == 9
    assert len(resumed["history"]) == 2
