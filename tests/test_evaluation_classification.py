"""Type-classification metrics against brute-force counting; prediction-file errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.data.annotations import LESION_TYPES, load_lesions
from deeplesion.evaluation.classification import (
    classification_metrics,
    confusion_figure,
    evaluate_types,
    read_type_predictions,
)
from deeplesion.evaluation.errors import PredictionError

NAMES = [LESION_TYPES[c] for c in range(1, 9)]


def test_metrics_equal_brute_force():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 8, 300)
    true[true == 7] = 6  # class 7 never true
    pred = np.where(rng.random(300) < 0.6, true, rng.integers(0, 7, 300))  # 7 never predicted
    r = classification_metrics(true, pred, NAMES)
    assert r.accuracy == pytest.approx(np.mean(true == pred))
    for k in range(8):
        assert r.confusion[k].tolist() == [int(np.sum((true == k) & (pred == j))) for j in range(8)]
    recalls, f1s = [], []
    for k in range(8):
        tp = np.sum((true == k) & (pred == k))
        n_true, n_pred = np.sum(true == k), np.sum(pred == k)
        if n_true:
            recalls.append(tp / n_true)
            prec = tp / n_pred if n_pred else 0.0
            rec = tp / n_true
            f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
            assert r.recall[k] == pytest.approx(tp / n_true)
        else:
            assert r.recall[k] is None
        assert r.precision[k] == (pytest.approx(tp / n_pred) if n_pred else None)
    assert r.balanced_accuracy == pytest.approx(np.mean(recalls))
    assert r.macro_f1 == pytest.approx(np.mean(f1s))
    assert r.support[7] == 0 and r.f1[7] is None


def _write_predictions(path, rows):
    path.write_text(
        "row_index,file_name,predicted_type,p_x\n"
        + "".join(f"{a},{b},{c},0.5\n" for a, b, c in rows)
    )


def test_evaluate_types_joins_rows_and_checks_file_names(real_excerpt_csv, tmp_path):
    lesions = load_lesions(real_excerpt_csv).lesions
    labelled = [l for l in lesions if l.coarse_type > 0]
    train = [l for l in lesions if l.coarse_type <= 0]
    rows = [(l.row_index, l.file_name, l.coarse_type) for l in labelled[:10]]
    rows += [(l.row_index, l.file_name, "lung") for l in labelled[10:20]]
    rows += [(train[0].row_index, train[0].file_name, 3)]
    path = tmp_path / "p.csv"
    _write_predictions(path, rows)
    result = evaluate_types(read_type_predictions(path), lesions)
    want = sum(1 for l in labelled[:10]) + sum(l.coarse_type == 5 for l in labelled[10:20])
    assert result.n_lesions == 20 and result.unlabelled_rows == 1
    assert result.accuracy == pytest.approx(want / 20)
    # a file name that does not belong to the row
    bad = rows[:2] + [(rows[2][0], "000001_01_01_001.png", 4)]
    _write_predictions(path, bad)
    with pytest.raises(PredictionError, match=r"line 4.*file_name") as info:
        evaluate_types(read_type_predictions(path), lesions)
    assert info.value.line == 4


@pytest.mark.parametrize(
    "body,words",
    [
        ("0,a.png,9,0\n", ["line 2", "predicted_type", "'9'"]),
        ("0,a.png,4,0\n0,a.png,4,0\n", ["line 3", "already predicted on line 2"]),
        ("x,a.png,4,0\n", ["line 2", "row_index", "'x'"]),
        ("0,a.png\n", ["line 2", "expected 4 cells"]),
    ],
)
def test_bad_prediction_rows_are_located(tmp_path, body, words):
    path = tmp_path / "p.csv"
    path.write_text("row_index,file_name,predicted_type,p\n" + body)
    with pytest.raises(PredictionError) as info:
        read_type_predictions(path)
    for w in words:
        assert w in str(info.value)


def test_tag_scores_file_points_to_evaluate_tagging(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("lesion_idx,liver,lung\n0,0.1,0.2\n")
    with pytest.raises(PredictionError, match="evaluate tagging"):
        read_type_predictions(path)


def test_cli_evaluate_classification(real_val_csv, tmp_path):
    lesions = load_lesions(real_val_csv).lesions
    rng = np.random.default_rng(1)
    rows = [
        (l.row_index, l.file_name, l.coarse_type if rng.random() < 0.7 else int(rng.integers(1, 9)))
        for l in lesions
    ]
    path = tmp_path / "p.csv"
    _write_predictions(path, rows)
    runner = CliRunner()
    plot = tmp_path / "confusion.png"
    result = runner.invoke(
        main,
        [
            "evaluate",
            "classification",
            str(path),
            "--annotations",
            str(real_val_csv),
            "--json",
            "--plot",
            str(plot),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    true = np.array([l.coarse_type for l in lesions])
    pred = np.array([r[2] for r in rows])
    assert data["n_lesions"] == 4889
    assert data["accuracy"] == pytest.approx(np.mean(true == pred))
    assert sum(map(sum, data["confusion"]["matrix"])) == 4889
    assert plot.stat().st_size > 10_000
    result = runner.invoke(
        main, ["evaluate", "classification", str(path), "--annotations", str(real_val_csv)]
    )
    assert result.exit_code == 0 and "balanced accuracy" in result.output
    assert "confusion matrix" in result.output
    fig = confusion_figure(evaluate_types(read_type_predictions(path), lesions))
    assert len(fig.axes[0].texts) >= 8  # counts written in the cells
