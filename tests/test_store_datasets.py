"""Datasets read from a store give exactly the PNG path's tensors and never open a PNG."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from deeplesion.convert.store import build_store
from deeplesion.data.annotations import write_dl_info

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from deeplesion.training.datasets import KeySliceDetectionDataset, LesionPatchDataset  # noqa: E402
from test_store import FOLDER, REAL_KEYS, lesion  # noqa: E402

PRESETS = ("native", "3dce", "mulan", "a3d", "lesanet")
# (train, seed, epoch): evaluation, then augmentation drawn from two seeds and an epoch
SETTINGS = ((False, 0, 0), (True, 0, 0), (True, 3, 1))


@pytest.fixture(scope="module")
def real_root(real_series_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "root"
    (root / "Images_png").mkdir(parents=True)
    (root / "Images_png" / FOLDER).symlink_to(real_series_dir)
    rows = [lesion(k, z, i, short_mm=4.0 + 4 * i) for i, (k, z) in enumerate(REAL_KEYS)]
    write_dl_info(rows, root / "DL_info.csv")
    return root


@pytest.fixture(scope="module")
def real_store(real_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-store") / "store"
    build_store(real_root, out)
    return out


@pytest.fixture(scope="module")
def sample_store(sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample-store") / "store"
    build_store(sample_root, out)
    return out


def _refuse(*args, **kwargs):
    raise AssertionError(f"a PNG was opened: {args}")


@contextlib.contextmanager
def png_forbidden():
    """Any PNG decoding raises inside this block."""
    import PIL.Image

    import deeplesion.data.slices
    import deeplesion.data.sources

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PIL.Image, "open", _refuse)
        patch.setattr(deeplesion.data.slices, "read_png_raw", _refuse)
        patch.setattr(deeplesion.data.sources, "read_png_raw", _refuse)
        yield


def _samples(ds, indices) -> list:
    out = []
    for i in indices:
        image, target = ds[i]
        out.append((image, {k: v for k, v in target.items() if k != "transform"}, target))
    return out


def _same(a, b) -> None:
    for (image_a, target_a, full_a), (image_b, target_b, full_b) in zip(a, b):
        assert image_a.dtype == image_b.dtype and torch.equal(image_a, image_b)
        assert target_a.keys() == target_b.keys()
        for key, value in target_a.items():
            other = target_b[key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), key
            else:
                assert value == other, key
        if "transform" in full_a:
            assert full_a["transform"] == full_b["transform"]


def _compare(root, store, dataset, preset, indices=None, **kwargs) -> None:
    for train, seed, epoch in SETTINGS:
        datasets = []
        for source in (None, store):
            ds = dataset(root, None, preset=preset, train=train, seed=seed, store=source, **kwargs)
            ds.set_epoch(epoch)
            datasets.append(ds)
        picked = range(len(datasets[0])) if indices is None else indices
        from_png = _samples(datasets[0], picked)
        with png_forbidden():
            from_store = _samples(datasets[1], picked)
        _same(from_png, from_store)


@pytest.mark.parametrize("preset", PRESETS)
def test_detection_from_store_equals_png_on_the_real_block(real_root, real_store, preset):
    _compare(real_root, real_store, KeySliceDetectionDataset, preset, masks=True)


@pytest.mark.parametrize("preset", PRESETS)
def test_detection_from_store_equals_png_on_the_sample(sample_root, sample_store, preset):
    _compare(sample_root, sample_store, KeySliceDetectionDataset, preset, range(0, 16, 3))


@pytest.mark.parametrize("preset", ("lesanet", "mulan"))
def test_patches_from_store_equal_png(real_root, real_store, sample_root, sample_store, preset):
    _compare(real_root, real_store, LesionPatchDataset, preset)
    _compare(sample_root, sample_store, LesionPatchDataset, preset, range(0, 20, 4))


def test_store_dataset_never_opens_a_png(real_root, real_store):
    ds = KeySliceDetectionDataset(real_root, None, preset="mulan", train=True, store=real_store)
    assert type(ds.source).__name__ == "StoreSource"
    png = KeySliceDetectionDataset(real_root, None, preset="mulan")
    with png_forbidden():
        for i in range(len(ds)):
            image, _ = ds[i]
            assert torch.isfinite(image).all()
        with pytest.raises(AssertionError, match="a PNG was opened"):
            png[0]


def test_store_dataset_works_in_dataloader_workers(real_root, real_store):
    ds = KeySliceDetectionDataset(real_root, None, preset="3dce", store=real_store)
    ref = [ds[i][0] for i in range(len(ds))]
    from torch.utils.data import DataLoader

    from deeplesion.training.datasets import collate_detection

    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_detection)
    got = [image for images, _ in loader for image in images]
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(ref, got))


def test_a_folder_that_is_not_a_store_is_a_clean_error(real_root, tmp_path):
    from deeplesion.data.store import StoreError

    with pytest.raises(StoreError, match="not a store"):
        KeySliceDetectionDataset(real_root, None, preset="3dce", store=tmp_path)


def test_values_are_exact_from_the_raw_slices(real_root, real_store):
    ds_png = KeySliceDetectionDataset(real_root, None, preset="native")
    ds_store = KeySliceDetectionDataset(real_root, None, preset="native", store=real_store)
    a, b = ds_png.prepare(0), ds_store.prepare(0)
    assert np.array_equal(a.image, b.image) and a.blends == b.blends


def test_train_detector_and_detect_from_the_store_match_the_pngs(
    sample_root, sample_store, tmp_path
):
    from click.testing import CliRunner

    from deeplesion.cli import main

    common = [
        "--preset", "mulan", "--set", "n_slices=3", "--set", "max_size_px=64",
        "--arch", "tiny", "--anchors", "6,9,12,18,24", "--optimizer", "adamw", "--lr", "0.002",
        "--epochs", "1", "--iterations-per-epoch", "3", "--train-split", "all",
        "--val-split", "test", "--checkpoint-every", "0",
    ]  # fmt: skip
    runner = CliRunner()
    outputs = {}
    for name, extra in (("png", []), ("store", ["--store", str(sample_store)])):
        run = tmp_path / name
        with png_forbidden() if extra else contextlib.nullcontext():
            result = runner.invoke(
                main, ["train-detector", str(sample_root), "--out", str(run), *common, *extra]
            )
            assert result.exit_code == 0, result.output
            pred = tmp_path / f"{name}.csv"
            result = runner.invoke(
                main,
                [
                    "detect",
                    str(sample_root),
                    "--checkpoint",
                    str(run / "last.pt"),
                    "--out",
                    str(pred),
                    *extra,
                ],
            )
            assert result.exit_code == 0, result.output
        outputs[name] = (torch.load(run / "last.pt", weights_only=False)["model"], pred.read_text())
    (a, pred_a), (b, pred_b) = outputs["png"], outputs["store"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same samples, same weights
    assert pred_a == pred_b and len(pred_a.splitlines()) > 1


def test_stored_boxes_equal_the_pipelines_body_crop(
    real_root, real_store, sample_root, sample_store
):
    from deeplesion.data.sources import PngSource
    from deeplesion.data.store import open_store
    from deeplesion.training.imageops import body_bbox

    for root, out in ((real_root, real_store), (sample_root, sample_store)):
        store, png = open_store(out), PngSource(root)
        for entry in store.entries[:6]:
            for n in range(entry.first_slice, entry.last_slice + 1, 2):
                want = body_bbox(png.read_raw(entry.folder, n), 32000, 7)
                assert store.body_box_px0(entry.folder, n, 32000, 7) == want, (entry.volume, n)
