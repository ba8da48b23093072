"""Lesion classifier: learns the labels it is given, not shuffled ones; runs end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deeplesion.cli import main
from deeplesion.data.annotations import load_lesions, write_dl_info
from deeplesion.evaluation.classification import evaluate_types, read_type_predictions
from deeplesion.evaluation.tagging import read_tag_scores
from deeplesion.training.classifier import (
    ClassifierConfig,
    ClassifierError,
    TagTargets,
    _loss,
    classify,
    patient_split,
    train_classifier,
)

#: Small and fast: the CPU is shared.
QUICK = {"patch_px": 32, "cache": True, "checkpoint_every": 0, "lr": 3e-3}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def liver_two_class_root(real_liver_dir, tmp_path_factory) -> Path:
    """The 23 real liver key slices in the release layout, each with two rows: the real
    liver lesion (type liver) and the same box mirrored left-right onto the other side of
    the body (labelled abdomen: spleen, stomach or bowel at the liver's level). Two
    classes of real CT patches."""
    root = tmp_path_factory.mktemp("liver2")
    for png in sorted((real_liver_dir / "Images_png").glob("*.png")):
        folder, number = png.stem.rsplit("_", 1)
        (root / "Images_png" / folder).mkdir(parents=True, exist_ok=True)
        (root / "Images_png" / folder / f"{number}.png").symlink_to(png)
    liver = load_lesions(real_liver_dir / "NNProject_liver_image_dataset_info.csv").lesions
    rows = list(liver)
    for i, l in enumerate(liver):
        cols = l.image_size[1]
        xs = np.array(l.recist_px1)
        xs[0::2] = cols + 1 - xs[0::2]
        x1, y1, x2, y2 = l.box_px1
        rows.append(
            dataclasses.replace(
                l,
                row_index=len(liver) + i,
                recist_px1=tuple(float(v) for v in xs),
                box_px1=(cols + 1 - x2, y1, cols + 1 - x1, y2),
                location_norm=(1 - l.location_norm[0], *l.location_norm[1:]),
                coarse_type=2,
            )
        )
    write_dl_info(rows, root / "DL_info.csv")
    return root


def _accuracy(root: Path, checkpoint: Path, tmp_path: Path) -> tuple[float, int]:
    out = classify(root, checkpoint, tmp_path / "pred.csv")
    result = evaluate_types(read_type_predictions(out), load_lesions(root / "DL_info.csv").lesions)
    return result.accuracy, result.n_lesions


def _shuffled_agreement(lesions, seed: int) -> float:
    """Share of lesions whose shuffled training label equals the true one."""
    codes = np.array([l.coarse_type for l in lesions])
    perm = np.random.default_rng((seed, 7)).permutation(len(codes))
    return float(np.mean(codes[perm] == codes))


@pytest.mark.parametrize("shuffle", [False, True])
def test_learns_the_sample_types_and_not_shuffled_ones(sample_root, tmp_path, shuffle):
    cfg = ClassifierConfig(
        arch="tiny", epochs=40, batch_size=8, val_fraction=0.0, shuffle_labels=shuffle, **QUICK
    )
    result = train_classifier(sample_root, tmp_path / "run", cfg)
    accuracy, _ = _accuracy(sample_root, result.best_checkpoint, tmp_path)
    labelled = [
        l
        for l in load_lesions(sample_root / "DL_info.csv").lesions
        if l.coarse_type > 0 and not l.possibly_noisy
    ]
    counts = np.bincount([l.coarse_type for l in labelled])
    majority = counts.max() / counts.sum()  # best constant guess
    if not shuffle:
        assert accuracy >= 0.9 > majority + 0.4
    else:  # fits the permuted labels, so it agrees with the truth only by chance
        assert accuracy <= max(majority, _shuffled_agreement(labelled, 0)) + 0.2


@pytest.mark.parametrize("shuffle", [False, True])
def test_learns_real_patches_and_not_shuffled_ones(liver_two_class_root, tmp_path, shuffle):
    cfg = ClassifierConfig(
        arch="tiny", epochs=60, batch_size=16, val_fraction=0.0, shuffle_labels=shuffle, **QUICK
    )
    result = train_classifier(liver_two_class_root, tmp_path / "run", cfg)
    accuracy, n = _accuracy(liver_two_class_root, result.best_checkpoint, tmp_path)
    assert n == 46
    if not shuffle:
        assert accuracy >= 0.95
    else:  # two balanced classes: chance is 0.5
        assert accuracy <= 0.75


def test_patient_split_keeps_patients_whole(real_val_csv):
    lesions = [l for l in load_lesions(real_val_csv).lesions if l.coarse_type > 0]
    train, val = patient_split(lesions, 0.2, seed=3)
    tp, vp = {l.patient_index for l in train}, {l.patient_index for l in val}
    assert not tp & vp and len(train) + len(val) == len(lesions)
    assert len(vp) == round(0.2 * len(tp | vp))
    assert patient_split(lesions, 0.2, seed=3)[1] == val  # seeded


def test_cli_train_classify_evaluate_with_resnet18(sample_root, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train-classifier", str(sample_root), "--out", str(run), "--patch-px", "32"]
    args += ["--epochs", "2", "--batch-size", "8", "--val-fraction", "0.4", "--cache"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "patient-level split" in result.output and "no patient is on both sides" in result.output
    split = json.loads((run / "split.json").read_text())
    lesions = {l.row_index: l for l in load_lesions(sample_root / "DL_info.csv").lesions}
    train_p = {lesions[r].patient_index for r in split["train_rows"]}
    val_p = {lesions[r].patient_index for r in split["val_rows"]}
    assert train_p and val_p and not train_p & val_p
    assert all(lesions[r].coarse_type > 0 for r in split["train_rows"] + split["val_rows"])
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["val"]["balanced_accuracy"] <= 1 for h in history)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert "layer4.1.conv2.weight" in ckpt["model"]  # a ResNet-18
    assert tuple(ckpt["model"]["conv1.weight"].shape[1:2]) == (3,)  # 3 context slices
    preds = tmp_path / "pred.csv"
    result = runner.invoke(
        main,
        ["classify", str(sample_root), "--checkpoint", str(run / "best.pt"), "--out", str(preds)],
    )
    assert result.exit_code == 0, result.output
    header = preds.read_text().splitlines()[0].split(",")
    assert header[:4] == ["row_index", "file_name", "predicted_type", "predicted_name"]
    probs = np.loadtxt(preds, delimiter=",", skiprows=1, usecols=range(4, 12))
    assert len(probs) == len(lesions) and np.allclose(probs.sum(1), 1, atol=1e-4)
    result = runner.invoke(
        main,
        ["evaluate", "classification", str(preds), "--annotations", str(sample_root), "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    n_typed = sum(l.coarse_type > 0 for l in lesions.values())
    assert data["n_lesions"] == n_typed and data["unlabelled_rows"] == len(lesions) - n_typed


def test_resume_after_kill_is_identical(sample_root, tmp_path):
    cfg = ClassifierConfig(
        arch="tiny", epochs=2, batch_size=4, val_fraction=0.3, **{**QUICK, "checkpoint_every": 1}
    )
    whole = train_classifier(sample_root, tmp_path / "whole", cfg)
    part = train_classifier(sample_root, tmp_path / "part", cfg, stop_after=3)
    assert not part.finished and part.best_checkpoint is None
    rest = train_classifier(sample_root, tmp_path / "part", cfg)
    assert rest.finished and len(rest.history) == 2
    a = torch.load(whole.last_checkpoint, weights_only=True)["model"]
    b = torch.load(rest.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "part").glob("*.incomplete"))


def test_uncertain_tags_are_left_out_of_the_loss():
    logits = torch.randn(4, 5)
    labels = (torch.rand(4, 5) > 0.5).float()
    mask = torch.ones(4, 5)
    mask[0, 1] = mask[2, 3] = 0.0
    base = _loss(logits, torch.stack([labels, mask], 1), "tags")
    changed = logits.clone()
    changed[0, 1] += 50.0
    changed[2, 3] -= 50.0
    assert _loss(changed, torch.stack([labels, mask], 1), "tags") == pytest.approx(base.item())
    keep = mask.bool()
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])
    assert base.item() == pytest.approx(want.item(), rel=1e-5)


def test_tag_target_trains_and_writes_tagging_scores(sample_root, tmp_path):
    lesions = load_lesions(sample_root / "DL_info.csv").lesions
    terms = ("large", "lung", "liver")
    relevant, uncertain, split = {}, {}, {}
    for l in lesions:
        relevant[l.row_index] = [
            i
            for i, hit in enumerate(
                (l.long_diameter_mm > 20, l.coarse_type == 5, l.coarse_type == 4)
            )
            if hit
        ]
        uncertain[l.row_index] = [0] if l.row_index % 4 == 0 else []
        split[l.row_index] = "val" if l.patient_index % 3 == 0 else "train"
    tags = TagTargets(terms, relevant, uncertain, split)
    cfg = ClassifierConfig(target="tags", arch="tiny", epochs=2, batch_size=8, **QUICK)
    result = train_classifier(sample_root, tmp_path / "run", cfg, tags=tags)
    assert "LesaNet's split" in result.split
    assert all("mean_auc" in h["val"] for h in result.history)
    out = classify(sample_root, result.best_checkpoint, tmp_path / "tags.csv")
    idxs, scores = read_tag_scores(out, list(terms))
    assert sorted(idxs.tolist()) == sorted(l.row_index for l in lesions)
    assert ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(ClassifierError, match="LesaNet"):
        train_classifier(sample_root, tmp_path / "run2", dataclasses.replace(cfg))


def test_bad_inputs_are_typed_errors(sample_root, real_excerpt_csv, tmp_path):
    train_only = [l for l in load_lesions(real_excerpt_csv).lesions if l.coarse_type < 0]
    with pytest.raises(ClassifierError, match="val and test"):
        train_classifier(sample_root, tmp_path / "r", ClassifierConfig(), lesions=train_only)
    with pytest.raises(ClassifierError, match="val_fraction"):
        train_classifier(sample_root, tmp_path / "r", ClassifierConfig(val_fraction=1.5))
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ClassifierError, match="not a deeplesion classifier checkpoint"):
        classify(sample_root, bogus, tmp_path / "p.csv")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "classify",
            str(sample_root),
            "--checkpoint",
            str(bogus),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not (tmp_path / "p.csv").exists()


def test_cli_tag_classifier_end_to_end(real_data, sample_root, tmp_path):
    """--target tags with a LesaNet-format label file over the sample's rows (fingerprint
    check overridden), then classify and `evaluate tagging` on the scores it writes."""
    real = json.loads(
        (
            real_data
            / "rsummers11__CADLab/LesaNet/program_data/text_mined_labels_171_and_split.json"
        ).read_text()
    )
    terms = real["term_list"]
    wanted = {4: terms.index("liver"), 5: terms.index("lung"), 6: terms.index("kidney")}
    data: dict = {"term_list": terms}
    for split in ("train", "val", "test"):
        for key in ("lesion_idxs", "relevant_labels", "uncertain_labels"):
            data[f"{split}_{key}"] = []
    for l in load_lesions(sample_root / "DL_info.csv").lesions:
        split = ("val", "test", "train")[l.patient_index % 3]
        data[f"{split}_lesion_idxs"].append(l.row_index)
        data[f"{split}_relevant_labels"].append(
            [wanted[l.coarse_type]] if l.coarse_type in wanted else []
        )
        data[f"{split}_uncertain_labels"].append([terms.index("nodule")])
    folder = tmp_path / "lesanet"
    folder.mkdir()
    labels = folder / "text_mined_labels_171_and_split.json"
    labels.write_text(json.dumps(data))
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train-classifier", str(sample_root), "--out", str(run), "--target", "tags"]
    args += ["--lesanet", str(folder), "--arch", "tiny", "--epochs", "1", "--patch-px", "16"]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1 and "not the official DL_info.csv" in refused.output
    assert "Option: --override-fingerprint." in refused.output  # as lesions/similar say
    (tmp_path / "empty").mkdir()
    no_folder = [*args[:-8], "--lesanet", str(tmp_path / "empty"), *args[-6:]]
    missing = runner.invoke(main, [*no_folder, "--override-fingerprint"])
    assert missing.exit_code == 1 and "Option: --lesanet DIR." in missing.output, missing.output
    result = runner.invoke(main, [*args, "--override-fingerprint"])
    assert result.exit_code == 0, result.output
    assert "LesaNet's split" in result.output
    history = json.loads((run / "history.json").read_text())
    noisy = {
        l.row_index for l in load_lesions(sample_root / "DL_info.csv").lesions if l.possibly_noisy
    }
    assert history[0]["val"]["n_lesions"] == len(set(data["val_lesion_idxs"]) - noisy)
    scores = tmp_path / "tags.csv"
    result = runner.invoke(
        main,
        ["classify", str(sample_root), "--checkpoint", str(run / "best.pt"), "--out", str(scores)],
    )
    assert result.exit_code == 0, result.output
    assert scores.read_text().splitlines()[0].split(",") == ["lesion_idx", *terms]
    result = runner.invoke(
        main, ["evaluate", "tagging", str(scores), "--labels", str(labels), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_lesions"] == len(data["test_lesion_idxs"])


def test_classify_from_a_store_equals_the_png_path(sample_root, tmp_path):
    from deeplesion.convert.store import build_store

    store = tmp_path / "store"
    build_store(sample_root, store)
    cfg = ClassifierConfig(arch="tiny", epochs=1, batch_size=8, val_fraction=0.3, **QUICK)
    a = train_classifier(sample_root, tmp_path / "png", cfg)
    b = train_classifier(sample_root, tmp_path / "store-run", cfg, store=store)
    wa = torch.load(a.last_checkpoint, weights_only=True)["model"]
    wb = torch.load(b.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    runner = CliRunner()
    outs = []
    for extra in ([], ["--store", str(store)]):
        out = tmp_path / f"pred{len(extra)}.csv"
        args = ["classify", str(sample_root), "--checkpoint", str(a.best_checkpoint)]
        result = runner.invoke(main, [*args, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_resume_names_each_ignored_option_with_the_saved_value(sample_root, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    base = ["train-classifier", str(sample_root), "--out", str(run), "--arch", "tiny"]
    base += ["--patch-px", "16", "--iterations-per-epoch", "1", "--checkpoint-every", "0"]
    result = runner.invoke(main, [*base, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    changed = ["--epochs", "2", "--patch-px", "24", "--set", "n_slices=5", "--no-augment"]
    result = runner.invoke(main, [*base, *changed, "--seed", "0", "--set", "offset=50"])
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", " ")
    assert "resuming from" in text and "ignored:" in text
    assert "--patch-px 24 (saved patch_px: 16)" in text
    assert "--set n_slices=5 (saved n_slices: 3)" in text
    assert "--no-augment (saved augment: true)" in text
    assert "--seed" not in text and "--set offset" not in text  # same values as saved
    assert "--epochs 2" not in text  # a larger --epochs extends the run
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["config"]["patch_px"] == 16 and saved["in_channels"] == 3
    assert len(saved["history"]) == 2


def test_classify_keeps_an_existing_output_unless_overwrite(sample_root, tmp_path):
    cfg = ClassifierConfig(arch="tiny", epochs=1, batch_size=8, val_fraction=0.0, **QUICK)
    run = train_classifier(sample_root, tmp_path / "run", cfg)
    out = tmp_path / "pred.csv"
    out.write_text("mine\n")
    args = ["classify", str(sample_root), "--checkpoint", str(run.best_checkpoint)]
    args += ["--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert out.read_text() == "mine\n"
    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("row_index,file_name,predicted_type")


@pytest.mark.parametrize("call", ["train", "classify"])
def test_a_bad_device_is_a_classifier_error(sample_root, tmp_path, call):
    from deeplesion.training.classifier import (
        ClassifierConfig,
        ClassifierError,
        classify,
        train_classifier,
    )

    with pytest.raises(ClassifierError, match="invalid device"):
        if call == "train":
            train_classifier(sample_root, tmp_path / "run", ClassifierConfig(device="gpu0"))
        else:
            classify(sample_root, tmp_path / "c.pt", tmp_path / "p.csv", device="gpu0")
