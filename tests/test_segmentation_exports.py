"""Segmentation scoring, the nnU-Net / MONAI / COCO exports and the CLI commands."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("cv2")
pytest.importorskip("skimage")

from deeplesion.cli import main
from deeplesion.data.annotations import load_lesions
from deeplesion.data.maskfiles import (
    lesion_mask_slices,
    mask_png_path,
    read_label_png,
    read_masks_csv,
    write_label_png,
)
from deeplesion.data.masks import mask_axes
from deeplesion.data.sample import SAMPLE_MASKS
from deeplesion.evaluation.segmentation import evaluate_segmentation, uls23_name
from deeplesion.segmentation.run import make_masks


@pytest.fixture(scope="module")
def ellipse_masks(sample_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ellipse") / "m"
    make_masks(sample_root, out, method="ellipse")
    return out


@pytest.fixture(scope="module")
def table(sample_root):
    return load_lesions(sample_root / "DL_info.csv")


# --------------------------------------------------------------------------- scoring


def test_truth_against_itself_is_perfect(sample_root, table):
    truth = sample_root / SAMPLE_MASKS
    report = evaluate_segmentation(truth, table.lesions, reference_dir=truth)
    overall = report.summary["overall"]["all"]
    assert overall["n"] == len(table)
    assert overall["dice_2d"] == 1.0 and overall["dice_3d"] == 1.0
    assert overall["hd95_2d_mm"] == 0.0 and overall["hd95_3d_mm"] == 0.0


def test_diameter_error_and_summaries_against_pandas(sample_root, table, ellipse_masks):
    report = evaluate_segmentation(ellipse_masks, table.lesions)
    records = read_masks_csv(ellipse_masks)
    rows = []
    for l in table:
        mask = lesion_mask_slices(ellipse_masks, records[l.row_index])[l.key_slice_index]
        # an independent pixel count and the RECIST diameters from the end points
        sx = l.spacing_mm[0]
        area = float(mask.sum()) * sx * l.spacing_mm[1]
        axes = mask_axes(mask, (l.spacing_mm[1], sx))
        err = (
            abs(axes.long_mm - l.long_diameter_mm) + abs(axes.short_mm - l.short_diameter_mm)
        ) / 2
        rows.append({"type": l.type_name, "err": err, "area": area, "long": l.long_diameter_mm})
    import pandas as pd

    frame = pd.DataFrame(rows)
    by_row = {s.row_index: s for s in report.lesions}
    assert [by_row[l.row_index].area_mm2 for l in table] == pytest.approx(list(frame["area"]))
    # the ellipse's axes are RECIST's, within a pixel of rasterisation
    assert frame["err"].max() < max(l.spacing_mm[0] for l in table)
    summary = report.summary
    assert summary["overall"]["all"]["diameter_error_mm"] == pytest.approx(frame["err"].mean())
    for name, group in frame.groupby("type"):
        assert summary["type"][name]["n"] == len(group)
        assert summary["type"][name]["area_mm2"] == pytest.approx(group["area"].mean())
    bins = pd.cut(
        frame["long"], [0, 10, 30, math.inf], right=False, labels=["<10 mm", "10-30 mm", ">=30 mm"]
    )
    for name, group in frame.groupby(bins, observed=True):
        assert summary["size"][name]["n"] == len(group)


def test_uls23_named_references_are_read_on_the_nifti_grid(sample_root, table, tmp_path):
    import nibabel as nib

    from deeplesion.convert.nifti import volume_affine

    truth = sample_root / SAMPLE_MASKS
    records = read_masks_csv(truth)
    lesion = next(l for l in table if len(table.by_file_name()[l.file_name]) == 2)
    second = sorted(table.by_file_name()[lesion.file_name], key=lambda l: l.row_index)[1]
    rec = records[second.row_index]
    slices = lesion_mask_slices(truth, rec)
    first = min(slices)
    data = np.stack([slices[n].T for n in sorted(slices)], axis=-1).astype(np.uint8)
    affine = volume_affine(second.spacing_mm, "project", first)
    ref = tmp_path / "ref"
    ref.mkdir()
    name = uls23_name(second, 2)
    assert name == f"{second.file_name[:-4]}_lesion_02.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), ref / name)
    report = evaluate_segmentation(truth, table.lesions, reference_dir=ref)
    assert [s.row_index for s in report.lesions] == [second.row_index]
    assert report.lesions[0].dice_2d == 1.0 and report.lesions[0].dice_3d == 1.0
    assert len(report.without_reference) == len(table) - 1
    # a reference shifted by one slice no longer matches in 3-D
    nib.save(
        nib.Nifti1Image(data, volume_affine(second.spacing_mm, "project", first + 1)), ref / name
    )
    shifted = evaluate_segmentation(truth, table.lesions, reference_dir=ref).lesions[0]
    assert shifted.dice_3d < 0.9


def test_reference_of_the_wrong_shape_is_a_located_error(sample_root, table, tmp_path):
    import nibabel as nib

    from deeplesion.data.maskfiles import MaskFileError

    l = table.lesions[0]
    ref = tmp_path / "ref"
    ref.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 1), np.uint8), np.eye(4)), ref / uls23_name(l, 1))
    with pytest.raises(MaskFileError, match=r"lesion_01\.nii\.gz"):
        evaluate_segmentation(sample_root / SAMPLE_MASKS, table.lesions, reference_dir=ref)


def test_bad_masks_csv_cell_names_file_line_and_column(tmp_path, table):
    from deeplesion.data.maskfiles import COLUMNS, MaskFileError

    (tmp_path / "masks.csv").write_text(
        ",".join(COLUMNS) + "\n0,000001_01_01_010.png,1,one,ellipse,ok,10,10,5,1.0,1.0\n"
    )
    with pytest.raises(MaskFileError) as info:
        evaluate_segmentation(tmp_path, table.lesions)
    assert info.value.line == 2 and info.value.column == "label" and info.value.value == "one"


# --------------------------------------------------------------------------- exports


def test_nnunet_export_passes_nnunets_own_integrity_check(
    sample_root, table, tmp_path, monkeypatch
):
    pytest.importorskip("nnunetv2")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from deeplesion.convert.nnunet import export_nnunet

    # a tiny dataset: two series folders, one train and one val, plus one test
    keep = {"000004_01_02", "000005_01_01", "000008_01_01"}
    root = tmp_path / "root"
    (root / "Images_png").mkdir(parents=True)
    for folder in keep:
        shutil.copytree(sample_root / "Images_png" / folder, root / "Images_png" / folder)
    lines = (sample_root / "DL_info.csv").read_text().splitlines()
    (root / "DL_info.csv").write_text(
        "\n".join([lines[0]] + [x for x in lines[1:] if x[:12] in keep]) + "\n"
    )
    report = export_nnunet(root, tmp_path / "raw", sample_root / SAMPLE_MASKS, dataset_id=7)
    folder = tmp_path / "raw" / "Dataset007_DeepLesion"
    assert report.out_dir == folder
    assert (len(report.train), len(report.val), len(report.test)) == (1, 1, 1)
    verify_dataset_integrity(str(folder), 1)  # raises on any problem
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["numTraining"] == 2
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == [{"train": report.train, "val": report.val}]
    import nibabel as nib

    case = report.val[0]
    image = nib.load(folder / "imagesTr" / f"{case}_0000.nii.gz")
    label = np.asarray(nib.load(folder / "labelsTr" / f"{case}.nii.gz").dataobj)
    assert image.shape == label.shape and set(np.unique(label)) == {0, 1}
    hu = np.asarray(image.dataobj)
    assert hu[label == 1].mean() > 800  # the val case is the bone lesion (950 HU)
    assert (folder / "imagesTs" / f"{report.test[0]}_0000.nii.gz").is_file()
    again = export_nnunet(root, tmp_path / "raw", sample_root / SAMPLE_MASKS, dataset_id=7)
    assert again.images_written == 0 and again.images_kept == 3


def test_nnunet_cases_from_2d_masks_are_key_slices(sample_root, ellipse_masks, tmp_path):
    from deeplesion.convert.nnunet import plan_cases, runs_by_row

    lesions = load_lesions(sample_root / "DL_info.csv").lesions
    runs = runs_by_row(sample_root, sample_root / "DL_info.csv")
    masked = set(read_masks_csv(ellipse_masks))
    cases, left_out = plan_cases(lesions, runs, masked, three_d=False)
    assert not left_out
    assert {c.n_slices for c, _ in cases.values()} == {1}
    assert set(cases) == {
        f"{l.series_folder}_{l.key_slice_index:03d}-{l.key_slice_index:03d}" for l in lesions
    }


def test_bad_dataset_name_or_id_is_refused():
    from deeplesion.convert.nnunet import SegmentationExportError, dataset_folder_name

    assert dataset_folder_name(501, "DeepLesion") == "Dataset501_DeepLesion"
    with pytest.raises(SegmentationExportError, match=r"1\.\.999"):
        dataset_folder_name(1000, "x")
    with pytest.raises(SegmentationExportError, match="no spaces"):
        dataset_folder_name(5, "Deep Lesion")


def test_monai_datalist_loads_and_boxes_land_on_lesions(sample_root, table, tmp_path):
    pytest.importorskip("monai")
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    from deeplesion.convert.monai import export_monai

    report = export_monai(sample_root, tmp_path / "monai", masks_dir=sample_root / SAMPLE_MASKS)
    by_id = {l.row_index: l for l in table}
    seen = 0
    for key in ("training", "validation", "test"):
        items = load_decathlon_datalist(str(report.datalist_path), True, key)
        assert len(items) == report.entries[key] > 0
        for item in items:
            data = LoadImaged(keys=["image", "label"])(item)
            image, label = np.asarray(data["image"]), np.asarray(data["label"])
            assert image.shape == label.shape
            for box, row in zip(item["boxes"], item["lesion_ids"]):
                l = by_id[row]
                x1, y1, k, x2, y2, k2 = box
                assert k == k2 and x1 < x2 and y1 < y2
                # the box centre lies in the lesion: its HU and its label
                i, j = round((x1 + x2) / 2), round((y1 + y2) / 2)
                assert label[i, j, int(k)] == 1
                assert abs(float(image[i, j, int(k)]) - _lesion_hu(l)) < 40, l.file_name
                assert item["lesion_types"][item["lesion_ids"].index(row)] == l.type_name
                seen += 1
    assert seen == sum(not l.possibly_noisy for l in table)


def _lesion_hu(lesion):
    from deeplesion.data.sample import _TEMPLATES

    truth = {  # train rows are written as -1; the sample's specs know the true type
        "000003_01_01_016.png": 2,
        "000003_01_01_072.png": 7,
        "000004_01_02_005.png": 8,
        "000007_01_01_012.png": 5,
        "000007_01_01_020.png": 4,
    }
    code = truth.get(lesion.file_name, lesion.coarse_type)
    return _TEMPLATES[code][1]


def test_coco_rle_masks_decode_to_the_key_slice_masks(sample_root, table, ellipse_masks, tmp_path):
    from deeplesion.training.coco import rle_decode, rle_encode

    out = tmp_path / "coco.json"
    result = CliRunner().invoke(
        main,
        [
            "export-coco",
            str(sample_root / "DL_info.csv"),
            "--split",
            "val",
            "--out",
            str(out),
            "--masks",
            str(ellipse_masks),
        ],
    )
    assert result.exit_code == 0, result.output
    coco = json.loads(out.read_text())
    records = read_masks_csv(ellipse_masks)
    assert all("segmentation" in a for a in coco["annotations"])
    for ann in coco["annotations"]:
        row = ann["attributes"]["lesion_id"]
        l = next(x for x in table if x.row_index == row)
        expected = read_label_png(mask_png_path(ellipse_masks, l.series_folder, l.key_slice_index))
        assert np.array_equal(rle_decode(ann["segmentation"]), expected == records[row].label)
        assert _rle_by_hand(ann["segmentation"]).sum() == (expected == records[row].label).sum()
    first_pixel_set = np.zeros((4, 3), bool)
    first_pixel_set[0, 0] = first_pixel_set[3, 2] = True
    assert rle_encode(first_pixel_set)["counts"] == [0, 1, 10, 1]


def _rle_by_hand(rle):
    h, w = rle["size"]
    flat, value = [], False
    for count in rle["counts"]:
        flat += [value] * count
        value = not value
    return np.array(flat, dtype=bool).reshape(w, h).T


# --------------------------------------------------------------------------- CLI


def test_cli_masks_evaluate_and_exports(sample_root, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m"
    result = runner.invoke(main, ["masks", str(sample_root), str(out), "--method", "ellipse"])
    assert result.exit_code == 0, result.output
    assert "masked" in result.output and (out / "masks.csv").is_file()
    result = runner.invoke(
        main,
        [
            "evaluate",
            "segmentation",
            str(out),
            "--annotations",
            str(sample_root),
            "--reference",
            str(sample_root / SAMPLE_MASKS),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["summary"]["overall"]["all"]["dice_2d"] > 0.95
    assert data["lesions"][0]["dice_3d"] is None  # 2-D masks: no 3-D scores
    result = runner.invoke(
        main, ["evaluate", "segmentation", str(out), "--annotations", str(sample_root)]
    )
    assert result.exit_code == 0 and "type: liver" in result.output
    result = runner.invoke(main, ["masks", str(sample_root), str(out), "--method", "grabcut"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        main, ["export", "monai", str(sample_root), str(tmp_path / "mo"), "--masks", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mo" / "datalist.json").is_file()


def test_cli_unreadable_label_png_is_a_clean_error(sample_root, ellipse_masks, tmp_path):
    masks = tmp_path / "m"
    shutil.copytree(ellipse_masks, masks)
    png = next((masks / "png").rglob("*.png"))
    png.write_bytes(b"broken")
    result = CliRunner().invoke(
        main, ["evaluate", "segmentation", str(masks), "--annotations", str(sample_root)]
    )
    assert result.exit_code == 1
    assert str(png) in result.output and "Traceback" not in result.output


def test_label_png_round_trip(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_label_png(tmp_path / "x.png", labels)
    assert np.array_equal(read_label_png(tmp_path / "x.png"), labels)
