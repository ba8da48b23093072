"""Lesion classifier: coarse types (8 classes) or LesaNet tags (171, multi-label).

- :func:`build_classifier`: torchvision ResNet-18 (no weights downloaded unless
  ``pretrained``) whose first convolution takes the patch's context slices, or ``tiny``
  (three conv layers, for quick CPU checks).
- :func:`train_classifier`: patches from :class:`LesionPatchDataset`; atomic checkpoints
  (``last.pt`` every ``checkpoint_every`` iterations and each epoch), resume from
  ``last.pt`` (bit-identical on the CPU), validation each epoch, ``best.pt`` kept.
  *Types*: only val and test rows carry one, so the labelled rows are split by patient
  (a seeded ``val_fraction`` of the patients validates; no patient is on both sides) and
  ``best.pt`` keeps the best balanced accuracy. *Tags*: LesaNet's own train / val lesion
  lists; uncertain labels are left out of the loss (LesaNet's masking) and ``best.pt``
  keeps the best mean AUC.
- :func:`classify`: a CSV of predictions: types ``row_index,file_name,predicted_type,
  predicted_name,p_<type>...``; tags ``lesion_idx,<term>...`` (sigmoid scores, the format
  of ``deeplesion evaluate tagging``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deeplesion.data.annotations import Lesion, LesionTable
from deeplesion.data.io import atomic_path, write_text_atomic
from deeplesion.training.classifier_setup import (
    ARCHS,
    INPUT_SCALE,
    TARGETS,
    TYPE_CODES,
    TYPE_NAMES,
    ClassifierConfig,
    ClassifierError,
    PatchTargets,
    TagTargets,
    _patches,
    build_classifier,
    patient_split,
    training_lesions,
)
from deeplesion.training.datasets import LesionPatchDataset, _load_table
from deeplesion.training.detector_model import check_device
from deeplesion.training.distributed import Workers, join
from deeplesion.training.loop import Progress, Training, Validation, run_epochs
from deeplesion.training.presets import preset as get_preset
from deeplesion.training.runs import RunKind
from deeplesion.training.settings import Preprocessing, describe, from_description

__all__ = [
    "ARCHS",
    "TARGETS",
    "TYPE_CODES",
    "TYPE_NAMES",
    "ClassifierConfig",
    "ClassifierError",
    "ClassifierResult",
    "PatchTargets",
    "TagTargets",
    "build_classifier",
    "classify",
    "load_classifier",
    "patient_split",
    "predict_scores",
    "saved_config",
    "saved_run",
    "train_classifier",
    "training_lesions",
]

# --------------------------------------------------------------------------- training


@dataclass
class ClassifierResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    history: list[dict]
    finished: bool
    split: str  #: how the lesions were split


#: The classifier's checkpoints (``train-classifier``'s ``last.pt`` and ``best.pt``).
CLASSIFIER_RUN = RunKind(
    name="deeplesion classifier checkpoint",
    config=ClassifierConfig,
    error=ClassifierError,
    keys=("model", "config", "preprocessing", "in_channels", "outputs"),
    check_device=check_device,
)


def saved_run(out_dir: str | Path) -> tuple[ClassifierConfig, Preprocessing] | None:
    """The settings a run in ``out_dir`` resumes with (``None`` without ``last.pt``)."""
    return CLASSIFIER_RUN.saved(out_dir)


def saved_config(out_dir: str | Path) -> ClassifierConfig | None:
    """The config a run in ``out_dir`` resumes with (``None`` without ``last.pt``)."""
    saved = saved_run(out_dir)
    return None if saved is None else saved[0]


def _loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "type":
        return nn.functional.cross_entropy(logits, target)
    labels, mask = target[:, 0], target[:, 1]
    per = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def predict_scores(
    model: nn.Module,
    dataset: Dataset,
    kind: str,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Class probabilities (types, softmax) or tag scores (sigmoid), one row per item."""
    model.eval()
    out: list[np.ndarray] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    done = 0
    with torch.no_grad():
        for patches, _ in loader:
            logits = model(patches.to(device) * INPUT_SCALE)
            probs = logits.softmax(1) if kind == "type" else logits.sigmoid()
            out.append(probs.cpu().numpy().astype(np.float64))
            done += len(patches)
            if progress is not None:
                progress(done)
    return np.concatenate(out) if out else np.zeros((0, 0))


