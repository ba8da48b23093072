"""Multi-process training: the distributed sampler and a 2-process gloo run under torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from deeplesion.training.distributed import Workers, rank_batches, shard  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n_items,batch,world", [(10, 2, 2), (7, 3, 2), (12, 1, 3)])
def test_ranks_take_disjoint_parts_of_each_epoch(n_items, batch, world):
    per_epoch = -(-n_items // (batch * world))
    for epoch in (0, 1):
        parts = [
            rank_batches(n_items, batch, per_epoch, seed=5, epoch=epoch, rank=r, world_size=world)
            for r in range(world)
        ]
        assert all(len(p) == per_epoch and all(len(b) == batch for b in p) for p in parts)
        # the epoch's order, by the documented rule, dealt out batch by batch
        rng = np.random.default_rng((5, epoch))
        order = np.concatenate([rng.permutation(n_items) for _ in range(per_epoch * world)])
        for i in range(per_epoch):
            dealt = [x for r in range(world) for x in parts[r][i]]
            assert dealt == order[i * batch * world : (i + 1) * batch * world].tolist()
        first_pass = [x for i in range(per_epoch) for r in range(world) for x in parts[r][i]]
        assert sorted(first_pass[:n_items]) == list(range(n_items))  # each item once
    a = rank_batches(n_items, batch, per_epoch, seed=5, epoch=0, world_size=world)
    b = rank_batches(n_items, batch, per_epoch, seed=5, epoch=1, world_size=world)
    assert a != b  # reshuffled per epoch


def test_one_process_batches_are_a_plain_shuffle():
    rng = np.random.default_rng((0, 3))
    order = rng.permutation(9).tolist() + rng.permutation(9).tolist()
    assert rank_batches(9, 2, 5, seed=0, epoch=3) == [order[i : i + 2] for i in range(0, 10, 2)]


def test_validation_shards_cover_every_image_once_in_order():
    for n in (0, 1, 5, 8):
        blocks = [list(shard(n, Workers(rank=r, world_size=3))) for r in range(3)]
        assert [i for b in blocks for i in b] == list(range(n))


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "deeplesion", *args]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def test_two_process_gloo_run_trains_resumes_and_validates_once(sample_root, tmp_path):
    from deeplesion.data.annotations import load_lesions
    from deeplesion.training.datasets import KeySliceDetectionDataset
    from deeplesion.training.detector import froc_of, load_detector, predict

    run = tmp_path / "run"
    args = [
        "train-detector", str(sample_root), "--out", str(run), "--arch", "tiny",
        "--anchors", "6,9,12,18,24", "--preset", "native", "--set", "max_size_px=64",
        "--optimizer", "adamw", "--lr", "0.002", "--warmup", "2", "--batch-size", "2",
        "--iterations-per-epoch", "2", "--train-split", "all", "--val-split", "test",
        "--epochs", "1",
    ]  # fmt: skip
    first = _torchrun(args, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("done:") == 1  # rank 0 alone reports
    args[args.index("--epochs") + 1] = "2"  # resume and extend
    second = _torchrun(args, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stderr.count("resuming from") == 1
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 4
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "history.json", "last.pt"]

    # the validation FROC of the last epoch covers the whole split, as one process sees it
    model, ckpt = load_detector(run / "last.pt")
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    val = KeySliceDetectionDataset(
        sample_root, "test", preset="native", overrides={"max_size_px": 64}
    )
    names, boxes, scores = predict(model, val)
    result = froc_of(val.lesions, names, boxes, scores)
    test_rows = [l for l in load_lesions(sample_root / "DL_info.csv").lesions if l.split == "test"]
    assert (
        history[-1]["val"]["n_lesions"]
        == result.n_lesions
        == len([l for l in test_rows if not l.possibly_noisy])
    )
    assert history[-1]["val"]["average"] == pytest.approx(result.average or 0.0, abs=1e-9)


def test_two_process_classifier_run_trains_resumes_and_validates_once(sample_root, tmp_path):
    """train-classifier under torchrun: rank 0 alone reports and writes; the validation of
    the last epoch, split over the two processes, equals accuracy and balanced accuracy
    computed here with numpy from the saved model's predictions on every held-out lesion."""
    from deeplesion.data.annotations import load_lesions
    from deeplesion.training.classifier import classify

    run = tmp_path / "run"
    args = [
        "train-classifier", str(sample_root), "--out", str(run), "--arch", "tiny",
        "--patch-px", "16", "--batch-size", "4", "--iterations-per-epoch", "2",
        "--val-fraction", "0.4", "--cache", "--epochs", "1",
    ]  # fmt: skip
    first = _torchrun(args, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("done:") == 1 and first.stdout.count("patient-level split") == 1
    args[args.index("--epochs") + 1] = "2"
    second = _torchrun([*args, "--lr", "0.01"], tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stderr.count("resuming from") == 1
    assert second.stderr.count("--lr 0.01 (saved lr: 0.001)") == 1  # said once, by rank 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 4
    names = ["best.pt", "history.json", "last.pt", "split.json"]
    assert sorted(p.name for p in run.iterdir()) == names
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])

    val_rows = set(json.loads((run / "split.json").read_text())["val_rows"])
    val = [l for l in load_lesions(sample_root / "DL_info.csv").lesions if l.row_index in val_rows]
    out = classify(sample_root, run / "last.pt", tmp_path / "p.csv", lesions=val)
    with out.open(newline="") as fh:
        preds = {int(r["row_index"]): int(r["predicted_type"]) for r in csv.DictReader(fh)}
    predicted = np.array([preds[l.row_index] for l in val])
    truth = np.array([l.coarse_type for l in val])
    recalls = [np.mean(predicted[truth == t] == t) for t in np.unique(truth)]
    got = history[-1]["val"]
    assert got["n_lesions"] == len(val) == len(val_rows) > 0
    assert got["accuracy"] == pytest.approx(np.mean(predicted == truth), abs=1e-12)
    assert got["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-12)
