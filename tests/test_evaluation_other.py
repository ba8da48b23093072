"""3-D LENS protocol, tagging, measurement, the evaluate CLI and the demo step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.data.annotations import load_lesions
from deeplesion.demo import evaluation_step as demo
from deeplesion.evaluation import (
    PredictionError,
    auc,
    choose_thresholds,
    evaluate_detection_3d,
    read_boxes_3d,
    tagging_metrics,
)
from deeplesion.evaluation.measurement import (
    mask_contour_px1,
    measurement_errors,
    point_to_contour_mm,
)
from deeplesion.evaluation.tagging import hand_labelled, lesanet_labels

LESANET = Path("rsummers11__CADLab") / "LesaNet" / "program_data"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- 3-D


def test_3d_iobb_protocol_by_hand(tmp_path):
    gt = _write(
        tmp_path / "gt.csv",
        [
            "volume,x1,y1,z1,x2,y2,z2",
            "A,11,11,11,30,30,20",  # 20x20x10 voxels
            "B,101,101,1,140,140,4",
        ],
    )
    preds = _write(
        tmp_path / "pred.csv",
        [
            "volume,x1,y1,z1,x2,y2,z2,score",
            "A,16,16,13,25,25,17,0.9",  # inside A: IoBB 1 (IoU only 0.125) -> hit
            "B,61,61,1,180,180,4,0.8",  # contains B, IoBB 1600/14400 < 0.3 -> FP
            "C,1,1,1,10,10,3,0.7",  # volume without lesions -> FP
            "B,101,101,1,140,140,2,0.6",  # IoBB 1 -> hit
            "Z,1,1,1,2,2,2,0.5",  # not in the volume list: ignored
        ],
    )
    result = evaluate_detection_3d(
        read_boxes_3d(gt, scored=False), read_boxes_3d(preds, scored=True), ["A", "B", "C"]
    )
    # curve: (fp 0, s .5), (1/3, .5), (2/3, .5), (2/3, 1)
    np.testing.assert_allclose(result.curve.fp_per_image, [0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(result.curve.sensitivity, [0.5, 0.5, 0.5, 1.0])
    want = {"0.125": 0.5, "0.25": 0.5, "0.5": 0.5, "1": 1.0, "2": 1.0, "4": 1.0, "8": 1.0}
    assert result.sensitivity == pytest.approx(want)
    assert result.mean_sensitivity == pytest.approx(np.mean(list(want.values())))
    assert result.n_volumes == 3 and result.ignored_outside == 1


def test_3d_left_of_curve_is_zero_and_bad_rows(tmp_path):
    gt = _write(tmp_path / "gt.csv", ["volume,x1,y1,z1,x2,y2,z2", "A,1,1,1,10,10,10"])
    preds = _write(
        tmp_path / "p.csv",
        [
            "volume,x1,y1,z1,x2,y2,z2,score",
            "A,50,50,50,60,60,60,0.9",
            "A,1,1,1,10,10,10,0.8",
            "A,1,1,9,10,10,2,0.5",
            "A,1,1,1,10,10,x,0.4",
        ],
    )
    boxes = read_boxes_3d(preds, scored=True)
    assert [(p.line, p.column) for p in boxes.problems] == [(4, "z2"), (5, "z2")]
    with pytest.raises(PredictionError, match="line 4"):
        read_boxes_3d(preds, scored=True, strict=True)
    # 2 volumes: the first detection is an FP at 0.5 FP/volume
    result = evaluate_detection_3d(read_boxes_3d(gt, scored=False), boxes, ["A", "B"])
    assert result.sensitivity["0.125"] == 0 and result.sensitivity["0.25"] == 0
    assert result.sensitivity["0.5"] == 1.0


# --------------------------------------------------------------------------- tagging


def test_auc_small_cases():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        scores = np.round(rng.random(n), 1)
        labels = rng.random(n) < 0.4
        if labels.all() or not labels.any():
            continue
        pos, neg = scores[labels], scores[~labels]
        wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
        assert auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


def test_tagging_metrics_by_hand_with_uncertain_masked():
    scores = np.array([[0.9, 0.2], [0.6, 0.8], [0.3, 0.1], [0.7, 0.4]])
    labels = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
    mask = np.array([[1, 1], [1, 1], [1, 1], [0, 1]], dtype=bool)  # lesion 3, tag 0 uncertain
    r = tagging_metrics(scores, labels, mask, thresholds=0.5, terms=["a", "b"])
    # tag a (lesions 0-2): labels 1,0,0; predicted 1,1,0 -> P 1/2, R 1, F1 2/3; AUC 1
    # tag b (all): labels 0,1,0,1; predicted 0,1,0,0 -> P 1, R 1/2, F1 2/3; AUC 1
    np.testing.assert_allclose(r.precision_per_tag, [0.5, 1.0])
    np.testing.assert_allclose(r.recall_per_tag, [1.0, 0.5])
    np.testing.assert_allclose(r.f1_per_tag, [2 / 3, 2 / 3])
    np.testing.assert_allclose(r.auc_per_tag, [1.0, 1.0])
    # micro over the 7 counted labels: TP 2, predicted 3, relevant 3
    assert r.overall_precision == pytest.approx(2 / 3)
    assert r.overall_recall == pytest.approx(2 / 3)
    assert r.mean_f1 == pytest.approx(2 / 3)
    assert r.weighted_mean_auc == pytest.approx(1.0)


def test_thresholds_chosen_on_val_maximise_f1():
    val_scores = np.array([[0.9], [0.62], [0.5], [0.3]])
    val_labels = np.array([[1], [1], [0], [0]], dtype=bool)
    th = choose_thresholds(val_scores, val_labels)
    # F1 is 1 for any threshold in (0.5, 0.62]: the smallest grid value there is 0.55
    assert th[0] == pytest.approx(0.55)
    # a tag without negatives on val keeps the default 1.0
    assert choose_thresholds(val_scores, np.ones((4, 1), bool))[0] == 1.0


def test_tagging_on_real_lesanet_labels(real_data):
    folder = real_data / LESANET
    test = lesanet_labels(folder / "text_mined_labels_171_and_split.json", "test")
    assert len(test.terms) == 171 and len(test.lesion_idxs) == 1879
    assert (~test.mask).any() and not (test.relevant & ~test.mask).any()
    perfect = tagging_metrics(test.relevant.astype(float), test.relevant, test.mask)
    assert perfect.mean_auc == 1.0 and perfect.overall_f1 == 1.0
    positives = (test.relevant & test.mask).sum(0)
    has_auc = ~np.isnan(perfect.auc_per_tag)
    assert perfect.weighted_mean_auc == pytest.approx(positives[has_auc].sum() / positives.sum())
    rng = np.random.default_rng(0)
    noise = tagging_metrics(rng.random(test.relevant.shape), test.relevant, test.mask)
    assert 0.4 < noise.mean_auc < 0.6
    hand = hand_labelled(folder / "hand_labeled_test_set.json", test.terms)
    assert len(hand.lesion_idxs) == 500 and hand.mask.all()
    assert hand.relevant.sum(1).min() >= 1


# --------------------------------------------------------------------------- measurement


def test_measurement_by_hand():
    gt = np.array([[1, 1, 11, 1, 6, -2, 6, 4]])  # long 10 px, short 6 px
    pred = np.array([[1, 1, 9, 1, 6, -1, 6, 3]])  # long 8 px, short 4 px
    r = measurement_errors(
        gt, pred, [[0.5, 0.5]], [np.array([[0, 0], [12, 0], [12, 5], [0, 5]], float)]
    )
    assert r.long_error_mm[0] == pytest.approx(1.0)
    assert r.short_error_mm[0] == pytest.approx(1.0)
    assert r.mean_diameter_error_mm == pytest.approx(1.0)
    # end points (1,1),(11,1),(6,-2),(6,4) to the rectangle edges: 1, 1, 2, 1 px -> 0.5 mm each
    assert r.endpoint_distance_mm[0] == pytest.approx((0.5 + 0.5 + 1.0 + 0.5) / 4)


def test_point_to_contour_and_mask_contour():
    d = point_to_contour_mm([[5, 5]], [[0, 0], [10, 0], [10, 10], [0, 10]], [1.0, 2.0])
    assert d[0] == pytest.approx(5.0)  # nearest edge x = 0 or 10, 5 px * 1 mm
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    contour = mask_contour_px1(mask)
    assert len(contour) == 8 and [3.0, 3.0] not in contour.tolist()  # centre excluded
    assert contour[:, 0].min() == 2.0 and contour[:, 0].max() == 4.0  # 1-based columns


# --------------------------------------------------------------------------- CLI and demo


def test_cli_detection_json_and_plot(tmp_path, real_excerpt_csv):
    table = load_lesions(real_excerpt_csv)
    rows = ["file_name,x1,y1,x2,y2,score"]
    rows += [
        f"{l.file_name},{','.join(map(str, l.box_px1))},0.9" for l in table if l.split_code == 3
    ]
    rows += ["bogus,1,1,2,2,0.5"]
    preds = _write(tmp_path / "p.csv", rows)
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "evaluate",
            "detection",
            str(preds),
            "--annotations",
            str(real_excerpt_csv),
            "--json",
            "--by",
            "type",
            "--plot",
            str(tmp_path / "froc.png"),
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["sensitivity"] == {k: 1.0 for k in ("0.5", "1", "2", "4", "8", "16")}
    assert data["average"] == 1.0 and data["skipped_rows"] == 1
    assert data["n_lesions"] == sum(1 for l in table if l.split_code == 3 and not l.possibly_noisy)
    assert set(data["strata"]["type"]) <= {
        "abdomen",
        "liver",
        "lung",
        "mediastinum",
        "pelvis",
        "soft tissue",
        "bone",
        "kidney",
    }
    assert (tmp_path / "froc.png").stat().st_size > 1000
    strict = runner.invoke(
        main,
        ["evaluate", "detection", str(preds), "--annotations", str(real_excerpt_csv), "--strict"],
    )
    assert strict.exit_code == 1 and "line" in strict.output
    for option, value in (("--iou", "1.5"), ("--iou", "0"), ("--plot", str(tmp_path / "froc.txt"))):
        bad = runner.invoke(
            main,
            [
                "evaluate",
                "detection",
                str(preds),
                "--annotations",
                str(real_excerpt_csv),
                option,
                value,
            ],
        )
        assert bad.exit_code == 2 and option in bad.output, (option, value, bad.output)
        assert "Traceback" not in bad.output
    assert not (tmp_path / "froc.txt").exists()


def test_cli_tagging_and_measurement(tmp_path, real_data, real_val_csv):
    folder = real_data / LESANET
    test = lesanet_labels(folder / "text_mined_labels_171_and_split.json", "test")
    hand = hand_labelled(folder / "hand_labeled_test_set.json", test.terms)
    header = "lesion_idx," + ",".join(f'"{t}"' if "," in t else t for t in test.terms)
    rows = [header] + [
        f"{i}," + ",".join("0.9" if v else "0.1" for v in rel)
        for i, rel in zip(hand.lesion_idxs, hand.relevant)
    ]
    scores = _write(tmp_path / "scores.csv", rows)
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "evaluate",
            "tagging",
            str(scores),
            "--labels",
            str(folder / "text_mined_labels_171_and_split.json"),
            "--hand-labelled",
            str(folder / "hand_labeled_test_set.json"),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["mean_auc"] == 1.0 and data["overall_f1"] == 1.0 and data["n_lesions"] == 500

    lesions = load_lesions(real_val_csv).lesions[:5]
    rows = ["row_index,file_name,x11,y11,x12,y12,x21,y21,x22,y22"]
    rows += [f"{l.row_index},{l.file_name}," + ",".join(map(str, l.recist_px1)) for l in lesions]
    out = runner.invoke(
        main,
        [
            "evaluate",
            "measurement",
            _write(tmp_path / "m.csv", rows).as_posix(),
            "--annotations",
            str(real_val_csv),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["n_lesions"] == 5 and data["mean_diameter_error_mm"] == 0.0
    rows[1] = rows[1].replace(lesions[0].file_name, "000001_01_01_001.png")
    bad = runner.invoke(
        main,
        [
            "evaluate",
            "measurement",
            _write(tmp_path / "b.csv", rows).as_posix(),
            "--annotations",
            str(real_val_csv),
        ],
    )
    assert bad.exit_code == 1 and "line 2" in bad.output


def test_demo_writes_outputs(tmp_path, real_excerpt_csv):
    paths = demo(tmp_path, real_excerpt_csv, tmp_path / "out")
    assert [p.name for p in paths] == ["predictions.csv", "evaluation.json", "froc.png"]
    data = json.loads(paths[1].read_text())
    assert 0 < data["sensitivity"]["16"] <= 1 and data["split"] == "test"
    assert paths[2].stat().st_size > 1000
    # deterministic
    again = demo(tmp_path, real_excerpt_csv, tmp_path / "again")
    assert again[0].read_bytes() == paths[0].read_bytes()


def test_demo_on_synthetic_sample(tmp_path, sample_root):
    paths = demo(sample_root, sample_root / "DL_info.csv", tmp_path / "out")
    assert all(p.is_file() for p in paths)
    data = json.loads(paths[1].read_text())
    assert data["n_lesions"] > 0 and 0 <= data["average"] <= 1


@pytest.mark.parametrize("published", [True, False])
def test_froc_legend_never_covers_the_plot(tmp_path, published):
    """A low-sensitivity curve runs along the bottom: the legend sits outside the axes."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from deeplesion.evaluation.plot import froc_figure, plot_froc
    from deeplesion.evaluation.sweep import FrocCurve

    fp = np.linspace(0.0, 32.0, 200)
    sens = 0.05 + 0.06 * np.log2(1.0 + fp)
    curve = FrocCurve(
        sensitivity=sens,
        fp_per_image=fp,
        scores=-fp,
        hits=np.round(sens * 100).astype(int),
        false_positives=np.round(fp * 10).astype(int),
        n_images=10,
        n_lesions=100,
    )
    fig = froc_figure({"weak detector": curve}, published=published)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        assert "weak detector" in [t.get_text() for t in legend.get_texts()]
        box, axes_box = legend.get_window_extent(), ax.get_window_extent()
        assert not box.overlaps(axes_box)
    finally:
        plt.close(fig)
    out = plot_froc({"weak detector": curve}, tmp_path / "froc.png", published=published)
    width, height = Image.open(out).size
    assert width > height  # the saved image keeps the legend beside the axes


def test_cli_tagging_refuses_a_label_file_that_is_not_json(tmp_path, real_data):
    folder = real_data / LESANET
    scores = _write(tmp_path / "scores.csv", ["lesion_idx,liver", "0,0.5"])
    out = CliRunner().invoke(
        main,
        [
            "evaluate",
            "tagging",
            str(scores),
            "--labels",
            str(folder / "lesion_ontology_181022.xlsx"),
        ],
    )
    assert out.exit_code == 1
    assert "not a JSON file" in out.output and "Traceback" not in out.output