def _validation(
    model: nn.Module, val: PatchTargets, config: ClassifierConfig, device: str
) -> Validation:
    return Validation(
        val,
        lambda part: predict_scores(
            model, part, config.target, batch_size=config.batch_size, device=device
        ),
        lambda parts: _metrics(np.concatenate([p for p in parts if len(p)]), val, config.target),
    )


def _metrics(scores: np.ndarray, val: PatchTargets, target: str) -> dict:
    """The validation record of ``scores`` (one row per lesion of ``val``)."""
    if target == "type":
        from deeplesion.evaluation.classification import classification_metrics

        result = classification_metrics(val.labels, scores.argmax(1), TYPE_NAMES)
        return {
            "accuracy": result.accuracy,
            "balanced_accuracy": result.balanced_accuracy,
            "macro_f1": result.macro_f1,
            "n_lesions": result.n_lesions,
            "score": result.balanced_accuracy,
        }
    from deeplesion.evaluation.tagging import tagging_metrics

    targets = np.stack([np.asarray(val.target(i)) for i in range(len(val))])
    tag = tagging_metrics(scores, targets[:, 0] > 0.5, targets[:, 1] > 0.5)
    mean_auc = 0.0 if math.isnan(tag.mean_auc) else tag.mean_auc
    return {
        "mean_auc": mean_auc,
        "overall_f1": tag.overall_f1,
        "n_lesions": tag.n_lesions,
        "score": mean_auc,
    }


def train_classifier(
    root: str | Path,
    out_dir: str | Path,
    config: ClassifierConfig | None = None,
    *,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
    tags: TagTargets | None = None,
    store: str | Path | None = None,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> ClassifierResult:
    """Train (or resume) a classifier in ``out_dir``.

    With ``out_dir/last.pt`` the run resumes with the checkpoint's config (a larger
    ``config.epochs`` extends it). ``stop_after`` stops after that many iterations in all
    (as a kill would, after saving ``last.pt``). ``progress(done, total, info)`` after each
    iteration (``info['loss']``) and validation (``info['val']``). ``store``: read the
    slices from a training store (``deeplesion store``) instead of the PNGs.

    Under ``torchrun --nproc_per_node N`` the N processes train one model together, as
    :func:`~deeplesion.training.detector.train_detector` does: ``batch_size`` per process,
    rank 0 alone writes files and calls ``progress``, the validation lesions are split over
    the ranks and scored once, on rank 0.
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config, state = CLASSIFIER_RUN.start(out_dir, config)
    params = get_preset(config.preset, **dict(config.overrides))
    table, _source = _load_table(root, lesions)
    split = training_lesions(table, config, tags)
    train_l, val_l, statement = split
    tags = tags if config.target == "tags" else None
    workers = join(config.device)
    try:
        if workers.main:
            rows = {"train_rows": [l.row_index for l in train_l]}
            rows["val_rows"] = [l.row_index for l in val_l]
            text = json.dumps({"statement": statement, **rows})
            write_text_atomic(out_dir / "split.json", text + "\n")
        training = _training(root, config, params, split, tags, state is None, workers, store)
        done = run_epochs(
            training, config, out_dir, state, workers, progress=progress, stop_after=stop_after
        )
    finally:
        workers.leave()
    best_path = out_dir / "best.pt"
    best = best_path if done.finished or best_path.is_file() else None
    last = out_dir / "last.pt"
    return ClassifierResult(out_dir, last, best, done.history, done.finished, statement)


def _training(
    root: Path,
    config: ClassifierConfig,
    params: Preprocessing,
    split: tuple[list[Lesion], list[Lesion], str],
    tags: TagTargets | None,
    new_run: bool,
    workers: Workers,
    store: str | Path | None,
) -> Training:
    """The classifier's patches (``split``: train and val lesions, how they were split),
    network, optimiser, loss and validation for the loop."""
    device = workers.device(config.device)
    train_l, val_l, statement = split
    train_ds = PatchTargets(
        _patches(root, config, train_l, params, train=config.augment, store=store),
        config,
        tags,
        shuffle=config.shuffle_labels,
    )
    val_ds = None
    if val_l:
        val_ds = PatchTargets(
            _patches(root, config, val_l, params, train=False, store=store), config, tags
        )
    outputs = list(TYPE_NAMES) if tags is None else list(tags.terms)
    torch.manual_seed(config.seed)
    model = build_classifier(
        params.n_slices, len(outputs), arch=config.arch, pretrained=config.pretrained and new_run
    )
    model.to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def loss(net: nn.Module, batch) -> torch.Tensor:
        patches, target = batch
        return _loss(net(patches.to(device) * INPUT_SCALE), target.to(device), config.target)

    return Training(
        model=model,
        optimizer=optim,
        train_set=train_ds,
        loss=loss,
        validation=None if val_ds is None else _validation(model, val_ds, config, device),
        score_key="score",
        best_key="best_score",
        saved={
            "config": config.to_json(),
            "preprocessing": describe(params),
            "in_channels": params.n_slices,
            "outputs": outputs,
            "split": statement,
        },
    )


def load_classifier(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Model (eval mode) and checkpoint dict from ``best.pt`` or ``last.pt``."""
    ckpt = CLASSIFIER_RUN.load(Path(checkpoint))
    try:
        config = ClassifierConfig.from_json(ckpt["config"])
        from_description(ckpt["preprocessing"])
        model = build_classifier(ckpt["in_channels"], len(ckpt["outputs"]), arch=config.arch)
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ClassifierError(
            f"{checkpoint}: not a deeplesion classifier checkpoint: {exc}"
        ) from exc
    model.eval()
    return model, ckpt


def classify(
    root: str | Path,
    checkpoint: str | Path,
    out_csv: str | Path,
    *,
    split: str | None = None,
    lesions: LesionTable | Sequence[Lesion] | str | Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    store: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write predictions for every lesion of ``split`` (all rows by default) to ``out_csv``
    (``store``: read the slices from a training store)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ClassifierError(f"batch_size={batch_size!r}: expected an integer >= 1")
    check_device(device, ClassifierError)
    model, ckpt = load_classifier(checkpoint)
    model.to(device)
    config = ClassifierConfig.from_json(ckpt["config"])
    params = from_description(ckpt["preprocessing"])
    ds = LesionPatchDataset(
        root,
        split,
        preset=params,
        lesions=lesions,
        padding_px=config.padding_px,
        patch_px=config.patch_px,
        include_noisy=True,
        store=store,
    )
    scores = predict_scores(
        model,
        ds,
        config.target,
        batch_size=batch_size,
        device=device,
        progress=None if progress is None else (lambda n: progress(n, len(ds))),
    )
    outputs = list(ckpt["outputs"])
    with atomic_path(out_csv) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        if config.target == "type":
            writer.writerow(
                ["row_index", "file_name", "predicted_type", "predicted_name"]
                + [f"p_{name.replace(' ', '_')}" for name in outputs]
            )
            for lesion, row in zip(ds.lesions, scores):
                k = int(row.argmax())
                writer.writerow(
                    [lesion.row_index, lesion.file_name, TYPE_CODES[k], outputs[k]]
                    + [f"{v:.6f}" for v in row]
                )
        else:
            writer.writerow(["lesion_idx", *outputs])
            for lesion, row in zip(ds.lesions, scores):
                writer.writerow([lesion.row_index] + [f"{v:.6f}" for v in row])
    return Path(out_csv)
